"""Settings: flags beat `LIBWATCH_*` environment beat the TOML file beat defaults.

The resolution is done here, not by Typer's `envvar=`, so that the file can sit between
the environment and the defaults and every source reports its own errors.
"""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from libwatch.errors import ConfigError

SYSTEM_CONFIG: Final = Path("/etc/libwatch/config.toml")
STORE_CREDENTIALS: Final = "store-credentials.json"
STORE_URI_FILE: Final = "store.uri"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command may need to know about where things live and how to behave."""

    mongo_uri: str | None = None
    # Secrets kept out of the config file and the command line: the URI is read from this file.
    mongo_uri_file: Path | None = None
    database: str = "libwatch"
    amqp_url: str | None = None
    amqp_url_file: Path | None = None
    cache_dir: Path = field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"))
    home: Path = field(default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share"))
    store_wait_s: float = 30.0
    lease_s: float = 60.0
    cache_edge: int = 1920
    thumbnail_edge: int = 320
    image_format: str = "jpeg"
    retention_days: float = 30.0
    cache_mode: int = 0o640  # cache files; their folders get the same bits plus search (0750)
    # `libwatch web`: who may log in, and the scrypt hash of their secret (password or bearer token).
    web_user: str = "admin"
    web_secret_hash: str | None = None
    config_file: Path | None = None

    @property
    def embedded(self) -> bool:
        """True when no MongoDB is configured and the in-process store is used."""
        return self.mongo_uri is None

    @property
    def store_dir(self) -> Path:
        return self.home / "db"

    @property
    def store_credentials(self) -> Path:
        """The embedded store's user and password, written at its first start (owner-only)."""
        return self.home / STORE_CREDENTIALS

    @property
    def store_uri_file(self) -> Path:
        """Where `libwatch store serve` writes the URI (with credentials) its clients read."""
        return self.home / STORE_URI_FILE


# key -> (environment variable, parser). Only these keys are accepted in the file.
_KEYS: Final[dict[str, tuple[str, type]]] = {
    "mongo_uri": ("LIBWATCH_MONGO_URI", str),
    "mongo_uri_file": ("LIBWATCH_MONGO_URI_FILE", Path),
    "database": ("LIBWATCH_DATABASE", str),
    "amqp_url": ("LIBWATCH_AMQP_URL", str),
    "amqp_url_file": ("LIBWATCH_AMQP_URL_FILE", Path),
    "cache_dir": ("LIBWATCH_CACHE_DIR", Path),
    "home": ("LIBWATCH_HOME", Path),
    "store_wait_s": ("LIBWATCH_STORE_WAIT", float),
    "lease_s": ("LIBWATCH_LEASE", float),
    "cache_edge": ("LIBWATCH_CACHE_EDGE", int),
    "thumbnail_edge": ("LIBWATCH_THUMBNAIL_EDGE", int),
    "image_format": ("LIBWATCH_IMAGE_FORMAT", str),
    "retention_days": ("LIBWATCH_RETENTION_DAYS", float),
    "cache_mode": ("LIBWATCH_CACHE_MODE", int),
    "web_user": ("LIBWATCH_WEB_USER", str),
    "web_secret_hash": ("LIBWATCH_WEB_SECRET_HASH", str),
}
_IMAGE_FORMATS: Final = ("jpeg", "webp")
# A secret's file key -> the setting it provides; one source gives one or the other.
SECRET_FILES: Final = {"mongo_uri_file": "mongo_uri", "amqp_url_file": "amqp_url"}
# Query parameters whose values are secrets (matched case-insensitively, anywhere in the key).
_SECRET_QUERY: Final = re.compile(r"password|passwd|pwd|secret|token|authmechanismproperties|credential",
                                  re.IGNORECASE)


def _xdg(variable: str, fallback: str) -> Path:
    base = os.environ.get(variable) or str(Path.home() / fallback)
    return Path(base) / "libwatch"


def config_path(environ: Mapping[str, str]) -> Path | None:
    """The config file to read: `$LIBWATCH_CONFIG`, else the XDG one, else `/etc`, if present."""
    explicit = environ.get("LIBWATCH_CONFIG")
    if explicit:
        return Path(explicit)
    xdg = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "libwatch" / "config.toml"
    for candidate in (xdg, SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path) -> dict[str, Any]:
    if path == Path(os.devnull):
        return {}
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


_KINDS: Final = {Path: "a path", str: "text", int: "a whole number", float: "a number"}
# What a URL setting may start with: anything else (http://, a typo) is refused when read.
_SCHEMES: Final = {"mongo_uri": ("mongodb://", "mongodb+srv://"), "amqp_url": ("amqp://", "amqps://")}


