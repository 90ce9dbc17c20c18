"""The error tree: each class's docstring says what it means, each carries its exit code.

Every error class of libwatch lives here (as borg's `helpers/errors.py`). Two families:

- Errors that end a command (`LibwatchError` and its subclasses): the CLI prints the message
  as one line and exits with the class's `exit_code`, in one place (`exit_code_for`).
- Problems with one item (a file, an image, a message) (`ItemProblem`): reported in the
  result, the item is skipped and the run goes on; a run that had any ends `partial` and
  exits `EXIT_PARTIAL`.

Exit codes (the README's table; sysexits(3) names where one fits):

| code | meaning |
|---|---|
| 0 | done |
| 1 | changes found (`diff --exit-code` only, like `git diff --exit-code`) |
| 2 | usage error: the command line, a setting or a name is not acceptable |
| 3 | done, with problems: some files, renders or units failed (listed in the output); like rsync's 23 |
| 4 | `doctor` found a problem |
| 65 | refused by a safety guard (EX_DATAERR) |
| 69 | MongoDB, RabbitMQ or systemd unavailable (EX_UNAVAILABLE) |
| 70 | internal error, a bug (EX_SOFTWARE) |
| 71 | an operating-system failure, e.g. a walk process was killed (EX_OSERR) |
| 74 | the library root is missing, unreadable or empty (EX_IOERR) |
| 75 | another run holds the lock, try later (EX_TEMPFAIL); units treat it as success |
| 130 | interrupted by the user (Ctrl-C) |
"""
from __future__ import annotations

from typing import ClassVar, Final

EXIT_OK: Final = 0
EXIT_CHANGES: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
EXIT_CHECK_FAILED: Final = 4
EXIT_REFUSED: Final = 65
EXIT_UNAVAILABLE: Final = 69
EXIT_SOFTWARE: Final = 70
EXIT_OSERR: Final = 71
EXIT_ROOT_UNAVAILABLE: Final = 74
EXIT_LOCKED: Final = 75
EXIT_INTERRUPTED: Final = 130


class LibwatchError(Exception):
    """Something ended the command; the message is one line for the admin."""

    exit_code: ClassVar[int] = EXIT_USAGE

    @property
    def kind(self) -> str:
        """The class name, as `--json` error documents name the condition."""
        return type(self).__name__


# ---------------------------------------------------------------- usage (exit 2)

class UsageError(LibwatchError):
    """The command line, a setting or an argument is not acceptable."""


class ConfigError(UsageError):
    """The configuration file or a configured value is malformed."""


class NotFound(UsageError):
    """A named library (or other record) does not exist."""


class UnitError(UsageError):
    """A setting cannot be expressed in a systemd unit file (a name or path it cannot hold)."""


class CalendarError(UsageError):
    """systemd does not accept a calendar expression (args: the expression, the reason)."""

    def __str__(self) -> str:
        return f"invalid calendar expression {self.args[0]!r}: {self.args[1]}"


class ForeignCache(UsageError):
    """The cache folder belongs to another catalog; cleanup refuses to delete anything in it."""


# ---------------------------------------------------------------- guards, roots, locks

class GuardRefused(LibwatchError):
    """A safety guard refused to go on (e.g. a mass deletion)."""

    exit_code = EXIT_REFUSED


class CacheUnsafe(GuardRefused):
    """The cache folder could be changed by another user (group- or world-writable, not owned by the service
    user, or a symbolic link inside it); nothing is written or read there until the admin fixes its modes."""


class RootUnavailable(LibwatchError):
    """A library's root folder is missing, unreadable or empty while the catalog has files; nothing was changed."""

    exit_code = EXIT_ROOT_UNAVAILABLE


class RootNotListable(RootUnavailable, OSError):
    """The walk could not list the library root (missing, not a folder, no permission).

    An OSError with `errno`, `strerror` and `filename`, raised by the walk before it yields
    anything; the scan turns it into a `RootUnavailable` that says nothing was changed.
    """


class Locked(LibwatchError):
    """Another run holds the lock (try later); systemd units treat this as success."""

    exit_code = EXIT_LOCKED


class LeaseLost(Locked):
    """This run's lease was taken over by another run; it stopped before committing more."""


class WalkWorkerLost(LibwatchError):
    """A walk worker process ended without finishing its share (killed?)."""

    exit_code = EXIT_OSERR


# ---------------------------------------------------------------- services (exit 69)

class ServiceUnavailable(LibwatchError):
    """MongoDB, RabbitMQ or systemd could not be reached or used."""

    exit_code = EXIT_UNAVAILABLE


class CatalogUnavailable(ServiceUnavailable):
    """The MongoDB catalog could not be reached or answered with an error."""


class SystemdError(ServiceUnavailable):
    """systemd (systemctl, systemd-analyze) could not be used, or the libwatch executable was not found."""


class BusError(ServiceUnavailable):
    """A RabbitMQ operation failed; the message is one line for the user."""


class BrokerUnavailable(BusError):
    """The broker could not be reached or the connection was lost (connect refused, timeout, login refused,
    unknown host); the message names the URL with its password masked."""


class TopologyMismatch(BusError):
    """An exchange or queue already exists with other arguments than libwatch declares; delete it or use other
    names."""


class AccessRefused(BusError):
    """The broker refused an operation to this user (e.g. declaring queues as a publish-only user)."""


class Unroutable(BusError):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class PublishNacked(BusError):
    """The broker refused to take responsibility for a message (basic.nack)."""


class PublishFailed(ServiceUnavailable):
    """RabbitMQ could not be reached, or did not accept every rebuild request; the rest stay pending."""


class BrokerLost(ServiceUnavailable):
    """RabbitMQ could not be reached, or dropped the worker's connection; systemd restarts the unit."""


# ---------------------------------------------------------------- problems with one item

class ItemProblem(LibwatchError):
    """A problem with one file, image or message: reported, the item skipped, the run goes on.

    `reason` is the one-line reason shown in results and logs. Should one ever end a command,
    it exits `EXIT_PARTIAL` like a run that collected some.
    """

    exit_code = EXIT_PARTIAL

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageError(ItemProblem, ValueError):
    """The file is not an image Pillow can decode."""


class InvalidMessage(ItemProblem, ValueError):
    """A rebuild message body that cannot be acted on."""


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for an error that ended a command."""
    if isinstance(error, LibwatchError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_SOFTWARE
