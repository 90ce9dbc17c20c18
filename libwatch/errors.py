"""The error tree: each class's docstring is what it means, each carries its exit code.

Per-file problems are not errors: they are reported in a result and the run goes on.
These classes are for conditions that end a command; the CLI maps them to exit codes in
one place (`exit_code_for`).
"""
from __future__ import annotations

from typing import ClassVar, Final

EXIT_OK: Final = 0
EXIT_CHANGES: Final = 1
EXIT_USAGE: Final = 2
EXIT_REFUSED: Final = 65
EXIT_UNAVAILABLE: Final = 69
EXIT_ROOT_UNAVAILABLE: Final = 74
EXIT_LOCKED: Final = 75
EXIT_SOFTWARE: Final = 70  # an unexpected internal error (a bug): sysexits EX_SOFTWARE
EXIT_INTERRUPTED: Final = 130


class LibwatchError(Exception):
    """Something ended the command; the message is one line for the admin."""

    exit_code: ClassVar[int] = EXIT_USAGE


class UsageError(LibwatchError):
    """The command line, a setting or an argument is not acceptable."""


class ConfigError(UsageError):
    """The configuration file or a configured value is malformed."""


class NotFound(UsageError):
    """A named library (or other record) does not exist."""


class GuardRefused(LibwatchError):
    """A safety guard refused to go on (e.g. a mass deletion)."""

    exit_code = EXIT_REFUSED


class ServiceUnavailable(LibwatchError):
    """MongoDB or RabbitMQ could not be reached."""

    exit_code = EXIT_UNAVAILABLE


class CatalogUnavailable(ServiceUnavailable):
    """The MongoDB catalog could not be reached or answered with an error."""


class BusError(ServiceUnavailable):
    """A RabbitMQ operation failed; the message is one line for the user."""


class BrokerUnavailable(BusError):
    """The broker could not be reached or the connection was lost (connect refused,
    timeout, login refused, unknown host). The message names the URL with its
    password masked."""


class TopologyMismatch(BusError):
    """An exchange or queue already exists with other arguments than libwatch
    declares; delete it or use other names."""


class Unroutable(BusError):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class PublishNacked(BusError):
    """The broker refused to take responsibility for a message (basic.nack)."""


class PublishFailed(ServiceUnavailable):
    """RabbitMQ could not be reached, or did not accept every rebuild request; the rest stay pending."""


class BrokerLost(ServiceUnavailable):
    """RabbitMQ could not be reached, or dropped the worker's connection (systemd restarts the unit)."""


class RootUnavailable(LibwatchError):
    """A library's root folder is missing, unreadable or empty while the catalog has files."""

    exit_code = EXIT_ROOT_UNAVAILABLE


class Locked(LibwatchError):
    """Another run holds the lock (try later); systemd units treat this as success."""

    exit_code = EXIT_LOCKED


class LeaseLost(Locked):
    """This run's lease was taken over by another run; it stopped before committing more."""


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for an error that ended a command."""
    if isinstance(error, LibwatchError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_SOFTWARE
