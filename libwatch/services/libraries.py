"""Managing libraries: the service behind `libwatch library ...`.

Two rules about roots hold everywhere a root is resolved:

- **A symlinked root is not followed silently.** A root is stored resolved (`path`), and
  when the folder was given through a symbolic link, that link too (`link`). A library
  whose link now points elsewhere is refused (scan, diff, `library add`/`scan` of the
  link), naming both paths, until `library set NAME --path LINK` accepts the new target.
- **No nested libraries by accident.** A root inside or above another library's root is
  refused, unless `--allow-nested` and the outer library's exclusions leave the inner
  root out of its walk, so that every file belongs to exactly one library.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pymongo.database import Database

from libwatch.catalog import libraries as repo
from libwatch.catalog.locks import Lease
from libwatch.config import Settings
from libwatch.core.walk import Exclusions
from libwatch.errors import UsageError
from libwatch.library import (
    DEFAULT_EXCLUDES,
    Library,
    check_globs,
    check_max_delete,
    check_name,
    check_retention_days,
    name_from_folder,
    parse_compare,
)
from libwatch.result import Result

Db = Database[dict[str, Any]]


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


def link_of(path: str | Path, root: str) -> str | None:
    """The absolute path as given when it reaches ``root`` through a symbolic link, else None."""
    given = os.path.abspath(Path(path).expanduser())
    return None if given == root else given


def check_link(library: Library) -> None:
    """Refuse a library whose root was given through a link that now points elsewhere (see the module's rules)."""
    if library.link is None:
        return
    now = os.path.realpath(library.link)
    if now != library.path:
        raise UsageError(f"library {library.name} was registered through {library.link} -> {library.path}, which now "
                         f"points to {now}; nothing was changed. To follow the link: libwatch library set "
                         f"{library.name} --path {library.link}")


def _relative(inner: str, outer: str) -> str | None:
    """``inner`` relative to ``outer`` when it lies strictly inside it, else None."""
    prefix = outer.rstrip("/") + "/"
    return inner[len(prefix):] if inner.startswith(prefix) else None


def _leaves_out(outer: Library, relative: str) -> bool:
    """Whether a scan of ``outer`` never enters the folder at ``relative`` (excluded, or hidden and not tracked)."""
    hidden = not outer.hidden and any(part.startswith(".") for part in relative.split("/"))
    return hidden or Exclusions(outer.excludes).covers(relative)


def nesting_problems(library: Library, others: Iterable[Library]) -> list[str]:
    """Why ``library`` overlaps another library, one line each (empty when every file is in exactly one library)."""
    problems = []
    for other in others:
        if other.name == library.name:
            continue
        if other.path == library.path:
            problems.append(f"{library.path} is already the library {other.name}")
        for inner, outer in ((library, other), (other, library)):
            relative = _relative(inner.path, outer.path)
            if relative is not None and not _leaves_out(outer, relative):
                problems.append(f"{inner.path} (library {inner.name}) is inside {outer.path} (library {outer.name}), "
                                f"which does not exclude {relative!r}: its files would be in both")
    return problems


def overlaps(libraries: Sequence[Library]) -> list[str]:
    """Every overlap among ``libraries`` (files that two of them would hold), one line each (for `doctor`)."""
    found = []
    for i, library in enumerate(libraries):
        found += nesting_problems(library, libraries[i + 1:])
    return found


_NESTED_HINT: Final = ("; `libwatch scan FOLDER` scans a folder of a library as part of it; to keep them separate "
                       "libraries, exclude the inner folder from the outer library and add it with --allow-nested")


def _check_nesting(library: Library, others: Sequence[Library], *, allow_nested: bool) -> None:
    """Refuse a root that shares files with another library, and one nested at all unless ``allow_nested``."""
    problems = nesting_problems(library, others)
    if problems:
        raise UsageError(problems[0] + _NESTED_HINT)
    if allow_nested:
        return
    for other in others:
        if other.name != library.name and (_relative(library.path, other.path) is not None
                                           or _relative(other.path, library.path) is not None):
            raise UsageError(f"{library.path} and the library {other.name} ({other.path}) are nested{_NESTED_HINT}")


def add(db: Db, name: str | None, path: str | Path, *, allow_nested: bool = False, **options: Any) -> Library:
    """Register a library; without a name one is derived from the folder. Raises UsageError for a bad setting."""
    root = resolve_root(path)
    link = link_of(path, root)
    others = repo.all_libraries(db)
    for other in others:
        if other.path == root or (link is not None and other.link == link):
            check_link(other)
            raise UsageError(f"{root} is already the library {other.name!r}")
    if name is None:
        name = name_from_folder(Path(root).name, {lib.name for lib in others})
    given = {k: v for k, v in options.items() if v is not None}
    for option in ("include", "exclude"):
        check_globs(f"--{option}", tuple(given.get(option, ())))
    library = Library(name=check_name(name), path=root, link=link, **given)
    _check_nesting(library, others, allow_nested=allow_nested)
    return repo.insert(db, library)


def find_for_target(db: Db, target: str) -> Library | None:
    """The library a scan target names: a library name, or a folder that is a library's root (or its link)."""
    if "/" not in target and target not in (".", ".."):
        try:
            return repo.get(db, target)
        except UsageError:
            if not Path(target).is_dir():
                raise
    given = os.path.abspath(Path(target).expanduser())
    for library in repo.all_libraries(db):
        if library.link == given:
            check_link(library)
            return library
    return repo.find_by_path(db, str(Path(target).expanduser().resolve()))


@dataclass(frozen=True, slots=True)
class Change:
    """One setting changed by `library set`: its option name, the value before and after."""

    setting: str
    old: Any
    new: Any

    def to_document(self) -> dict[str, Any]:
        return {"setting": self.setting, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True, kw_only=True)
class Updated(Result):
    """A library after `library set`: its description and what changed (nothing, possibly)."""

    library: Library
    changes: tuple[Change, ...]

    def data(self) -> Mapping[str, Any]:
        return {**describe(self.library), "changes": [change.to_document() for change in self.changes]}


@dataclass(frozen=True, slots=True)
class ListEdit:
    """How `library set` edits a glob list: replace it, reset it to the default, remove and add patterns."""

    replace: tuple[str, ...] | None = None
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    reset: bool = False

    def __bool__(self) -> bool:
        return self.replace is not None or bool(self.add or self.remove) or self.reset


# Library field -> (catalog document field, the option that shows it)
_SETTABLE: Final = {
    "path": ("path", "path"), "link": ("link", "path"), "include": ("include", "include"),
    "exclude": ("exclude", "exclude"), "default_excludes": ("default_excludes", "default-excludes"),
    "dropped_excludes": ("dropped_excludes", "default exclusions dropped"), "compare": ("compare", "compare"),
    "hidden": ("hidden", "hidden"), "follow_symlinks": ("follow_symlinks", "follow-symlinks"),
    "on_calendar": ("schedule.on_calendar", "schedule"), "enabled": ("schedule.enabled", "enabled"),
    "paused": ("schedule.paused", "paused"), "watch": ("watch.enabled", "watch"),
    "rebuild_cache": ("rebuild.cache", "cache"), "rebuild_thumbnails": ("rebuild.thumbnails", "thumbnails"),
    "retention_days": ("retention_days", "retention-days"), "max_delete": ("max_delete", "max-delete"),
}


def _edited_includes(library: Library, edit: ListEdit) -> tuple[str, ...]:
    patterns = () if edit.reset else library.include
    if edit.replace is not None:
        patterns = check_globs("--include", edit.replace)
    for pattern in edit.remove:
        if pattern not in patterns:
            raise UsageError(f"--remove-include: {pattern!r} is not one of the library's includes")
        patterns = tuple(p for p in patterns if p != pattern)
    return (*patterns, *(p for p in check_globs("--add-include", edit.add) if p not in patterns))


def _edited_excludes(library: Library, edit: ListEdit) -> dict[str, Any]:
    """The exclude fields after ``edit``: own patterns, and the defaults dropped (a default is dropped, not deleted)."""
    own, dropped = ((), ()) if edit.reset else (library.exclude, library.dropped_excludes)
    if edit.replace is not None:
        own = check_globs("--exclude", edit.replace)
    for pattern in edit.remove:
        if pattern in own:
            own = tuple(p for p in own if p != pattern)
        elif pattern in DEFAULT_EXCLUDES and pattern not in dropped:
            dropped = (*dropped, pattern)
        else:
            raise UsageError(f"--remove-exclude: {pattern!r} is not one of the library's exclusions")
    for pattern in check_globs("--add-exclude", edit.add):
        if pattern in dropped:
            dropped = tuple(p for p in dropped if p != pattern)
        elif pattern not in own and not (library.default_excludes and pattern in DEFAULT_EXCLUDES):
            own = (*own, pattern)
    fields: dict[str, Any] = {"exclude": own, "dropped_excludes": dropped}
    if edit.reset:
        fields["default_excludes"] = True
    return fields


def _validated(library: Library, options: Mapping[str, Any], includes: ListEdit, excludes: ListEdit) -> Library:
    """The library with the options applied, each checked; raises UsageError before anything is written."""
    given = {key: value for key, value in options.items() if value is not None}
    unknown = set(given) - set(_SETTABLE) - {"link"}
    if unknown:
        raise UsageError(f"cannot set {', '.join(sorted(unknown))}")
    if "path" in given:
        given["path"] = resolve_root(options["path"])
        given["link"] = link_of(options["path"], given["path"])
    if "retention_days" in given:
        check_retention_days(given["retention_days"])
    if "max_delete" in given:
        check_max_delete(given["max_delete"])
    if "compare" in given:
        given["compare"] = parse_compare(given["compare"]) if isinstance(given["compare"], str) else given["compare"]
    if includes:
        given["include"] = _edited_includes(library, includes)
    if excludes:
        given.update(_edited_excludes(library, excludes))
    return dataclasses.replace(library, **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def update(db: Db, name: str, *, includes: ListEdit = ListEdit(), excludes: ListEdit = ListEdit(),
           allow_nested: bool = False, **options: Any) -> Updated:
    """Change some of a library's settings (options left None are untouched) and say what changed.

    Every value is checked before anything is written; a change that would nest the
    library in another or let two libraries share files is refused. Raises UsageError.
    """
    library = repo.get(db, name)
    changed = _validated(library, options, includes, excludes)
    keys = [key for key in _SETTABLE if getattr(library, key) != getattr(changed, key)]
    if not keys:
        return Updated(library=library, changes=())
    if _NESTING_KEYS.intersection(keys):
        others = repo.all_libraries(db)
        if changed.path != library.path:
            _check_nesting(changed, others, allow_nested=allow_nested)
        elif problems := nesting_problems(changed, others):
            raise UsageError(problems[0] + _NESTED_HINT)
    changes = tuple(Change(_SETTABLE[key][1], _plain(getattr(library, key)), _plain(getattr(changed, key)))
                    for key in keys if key != "link")
    fields = {_SETTABLE[key][0]: _plain(getattr(changed, key)) for key in keys}
    return Updated(library=repo.update(db, name, fields), changes=changes)


# Settings that decide which files a library holds: changing one re-checks the nesting rule.
_NESTING_KEYS: Final = frozenset({"path", "exclude", "default_excludes", "dropped_excludes", "hidden"})


def remove(db: Db, settings: Settings, name: str, *, purge: bool) -> Removed:
    """Forget a library; with ``purge`` also its file, collection and event records and the
    cache files no other record names. The result counts how many of each went (``cache_files`` with purge).

    Done under the library's scan lease, so no scan of it is half-recorded meanwhile: Locked
    (exit 75) while a scan runs. A worker or ``rebuild --run`` rendering its images at the
    same time deletes what it wrote once it finds the record gone (``rebuild.drop_orphaned``).
    Raises NotFound, and ForeignCache (before anything is removed) for another catalog's cache.
    """
    from libwatch.services import cleanup  # the orphan removal; imported here, for purges only

    if purge:
        cleanup.claim_cache(db, settings, write=False)
    lease = Lease(db, f"scan:{name}", f"remove:{uuid.uuid4().hex}", settings.lease_s).acquire()
    try:
        hashes = repo.content_hashes(db, name) if purge else set()
        removed = repo.delete(db, name, purge=purge)
    finally:
        lease.release()
    if purge:
        removed["cache_files"] = cleanup.remove_cached(db, settings.cache_dir, hashes)
    return Removed(library=name, removed=removed)


def set_options(db: Db, name: str, **options: Any) -> Library:
    """Change some of a library's settings (see :func:`update`); the library as it now is."""
    return update(db, name, **options).library


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def describe(library: Library, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON form of a library for `library list/show`: its settings, the exclusions it applies, its counts."""
    doc = library.to_document()
    doc = {"name": doc.pop("_id"), **doc, "applied_default_excludes": list(library.applied_default_excludes)}
    if counts is not None:
        doc["counts"] = counts
    return doc


def counts(db: Db, name: str) -> dict[str, int]:
    return {
        "files": db.files.count_documents({"library": name, "status": "present"}),
        "missing": db.files.count_documents({"library": name, "status": "missing"}),
        "collections": db.collections.count_documents({"library": name, "missing_since": None}),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Described(Result):
    """One library as `library add` and `library show` print it (``counts`` by `show` only)."""

    library: Library
    counts: Mapping[str, int] | None = None

    def data(self) -> dict[str, Any]:
        return describe(self.library, None if self.counts is None else dict(self.counts))


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed(Result):
    """`library list`: every library with its counts."""

    libraries: tuple[Described, ...]

    def data(self) -> dict[str, Any]:
        return {"libraries": [described.data() for described in self.libraries]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Removed(Result):
    """`library remove`: the library forgotten, and how many records of each kind went with it."""

    library: str
    removed: Mapping[str, int]

    def data(self) -> dict[str, Any]:
        return {"library": self.library, "removed": dict(self.removed)}


def register(db: Db, name: str | None, path: str | Path, **options: Any) -> Described:
    """`library add`: :func:`add`, described; raises as :func:`add` does."""
    return Described(library=add(db, name, path, **options))


def show(db: Db, name: str) -> Described:
    """`library show`: one library with its counts; raises NotFound."""
    return Described(library=repo.get(db, name), counts=counts(db, name))


def listing(db: Db) -> Listed:
    """`library list`: every library, by name, with its counts."""
    return Listed(libraries=tuple(Described(library=library, counts=counts(db, library.name))
                                  for library in repo.all_libraries(db)))
