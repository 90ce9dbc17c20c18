"""The scan use case: detect → record → report, under the library's lease, as one recorded run.

`scan_service.diff` detects only; `scan` detects, records (`scan_record`), publishes the
rebuild requests it made pending (when a broker is configured and publishing is wanted)
and returns a :class:`~libwatch.services.scan_result.ScanResult`. `run` is what the
command calls: the targets checked (and unknown folders registered) before anything
else is written, each scanned, and the path units' folder lists refreshed.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from libwatch import statindex
from libwatch.catalog import libraries as catalog_libraries
from libwatch.catalog import runs
from libwatch.catalog.locks import Lease
from libwatch.config import Settings
from libwatch.errors import Locked, ServiceUnavailable, UsageError
from libwatch.library import Library, check_name
from libwatch.services import libraries as library_service
from libwatch.services.scan_detect import (
    PUBLISHING,
    Progress,
    ScanOptions,
    check_guards,
    detect,
    index_file,
    no_progress,
)
from libwatch.services.scan_record import record
from libwatch.services.scan_result import ScanResult, from_plan

log = logging.getLogger("libwatch.scan")

Db = Database[dict[str, Any]]
# (catalog, library, progress: called with the requests published so far) -> {"published", "pending"}
Publish = Callable[[Db, Library, Callable[[int], None]], dict[str, int]]


def diff(db: Db, settings: Settings, library: Library, options: ScanOptions, *,
         progress: Progress = no_progress, subtree: str = "") -> ScanResult:
    """What a scan would record, writing nothing; exit code 1 when there are changes."""
    plan = detect(db, settings, library, options, progress=progress, subtree=subtree)
    return from_plan(plan, run_id=None, dry_run=True,
                     rebuild={"requested": plan.rebuilds, "published": 0, "pending": 0},
                     exit_code=1 if plan.has_changes else 0)


def _skipped_run(db: Db, library: Library, options: ScanOptions, why: str) -> ScanResult:
    run_id = runs.record_skipped(db, "scan", library.name, options.trigger, why)
    return ScanResult(library=library.name, root=library.path, run_id=run_id, dry_run=options.dry_run, counts={},
                      skipped_run=why)


def scan(db: Db, settings: Settings, library: Library, options: ScanOptions, *,
         progress: Progress = no_progress, publish: Publish | None = None, subtree: str = "") -> ScanResult:
    """Detect, record and publish (with ``publish``, unless ``options.publish`` is off), as one recorded run.

    With ``subtree`` (a folder relative to the root, see :func:`subtree_of`) only that folder
    is scanned, and the run records it.

    Raises :class:`~libwatch.errors.Locked` when another run holds the library (recorded as a skipped
    run naming the holder; with ``options.skip_if_locked`` that skip is returned instead),
    :class:`~libwatch.errors.GuardRefused` for a mass deletion, and
    :class:`~libwatch.errors.RootUnavailable`; the run is recorded as failed then.
    """
    if library.paused or (not library.enabled and options.trigger != "manual"):
        why = "paused" if library.paused else "disabled"
        log.warning("library %s is %s: scan skipped", library.name, why)
        return _skipped_run(db, library, options, why)
    if options.dry_run:
        preview = diff(db, settings, library, options, progress=progress, subtree=subtree)
        return dataclasses.replace(preview, exit_code=0)
    with runs.recorded(db, "scan", library.name, options.trigger, **({"subtree": subtree} if subtree else {})) as run:
        lease = Lease(db, f"scan:{library.name}", run.run_id, settings.lease_s)
        try:
            lease.acquire(wait_s=options.wait_lock_s)
        except Locked as error:  # another scan of this library runs: a skipped run, naming the holder
            why = f"skipped: another scan runs ({error})"
            run.end(runs.SKIPPED, why)
            if not options.skip_if_locked:
                raise  # the error line says it: no warning line besides
            log.warning("library %s: %s", library.name, why)
            return ScanResult(library=library.name, root=library.path, run_id=run.run_id, dry_run=False, counts={},
                              skipped_run=why)
        spool = statindex.Spool(index_file(settings, library))
        try:
            library = catalog_libraries.get(db, library.name)  # fresh state, now that we hold the lease
            plan = detect(db, settings, library, options, progress=progress, spool=spool, subtree=subtree)
            check_guards(plan, options)
            run.counts = plan.counts
            record(db, plan, spool, run_id=run.run_id, lease=lease, priority=options.priority, verify=options.verify,
                   progress=progress)
            rebuild = {"requested": plan.rebuilds, "published": 0, "pending": plan.rebuilds}
            exit_code, publish_error = 0, None
            if publish is not None and options.publish:
                progress.start_phase(PUBLISHING, unit="request")
                rebuild, exit_code, publish_error = _publish(db, library, rebuild, lambda db, lib: publish(
                    db, lib, progress.advance))
            if plan.counts["errors"]:  # per-file problems: the run is partial, says how many (exit 0 stays)
                run.problem(f"{plan.counts['errors']:,} file{'s' if plan.counts['errors'] != 1 else ''} could not be "
                            "read or identified (libwatch failed lists them)")
            if publish_error:  # the changes are recorded: the run keeps its counts and says what failed
                run.problem(f"publishing failed: {publish_error}")
            return from_plan(plan, run_id=run.run_id, dry_run=False, rebuild=rebuild, exit_code=exit_code,
                             publish_error=publish_error)
        finally:
            spool.discard()
            lease.release()


def _publish(db: Db, library: Library, rebuild: dict[str, int],
             publish: Callable[[Db, Library], dict[str, int]]) -> tuple[dict[str, int], int, str | None]:
    try:
        outcome = publish(db, library)
    except ServiceUnavailable as error:
        log.error("%s; the rebuild requests stay pending and the next run publishes them", error)
        return {**rebuild, "published": 0}, error.exit_code, str(error)
    return {"requested": rebuild["requested"], "published": outcome.get("published", 0),
            "pending": outcome.get("pending", 0)}, 0, None


@dataclass(frozen=True, slots=True)
class Target:
    """A scan target resolved: a registered library (``subtree``: one folder of it, relative
    to its root), or a folder to register as a new library (``library`` None)."""

    library: Library | None
    folder: str = ""
    subtree: str = ""
    given: str = ""  # the folder as named, which may reach it through a symbolic link (kept as the library's link)


def targets(db: Db, names: Sequence[str], *, all_: bool, name: str | None, path: str | None = None) -> list[Target]:
    """Resolve every target before anything is written; raises :class:`~libwatch.errors.UsageError`.

    A target is a library name, a library's root, a folder inside a library (that subtree
    of it), or a folder that is no library yet (registered by :func:`run`, under ``name`` if
    given: then it must be the only one). ``path`` (relative) narrows the one target to a folder of it.
    """
    if all_:
        if names or path is not None:
            raise UsageError("give library names or --all, not both" if names
                             else "--path needs one library, not --all")
        return [Target(lib) for lib in catalog_libraries.all_libraries(db) if lib.enabled]
    if not names:
        raise UsageError("name a library or folder to scan, or use --all (see `libwatch library list`)")
    # Read only when a target is no library's name or root: a scan of a named library saves the round trip.
    libraries = functools.cache(lambda: catalog_libraries.all_libraries(db))
    resolved = [_resolve(db, target, libraries) for target in names]
    if path is not None:
        if len(resolved) != 1 or resolved[0].library is None:
            raise UsageError("--path names a folder of one registered library: libwatch scan LIBRARY --path FOLDER")
        library = resolved[0].library
        if os.path.isabs(path):
            raise UsageError(f"--path {path}: give the folder relative to the root of {library.name}")
        resolved = [Target(library, subtree=subtree_of(library, os.path.join(library.path, resolved[0].subtree, path)))]
    new = [target for target in resolved if target.library is None]
    if name is not None:
        if len(new) != 1:
            raise UsageError("--name names one folder that is not a library yet; "
                             f"{len(new)} of the targets are new folders")
        if any(library.name == check_name(name) for library in libraries()):
            raise UsageError(f"a library named {name!r} already exists")
    if len({target.folder for target in new}) != len(new):
        raise UsageError("the same new folder is named twice")
    return resolved


def _resolve(db: Db, target: str, libraries: Callable[[], list[Library]]) -> Target:
    library = library_service.find_for_target(db, target)
    if library is not None:
        return Target(library)
    folder = library_service.resolve_root(target)
    containing = [lib for lib in libraries() if _inside(folder, os.path.realpath(lib.path))]
    if containing:  # the innermost library holds it (nested roots are refused, but may exist)
        library = max(containing, key=lambda lib: len(lib.path))
        return Target(library, subtree=subtree_of(library, folder))
    return Target(None, folder, given=target)


def _inside(folder: str, root: str) -> bool:
    return folder != root and folder.startswith(root.rstrip("/") + "/")


def subtree_of(library: Library, folder: str) -> str:
    """The path of ``folder`` relative to the library's root ("" for the root itself), links resolved.

    Raises :class:`~libwatch.errors.UsageError` unless it is a folder inside the library.
    """
    real, root = os.path.realpath(folder), os.path.realpath(library.path)
    if real != root and not _inside(real, root):
        raise UsageError(f"{folder} is not inside library {library.name} ({library.path})")
    if not os.path.isdir(real):
        raise UsageError(f"{folder}: no such folder in library {library.name}")
    return "" if real == root else os.path.relpath(real, root)


def _register(db: Db, target: Target, name: str | None) -> Library:
    if target.library is not None:
        return target.library
    return library_service.add(db, name, target.given or target.folder)


def run(db: Db, settings: Settings, resolved: Sequence[Target], options: ScanOptions, *, name: str | None = None,
        rescan_on_change: bool = False, progress: Progress = no_progress) -> list[ScanResult]:
    """Scan each target in turn (registering new folders first) and refresh the watched folders.

    A target inside a library scans that subtree of it; it never registers a second library.

    Rebuild requests are published when a broker is configured and ``options.publish``;
    otherwise they stay pending for `libwatch rebuild` or the next scan.
    """
    libraries = [(target.library is None, _register(db, target, name), target.subtree) for target in resolved]
    publish = _publisher(settings)
    results = []
    for registered, library, subtree in libraries:
        if rescan_on_change:
            from libwatch.services.rescan import scan_until_quiet  # the path units' way

            result = scan_until_quiet(db, settings, library, options, progress=progress, publish=publish,
                                      subtree=subtree)
        else:
            result = scan(db, settings, library, options, progress=progress, publish=publish, subtree=subtree)
        results.append(dataclasses.replace(result, registered=registered, warnings=_refresh_watch(db, library, result)))
    return results


def _publisher(settings: Settings) -> Publish | None:
    if settings.amqp_url is None:
        return None
    from libwatch.services import outbox  # imported here: pika only when a broker is configured

    return lambda db, library, progress: outbox.publish_pending(db, settings, library=library.name, progress=progress)


def _refresh_watch(db: Db, library: Library, result: ScanResult) -> tuple[str, ...]:
    """Refresh what the library's path unit watches after new or vanished folders; returns the problems."""
    counts = result.counts
    if result.dry_run or not (counts.get("collections_added") or counts.get("collections_removed")):
        return ()
    # Imported here: only a scan that found new or vanished folders needs it.
    from libwatch.services import units as units_service

    refreshed = units_service.refresh_watch(db, catalog_libraries.get(db, library.name))
    return tuple(f"could not refresh the watched folders: {line}" for line in refreshed.problems)
