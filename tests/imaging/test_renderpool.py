"""The rendering pool: each sample kind and Pillow's corpus, crashes, hangs, memory, a full disk, content addressing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from libwatch import beneath, cachefiles, renderpool
from libwatch.imaging import DEFAULT_SPECS, RenderSpec
from libwatch.renderpool import CHANGED, DONE, FAILED, SKIPPED, RenderJob, RenderOutcome, RenderPool

from .images import EXPECTED, content_hash, leftovers, write_samples

THUMB = DEFAULT_SPECS["thumbnail"]
NEVER_RENDERED = "xxh3-128:" + "e" * 32


def job(path: Path, *, kind: str = "thumbnail", spec: RenderSpec = THUMB, key: object = None,
        **kw: object) -> RenderJob:
    return RenderJob(key if key is not None else path.name, str(path), kind, content_hash(path), spec, **kw)  # type: ignore[arg-type]


def render_children() -> set[int]:
    """Our multiprocessing children that render (not the resource tracker)."""
    pids = set()
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                pids.add(int(pid))
    return pids


@pytest.fixture
def slow_png(tmp_path: Path) -> Path:
    """A valid 64 MP PNG: a tiny file that takes the pool a noticeable time to decode."""
    path = tmp_path / "slow.png"
    Image.new("L", (8000, 8000), 128).save(path, compress_level=1)
    return path


def _render_all(files: list[Path], cache: Path) -> dict[object, RenderOutcome]:
    with RenderPool(cache, processes=2, timeout_s=30) as pool:
        outcomes = {o.key: o for o in pool.render_many(job(p, key=p) for p in files)}
    assert set(outcomes) == set(files)
    for path, outcome in outcomes.items():
        assert outcome.status in (DONE, FAILED), (path, outcome)
        assert (outcome.status == DONE) == (outcome.path is not None and outcome.path.is_file()), (path, outcome)
        if outcome.status == FAILED:
            assert outcome.error and "\n" not in outcome.error, (path, outcome)
            assert not outcome.error.startswith(("timed out", "render process crashed")), (path, outcome)
    return outcomes


def _assert_upright(outcomes: dict[object, RenderOutcome], oriented: list[Path]) -> None:
    for path in oriented:
        with Image.open(path) as im:
            expected = ImageOps.exif_transpose(im)
        expected.thumbnail((320, 320))
        with Image.open(outcomes[path].path) as thumb:  # type: ignore[arg-type]
            assert thumb.size == expected.size, path


def test_every_sample_ends_done_or_failed_with_its_reason(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "samples")
    outcomes = _render_all(list(samples.values()), tmp_path / "cache")
    ended = {name: (outcomes[path].status, outcomes[path].error) for name, path in samples.items()}
    for name, failure in EXPECTED.items():
        status, error = ended[name]
        if failure is None:
            assert status == DONE, (name, error)
        else:
            assert status == FAILED and error is not None and error.startswith(failure), (name, error)
    _assert_upright(outcomes, [path for name, path in samples.items() if name.startswith("orientation_")])
    assert leftovers(tmp_path) == []


def test_the_whole_corpus_ends_done_or_failed_with_a_reason_within_the_limit(corpus: Path, tmp_path: Path) -> None:
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    assert len(files) > 700
    started = time.monotonic()
    outcomes = _render_all(files, tmp_path / "cache")
    elapsed = time.monotonic() - started
    for bomb in corpus.glob("decompression_bomb*.gif"):
        assert outcomes[bomb].status == FAILED and "decompression bomb" in outcomes[bomb].error  # type: ignore[operator]
    for name in ("truncated_jpeg.jpg", "truncated_image.png", "truncated_end_chunk.png"):
        assert (outcomes[corpus / name].status, outcomes[corpus / name].error[:9]) == (FAILED, "truncated")  # type: ignore[index]
    oriented = sorted(corpus.glob("hopper_orientation_*")) + sorted(corpus.glob("g4_orientation_*.tif"))
    assert len(oriented) == 22
    _assert_upright(outcomes, oriented + [corpus / "orientation_rectangle.jpg", *sorted(corpus.glob("avif/rot*.avif"))])
    assert elapsed < 60, f"the corpus took {elapsed:.0f} s"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content", [b"", b"plain text, named like a photo\n"])
def test_empty_and_text_jpgs_fail(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with RenderPool(tmp_path / "cache", processes=1) as pool:
        outcome = pool.render_one(job(path))
    assert (outcome.status, outcome.error, outcome.transient) == (FAILED, "cannot identify image", False)


def test_a_12_mp_jpeg_becomes_a_320_px_thumbnail_in_the_content_addressed_place(
    tmp_path: Path, make_jpeg: Callable[..., Path]
) -> None:
    path = make_jpeg("big.jpg", (4000, 3000), orientation=6)
    cache_dir = tmp_path / "cache"
    with RenderPool(cache_dir, processes=1) as pool:
        outcome = pool.render_one(job(path, key="k"))
    assert outcome == RenderOutcome("k", DONE, cachefiles.cache_path(cache_dir, "thumbnail", content_hash(path), "jpg"))
    with Image.open(outcome.path) as thumb:  # type: ignore[arg-type]
        assert thumb.size == (240, 320)


def test_a_duplicate_or_renamed_image_needs_no_render_unless_forced(
    tmp_path: Path, make_jpeg: Callable[..., Path]
) -> None:
    original = make_jpeg("a.jpg", (640, 480))
    cache_dir = tmp_path / "cache"
    with RenderPool(cache_dir, processes=1) as pool:
        first = pool.render_one(job(original))
        renamed = original.rename(tmp_path / "b.jpg")
        gone = tmp_path / "a.jpg"
        # The old path no longer exists: "done" proves nothing was opened.
        same = pool.render_one(RenderJob("again", str(gone), "thumbnail", content_hash(renamed), THUMB))
        forced = pool.render_one(RenderJob("forced", str(gone), "thumbnail", content_hash(renamed), THUMB, force=True))
    assert (first.status, same.status, same.path) == (DONE, DONE, first.path)
    assert (forced.status, forced.error) == (SKIPPED, "vanished")


def test_a_thumbnail_is_rendered_from_the_cache_image_when_the_cache_holds_it(
    tmp_path: Path, make_jpeg: Callable[..., Path]
) -> None:
    path = make_jpeg("big.jpg", (4000, 3000), orientation=6)
    cache_dir = tmp_path / "cache"
    derive = job(path, key="derived", derive_from="cache", force=True)
    no_rendition = job(path, key="none", derive_from="nothing-here", force=True)
    with RenderPool(cache_dir, processes=1) as pool:
        cached = pool.render_one(job(path, kind="cache", spec=DEFAULT_SPECS["cache"]))
        direct = pool.render_one(job(path, key="direct"))
        path.unlink()
        # The original is gone: "done" proves the thumbnail came from the cache image.
        derived, missing = pool.render_one(derive), pool.render_one(no_rendition)
    assert (cached.status, direct.status, derived.status) == (DONE, DONE, DONE)
    assert (missing.status, missing.error) == (SKIPPED, "vanished")
    with Image.open(derived.path) as thumb:  # type: ignore[arg-type]
        assert thumb.size == (240, 320)  # upright: the cache image already is


@pytest.mark.parametrize("rendition", [b"", b"not an image", "small"])
def test_a_cache_image_that_cannot_serve_leaves_the_thumbnail_to_the_original(
    tmp_path: Path, make_jpeg: Callable[..., Path], rendition: bytes | str
) -> None:
    path = make_jpeg("a.jpg", (1600, 1200))
    cache_dir = tmp_path / "cache"
    stored = cachefiles.cache_path(cache_dir, "cache", content_hash(path), "jpg")
    stored.parent.mkdir(parents=True)
    if rendition == "small":  # under twice the thumbnail's edge: too coarse to derive from
        Image.new("RGB", (600, 450), "red").save(stored)
    else:
        stored.write_bytes(rendition)  # type: ignore[arg-type]
    with RenderPool(cache_dir, processes=1) as pool:
        outcome = pool.render_one(job(path, derive_from="cache"))
    assert outcome.status == DONE
    with Image.open(outcome.path) as thumb:  # type: ignore[arg-type]
        assert thumb.size == (320, 240)
        red, green, _blue = thumb.getpixel((160, 120))
        assert not (red > 200 and green < 60)  # the original's centre, not the red stand-in


def test_a_new_format_replaces_the_old_one(tmp_path: Path, make_jpeg: Callable[..., Path]) -> None:
    path = make_jpeg("a.jpg", (640, 480))
    cache_dir = tmp_path / "cache"
    with RenderPool(cache_dir, processes=1) as pool:
        jpeg = pool.render_one(job(path))
        webp = pool.render_one(job(path, spec=RenderSpec(320, "webp"), force=True))
    assert webp.path is not None and webp.path.suffix == ".webp"
    assert jpeg.path is not None and not jpeg.path.exists()
    assert cachefiles.existing(cache_dir, "thumbnail", content_hash(path)) == webp.path


def test_a_vanished_source_is_skipped(tmp_path: Path, make_jpeg: Callable[..., Path]) -> None:
    path = make_jpeg("a.jpg", (64, 48))
    stale = job(path)
    path.unlink()
    with RenderPool(tmp_path / "cache", processes=1) as pool:
        assert pool.render_one(stale) == RenderOutcome("a.jpg", SKIPPED, error="vanished")


def test_a_full_cache_disk_is_a_transient_failure_that_leaves_no_temp_file(
    full_disk: Path, tmp_path: Path
) -> None:
    path = tmp_path / "noise.png"
    Image.effect_noise((1200, 900), 80).convert("RGB").save(path)
    with RenderPool(full_disk, processes=1) as pool:
        outcome = pool.render_one(job(path, kind="cache", spec=DEFAULT_SPECS["cache"]))
    assert (outcome.status, outcome.transient) == (FAILED, True)
    assert "No space left on device" in outcome.error
    assert leftovers(full_disk) == []
    assert list(cachefiles.iter_cache_files(full_disk)) == []


def test_a_child_that_segfaults_fails_its_job_and_the_next_job_renders(
    tmp_path: Path, slow_png: Path, make_jpeg: Callable[..., Path]
) -> None:
    good = make_jpeg("good.jpg", (640, 480))
    before = render_children()
    with RenderPool(tmp_path / "cache", processes=1, timeout_s=60) as pool:
        pool.render_one(job(make_jpeg("warm.jpg", (32, 32))))
        (child,) = render_children() - before
        killer = threading.Thread(target=_segfault_when_decoding, args=(child,))
        killer.start()
        outcomes = list(pool.render_many([job(slow_png), job(good)]))
        killer.join()
    assert [(o.key, o.status) for o in outcomes] == [("slow.png", FAILED), ("good.jpg", DONE)]
    assert outcomes[0].error == "render process crashed (SIGSEGV)"
    assert outcomes[0].transient is False


def _segfault_when_decoding(pid: int, limit_s: float = 30) -> None:
    """Send SIGSEGV to ``pid`` in the middle of decoding: once its memory grew by 32 MiB.

    The child reads the source into memory and closes it before decoding, so an open
    file says nothing; the 64 MP PNG's pixels (64 MiB) growing the process does.
    """
    def rss_kib() -> int:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

    start = rss_kib()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if rss_kib() - start > 32 << 10:
            os.kill(pid, signal.SIGSEGV)
            return
        time.sleep(0.001)


def test_a_job_over_its_time_limit_is_killed_and_the_next_job_renders(
    tmp_path: Path, slow_png: Path, make_jpeg: Callable[..., Path]
) -> None:
    good = make_jpeg("good.jpg", (640, 480))
    with RenderPool(tmp_path / "cache", processes=1, timeout_s=0.2) as pool:
        started = time.monotonic()
        outcomes = list(pool.render_many([job(slow_png), job(good)]))
    assert [(o.key, o.status, o.error) for o in outcomes] == [
        ("slow.png", FAILED, "timed out after 0.2 s"),
        ("good.jpg", DONE, ""),
    ]
    assert time.monotonic() - started < 30
    assert leftovers(tmp_path) == []


def test_a_job_over_its_memory_limit_fails_and_the_next_job_renders(
    tmp_path: Path, make_jpeg: Callable[..., Path]
) -> None:
    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 9000), 7).save(huge, compress_level=1)  # 243 MB once converted to RGB
    good = make_jpeg("good.jpg", (640, 480))
    with RenderPool(tmp_path / "cache", processes=1, memory_limit_bytes=256 << 20) as pool:
        outcomes = list(pool.render_many([job(huge), job(good)]))
    assert [(o.key, o.status) for o in outcomes] == [("huge.png", FAILED), ("good.jpg", DONE)]
    assert outcomes[0].error == "out of memory while decoding"


def test_outcomes_come_as_jobs_finish_and_an_abandoned_batch_still_completes(
    tmp_path: Path, slow_png: Path, make_jpeg: Callable[..., Path]
) -> None:
    small = make_jpeg("small.jpg", (64, 48))
    cache_dir = tmp_path / "cache"
    with RenderPool(cache_dir, processes=2) as pool:
        outcomes = pool.render_many([job(slow_png), job(small)])
        assert next(outcomes).key == "small.jpg"
        outcomes.close()  # the caller stops early: the slow render finishes, it is not cut off
        assert cachefiles.existing(cache_dir, "thumbnail", content_hash(slow_png)) is not None
        assert pool.render_one(job(small, key="reuse")).status == DONE
    assert render_children() == set()


def test_children_ignore_sigint_and_sigterm_aimed_at_the_process_group(
    tmp_path: Path, make_jpeg: Callable[..., Path]
) -> None:
    with RenderPool(tmp_path / "cache", processes=1) as pool:
        pool.render_one(job(make_jpeg("warm.jpg", (32, 32))))
        (child,) = render_children()
        os.kill(child, signal.SIGTERM)
        os.kill(child, signal.SIGINT)
        assert pool.render_one(job(make_jpeg("after.jpg", (32, 32)))).status == DONE
        assert render_children() == {child}


def test_render_jobs_validate_their_hash() -> None:
    with pytest.raises(ValueError):
        RenderJob("k", "/x.jpg", "thumbnail", "xxh3-128:nothex", THUMB)
    with pytest.raises(ValueError):
        RenderJob("k", "/x.jpg", "../up", NEVER_RENDERED, THUMB)


def test_an_idle_child_that_died_is_replaced_without_failing_the_next_job(
    tmp_path: Path, make_jpeg: Callable[..., Path]
) -> None:
    with RenderPool(tmp_path / "cache", processes=1) as pool:
        pool.render_one(job(make_jpeg("warm.jpg", (32, 32))))
        (child,) = render_children()
        os.kill(child, signal.SIGKILL)
        time.sleep(0.2)
        assert pool.render_one(job(make_jpeg("after.jpg", (32, 32)))).status == DONE
        assert child not in render_children()


def test_a_pool_left_open_does_not_hang_the_interpreter_at_exit(tmp_path: Path) -> None:
    [image] = write_samples(tmp_path, ["photo.jpg"]).values()
    script = tmp_path / "left_open.py"
    script.write_text(
        "from pathlib import Path\n"
        "from libwatch.imaging import DEFAULT_SPECS\n"
        "from libwatch.renderpool import RenderPool, RenderJob\n"
        "if __name__ == '__main__':\n"
        f"    r = RenderPool(Path({str(tmp_path / 'cache')!r}), processes=2)\n"
        f"    print(r.render_one(RenderJob(1, {str(image)!r}, 'thumbnail',"
        f" {content_hash(image)!r}, DEFAULT_SPECS['thumbnail'])).status)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, DONE), result.stderr


def test_a_source_rewritten_while_it_is_read_is_changed_and_nothing_is_written(
        tmp_path: Path, make_jpeg: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    red = make_jpeg("a.jpg", (64, 48))
    digest = content_hash(red)
    blue = Image.new("RGB", (64, 48), (0, 0, 255))
    real_open = beneath.open_file

    def open_then_rewrite(*args: object, **kwargs: object) -> int:
        fd = real_open(*args, **kwargs)  # type: ignore[arg-type]
        blue.save(red, "JPEG")  # the same inode, rewritten between the open and the read
        return fd

    monkeypatch.setattr(beneath, "open_file", open_then_rewrite)
    cache_dir = tmp_path / "cache"
    outcome = renderpool._render_and_store(cache_dir, str(tmp_path), "a.jpg", False, "thumbnail", digest, THUMB, None)
    assert outcome == (CHANGED, None, "changed since the scan (other content)", False)
    assert not cache_dir.exists()


def test_a_source_rewritten_after_it_was_read_renders_what_was_read(
        tmp_path: Path, make_jpeg: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from libwatch import imaging

    path = make_jpeg("a.jpg", (64, 48))
    original = ImageOps.exif_transpose(Image.open(path)).convert("RGB").getpixel((32, 24))
    digest = content_hash(path)
    real_render = imaging.render

    def rewrite_then_render(data: bytes, spec: RenderSpec, **options: bool) -> bytes:
        Image.new("RGB", (64, 48), (0, 0, 255)).save(path, "JPEG")  # during the decode, as far as the file knows
        return real_render(data, spec, **options)

    monkeypatch.setattr(imaging, "render", rewrite_then_render)
    status, stored, _, _ = renderpool._render_and_store(tmp_path / "cache", str(tmp_path), "a.jpg", False,
                                                        "thumbnail", digest, THUMB, None)
    assert status == DONE and stored is not None
    with Image.open(stored) as im:
        shown = im.convert("RGB").getpixel((32, 24))
    assert max(abs(a - b) for a, b in zip(shown, original, strict=True)) < 24  # the content that was hashed


@pytest.mark.parametrize("target", ["a file", "a folder"])
def test_a_fifo_or_folder_where_the_scan_saw_a_file_is_changed(tmp_path: Path, target: str) -> None:
    path = tmp_path / "a.jpg"
    if target == "a file":
        os.mkfifo(path)
    else:
        path.mkdir()
    with RenderPool(tmp_path / "cache", processes=1) as pool:
        outcome = pool.render_one(RenderJob("a", str(path), "thumbnail", NEVER_RENDERED, THUMB))
    assert (outcome.status, outcome.error) == (CHANGED, "changed since the scan (no longer a regular file)")


def test_render_processes_exit_quietly_when_their_parent_is_killed(tmp_path: Path, slow_png: Path) -> None:
    """SIGKILL the parent while both children render: each ends without a word on stderr (issue 18)."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from libwatch.imaging import DEFAULT_SPECS\n"
        "from libwatch.renderpool import RenderPool, RenderJob\n"
        "if __name__ == '__main__':\n"
        "    pool = RenderPool(Path(sys.argv[1]), processes=2)\n"
        "    jobs = [RenderJob(i, sys.argv[2], f'k{i}', sys.argv[3], DEFAULT_SPECS['thumbnail'], force=True)\n"
        "            for i in range(4)]\n"
        "    print('rendering', flush=True)\n"
        "    list(pool.render_many(jobs))\n"
    )
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache"), str(slow_png),
                                   content_hash(slow_png)], stdout=subprocess.PIPE, stderr=err)
        assert parent.stdout is not None and parent.stdout.readline() == b"rendering\n"
        children = _children_of(parent.pid, count=2)
        time.sleep(0.3)  # both children inside a render
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)
    assert stderr.read_bytes() == b""


def _children_of(pid: int, count: int, limit_s: float = 30) -> list[int]:
    """The render processes of ``pid`` (spawned children, not the resource tracker), once there are ``count``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"{pid} has not started {count} render processes")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
