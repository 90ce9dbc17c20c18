"""`libwatch store serve`: the embedded store as a loopback server several processes can share."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from libwatch import config, state, systemd
from libwatch.catalog import store
from libwatch.cli import context, output
from libwatch.errors import UsageError
from libwatch.web.auth import is_local

app = typer.Typer(help="The embedded store (SecantusDB) for hosts without a MongoDB.\n\n"
                       "Example: libwatch store serve --port 27017", no_args_is_help=True)


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="TCP port.")] = 27017,
    host: Annotated[str, typer.Option(help="Address to listen on: loopback, unless --tls-cert and --tls-key "
                                           "are given.")] = "127.0.0.1",
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) for a non-loopback --host.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM) for a non-loopback --host.")] = None,
) -> None:
    """Serve the catalog under --home until SIGTERM or Ctrl-C, password required.

    The clients' URI, with the store's user and password, is written to HOME/store.uri (0600):
    point LIBWATCH_MONGO_URI_FILE (or mongo_uri_file in the config file) at it.

    Example: LIBWATCH_HOME=/var/lib/libwatch libwatch store serve --port 27017
    """
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    tls = None if tls_cert is None or tls_key is None else (tls_cert, tls_key)
    if tls is None and not is_local(host):
        raise UsageError(f"--host {host} is not a loopback address: the store's password would cross the "
                         "network in clear; give --tls-cert and --tls-key, or keep --host 127.0.0.1")
    # The store is what mongo_uri_file names on a host with units: it must start before the file exists.
    settings = config.load(context.state(ctx).flags, secrets=False)
    os.umask(0o077)  # this process only serves the store: every file WiredTiger makes is the owner's alone
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    state.private_dir(settings.home)
    with store.exclusive_store(settings) as data_dir, \
            store.embedded_server(data_dir, credentials_file=settings.store_credentials, port=port, host=host,
                                  tls=tls) as served:
        state.write_private(settings.store_uri_file, served.uri.encode() + b"\n")
        output.errors.print(f"serving {data_dir} at {served.server.host}:{served.server.port}, password "
                            f"required (LIBWATCH_MONGO_URI_FILE={settings.store_uri_file})")
        # libwatch-store.service is Type=notify: the units ordered after it find it up.
        systemd.notify_ready(f"serving {served.server.host}:{served.server.port}")
        stop.wait()
    output.errors.print("store stopped")
