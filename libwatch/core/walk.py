"""The disk walk: every image under a library root, in catalog key order.

One ``scandir`` per folder and one ``stat`` per image, on bytes paths so that
names round-trip exactly. Per-path problems become :class:`Skip` items in the
stream; only a missing or unreadable root raises (:class:`RootNotListable`).
"""
from __future__ import annotations

import errno
import fnmatch
import logging
import operator
import os
import re
import stat
from collections.abc import Callable, Generator, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from libwatch.core.paths import SEP, SEP_BYTES, is_exact
from libwatch.errors import RootNotListable

# Camera RAW files, rendered from their embedded preview (libwatch.imaging, rawpy/LibRaw).
RAW_EXTENSIONS: Final[frozenset[str]] = frozenset({"dng", "cr2", "cr3", "nef", "arw", "raf", "orf", "rw2"})
# Every still-image extension Pillow (with pillow-heif) decodes, checked against Pillow's
# registered extensions by tests/imaging/test_extensions.py, which also says why the rest
# (icons, textures, sequences, formats without a decoder here) are left out; plus RAW.
IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset({
    "jpg", "jpeg", "jpe", "jfif", "mpo", "png", "apng", "gif", "webp", "bmp", "dib", "tif", "tiff",
    "heic", "heif", "hif", "avif", "jp2", "j2k", "j2c", "jpc", "jpf", "jpx", "psd", "tga", "icb", "vda", "vst",
    "pcx", "dcx", "ppm", "pgm", "pbm", "pnm", "pfm", "qoi", "sgi", "rgb", "rgba", "bw", "ras", "im", "msp",
    "pcd", "pxr", "fits", "fit",
}) | RAW_EXTENSIONS

UNSTABLE: Final = "unstable"
NOT_REGULAR: Final = "not-regular"
PERMISSION_DENIED: Final = "permission-denied"
VANISHED: Final = "vanished"
SYMLINK_LOOP: Final = "symlink-loop"
IO_ERROR: Final = "io-error"
NAME_TOO_LONG: Final = "name-too-long"
MOUNT_POINT: Final = "mount-point"

_REASON_BY_ERRNO: Final[dict[int, str]] = {
    errno.ENOENT: VANISHED,
    errno.ENOTDIR: VANISHED,
    errno.EACCES: PERMISSION_DENIED,
    errno.EPERM: PERMISSION_DENIED,
    errno.ENAMETOOLONG: NAME_TOO_LONG,
    errno.ELOOP: SYMLINK_LOOP,
}


log = logging.getLogger("libwatch.walk")




