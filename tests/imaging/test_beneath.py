"""Opening beneath a root without following links: every component, loops, escapes, link targets inside the root."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from libwatch import beneath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "a" / "b").mkdir(parents=True)
    (tmp_path / "root" / "a" / "b" / "f.jpg").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.jpg").write_bytes(b"secret")
    return tmp_path / "root"


def read(root: Path, path: str, follow: bool = False) -> bytes:
    fd = beneath.open_file(str(root), path, follow_symlinks=follow)
    with open(fd, "rb") as fp:
        return fp.read()


def test_a_plain_path_opens(root: Path) -> None:
    assert read(root, "a/b/f.jpg") == read(root, b"./a//b/f.jpg") == b"inside"  # type: ignore[arg-type]


@pytest.mark.parametrize("link", ["a", "a/b", "a/b/f.jpg"])
@pytest.mark.parametrize("follow", [False, True])
def test_a_link_at_any_component_to_outside_is_refused(root: Path, link: str, follow: bool) -> None:
    """Without following: ELOOP for any link. Following: EXDEV, the target is outside the root."""
    outside = root.parent / "outside"
    target = root / link
    target.rename(root / "moved")
    if target.name == "f.jpg":
        target.symlink_to(outside / "secret.jpg")
        (outside / "f.jpg").write_bytes(b"secret")
    else:
        target.symlink_to(outside)
        (outside / "b").mkdir(exist_ok=True)
        (outside / "b" / "f.jpg").write_bytes(b"secret")
        (outside / "f.jpg").mkdir(exist_ok=True)
    with pytest.raises(OSError) as caught:
        read(root, "a/b/f.jpg", follow)
    assert caught.value.errno == (errno.EXDEV if follow else errno.ELOOP)


def test_following_resolves_relative_and_absolute_links_inside_the_root(root: Path) -> None:
    (root / "rel").symlink_to("a/b")
    (root / "a" / "up").symlink_to("../a/b/f.jpg")
    (root / "abs").symlink_to(root / "a" / "b" / "f.jpg")
    for path in ("rel/f.jpg", "a/up", "abs"):
        assert read(root, path, follow=True) == b"inside"
        with pytest.raises(OSError) as caught:
            read(root, path)
        assert caught.value.errno == errno.ELOOP


def test_dotdot_links_cannot_climb_above_the_root(root: Path) -> None:
    (root / "a" / "esc").symlink_to("../../outside/secret.jpg")
    with pytest.raises(OSError) as caught:
        read(root, "a/esc", follow=True)
    assert caught.value.errno == errno.EXDEV


def test_a_link_loop_ends_with_eloop(root: Path) -> None:
    (root / "x").symlink_to("y")
    (root / "y").symlink_to("x")
    with pytest.raises(OSError) as caught:
        read(root, "x", follow=True)
    assert caught.value.errno == errno.ELOOP


def test_missing_and_not_a_folder_are_the_usual_errors(root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read(root, "a/gone.jpg")
    with pytest.raises(NotADirectoryError):
        read(root, "a/b/f.jpg/deeper")


def test_the_root_itself_may_be_reached_through_a_link(root: Path) -> None:
    (root.parent / "root-link").symlink_to(root)
    assert read(root.parent / "root-link", "a/b/f.jpg") == b"inside"
    os.unlink(root.parent / "root-link")
