"""A library: a named root folder and its settings (pure data, no I/O)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from libwatch.core.diff import CTIME, INODE
from libwatch.errors import UsageError
from libwatch.messages import CACHE, THUMBNAIL

NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DEFAULT_CALENDAR: Final = "*:0/30"
DEFAULT_MAX_DELETE: Final = 0.5
# Stat fields a scan compares besides size and mtime (borg's files-cache modes): a network
# mount whose inode numbers change on every mount is scanned with ("ctime",) or ().
COMPARE_FIELDS: Final = (CTIME, INODE)
DEFAULT_COMPARE: Final = COMPARE_FIELDS
# What NAS appliances, operating systems, desktops and sync tools leave in photo folders.
# Names (no "/") match at any depth; every library applies them unless it drops them.
DEFAULT_EXCLUDES: Final = (
    "@eaDir", "#recycle", "#snapshot", "#SynoRecycle",  # Synology: thumbnails, recycle bin, snapshots
    ".SynologyWorkingDirectory",  # Synology Drive
    "@Recycle", "@Recently-Snapshot", ".@__thumb", "@Transcode",  # QNAP
    ".snapshot", "~snapshot",  # NetApp and other filers' snapshot folders
    "$RECYCLE.BIN", "$Recycle.Bin", "System Volume Information", "Thumbs.db", "ehthumbs.db",  # Windows
    ".DS_Store", "._*", ".AppleDouble", ".AppleDB", ".Spotlight-V100", ".Trashes", ".fseventsd",  # macOS
    ".TemporaryItems",
    ".Trash-*", ".thumbnails", "lost+found",  # Linux desktops and filesystems
    ".stversions", ".stfolder", ".syncthing.*", "~syncthing~*",  # Syncthing
    ".sync", "*.!sync",  # Resilio Sync
    ".dtrash",  # digiKam's trash
)


def check_name(name: str) -> str:
    """Return `name` if it is a valid library name (safe as a systemd instance name)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"invalid library name {name!r}: use 1-63 of a-z 0-9 _ - starting with a letter or digit")
    return name


def check_retention_days(days: float) -> float:
    """``days`` if it is a retention (0 or more days: 0 keeps a missing file's record until the next cleanup)."""
    if not (math.isfinite(days) and days >= 0):
        raise UsageError(f"--retention-days must be 0 or more days, not {days:g}")
    return days


def check_max_delete(fraction: float) -> float:
    """``fraction`` if it is a share of a library's files, 0 to 1; raises UsageError otherwise.

    0 lets no scan delete without --allow-mass-delete.
    """
    if not (math.isfinite(fraction) and 0 <= fraction <= 1):
        raise UsageError(f"--max-delete must be a fraction from 0 to 1 (0.05 is 5 %), not {fraction:g}")
    return fraction


def check_globs(option: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """``patterns`` if each is a usable glob: not blank, no NUL."""
    for pattern in patterns:
        if not pattern.strip():
            raise UsageError(f"{option}: an empty glob matches nothing; give a pattern such as '*.jpg'")
        if "\0" in pattern:
            raise UsageError(f"{option}: a glob cannot hold a NUL character")
    return patterns


def parse_compare(text: str) -> tuple[str, ...]:
    """``--compare`` as fields: a comma list of ctime and inode, or ``none`` (size and mtime are always compared)."""
    words = tuple(word.strip() for word in text.split(",") if word.strip())
    if words == ("none",):
        return ()
    unknown = [word for word in words if word not in COMPARE_FIELDS]
    if unknown or not words or len(set(words)) != len(words):
        raise UsageError(f"--compare must be a comma list of {', '.join(COMPARE_FIELDS)}, or none; not {text!r}")
    return tuple(f for f in COMPARE_FIELDS if f in words)


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
    link: str | None = None  # the root as given, when that was through a symbolic link
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    default_excludes: bool = True
    dropped_excludes: tuple[str, ...] = ()
    compare: tuple[str, ...] = DEFAULT_COMPARE
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
    def applied_default_excludes(self) -> tuple[str, ...]:
        """The default exclusions this library applies (read from the code, never copied into its record)."""
        return tuple(p for p in DEFAULT_EXCLUDES if p not in self.dropped_excludes) if self.default_excludes else ()

    @property
    def excludes(self) -> tuple[str, ...]:
        """Every exclusion a scan of this library applies: the defaults it keeps, then its own."""
        return (*self.applied_default_excludes, *self.exclude)

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
            "_id": self.name, "path": self.path, "link": self.link,
            "include": list(self.include), "exclude": list(self.exclude),
            "default_excludes": self.default_excludes, "dropped_excludes": list(self.dropped_excludes),
            "compare": list(self.compare), "hidden": self.hidden, "follow_symlinks": self.follow_symlinks,
            "cross_mounts": self.cross_mounts,
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
            name=doc["_id"], path=doc["path"], link=doc.get("link"), include=tuple(doc.get("include", ())),
            exclude=tuple(doc.get("exclude", ())), default_excludes=doc.get("default_excludes", True),
            dropped_excludes=tuple(doc.get("dropped_excludes", ())),
            compare=tuple(doc.get("compare", DEFAULT_COMPARE)), hidden=doc.get("hidden", False),
            follow_symlinks=doc.get("follow_symlinks", False), cross_mounts=doc.get("cross_mounts", False),
            on_calendar=schedule.get("on_calendar", DEFAULT_CALENDAR), enabled=schedule.get("enabled", True),
            paused=schedule.get("paused", False), watch=doc.get("watch", {}).get("enabled", True),
            rebuild_cache=rebuild.get("cache", True), rebuild_thumbnails=rebuild.get("thumbnails", True),
            retention_days=doc.get("retention_days"), max_delete=doc.get("max_delete", DEFAULT_MAX_DELETE),
            created_at=doc.get("created_at"), state=doc.get("state", {}),
        )
