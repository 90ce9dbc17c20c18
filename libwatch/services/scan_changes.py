"""The changes one detection found, in path order, on disk: memory holds a batch, not the change set.

Each new or changed image comes with its probe (the header read, or why it could not be).
The deletions are the gone records no rename took, spilled like the rest.
"""
from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator

from libwatch.catalog.files import Probe
from libwatch.core.diff import DELETED, Change, needs_rebuild
from libwatch.spill import Spill

Entry = tuple[Change, Probe | None]


class Changes:
    """File changes in path order with their probes; counted as they are added."""

    def __init__(self) -> None:
        self._spill: Spill[Entry] = Spill()
        self._deleted: Spill[Change] = Spill()
        self.by_type: Counter[str] = Counter()
        self.to_render = 0  # new or changed images whose renders are asked for (not hopeless)
        self.unreadable = 0  # new or changed files whose header could not be read

    def add(self, change: Change, probe: Probe | None) -> None:
        """Add the next change in path order (not a deletion: see :meth:`add_deleted`)."""
        self._spill.append((change, probe))
        self.by_type[change.type] += 1
        if needs_rebuild(change) and not (probe is not None and probe.hopeless):
            self.to_render += 1
        if probe is not None and probe.error:
            self.unreadable += 1

    def add_deleted(self, deleted: Iterable[Change]) -> None:
        """The deletions (in path order), once every other change is added."""
        for change in deleted:
            self._deleted.append(change)
        self.by_type[DELETED] = len(self._deleted)

    def __len__(self) -> int:
        return len(self._spill) + len(self._deleted)

    def __iter__(self) -> Iterator[Entry]:
        """Every change with its probe (None for those not probed), in path order; can be read again."""
        return heapq.merge(self._spill, ((change, None) for change in self._deleted), key=_path)

    def changes(self) -> Iterator[Change]:
        return (change for change, _ in self)


def _path(entry: Entry) -> str:
    return entry[0].path