def _convert(key: str, value: Any, source: str) -> Any:
    """``value`` as ``key``'s type; raises ConfigError naming ``source`` and the key in plain words."""
    kind = _KEYS[key][1]
    shown = mask_url(value) if isinstance(value, str) and key in _SCHEMES else value
    problem = f"must be {_KINDS[kind]}, not {shown!r}"
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: {key} {problem}")
        return Path(value).expanduser()
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} {problem}")
        if key in _SCHEMES and not value.startswith(_SCHEMES[key]):
            starts = " or ".join(_SCHEMES[key])
            raise ConfigError(f"{source}: {key} must be a URL starting with {starts}, not {shown!r}")
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{source}: {key} {problem}")
    try:
        if key == "cache_mode" and isinstance(value, str):
            number = int(value, 8)  # "0640" from the environment, as chmod reads it (TOML writes 0o640)
        else:
            number = kind(value)
        if kind is int and isinstance(value, float) and number != value:
            raise ValueError("not whole")  # int(1.5) would quietly make 1
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{source}: {key} {problem}") from None
    if number < 0:
        raise ConfigError(f"{source}: {key} must not be negative, not {value!r}")
    return number


def _validate(settings: Settings, sources: Mapping[str, str]) -> Settings:
    """Check the values' ranges; an error names where the value came from (``sources``: key → source)."""
    def where(key: str) -> str:
        return sources.get(key, "default")

    if settings.image_format not in _IMAGE_FORMATS:
        raise ConfigError(f"{where('image_format')}: image_format must be one of {', '.join(_IMAGE_FORMATS)}, "
                          f"not {settings.image_format!r}")
    if settings.cache_mode & ~0o755 or settings.cache_mode & 0o600 != 0o600:
        raise ConfigError(f"{where('cache_mode')}: cache_mode must give the owner read and write and nobody else "
                          f"write (e.g. 0640), not {settings.cache_mode:04o}")
    for key in ("cache_edge", "thumbnail_edge"):
        if getattr(settings, key) < 16:
            raise ConfigError(f"{where(key)}: {key} must be at least 16 pixels, not {getattr(settings, key)}")
    return settings


def read_secret(path: Path, key: str) -> str:
    """The one line of a secret file (a URL with its password), for `key`; ConfigError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"cannot read {key} from {path}: {error.strerror or error}") from None
    if not text or "\n" in text:
        raise ConfigError(f"{path} ({key}) must hold one line, the URL")
    return text


def _read_secrets(values: dict[str, Any], sources: dict[str, str]) -> None:
    """The URLs the `*_file` settings name, read into `values` (checked like the settings they give)."""
    for file_key, key in SECRET_FILES.items():
        if values.get(file_key) is not None:
            source = f"{file_key} {values[file_key]}"
            values[key], sources[key] = _convert(key, read_secret(values[file_key], file_key), source), source


def load(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None, *,
         secrets: bool = True) -> Settings:
    """Resolve the settings from flags, environment, config file and defaults, in that order.

    Raises ConfigError (exit 2) in one line naming the file, variable or option and the key.
    `mongo_uri_file`/`amqp_url_file` are read here (`secrets=False` leaves them unread and the
    URL unset: for comparing settings files before the file exists).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def take(given: Mapping[str, Any], source_of: Callable[[str], str]) -> None:
        """One source's values over the lower ones: a secret's file replaces a lower URL, and back."""
        for file_key, key in SECRET_FILES.items():
            if file_key in given and key in given:
                raise ConfigError(f"{source_of(key)}: give {key} or {file_key}, not both")
            for mine, other in ((file_key, key), (key, file_key)):
                if mine in given:
                    values.pop(other, None)
        for key, value in given.items():
            values[key], sources[key] = _convert(key, value, source_of(key)), source_of(key)

    path = config_path(environ)
    if path is not None:
        in_file = _read_file(path)
        for key in in_file:
            if key not in _KEYS:
                raise ConfigError(f"config file {path}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        take(in_file, lambda key: f"config file {path}")
    take({key: environ[variable] for key, (variable, _) in _KEYS.items() if environ.get(variable)},
         lambda key: f"environment {_KEYS[key][0]}")
    take({key: str(value) if isinstance(value, Path) else value for key, value in (flags or {}).items()
          if value is not None}, lambda key: f"option --{key.replace('_', '-')}")
    if secrets:
        _read_secrets(values, sources)
    known = {f.name for f in fields(Settings)}
    settings = replace(Settings(), config_file=path, **{k: v for k, v in values.items() if k in known})
    return _validate(settings, sources)


def mask_url(url: str) -> str:
    """The URL with its password and secret query values (`tlsCertificateKeyFilePassword`,
    `authMechanismProperties`, any `*password*`/`*secret*`/`*token*` key) replaced by `***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        parts = parts._replace(netloc=f"{user}:***@{hostinfo}")
    query = "&".join(_masked_parameter(item) for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(query=query))


def _masked_parameter(item: str) -> str:
    key, equals, _ = item.partition("=")
    return f"{key}=***" if equals and _SECRET_QUERY.search(unquote(key)) else item


def has_password(url: str) -> bool:
    """True when the URL carries a password (in its userinfo or a secret query parameter)."""
    return mask_url(url) != url
