"""Opening a file beneath a trusted folder without following symbolic links planted by others.

Library folders and the cache folder may be writable by other local users, who can
swap a file or a folder for a symbolic link between the scan and the render. A path
from the catalog or a message is therefore opened one component at a time with
``openat`` (``dir_fd=``), ``O_NOFOLLOW`` everywhere and ``O_DIRECTORY`` on the folders,
which gives what Linux's ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` gives
(Python 3.11 has no ``openat2``). A library that follows symbolic links resolves them
here, component by component, within its root only: a link whose target leaves the
root (``..`` above it, an absolute path elsewhere) is refused.

Errors are the ``OSError`` openat2 would raise: ``ELOOP`` for a symbolic link where none
may be (or more than MAX_LINKS of them), ``EXDEV`` for a path or link leaving the root,
and whatever ``open`` raises (ENOENT, ENOTDIR, EACCES …). Standard library only.
"""
from __future__ import annotations

import errno
import os
from typing import Final

DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not hang; callers check the type with fstat.
FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_LINKS: Final = 40  # Linux's own limit per path resolution
OUTSIDE: Final = "symbolic link leads outside the library root"


def open_file(root: str | bytes, path: str | bytes, *, follow_symlinks: bool = False) -> int:
    """A file descriptor of ``path`` (relative to ``root``) opened read-only, never outside ``root``.

    ``root`` itself is the administrator's choice and may be reached through links;
    nothing below it is, unless ``follow_symlinks``, and then only links that stay
    inside it. The caller owns the descriptor (and checks what it opened with fstat).
    """
    root_fd = os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        return _resolve(root_fd, os.fsencode(root), _components(os.fsencode(path)), follow_symlinks)
    finally:
        os.close(root_fd)


def _components(path: bytes) -> list[bytes]:
    return [part for part in path.split(b"/") if part and part != b"."]


def _resolve(root_fd: int, root: bytes, todo: list[bytes], follow: bool) -> int:
    """Walk ``todo`` from the root: the stack of open folders is the current position."""
    if not todo:
        raise OSError(errno.EISDIR, "the library root itself is not a file")
    stack = [os.dup(root_fd)]
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == b"..":
                if len(stack) == 1:
                    raise OSError(errno.EXDEV, OUTSIDE)
                os.close(stack.pop())
                continue
            try:
                fd = os.open(name, DIR_FLAGS if todo else FILE_FLAGS, dir_fd=stack[-1])
            except OSError as error:
                target = _link_target(error, name, stack[-1], follow)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symbolic links") from None
                if target.startswith(b"/"):
                    todo[:0] = _inside(root, target)
                    while len(stack) > 1:
                        os.close(stack.pop())
                else:
                    todo[:0] = _components(target)
                continue
            if not todo:
                return fd
            stack.append(fd)
        raise OSError(errno.EISDIR, "the path ends at a folder")  # a link resolved to a folder
    finally:
        for fd in stack:
            os.close(fd)


def _link_target(error: OSError, name: bytes, dir_fd: int, follow: bool) -> bytes:
    """The target of the link ``name`` that made ``open`` fail, or the failure itself when it was not a link."""
    if error.errno not in (errno.ELOOP, errno.ENOTDIR):
        raise error
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        raise error from None  # ENOTDIR from a file where a folder was expected, not a link
    if not follow:
        raise OSError(errno.ELOOP, "symbolic link refused", os.fsdecode(name))
    return target


def _inside(root: bytes, target: bytes) -> list[bytes]:
    """An absolute link target as components below ``root``; EXDEV when it points elsewhere."""
    real = os.path.realpath(root)
    if target == real or target.startswith(real.rstrip(b"/") + b"/"):
        return _components(target[len(real):])
    raise OSError(errno.EXDEV, OUTSIDE, os.fsdecode(target))
