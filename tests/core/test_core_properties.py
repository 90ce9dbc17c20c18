"""Hypothesis properties: the engine over an in-memory library, and the walk over real trees."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libwatch.core.diff import (
    ADDED,
    CORRUPTED,
    DELETED,
    MODIFIED,
    RENAMED,
    TOUCHED,
    Change,
    Gone,
    NeedsHash,
    Record,
    Unchanged,
    classify,
    is_racy,
    match,
)
from libwatch.core.hashing import HASH_PREFIX, Fingerprint
from libwatch.core.walk import DiskEntry, walk

G = 10**9  # the model filesystem's timestamp granularity: coarse, so racy cases really occur
FOLDERS = ("", "a", "a/b", "a-b", "c")
NAMES = ("x.jpg", "y.jpg", "x-1.jpg", "é.jpg")
CONTENTS = (b"", b"one", b"two", b"six", b"longer content")  # few, so same-size edits and duplicates happen


@dataclass
class File:
    content: bytes
    mtime: int
    ctime: int
    inode: int


@dataclass
class Model:
    """A disk (path -> File) on a coarse clock and the catalog that scans keep in step with it."""

    disk: dict[str, File] = field(default_factory=dict)
    catalog: dict[str, Record] = field(default_factory=dict)
    clock: int = 1000 * G
    inodes: int = 0

    def stamp(self) -> int:
        return self.clock // G * G

    def new_inode(self) -> int:
        self.inodes += 1
        return self.inodes

    def entries(self) -> list[DiskEntry]:
        return [DiskEntry(p, p.encode(), len(f.content), f.mtime, f.ctime, f.inode, 1, 1)
                for p, f in sorted(self.disk.items())]

    def records(self) -> list[Record]:
        return [self.catalog[p] for p in sorted(self.catalog)]

    def fingerprint(self, e: DiskEntry) -> Fingerprint:
        return Fingerprint(e, HASH_PREFIX + xxhash.xxh3_128(self.disk[e.path].content).hexdigest())

    def diff(self) -> tuple[list[Change], list[Unchanged], object]:
        started = self.clock
        needs: list[NeedsHash] = []
        gone: list[Gone] = []
        unchanged: list[Unchanged] = []
        for v in match(self.entries(), self.records()):
            if isinstance(v, NeedsHash):
                needs.append(v)
            elif isinstance(v, Gone):
                gone.append(v)
            else:
                assert isinstance(v, Unchanged), v  # the model has no unreadable paths
                unchanged.append(v)
        result = classify([(n, self.fingerprint(n.entry)) for n in needs], gone,
                          scan_started_ns=started, granularity_ns=G)
        assert result.skipped == ()
        return list(result.changes), unchanged, result

    def scan(self) -> list[Change]:
        """Diff, then apply the result to the catalog as the service would."""
        changes, unchanged, result = self.diff()
        started = self.clock
        for c in changes:
            if c.type in (DELETED, RENAMED):
                del self.catalog[c.old_path or c.path]
            if c.type != DELETED:
                e = c.entry
                assert e is not None
                old_id = c.record.id if c.record is not None else c.path
                self.catalog[c.path] = Record(c.path, e.size, e.mtime_ns, e.ctime_ns, e.inode, c.hash, c.racy, old_id)
        for conf in result.confirmed:  # type: ignore[attr-defined]
            self.catalog[conf.record.path] = conf.record._replace(hash=conf.fingerprint.hash, racy=conf.racy)
        for u in unchanged:
            if is_racy(u.entry, started, G):
                self.catalog[u.record.path] = u.record._replace(racy=True)
        return changes


adds = st.tuples(st.just("add"), st.sampled_from(FOLDERS), st.sampled_from(NAMES), st.sampled_from(CONTENTS))
ops = st.one_of(
    adds,
    st.tuples(st.just("edit"), st.integers(0, 50), st.sampled_from(CONTENTS)),
    st.tuples(st.just("edit-keep-mtime"), st.integers(0, 50), st.sampled_from(CONTENTS)),
    st.tuples(st.just("touch"), st.integers(0, 50)),
    st.tuples(st.just("move"), st.integers(0, 50), st.sampled_from(FOLDERS), st.sampled_from(NAMES)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("rmdir"), st.sampled_from(FOLDERS[1:])),
    st.tuples(st.just("wait"), st.integers(0, 2 * G)),
    st.tuples(st.just("scan")),
)


def _free(m: Model, path: str) -> bool:
    """No file has ``path`` and no file lies under it (so it is not a folder either)."""
    return path not in m.disk and not any(p.startswith(path + "/") for p in m.disk)


def _add(m: Model, folder: str, name: str, content: bytes) -> None:
    path = f"{folder}/{name}".lstrip("/")
    if _free(m, path):
        m.disk[path] = File(content, m.stamp(), m.stamp(), m.new_inode())


def _wait(m: Model, ns: int) -> None:
    m.clock += ns


def _scan(m: Model) -> None:
    m.scan()


def _rmdir(m: Model, folder: str) -> None:
    for p in [p for p in m.disk if p.startswith(folder + "/")]:
        del m.disk[p]


def _edit(m: Model, pick: str, content: bytes) -> None:
    f = m.disk[pick]
    f.content, f.mtime, f.ctime = content, m.stamp(), m.stamp()


def _edit_keep_mtime(m: Model, pick: str, content: bytes) -> None:
    """Write, then `touch -r` back: only ctime (and racy) can tell."""
    f = m.disk[pick]
    f.content, f.ctime = content, m.stamp()


def _touch(m: Model, pick: str) -> None:
    m.disk[pick].mtime = m.disk[pick].ctime = m.stamp()


def _move(m: Model, pick: str, folder: str, name: str) -> None:
    target = f"{folder}/{name}".lstrip("/")
    if _free(m, target):
        f = m.disk.pop(pick)
        f.ctime = m.stamp()
        m.disk[target] = f


def _delete(m: Model, pick: str) -> None:
    del m.disk[pick]


# Operations on the model, called with the op's arguments.
ON_THE_MODEL: dict[str, Callable[..., None]] = {"add": _add, "wait": _wait, "scan": _scan, "rmdir": _rmdir}
# Operations on one file, picked by the op's first argument (an index, modulo the number of files).
ON_A_FILE: dict[str, Callable[..., None]] = {
    "edit": _edit, "edit-keep-mtime": _edit_keep_mtime, "touch": _touch, "move": _move, "delete": _delete}


def mutate(m: Model, op: tuple) -> None:  # type: ignore[type-arg]
    kind, *args = op
    m.clock += 10**7  # every operation takes a little time
    if kind in ON_THE_MODEL:
        ON_THE_MODEL[kind](m, *args)
        return
    paths = sorted(m.disk)
    if paths:  # on an empty disk there is no file to pick
        ON_A_FILE[kind](m, paths[args[0] % len(paths)], *args[1:])


def content_hash(data: bytes) -> str:
    return HASH_PREFIX + xxhash.xxh3_128(data).hexdigest()


@settings(max_examples=300, deadline=None)
@given(initial=st.lists(adds, min_size=1, max_size=10), gap=st.sampled_from([0, 3 * G]),
       mutations=st.lists(ops, max_size=25))
def test_scan_converges_and_reports_the_mutations(initial: list, gap: int, mutations: list) -> None:  # type: ignore[type-arg]
    m = Model()
    for op in initial:
        mutate(m, op)
    m.scan()
    # 0: mutations land within the timestamp granularity (racy records); 3 s: a
    # second scan clears the racy flags, so only the stat fields can tell.
    m.clock += gap
    m.scan()
    before = {p: (r.hash, r.size, r.mtime_ns, r.ctime_ns, r.inode) for p, r in m.catalog.items()}
    for op in mutations:
        if op[0] != "scan":
            mutate(m, op)
    changes = m.scan()

    assert_converged(m)
    assert_changes_match_mutations(changes, before, m.disk)


def assert_converged(m: Model) -> None:
    """The catalog equals the disk, exactly, and stays so: a second diff and a later scan report nothing."""
    assert {p: (r.size, r.hash, r.mtime_ns) for p, r in m.catalog.items()} == {
        p: (len(f.content), content_hash(f.content), f.mtime) for p, f in m.disk.items()}
    # A second diff reports nothing, however soon it runs (racy records are re-hashed and confirmed).
    assert m.diff()[0] == []
    m.clock += 5 * G
    assert m.scan() == []
    assert not any(r.racy for r in m.catalog.values())


Before = dict[str, tuple[str | None, int, int, int, int]]  # path -> (hash, size, mtime, ctime, inode)


def assert_changes_match_mutations(changes: list[Change], before: Before, disk: dict[str, File]) -> None:
    """Each reported change corresponds to what the mutations did, and each mutation is reported."""
    by_path = {c.path: c for c in changes}
    assert len(by_path) == len(changes)
    for c in changes:
        assert_change_is_true(c, before, disk)
    for path, f in disk.items():
        assert_file_is_reported(path, f, before, by_path)
    sources = {c.old_path for c in changes if c.type == RENAMED}
    for path in before:
        if path not in disk:
            assert path in sources or by_path[path].type == DELETED


def assert_change_is_true(c: Change, before: Before, disk: dict[str, File]) -> None:
    assert c.type != CORRUPTED
    if c.type == ADDED:
        assert c.path not in before and c.path in disk
    elif c.type == RENAMED:
        assert c.old_path in before and c.old_path not in disk and c.path not in before
        assert before[c.old_path][0] == c.hash  # type: ignore[index]
    elif c.type == DELETED:
        assert c.path in before and c.path not in disk
    elif c.type == MODIFIED:
        assert before[c.path][0] != c.hash
    else:
        assert c.type == TOUCHED and before[c.path][0] == c.hash


def assert_file_is_reported(path: str, f: File, before: Before, by_path: dict[str, Change]) -> None:
    if path not in before:
        assert by_path[path].type in (ADDED, RENAMED)
    elif before[path][0] != content_hash(f.content):
        assert by_path[path].type == MODIFIED
    elif before[path][1:] != (len(f.content), f.mtime, f.ctime, f.inode):
        assert by_path[path].type == TOUCHED
    else:
        assert path not in by_path


# Pieces chosen to collide in naive orders: "-" and "." sort below "/", NFC and NFD spellings, a backslash.
name_pieces = st.sampled_from(["a", "b", "A", "-", ".", " ", "\u00e9", "e\u0301", "\u65e5", "_", "0", "\\"])
names = st.lists(name_pieces, min_size=1, max_size=4).map("".join).filter(lambda n: not n.startswith("."))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.tuples(st.lists(names, max_size=2), names,
                               st.sampled_from([".jpg", ".PNG", ".txt", ""]), st.booleans()), max_size=15))
def test_walk_yields_exactly_the_images_in_ascending_order(files: set) -> None:  # type: ignore[type-arg]
    root = tempfile.mkdtemp(prefix="lwc").encode()
    try:
        images: set[bytes] = set()
        for folders, name, ext, bad_byte in files:
            leaf = name.encode() + (b"\xff" if bad_byte else b"") + ext.encode()  # \xff: not UTF-8
            rel = b"/".join([p.encode() for p in folders] + [leaf])
            try:
                os.makedirs(os.path.dirname(root + b"/" + rel), exist_ok=True)
                with open(root + b"/" + rel, "xb") as fh:
                    fh.write(b"x")
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                continue  # the name is already taken by a folder or a file
            if ext.lower() in (".jpg", ".png"):
                images.add(rel)
        got = list(walk(root))
    finally:
        shutil.rmtree(root)
    assert all(isinstance(e, DiskEntry) for e in got)
    keys = [e.path for e in got]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert {e.raw for e in got} == images  # type: ignore[union-attr]
