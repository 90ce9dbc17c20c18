"""Managing libraries: the service behind `libwatch library ...`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pymongo.database import Database

from libwatch.catalog import libraries as repo
from libwatch.errors import UsageError
from libwatch.library import Library, check_name, name_from_folder


def resolve_root(path: str | Path) -> str:
    """The absolute, symlink-resolved folder; refuses a missing path or a non-folder."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise UsageError(f"{path}: no such folder")
    if not resolved.is_dir():
        raise UsageError(f"{path}: not a folder")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise UsageError(f"{path}: folder is not readable")
    return str(resolved)


def add(db: Database[dict[str, Any]], name: str | None, path: str | Path, **options: Any) -> Library:
    """Register a library; without a name one is derived from the folder."""
    root = resolve_root(path)
    existing = repo.find_by_path(db, root)
    if existing is not None:
        raise UsageError(f"{root} is already the library {existing.name!r}")
    if name is None:
        name = name_from_folder(Path(root).name, {lib.name for lib in repo.all_libraries(db)})
    library = Library(name=check_name(name), path=root, **{k: v for k, v in options.items() if v is not None})
    return repo.insert(db, library)


def find_for_target(db: Database[dict[str, Any]], target: str) -> Library | None:
    """The library a scan target names: a library name, or a folder that is a library's root."""
    if "/" not in target and target not in (".", ".."):
        try:
            return repo.get(db, target)
        except UsageError:
            if not Path(target).is_dir():
                raise
    return repo.find_by_path(db, str(Path(target).expanduser().resolve()))


_SETTABLE = {
    "path": "path", "include": "include", "exclude": "exclude", "hidden": "hidden",
    "follow_symlinks": "follow_symlinks", "on_calendar": "schedule.on_calendar", "enabled": "schedule.enabled",
    "paused": "schedule.paused", "watch": "watch.enabled", "rebuild_cache": "rebuild.cache",
    "rebuild_thumbnails": "rebuild.thumbnails", "retention_days": "retention_days", "max_delete": "max_delete",
}


def set_options(db: Database[dict[str, Any]], name: str, **options: Any) -> Library:
    """Change some of a library's settings; options left None are untouched."""
    changes = {key: value for key, value in options.items() if value is not None}
    unknown = set(changes) - set(_SETTABLE)
    if unknown:
        raise UsageError(f"cannot set {', '.join(sorted(unknown))}")
    if "path" in changes:
        changes["path"] = resolve_root(changes["path"])
    if not changes:
        return repo.get(db, name)
    fields = {_SETTABLE[key]: list(value) if isinstance(value, tuple) else value for key, value in changes.items()}
    return repo.update(db, name, fields)


def describe(library: Library, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON form of a library for `library list/show`."""
    doc = library.to_document()
    doc = {"name": doc.pop("_id"), **doc}
    if counts is not None:
        doc["counts"] = counts
    return doc


def counts(db: Database[dict[str, Any]], name: str) -> dict[str, int]:
    return {
        "files": db.files.count_documents({"library": name, "status": "present"}),
        "missing": db.files.count_documents({"library": name, "status": "missing"}),
        "collections": db.collections.count_documents({"library": name, "missing_since": None}),
    }