@dataclass(frozen=True, slots=True)
class WalkOptions:
    """Which files of a library are images, and how the walk treats links and mounts.

    With ``include`` globs an image is a file matching one of them; without, a file
    whose extension (case-insensitive) is in ``extensions``. ``exclude`` globs are
    read by :class:`Exclusions`: without a ``/`` a glob matches a name at any depth
    (``@eaDir``, ``._*``), with one the relative path (``raw/*`` prunes a folder).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    extensions: frozenset[str] = IMAGE_EXTENSIONS
    hidden: bool = False
    follow_symlinks: bool = False
    cross_mounts: bool = False


# The default for every walk that takes options (a frozen value, shared safely).
DEFAULT_OPTIONS: Final = WalkOptions()


class DiskEntry(NamedTuple):
    """One regular image file as stat'ed on disk.

    A named tuple rather than a frozen dataclass: the walk makes one per file and a
    dataclass costs about 2 µs more each, half of ``find``'s whole per-file time.
    """

    path: str
    raw: bytes
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    dev: int
    nlink: int


class Same(NamedTuple):
    """A folder whose image files all stand as the catalog last saw them, in place of one entry per file.

    Only a walk given an ``unchanged`` check yields it; ``files`` and ``size`` are the
    folder's image files and their total bytes.
    """

    path: str
    files: int
    size: int


FolderCheck = Callable[[str, list[DiskEntry]], bool]


@dataclass(frozen=True, slots=True)
class Skip:
    """A path left alone this round; ``subtree`` when it is a folder whose records must be kept."""

    path: str
    raw: bytes
    reason: str
    detail: str = ""
    subtree: bool = False


def sort_key(item: DiskEntry | Skip | Same) -> str:
    """The position of a walk item: its path, with a ``/`` appended for a folder (skipped or the same)."""
    kind = type(item)
    if kind is Same:
        return item.path + SEP if item.path else ""
    if kind is Skip and item.subtree:  # type: ignore[union-attr]
        return item.path + SEP
    return item.path


def reason_of(err: OSError) -> str:
    """The skip reason for an ``OSError`` met on a path."""
    return _REASON_BY_ERRNO.get(err.errno or 0, IO_ERROR)


def _globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


class Exclusions:
    """Exclude globs, compiled once, as a walk applies them.

    A glob without ``/`` matches the name of a file or folder at any depth, as a
    ``.gitignore`` line does (``@eaDir``, ``._*``, ``Thumbs.db``); literal names are a set
    lookup on the raw name, so a long default list costs the walk next to nothing. A glob
    with ``/`` matches the relative path (fnmatch: ``*`` crosses ``/``), a folder's with
    and without a trailing ``/`` (``raw/*``, ``*/thumbs``). An excluded folder is pruned whole.
    """

    __slots__ = ("names", "prefixes", "suffixes", "name_globs", "paths")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        by_name = [p for p in patterns if SEP not in p]
        self.names = frozenset(os.fsencode(p) for p in by_name if not _is_glob(p))
        # `._*` and `*.!sync` are a prefix and a suffix test: a tenth of a regex match's time.
        prefixes = [p for p in by_name if p.endswith("*") and not _is_glob(p[:-1])]
        suffixes = [p for p in by_name if p.startswith("*") and not _is_glob(p[1:]) and p not in prefixes]
        self.prefixes = tuple(os.fsencode(p[:-1]) for p in prefixes)
        self.suffixes = tuple(os.fsencode(p[1:]) for p in suffixes)
        globbed = [p for p in by_name if _is_glob(p) and p not in prefixes and p not in suffixes]
        self.name_globs = re.compile(b"|".join(b"(?:%s)" % fnmatch.translate(p).encode() for p in globbed)) \
            if globbed else None
        self.paths = _globs(tuple(p for p in patterns if SEP in p))

    def __bool__(self) -> bool:
        return (bool(self.names or self.prefixes or self.suffixes)
                or self.name_globs is not None or self.paths is not None)

    def name(self, name: bytes) -> bool:
        """Whether a file or folder called ``name`` is excluded wherever it is."""
        return (name in self.names or name.startswith(self.prefixes) or name.endswith(self.suffixes)
                or (self.name_globs is not None and self.name_globs.match(name) is not None))

    def file(self, path: str, name: bytes) -> bool:
        return self.name(name) or (self.paths is not None and self.paths.match(path) is not None)

    def folder(self, path: str, name: bytes) -> bool:
        paths = self.paths
        return self.name(name) or (paths is not None and (paths.match(path) or paths.match(path + SEP)) is not None)

    def covers(self, relative: str) -> bool:
        """Whether the walk leaves out the folder or file at ``relative`` (itself or a folder above it)."""
        parts = [part for part in relative.split(SEP) if part]
        return any(self.folder(SEP.join(parts[: i + 1]), os.fsencode(part)) for i, part in enumerate(parts))


class _Sub(NamedTuple):
    """A child folder, entered when the walk reaches its position."""

    key: str
    name: bytes
    dirent: os.DirEntry[bytes]
    linked: os.stat_result | None


class _Ready(NamedTuple):
    """A per-file skip found while listing, kept in sort position."""

    key: str
    skip: Skip


_Child = DiskEntry | _Sub | _Ready | Same


@dataclass(frozen=True, slots=True)
class _Folder:
    path: str
    raw: bytes
    abs: bytes
    dev_ino: tuple[int, int]


class _Walker:
    """The state of one walk: options compiled once."""

    def __init__(self, root: bytes, options: WalkOptions, root_stat: os.stat_result) -> None:
        self.root = root
        self.opts = options
        self.root_dev = root_stat.st_dev
        self.exts = frozenset(e.lower().encode() for e in options.extensions)
        self.include = _globs(options.include)
        self.exclude = Exclusions(options.exclude) or None

    def prunes(self, name: bytes, path: str) -> bool:
        """Whether the walk leaves out the folder ``name`` at ``path`` (relative): hidden, or excluded."""
        if not self.opts.hidden and name[:1] == b".":
            return True
        return self.exclude is not None and self.exclude.folder(path, name)

    def children(self, folder: _Folder) -> list[_Child]:
        """The children of a folder in sort order, files already stat'ed; raises OSError."""
        prefix = folder.path + SEP if folder.path else ""
        raw_prefix = folder.raw + SEP_BYTES if folder.raw else b""
        hidden, follow = self.opts.hidden, self.opts.follow_symlinks
        include, exclude, exts = self.include, self.exclude, self.exts
        children: list[_Child] = []
        append = children.append
        with os.scandir(folder.abs) as listing:
            for dirent in listing:
                name = dirent.name
                if not hidden and name[0] == 0x2E:
                    continue
                linked: os.stat_result | None = None
                if dirent.is_dir(follow_symlinks=False) or (
                    follow and dirent.is_symlink() and (linked := _dir_target(dirent)) is not None
                ):
                    path = prefix + name.decode("utf-8", "backslashreplace")
                    if exclude is None or not exclude.folder(path, name):
                        append(_Sub(path + SEP, name, dirent, linked))
                    continue
                if include is None:
                    dot = name.rfind(b".")
                    if dot < 0 or name[dot + 1 :].lower() not in exts:
                        continue
                    path = prefix + name.decode("utf-8", "backslashreplace")
                elif include.match(path := prefix + name.decode("utf-8", "backslashreplace")) is None:
                    continue
                if exclude is not None and exclude.file(path, name):
                    continue
                try:
                    st = dirent.stat(follow_symlinks=follow)
                except OSError as err:
                    append(_Ready(path, _stat_failure(path, raw_prefix + name, dirent, err)))
                    continue
                if stat.S_ISREG(st.st_mode):
                    append(
                        _new_entry(
                            DiskEntry,
                            (path, raw_prefix + name, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                             st.st_ino, st.st_dev, st.st_nlink),
                        )
                    )
                else:
                    append(_Ready(path, Skip(path, raw_prefix + name, NOT_REGULAR, _kind_name(st.st_mode))))
        children.sort(key=_first)
        return _without_ambiguous(children)

    def enter(self, parent: _Folder, sub: _Sub,
              ancestors: AbstractSet[tuple[int, int]]) -> tuple[_Folder, list[_Child]] | Skip:
        """The folder ``sub`` of ``parent`` and its children, or the Skip of its whole subtree."""
        path = sub.key[:-1]
        raw = parent.raw + SEP_BYTES + sub.name if parent.raw else sub.name
        try:
            st = sub.linked or sub.dirent.stat(follow_symlinks=False)
        except OSError as err:
            return Skip(path, raw, reason_of(err), err.strerror or "", subtree=True)
        if st.st_dev != self.root_dev and not self.opts.cross_mounts:
            return Skip(path, raw, MOUNT_POINT, "another filesystem", subtree=True)
        dev_ino = (st.st_dev, st.st_ino)
        if dev_ino in ancestors:
            return Skip(path, raw, SYMLINK_LOOP, "folder is its own ancestor", subtree=True)
        folder = _Folder(path, raw, self.root + SEP_BYTES + raw, dev_ino)
        try:
            return folder, self.children(folder)
        except OSError as err:
            return Skip(path, raw, reason_of(err), err.strerror or "", subtree=True)


