"""The end-to-end property: whatever happens to a tree, diff reports it, scan records it, and then
the catalog equals the disk and a diff finds nothing. Real files, the real SecantusDB, the service API."""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Final

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from libwatch.catalog import libraries as catalog_libraries
from libwatch.core.paths import collection_of
from libwatch.services import libraries as library_service
from libwatch.services import scan as service
from libwatch.services.scan import ScanOptions

from .conftest import OLD_NS, changes_of, present_in_catalog, present_on_disk

FOLDERS: Final = ("", "a", "b", "a/c")
PATHS: Final = tuple(f"{folder}/{name}" if folder else name for folder in FOLDERS
                     for name in ("p.jpg", "q.jpg", "r.png"))
# Few contents, several of one size: same-size edits and duplicate contents (ambiguous renames) are common.
CONTENTS: Final = (b"A" * 8, b"B" * 8, b"C" * 8, b"D" * 16, b"E" * 16, b"F" * 3)
KEEPER: Final = "README.txt"  # not an image: keeps the root non-empty so the empty-root guard stays out of it

Disk = dict[str, tuple[bytes, int]]  # path -> (content, mtime_ns)
names = itertools.count()


class Tree:
    """A library folder and its model: what is on disk, and which paths any operation touched."""

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.root, self.disk, self.dirty, self.clock = root, {}, set[str](), itertools.count(1)
        (root / KEEPER).write_text("not an image\n")
        for path, content in files.items():
            self.write(path, content)
        self.dirty.clear()

    def _mtime(self) -> int:
        return OLD_NS + next(self.clock) * 10**9  # distinct and old: never racy, never equal

    def write(self, path: str, content: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        mtime = self._mtime()
        os.utime(target, ns=(mtime, mtime))
        self.disk[path] = (content, mtime)
        self.dirty.add(path)

    def touch(self, path: str) -> None:
        mtime = self._mtime()
        os.utime(self.root / path, ns=(mtime, mtime))
        self.disk[path] = (self.disk[path][0], mtime)
        self.dirty.add(path)

    def move(self, old: str, new: str) -> None:
        (self.root / new).parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.root / old, self.root / new)
        self.disk[new] = self.disk.pop(old)
        self.dirty |= {old, new}

    def delete(self, path: str) -> None:
        (self.root / path).unlink()
        del self.disk[path]
        self.dirty.add(path)

    def remove_folder(self, folder: str) -> None:
        shutil.rmtree(self.root / folder, ignore_errors=True)
        for path in [p for p in self.disk if p.startswith(folder + "/")]:
            self.delete_from_model(path)

    def delete_from_model(self, path: str) -> None:
        del self.disk[path]
        self.dirty.add(path)


def _mutate(data: st.DataObject, tree: Tree) -> None:
    present = sorted(tree.disk)
    free = [p for p in PATHS if p not in tree.disk]
    choices = ["add"] * bool(free) + ["edit", "touch", "delete"] * bool(present) + ["move"] * bool(present and free)
    choices += ["rmdir"] * any(collection_of(p) for p in present)
    kind = data.draw(st.sampled_from(choices), label="operation")
    if kind == "add":
        tree.write(data.draw(st.sampled_from(free)), data.draw(st.sampled_from(CONTENTS)))
    elif kind == "edit":
        path = data.draw(st.sampled_from(present))
        tree.write(path, data.draw(st.sampled_from([c for c in CONTENTS if c != tree.disk[path][0]])))
    elif kind == "touch":
        tree.touch(data.draw(st.sampled_from(present)))
    elif kind == "delete":
        tree.delete(data.draw(st.sampled_from(present)))
    elif kind == "move":
        tree.move(data.draw(st.sampled_from(present)), data.draw(st.sampled_from(free)))
    else:
        tree.remove_folder(data.draw(st.sampled_from(sorted({collection_of(p) for p in present} - {""}))))


def _check_explains(changes: set[tuple[str, ...]], before: Disk, after: Disk, dirty: set[str]) -> None:
    """The reported changes are exactly what the mutations did (renames may pair any equal contents)."""
    kinds = Counter(c[0] for c in changes)
    both = before.keys() & after.keys()
    expected_in_place = {("modified" if before[p][0] != after[p][0] else "touched", p)
                         for p in both if before[p][0] != after[p][0] or p in dirty}
    assert {c for c in changes if c[0] in ("modified", "touched")} == expected_in_place
    renamed = {(c[2], c[1]) for c in changes if c[0] == "renamed"}
    deleted = {c[1] for c in changes if c[0] == "deleted"}
    added = {c[1] for c in changes if c[0] == "added"}
    assert deleted | {old for old, _ in renamed} == before.keys() - after.keys()
    assert added | {new for _, new in renamed} == after.keys() - before.keys()
    assert len(renamed) == kinds["renamed"]  # each path in at most one pair
    assert all(before[old][0] == after[new][0] for old, new in renamed)
    unpaired_gone = Counter(before[p][0] for p in deleted)
    assert not any(after[p][0] in unpaired_gone for p in added), "a deletion and an addition of equal content"
    folders_before = {collection_of(p) for p in before}
    folders_after = {collection_of(p) for p in after}
    assert {c[1] for c in changes if c[0] == "collection_added"} == folders_after - folders_before
    assert {c[1] for c in changes if c[0] == "collection_removed"} == folders_before - folders_after


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.dictionaries(st.sampled_from(PATHS), st.sampled_from(CONTENTS), max_size=8),
       steps=st.integers(min_value=1, max_value=8), data=st.data())
def test_scan_then_diff_finds_nothing_and_the_catalog_is_the_disk(db: Any, settings: Any, initial: dict[str, bytes],
                                                                   steps: int, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="lwprop") as folder:
        root = Path(folder)
        tree = Tree(root, initial)
        name = f"prop{next(names)}"
        library_service.add(db, name, root)
        options = ScanOptions(allow_mass_delete=True)

        def library() -> Any:
            return catalog_libraries.get(db, name)

        first = service.scan(db, settings, library(), options).document
        assert changes_of(first) == {("added", p) for p in initial} | {
            ("collection_added", f) for f in {collection_of(p) for p in initial}}
        before = dict(tree.disk)
        tree.dirty.clear()
        for _ in range(steps):
            _mutate(data, tree)

        preview = service.diff(db, settings, library(), options).document
        _check_explains(changes_of(preview), before, tree.disk, tree.dirty)
        recorded = service.scan(db, settings, library(), options).document
        assert changes_of(recorded) == changes_of(preview)

        after = service.diff(db, settings, library(), options)
        assert (after.exit_code, after.document["changes"]) == (0, [])
        assert present_in_catalog(db, name) == present_on_disk(root)
        gone = before.keys() - tree.disk.keys() - {c[2] for c in changes_of(recorded) if c[0] == "renamed"}
        missing = {d["path"] for d in db.files.find({"library": name, "status": "missing"})}
        assert gone <= missing
