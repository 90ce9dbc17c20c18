"""Every unit libwatch renders passes `systemd-analyze verify` silently; calendars are validated."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from libwatch import systemd
from libwatch.systemd import CalendarError, LibraryUnits, UnitContext, UnitError

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")

LIBWATCH = str(Path(sys.executable).with_name("libwatch"))  # verify checks that ExecStart= exists
SHARED = ("libwatch-worker.service", "libwatch-cleanup.service", "libwatch-cleanup.timer", "libwatch-store.service")


def libraries(tmp_path: Path) -> list[LibraryUnits]:
    """Several libraries: default, custom schedule, unwatched, odd paths, more folders than the cap."""
    return [
        LibraryUnits("photos", "/srv/photos", watch_dirs=("", "2024", "2024/trip")),
        LibraryUnits("scans", "/srv/scans", on_calendar="Mon..Fri *-*-* 02:30", watch=False),
        LibraryUnits("odd_1", str(tmp_path / "with space %n"), on_calendar="hourly", watch_dirs=("a b", "100%")),
        LibraryUnits("big", "/srv/big", on_calendar="daily", watch_dirs=tuple(f"f{i:03}" for i in range(250)),
                     enabled=False),
    ]


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_every_rendered_unit_verifies_without_output(tmp_path: Path, user: bool) -> None:
    ctx = UnitContext(executable=LIBWATCH, state_dir=str(tmp_path / "state dir"), cache_dir="/var/cache/lib%watch",
                      user=user, env_file=str(tmp_path / "libwatch.env"), settle=2.5)
    libs = libraries(tmp_path)
    rendered = systemd.render_all(ctx, libs)
    systemd.write_units(tmp_path / "units", rendered.files)
    units = [u for lib in libs for u in systemd.library_units(lib.name)
             if lib.watch or not u.startswith("libwatch-watch@")]
    assert systemd.verify(tmp_path / "units", [*units, *SHARED], user=user) == []


def test_verify_reports_what_systemd_warns_about(tmp_path: Path) -> None:
    ctx = UnitContext(executable=LIBWATCH, state_dir="/var/lib/libwatch", cache_dir="/var/cache/libwatch")
    files = dict(systemd.render_all(ctx, [LibraryUnits("photos", "/srv/photos")]).files)
    files["libwatch-scan@.service"] = files["libwatch-scan@.service"].replace("Nice=10", "Nicety=10")
    systemd.write_units(tmp_path, files)
    problems = systemd.verify(tmp_path, systemd.library_units("photos"))
    assert any("Unknown key 'Nicety'" in line for line in problems), problems


def test_verify_reports_a_missing_executable(tmp_path: Path) -> None:
    ctx = UnitContext(executable=str(tmp_path / "no-such-libwatch"), state_dir="/var/lib/lw", cache_dir="/var/cache/lw")
    systemd.write_units(tmp_path, systemd.render_all(ctx, [LibraryUnits("photos", "/srv/photos")]).files)
    assert systemd.verify(tmp_path, systemd.library_units("photos")) != []


def test_units_pass_the_trigger_explicitly_and_never_read_trigger_variables() -> None:
    ctx = UnitContext(executable="/usr/bin/libwatch", state_dir="/var/lib/libwatch", cache_dir="/var/cache/libwatch")
    texts = systemd.render_templates(ctx)
    assert "ExecStart=/usr/bin/libwatch scan %i --trigger timer\n" in texts["libwatch-scan@.service"]
    assert ("ExecStart=/usr/bin/libwatch scan %i --trigger path --settle 10 --wait-lock --rescan-on-change\n"
            in texts["libwatch-watch@.service"])
    assert not any("TRIGGER_" in text for text in texts.values())
    assert "ReadWritePaths=/var/lib/libwatch /var/cache/libwatch -/etc/systemd/system/libwatch-watch@%i.path.d\n" \
        in texts["libwatch-scan@.service"]


def test_schedule_dropin_resets_then_sets_the_calendar() -> None:
    rendered = systemd.render_library_dropins(LibraryUnits("photos", "/srv/photos", on_calendar="hourly", watch=False))
    assert rendered.files == {"libwatch-scan@photos.timer.d/schedule.conf": (
        "# Written by libwatch from the library's settings; `libwatch units install` rewrites it.\n"
        "[Timer]\nOnCalendar=\nOnCalendar=hourly\n")}


def test_watch_list_is_capped_root_and_shallow_folders_first_with_a_warning() -> None:
    lib = LibraryUnits("big", "/srv/big", watch_dirs=("a/b/c", "z", "a/b", "a", "", "a"))
    rendered = systemd.render_library_dropins(lib, watch_cap=3)
    lines = rendered.files["libwatch-watch@big.path.d/paths.conf"].splitlines()[2:]
    assert lines == ["PathChanged=/srv/big", "PathChanged=/srv/big/a", "PathChanged=/srv/big/z"]
    assert rendered.warnings == ("library big: watching 3 of 5 folders (the watch cap is 3); changes in the "
                                 "other 2 are found by the scheduled scan (*:0/30)",)


def test_names_and_paths_that_a_unit_cannot_express_are_refused() -> None:
    with pytest.raises(UnitError):
        systemd.render_library_dropins(LibraryUnits("Photos!", "/srv/photos"))
    with pytest.raises(UnitError):
        systemd.render_library_dropins(LibraryUnits("photos", "relative/root"))
    with pytest.raises(CalendarError):
        systemd.render_library_dropins(LibraryUnits("photos", "/srv/photos", on_calendar="hourly\n[Service]"))
    rendered = systemd.render_library_dropins(LibraryUnits("photos", "/srv/photos", watch_dirs=("bad\nname", "../out")))
    assert len(rendered.warnings) == 2
    assert rendered.files["libwatch-watch@photos.path.d/paths.conf"].count("PathChanged=") == 1


@pytest.mark.parametrize(("expr", "normalised"), [
    ("*:0/30", "*-*-* *:00/30:00"),
    ("hourly", "*-*-* *:00:00"),
    ("Mon..Fri *-*-* 02:30", "Mon..Fri *-*-* 02:30:00"),
    ("  daily ", "*-*-* 00:00:00"),
])
def test_good_calendars_are_normalised(expr: str, normalised: str) -> None:
    assert systemd.validate_calendar(expr) == normalised


@pytest.mark.parametrize("expr", ["every tuesday", "*:61", "", "hourly\nExecStart=/bin/sh", "25:00"])
def test_bad_calendars_are_refused(expr: str) -> None:
    with pytest.raises(CalendarError):
        systemd.validate_calendar(expr)


def test_install_without_a_running_systemd_writes_the_files_and_says_so(tmp_path: Path) -> None:
    ctx = UnitContext(executable=LIBWATCH, state_dir=str(tmp_path / "state"), cache_dir=str(tmp_path / "cache"))
    result = systemd.install(ctx, [LibraryUnits("photos", "/srv/photos")], directory=tmp_path / "units")
    if systemd.manager_running(False):
        pytest.skip("systemd runs here; the container test covers this case")
    assert result.notice is not None and "could not reload or enable" in result.notice
    assert (tmp_path / "units" / "libwatch-watch@photos.path.d" / "paths.conf").exists()
    assert (tmp_path / "state").is_dir() and (tmp_path / "cache").is_dir()
    assert systemd.installed_libraries(False, directory=tmp_path / "units") == ["photos"]
    assert systemd.timers_status(["photos"])["photos"].state == "systemd not running"
    removed = systemd.uninstall(None, directory=tmp_path / "units")
    assert not any((tmp_path / "units").iterdir()), removed


def test_network_file_systems_are_recognised() -> None:
    mountinfo = ("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                 "40 22 0:50 / /srv/nas rw - nfs4 nas:/export rw\n"
                 "41 22 0:51 / /srv/with\\040space rw - fuse.sshfs host:/x rw\n")
    assert systemd.is_network_fs("/srv/nas/photos", mountinfo=mountinfo)
    assert systemd.is_network_fs("/srv/with space/a", mountinfo=mountinfo)
    assert not systemd.is_network_fs("/srv/nasty", mountinfo=mountinfo)
    assert not systemd.is_network_fs("/")  # this machine's real root


def test_inotify_limits_are_read_from_the_kernel() -> None:
    limits = systemd.inotify_limits()
    assert limits["max_user_watches"] > 0 and limits["max_user_instances"] > 0


def test_install_keeps_all_watch_lists_within_the_kernels_inotify_instances(tmp_path: Path) -> None:
    ctx = UnitContext(executable=LIBWATCH, state_dir=str(tmp_path / "state"), cache_dir=str(tmp_path / "cache"))
    many = tuple(f"f{i}" for i in range(600))
    libs = [LibraryUnits(name, f"/srv/{name}", watch_dirs=many) for name in ("a", "b")]
    systemd.install(ctx, libs, directory=tmp_path / "units")
    lines = sum(f.read_text().count("PathChanged=") for f in (tmp_path / "units").glob("*.path.d/paths.conf"))
    assert lines <= systemd.inotify_limits()["max_user_instances"] - systemd.INOTIFY_RESERVE