_first: Final = operator.itemgetter(0)
_new_entry: Final = tuple.__new__


def _without_ambiguous(children: list[_Child]) -> list[_Child]:
    """Drop names whose key equals a sibling's (a literal ``\\xff`` beside the byte 0xff).

    Keys must be unique for the merge with the catalog; the name that is valid UTF-8
    keeps the key and the other is left out with a warning, never a crash.
    """
    if len({child[0] for child in children}) == len(children):
        return children
    kept: list[_Child] = []
    for child in children:
        if kept and kept[-1][0] == child[0]:
            loser = child if _is_exact_child(kept[-1]) else kept.pop()
            if loser is not child:
                kept.append(child)
            log.warning("skipping %r: its name escapes to the same path as a sibling's", loser[0])
            continue
        kept.append(child)
    return kept


def _is_exact_child(child: _Child) -> bool:
    if isinstance(child, _Sub):
        return is_exact(child.name)
    if isinstance(child, _Ready):
        return is_exact(child.skip.raw)
    assert isinstance(child, DiskEntry)  # a Same is made after this check
    return is_exact(child.raw)


def _dir_target(dirent: os.DirEntry[bytes]) -> os.stat_result | None:
    """The stat of a symlink's target when it is a folder."""
    try:
        st = dirent.stat(follow_symlinks=True)
    except OSError:
        return None
    return st if stat.S_ISDIR(st.st_mode) else None


