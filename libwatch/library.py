"""A library: a named root folder and its settings (pure data, no I/O)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from libwatch.errors import UsageError
from libwatch.messages import CACHE, THUMBNAIL

NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DEFAULT_CALENDAR: Final = "*:0/30"
DEFAULT_MAX_DELETE: Final = 0.5


def check_name(name: str) -> str:
    """Return `name` if it is a valid library name (safe as a systemd instance name)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"invalid library name {name!r}: use 1-63 of a-z 0-9 _ - starting with a letter or digit")
    return name


def name_from_folder(folder: str, taken: set[str]) -> str:
    """A valid, unused library name derived from a folder name ("My Photos" -> "my-photos")."""
    base = re.sub(r"[^a-z0-9_-]+", "-", folder.lower()).strip("-_")[:56] or "library"
    if not base[0].isalnum():
        base = "lib-" + base
    candidate, suffix = base, 2
    while candidate in taken:
        candidate, suffix = f"{base}-{suffix}", suffix + 1
    return candidate


@dataclass(frozen=True, slots=True)
class Library:
    """One library as the catalog stores it (`libraries` collection, `_id` = name)."""

    name: str
    path: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    follow_symlinks: bool = False
    cross_mounts: bool = False
    on_calendar: str = DEFAULT_CALENDAR
    enabled: bool = True
    paused: bool = False
    watch: bool = True
    rebuild_cache: bool = True
    rebuild_thumbnails: bool = True
    retention_days: float | None = None
    max_delete: float = DEFAULT_MAX_DELETE
    created_at: datetime | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        return int(self.state.get("generation", 0))

    @property
    def rebuild_kinds(self) -> tuple[str, ...]:
        """The rebuild kinds this library asks for, in message-kind words."""
        return tuple(kind for kind, wanted in ((CACHE, self.rebuild_cache),
                                               (THUMBNAIL, self.rebuild_thumbnails)) if wanted)

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.name, "path": self.path, "include": list(self.include), "exclude": list(self.exclude),
            "hidden": self.hidden, "follow_symlinks": self.follow_symlinks, "cross_mounts": self.cross_mounts,
            "schedule": {"on_calendar": self.on_calendar, "enabled": self.enabled, "paused": self.paused},
            "watch": {"enabled": self.watch},
            "rebuild": {"cache": self.rebuild_cache, "thumbnails": self.rebuild_thumbnails},
            "retention_days": self.retention_days, "max_delete": self.max_delete,
            "created_at": self.created_at, "state": self.state,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Library:
        schedule, rebuild = doc.get("schedule", {}), doc.get("rebuild", {})
        return cls(
            name=doc["_id"], path=doc["path"], include=tuple(doc.get("include", ())),
            exclude=tuple(doc.get("exclude", ())), hidden=doc.get("hidden", False),
            follow_symlinks=doc.get("follow_symlinks", False), cross_mounts=doc.get("cross_mounts", False),
            on_calendar=schedule.get("on_calendar", DEFAULT_CALENDAR), enabled=schedule.get("enabled", True),
            paused=schedule.get("paused", False), watch=doc.get("watch", {}).get("enabled", True),
            rebuild_cache=rebuild.get("cache", True), rebuild_thumbnails=rebuild.get("thumbnails", True),
            retention_days=doc.get("retention_days"), max_delete=doc.get("max_delete", DEFAULT_MAX_DELETE),
            created_at=doc.get("created_at"), state=doc.get("state", {}),
        )
