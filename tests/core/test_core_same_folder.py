"""The per-folder fast path: a walk folds a folder the index vouches for into one `Same` item."""
from __future__ import annotations

from pathlib import Path

from libwatch import statindex
from libwatch.core.diff import Gone, Kept, NeedsHash, Record, Span, Unchanged, match
from libwatch.core.walk import DiskEntry, Same, Skip, sort_key, walk

S = 10**9
H = "xxh3-128:" + "1" * 32


def entry(path: str, size: int = 10) -> DiskEntry:
    return DiskEntry(path, path.encode(), size, 100 * S, 100 * S, 1, 1, 1)


def record(path: str, size: int = 10) -> Record:
    return Record(path, size, 100 * S, 100 * S, 1, H)


def test_a_same_folder_stands_for_its_own_records_only() -> None:
    disk = [entry("a.jpg"), Same("d", 2, 20), entry("d/e/x.jpg")]
    catalog = [record("a.jpg"), record("d/1.jpg"), record("d/2.jpg"), record("d/e/gone.jpg"), record("d/e/x.jpg"),
               record("d/z.jpg"), record("f/gone.jpg")]
    out = list(match(disk, catalog))
    assert [type(v).__name__ for v in out] == ["Unchanged", "Same", "Gone", "Unchanged", "Gone"]
    assert [v.record.path for v in out if isinstance(v, Gone)] == ["d/e/gone.jpg", "f/gone.jpg"]
    assert out[1] == Same("d", 2, 20)


def test_a_same_root_folder_and_a_new_file_below_it() -> None:
    out = list(match([Same("", 1, 10), entry("sub/new.jpg")], [record("a.jpg"), record("z.jpg")]))
    assert [type(v) for v in out] == [Same, NeedsHash]


def test_the_walk_folds_exactly_the_folders_the_check_accepts(tmp_path: Path) -> None:
    for rel in ("a.jpg", "d/b.jpg", "d/c.png", "d/e/f.jpg", "d.jpg", "g/h.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    seen: list[tuple[str, list[str]]] = []

    def only_d(folder: str, files: list[DiskEntry]) -> bool:
        seen.append((folder, [f.path for f in files]))
        return folder == "d"

    items = list(walk(tmp_path, unchanged=only_d))
    keys = [sort_key(item) for item in items]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert [(type(i).__name__, i.path) for i in items] == [
        ("DiskEntry", "a.jpg"), ("DiskEntry", "d.jpg"), ("Same", "d"), ("DiskEntry", "d/e/f.jpg"),
        ("DiskEntry", "g/h.jpg")]
    assert items[2] == Same("d", 2, len("d/b.jpg") + len("d/c.png"))
    assert ("d", ["d/b.jpg", "d/c.png"]) in seen


def test_the_walk_digest_equals_the_index_digest_of_the_same_stat(tmp_path: Path) -> None:
    for rel in ("d/b.jpg", "d/c.jpg", "e/x.jpg", "e/y.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    entries = [item for item in walk(tmp_path) if isinstance(item, DiskEntry)]
    records = [Record(e.path, e.size, e.mtime_ns, e.ctime_ns, e.inode, H, racy=e.path == "e/y.jpg") for e in entries]
    index = tmp_path / "lib.idx"
    statindex.write(index, records, library="lib", generation=3, root="/r")
    read = statindex.read(index, library="lib", generation=3, root="/r")
    assert read is not None
    assert read.folders == {"d": statindex.folder_digest(entries[:2])}  # e has a racy record: no digest
    assert [r for span in read.spans() for r in span.load()] == records
    assert statindex.folder_digest(entries[:1]) != read.folders["d"]


def test_a_walk_against_an_index_folds_the_unchanged_folders_and_matches_the_rest(tmp_path: Path) -> None:
    for rel in ("d/b.jpg", "d/c.jpg", "e/x.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    entries = [item for item in walk(tmp_path) if isinstance(item, DiskEntry)]
    index = tmp_path / "lib.idx"
    statindex.write(index, [Record(e.path, e.size, e.mtime_ns, e.ctime_ns, e.inode, H) for e in entries],
                    library="lib", generation=1, root="/r")
    (tmp_path / "e/x.jpg").write_bytes(b"longer than before")
    read = statindex.read(index, library="lib", generation=1, root="/r")
    assert read is not None

    def check(folder: str, files: list[DiskEntry]) -> bool:
        return read.folders.get(folder) == statindex.folder_digest(files)

    out = list(match(walk(tmp_path, unchanged=check), read.spans()))
    assert [(type(v).__name__, getattr(v, "reason", "")) for v in out] == [("Same", ""), ("NeedsHash", "size")]
    assert not any(isinstance(v, (Unchanged, Skip)) for v in out)


def _unread(*records: Record) -> Span:
    """A span whose records must not be needed."""
    def load() -> list[Record]:
        raise AssertionError(f"the span at {records[0].path} was decoded")

    return Span(records[0].path, load)


def _span(*records: Record) -> Span:
    return Span(records[0].path, lambda: list(records))


def test_spans_of_a_same_folder_are_dropped_unread_and_the_others_decoded() -> None:
    disk = [Same("d", 2, 20), entry("d/e/x.jpg"), entry("f/new.jpg")]
    catalog = [_unread(record("d/1.jpg")), _span(record("d/e/gone.jpg"), record("d/e/x.jpg")),
               _unread(record("d/z.jpg")), _span(record("f/old.jpg"))]
    out = list(match(disk, catalog))
    assert [(type(v).__name__, getattr(getattr(v, "record", v), "path", "")) for v in out] == [
        ("Same", "d"), ("Gone", "d/e/gone.jpg"), ("Unchanged", "d/e/x.jpg"), ("NeedsHash", ""), ("Gone", "f/old.jpg")]


def test_a_run_under_a_skipped_folder_is_kept() -> None:
    skip = Skip("d", b"d", "permission-denied", subtree=True)
    out = list(match([skip], [_span(record("d/1.jpg"), record("d/2.jpg"))]))
    assert out == [skip, Kept(record("d/1.jpg"), skip), Kept(record("d/2.jpg"), skip)]


def test_the_index_keeps_records_as_runs_of_one_folder(tmp_path: Path) -> None:
    many = [f"d/{i:05d}.jpg" for i in range(statindex._CHUNK + 1)]  # one span more than a span holds
    paths = [*many, "d/e/x.jpg", "d/z.jpg", "top.jpg"]
    index = tmp_path / "lib.idx"
    statindex.write(index, [record(p) for p in paths], library="lib", generation=1, root="/r")
    read = statindex.read(index, library="lib", generation=1, root="/r")
    assert read is not None and read.count == len(paths)
    assert [[r.path for r in span.load()] for span in read.spans()] == [
        many[:-1], many[-1:], ["d/e/x.jpg"], ["d/z.jpg"], ["top.jpg"]]
    assert read.folders["d"] == statindex.folder_digest([entry(p) for p in [*many, "d/z.jpg"]])  # across its spans