def _link_target(path: bytes) -> os.stat_result | None:
    """The stat of a symlink's target when it is a folder (as :func:`_dir_target`, from a path)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISDIR(st.st_mode) else None


def _stat_failure(path: str, raw: bytes, dirent: os.DirEntry[bytes], err: OSError) -> Skip:
    if err.errno == errno.ENOENT and dirent.is_symlink():
        return Skip(path, raw, NOT_REGULAR, "dangling symlink")
    return Skip(path, raw, reason_of(err), err.strerror or "")


def _kind_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_root(root: str | bytes) -> tuple[bytes, os.stat_result]:
    """The root as bytes and its stat; raises :class:`RootNotListable` unless it is a listable folder."""
    root_b = os.fsencode(root)
    root_b = root_b.rstrip(SEP_BYTES) or SEP_BYTES
    try:
        st = os.stat(root_b)
    except OSError as err:
        raise RootNotListable(err.errno, f"library root unavailable: {err.strerror}", os.fsdecode(root_b)) from err
    if not stat.S_ISDIR(st.st_mode):
        raise RootNotListable(errno.ENOTDIR, "library root is not a folder", os.fsdecode(root_b))
    return root_b, st


Item = DiskEntry | Skip | Same


class Walk(Protocol):
    """The items of a walk; ``close`` ends it early (a parallel walk's worker processes included)."""

    def __iter__(self) -> Iterator[Item]: ...

    def __next__(self) -> Item: ...

    def close(self) -> None: ...


def walk(root: str | bytes, options: WalkOptions = DEFAULT_OPTIONS, *,
         unchanged: FolderCheck | None = None, under: str = "") -> Walk:
    """Yield every image under ``root`` and every skipped path, in ascending ``sort_key`` order.

    Folders that cannot be entered yield ``Skip(subtree=True)`` at their position;
    raises :class:`RootNotListable` (before yielding) when the root itself cannot be listed.
    With ``unchanged``, a folder whose image files (path order) it accepts yields one
    :class:`Same` before its other items instead of a ``DiskEntry`` per file.
    With ``under`` (a folder's path relative to the root), only the items the whole walk
    yields under that folder, found by walking that folder alone.
    :func:`libwatch.core.parallel_walk.walk` yields the same items from forked processes.
    """
    walker, top, children, ancestors = opened(root, options, unchanged, under)
    return _run(walker, top, children, unchanged, set(ancestors))


def opened(root: str | bytes, options: WalkOptions, unchanged: FolderCheck | None,
           under: str = "") -> tuple[_Walker, _Folder, list[_Child], frozenset[tuple[int, int]]]:
    """The walk's state, the folder it starts in, that folder's children (folded) and the folders
    from the root down to it (device, inode); raises :class:`RootNotListable`.

    With ``under``, the walk starts in that folder (see :func:`walk`); it raises
    :class:`RootNotListable` too when the folder is missing or not a folder.
    """
    root_b, root_stat = open_root(root)
    walker = _Walker(root_b, options, root_stat)
    top = _Folder("", b"", root_b, (root_stat.st_dev, root_stat.st_ino))
    if under:
        folder, children, ancestors = _descend(walker, top, under)
        return walker, folder, _folded(folder, children, unchanged) if ancestors else children, frozenset(ancestors)
    try:
        children = _folded(top, walker.children(top), unchanged)
    except OSError as err:
        raise RootNotListable(err.errno, f"library root unreadable: {err.strerror}", os.fsdecode(root_b)) from err
    return walker, top, children, frozenset({top.dev_ino})


def _descend(walker: _Walker, top: _Folder, under: str) -> tuple[_Folder, list[_Child], set[tuple[int, int]]]:
    """The folder ``under`` entered as the whole walk would enter it, with its children and its ancestors.

    Where the whole walk would not go (a hidden or excluded folder, a link it does not
    follow) there is nothing: no children. Where it would skip the folder (another
    filesystem, a loop, unreadable), the one child is that Skip.
    """
    folder, ancestors = top, {top.dev_ino}
    for name in os.fsencode(under).split(SEP_BYTES):
        path = (folder.path + SEP if folder.path else "") + name.decode("utf-8", "backslashreplace")
        target = folder.abs + SEP_BYTES + name
        try:
            st = os.stat(target, follow_symlinks=False)
        except OSError as err:
            raise RootNotListable(err.errno, f"folder unavailable: {err.strerror}", os.fsdecode(target)) from err
        if stat.S_ISLNK(st.st_mode):  # the walk enters a link only to a folder, and only when following links
            linked = _link_target(target) if walker.opts.follow_symlinks else None
            if linked is None:
                return folder, [], set()
            st = linked
        elif not stat.S_ISDIR(st.st_mode):
            raise RootNotListable(errno.ENOTDIR, "not a folder", os.fsdecode(target))
        if walker.prunes(name, path):
            return folder, [], set()
        entered = walker.enter(folder, _Sub(path + SEP, name, None, st), ancestors)  # type: ignore[arg-type]
        if type(entered) is Skip:
            return folder, [_Ready(path + SEP, entered)], set()
        folder, children = entered  # type: ignore[misc]
        ancestors.add(folder.dev_ino)
    return folder, children, ancestors


def _folded(folder: _Folder, children: list[_Child], unchanged: FolderCheck | None) -> list[_Child]:
    """The children with the image files replaced by one :class:`Same` when ``unchanged`` accepts them."""
    if unchanged is None:
        return children
    files = [child for child in children if type(child) is DiskEntry]
    if not files or not unchanged(folder.path, files):
        return children
    return [Same(folder.path, len(files), sum(entry.size for entry in files)),
            *(child for child in children if type(child) is not DiskEntry)]


def _run(walker: _Walker, start: _Folder, children: list[_Child], unchanged: FolderCheck | None,
         ancestors: set[tuple[int, int]]) -> Generator[Item, None, None]:
    """The items of an entered folder's subtree (its children already folded); ``ancestors`` includes it."""
    folders = [start]
    stack = [iter(children)]
    while stack:
        for child in stack[-1]:
            if type(child) is DiskEntry or type(child) is Same:
                yield child
            elif type(child) is _Ready:
                yield child.skip
            else:
                assert type(child) is _Sub
                entered = walker.enter(folders[-1], child, ancestors)
                if type(entered) is Skip:
                    yield entered
                    continue
                folder, grandchildren = entered  # type: ignore[misc]
                folders.append(folder)
                ancestors.add(folder.dev_ino)
                stack.append(iter(_folded(folder, grandchildren, unchanged)))
                break
        else:
            stack.pop()
            ancestors.discard(folders.pop().dev_ino)
