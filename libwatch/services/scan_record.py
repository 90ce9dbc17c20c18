"""Recording: write a detected :class:`~libwatch.services.scan_detect.Plan` to the catalog and the stat index.

Every write is a named catalog function, batched and idempotent, each batch preceded by
the lease check, so a scan killed at any point and run again converges to the same catalog.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from libwatch.catalog import files as catalog_files
from libwatch.catalog import libraries as catalog_libraries
from libwatch.catalog.locks import Lease
from libwatch.services.scan_detect import FILE_CHANGES, WRITING, Plan, Progress, Spool, index_root, no_progress

Db = Database[dict[str, Any]]


def record(db: Db, plan: Plan, spool: Spool, *, run_id: str, lease: Lease, priority: int, verify: bool,
           progress: Progress = no_progress) -> None:
    """Record the plan: the files, events and collections, then the library's state and the local index.

    The changes are read from the plan's spill once per kind of write, a batch at a time.
    """
    library, check = plan.library, lease.check
    generation = library.generation + 1 if plan.writes else library.generation
    if plan.writes:
        check()
        catalog_libraries.begin_writing(db, library.name, generation)
    now = datetime.now(UTC)
    if plan.writes:
        progress.start_phase(WRITING, 2 * len(plan.changes) + len(plan.refresh), unit="record")
    catalog_files.record_changes(db, library.name, plan.changes if len(plan.changes) else (),
                                 rebuild_kinds=library.rebuild_kinds, now=now, priority=priority, before_batch=check,
                                 sent=progress.advance)
    catalog_files.record_hashes(db, library.name, plan.refresh, now=now, before_batch=check, sent=progress.advance)
    catalog_files.record_events(db, library.name, plan.changes.changes(), added=plan.collections_added,
                                removed=plan.collections_removed, run_id=run_id, now=now, before_batch=check,
                                sent=progress.advance)
    catalog_files.record_collections(db, library.name, tallies=plan.tallies, before=plan.collections_before,
                                     changes=plan.changes.changes(), rebuild_kinds=library.rebuild_kinds, now=now,
                                     before_batch=check)
    check()
    counts = plan.counts
    catalog_libraries.record_scan(db, library.name, run_id=run_id, generation=generation, counts=counts,
                                  file_changes={kind: counts[kind] for kind in FILE_CHANGES},
                                  full=verify and not plan.subtree,
                                  changed=plan.has_changes)
    if plan.writes or not plan.used_index:
        spool.commit(library=library.name, generation=generation, root=index_root(library),
                     source_generation=library.generation)
