"""Reading rebuild state in bounded ranges: every record in scope exactly once, in path order."""
from __future__ import annotations

from libwatch.catalog import rebuilds
from libwatch.catalog.rebuilds import Scope

from .conftest import Photos

PATHS = ["a.jpg", "x/1.jpg", "x/2.jpg", "x/sub/3.jpg", "x-y/4.jpg", "y/5.jpg", "y/6.jpg", "z.jpg"]


def _seed(photos: Photos) -> None:
    for i, path in enumerate(PATHS):
        photos.insert(path.encode(), f"content {i}".encode())
    for doc in photos.db.collections.find({"library": "photos"}):
        count = sum(p.rpartition("/")[0] == doc["path"] for p in PATHS)
        photos.db.collections.update_one({"_id": doc["_id"]}, {"$set": {"file_count": count}})


def _paths(pages: list[list[rebuilds.FileState]]) -> list[str]:
    return [record.path for page in pages for record in page]


def test_every_record_once_in_order_with_small_ranges(photos: Photos) -> None:
    _seed(photos)
    pages = list(rebuilds.record_pages(photos.db, Scope("photos"), page=2))
    assert _paths(pages) == sorted(PATHS)
    assert all(len(page) <= 2 for page in pages)


def test_scopes_by_path_and_collection(photos: Photos) -> None:
    _seed(photos)
    assert _paths(list(rebuilds.record_pages(photos.db, Scope("photos", path="x"), page=1))) == \
        ["x/1.jpg", "x/2.jpg", "x/sub/3.jpg"]
    assert _paths(list(rebuilds.record_pages(photos.db, Scope("photos", path="z.jpg")))) == ["z.jpg"]
    assert _paths(list(rebuilds.record_pages(photos.db, Scope("photos", collection="x"), page=1))) == \
        ["x/1.jpg", "x/2.jpg"]
    assert _paths(list(rebuilds.record_pages(photos.db, Scope("photos", collection=""), page=1))) == \
        ["a.jpg", "z.jpg"]


def test_pending_pages_skip_what_is_not_pending(photos: Photos) -> None:
    _seed(photos)
    photos.db.files.update_many({"path": {"$gte": "y"}}, {"$set": {"rebuild.cache": "done",
                                                                  "rebuild.thumbnail": "queued"}})
    pending = _paths(list(rebuilds.pending_pages(photos.db, Scope("photos"), ["cache", "thumbnail"], page=3)))
    assert pending == [p for p in sorted(PATHS) if p < "y"]
    assert rebuilds.count_pending(photos.db, Scope("photos"), ["thumbnail"]) == len(pending)
