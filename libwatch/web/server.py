"""Running the web application: the listening socket (ours, or systemd's), the access rule, uvicorn."""
from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Final

from libwatch.config import Settings
from libwatch.errors import UsageError
from libwatch.web import auth

SD_LISTEN_FDS_START: Final = 3  # sd_listen_fds(3)


def inherited_socket() -> socket.socket | None:
    """The socket systemd passed (socket activation: `LISTEN_FDS`/`LISTEN_PID`), else None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS") or 0)
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(variable, None)  # not for the scans this server starts
    if count == 0:
        return None
    if count != 1:
        raise UsageError(f"systemd passed {count} sockets; libwatch-web.socket should listen on one")
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); a clear error when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except (OSError, OverflowError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}") from None


def url_of(sock: socket.socket) -> str:
    """The URL a listening socket serves, as an admin would type it."""
    address = auth.socket_address(sock)
    if address is None:
        return f"unix:{sock.getsockname()}"
    host, port = address
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _log_through_libwatch() -> None:
    # uvicorn's lines go through libwatch's handler (journald priorities, -v for the access log).
    ours = logging.getLogger("libwatch")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = list(ours.handlers) if name == "uvicorn" else []
        logger.setLevel(ours.level)
        logger.propagate = name != "uvicorn"


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGTERM/Ctrl-C; refuses (UsageError) a non-loopback listener without authentication."""
    import uvicorn  # only `libwatch web` needs the ASGI stack

    from libwatch.web.app import create_app

    sock = inherited_socket()
    if sock is None:
        auth.access_for(settings.web_user, settings.web_secret_hash, (host, port))  # refuse before binding
        sock = bind(host, port)
    address = auth.socket_address(sock)
    access = auth.access_for(settings.web_user, settings.web_secret_hash, address)
    # Without authentication, only localhost names are answered (a DNS-rebinding page names its own host).
    app = create_app(settings, access, check_host=not access.required and address is not None)
    _log_through_libwatch()
    config = uvicorn.Config(app, log_config=None, server_header=False, proxy_headers=False, access_log=True,
                            timeout_graceful_shutdown=10)
    print(f"libwatch web: serving {url_of(sock)}"
          + (" (authentication required)" if access.required else " (no authentication: loopback only)"),
          file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])
