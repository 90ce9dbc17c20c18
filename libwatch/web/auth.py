"""Who may use the management page: the listener rule, the stored secret, cross-site POSTs.

Pure functions over strings and addresses (no web framework here), so every rule has a
direct test:

- A listener on loopback (or a Unix socket) may run without authentication; any other
  address refuses to start unless a secret is configured (`web_secret_hash`).
- With a secret configured, every request must carry it: `Authorization: Bearer SECRET`,
  or Basic with `web_user` and SECRET as the password (both meant for the admin's TLS proxy).
- A POST a browser sent from another site is refused (403), whatever the credentials.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from libwatch.errors import ConfigError, UsageError

SCHEME: Final = "scrypt"
# scrypt with n=2**14, r=8, p=1 (16 MiB, about 50 ms here): the cost OWASP lists as the minimum.
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
SAFE_FETCH_SITES: Final = frozenset({"same-origin", "none"})


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$<salt b64>$<hash b64>`: what `web_secret_hash` stores, never the secret itself."""
    if not secret:
        raise UsageError("the secret must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    encode = base64.b64encode
    return f"{SCHEME}${_N}${_R}${_P}${encode(salt).decode()}${encode(digest).decode()}"


def check_stored(stored: str) -> str:
    """The stored hash if it is one `hash_secret` wrote; else a ConfigError naming the key."""
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError
        n, r, p = (int(part) for part in parts[1:4])
        base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
        if n < 2 or n & (n - 1) or r < 1 or p < 1:
            raise ValueError
    except (ValueError, binascii.Error):
        raise ConfigError("web_secret_hash is not a hash written by `libwatch web --hash-secret` "
                          "(scrypt$N$r$p$salt$hash)") from None
    return stored


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` hashes to `stored` (constant-time comparison)."""
    _, n, r, p, salt, digest = check_stored(stored).split("$")
    expected = base64.b64decode(digest)
    try:
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=2**27)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, expected)


def is_local(address: str | tuple[str, int] | None) -> bool:
    """A listening address only this host can reach: loopback IPs, `localhost`, Unix sockets (None or a path)."""
    if address is None or (isinstance(address, str) and address.startswith("/")):
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def socket_address(sock: socket.socket) -> tuple[str, int] | None:
    """Where an (inherited) listening socket listens: (host, port), or None for a Unix socket."""
    if sock.family == socket.AF_UNIX:
        return None
    name = sock.getsockname()
    return (name[0], name[1])


@dataclass(frozen=True, slots=True)
class Access:
    """The authentication the server was started with: none (loopback only) or one user and secret hash."""

    user: str
    secret_hash: str | None

    @property
    def required(self) -> bool:
        return self.secret_hash is not None


def access_for(user: str, secret_hash: str | None, listen: str | tuple[str, int] | None) -> Access:
    """The access rule for a listener; refuses (UsageError) a non-local one without a secret."""
    if secret_hash:
        return Access(user, check_stored(secret_hash))
    if not is_local(listen):
        shown = listen if isinstance(listen, str) else f"{listen[0]}:{listen[1]}" if listen else "?"
        raise UsageError(f"refusing to listen on {shown} without authentication: set web_secret_hash "
                         "(libwatch web --hash-secret prints it) or listen on 127.0.0.1")
    return Access(user, None)


def authorized(access: Access, authorization: str | None) -> bool:
    """Whether a request's `Authorization` header satisfies `access`."""
    if not access.required:
        return True
    if not authorization or access.secret_hash is None:
        return False
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return verify_secret(value, access.secret_hash)
    if scheme.lower() == "basic":
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both checks run, so a wrong user name takes as long as a wrong password.
        user_ok = hmac.compare_digest(user.encode(), access.user.encode())
        return bool(sep) & verify_secret(password, access.secret_hash) & user_ok
    return False


def cross_site(headers: Mapping[str, str], host: str | None) -> bool:
    """Whether a browser sent this request from another site (the rule of Go's CrossOriginProtection).

    `Sec-Fetch-Site` decides where the browser sent it; else an `Origin` whose host differs
    from `Host`; a request with neither comes from no browser (curl, scripts) and is not cross-site.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in SAFE_FETCH_SITES
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":
        return True
    return origin.split("://", 1)[-1] != (host or "")


def local_host(host: str | None) -> bool:
    """Whether a `Host` header names this machine's loopback (a DNS-rebinding page names its own host)."""
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return is_local(name)
