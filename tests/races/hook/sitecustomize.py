"""Test-only pause points, loaded into every Python process of a race test (render children too).

The race tests put this folder first on ``PYTHONPATH``; Python imports ``sitecustomize``
at start-up, and this one does nothing unless ``LIBWATCH_TEST_PAUSE`` is set, so
libwatch's own code carries no hook. ``LIBWATCH_TEST_PAUSE`` is a comma-separated list of
points, each ``module:attribute[.attribute]`` with an optional ``:after`` (pause once
the call has returned, not before it) and an optional ``@N`` (at a process's N-th call),
e.g. ``libwatch.cachefiles:os.replace`` (a cache file written to its temp name, not yet
renamed) or ``libwatch.services.scan:record``.

The first call of a point in any process (``O_EXCL`` on its marker decides) writes its
pid to ``$LIBWATCH_TEST_PAUSE_DIR/<point>.reached`` and waits until ``<point>.release``
exists; every later call passes straight through. The point is patched when its module
is first imported, whichever process imports it.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Callable
from typing import Any

_POINTS = [p.strip() for p in os.environ.get("LIBWATCH_TEST_PAUSE", "").split(",") if p.strip()]
_DIR = os.environ.get("LIBWATCH_TEST_PAUSE_DIR", "")


def marker(folder: str, point: str, what: str) -> str:
    """The marker file of ``point`` in ``folder`` (``what``: reached or release); the tests use it too."""
    return os.path.join(folder, point.replace(":", "=").replace("@", "_") + "." + what)


def _pause(point: str) -> None:
    try:
        fd = os.open(marker(_DIR, point, "reached"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return  # another call got here first: only the first one pauses
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    while not os.path.exists(marker(_DIR, point, "release")):
        time.sleep(0.01)


def _wrapped(function: Callable[..., Any], point: str, after: bool, nth: int) -> Callable[..., Any]:
    calls = 0

    def paused(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if not after and calls == nth:
            _pause(point)
        result = function(*args, **kwargs)
        if after and calls == nth:
            _pause(point)
        return result

    return paused


class _Proxy:
    """Stands in for a module attribute (``os`` in ``libwatch.cachefiles``) with one member wrapped."""

    def __init__(self, target: Any, name: str, replacement: Any) -> None:
        self._target, self._name, self._replacement = target, name, replacement

    def __getattr__(self, name: str) -> Any:
        return self._replacement if name == self._name else getattr(self._target, name)


def _patch(module: Any, point: str) -> None:
    where, _, count = point.partition("@")
    _, attribute, *flags = where.split(":")
    after, nth = flags == ["after"], int(count or 1)
    head, _, member = attribute.partition(".")
    if member:
        holder = getattr(module, head)
        setattr(module, head, _Proxy(holder, member, _wrapped(getattr(holder, member), point, after, nth)))
    else:
        setattr(module, head, _wrapped(getattr(module, head), point, after, nth))


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any, points: list[str]) -> None:
        self._loader, self._points = loader, points

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        for point in self._points:
            _patch(module, point)


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a point's module right after it is imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        points = [p for p in _POINTS if p.split(":")[0] == name]
        if not points:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, points)
                return spec
        return None


if _POINTS and _DIR:
    sys.meta_path.insert(0, _Finder())
