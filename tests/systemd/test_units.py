"""Every unit libwatch renders passes `systemd-analyze verify` silently; calendars are validated."""
from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from libwatch import systemd
from libwatch.errors import CalendarError, UnitError
from libwatch.systemd import LibraryUnits, UnitContext

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
                      user=user, config_file=str(tmp_path / "config.toml"), settle=2.5, store=True)
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
    assert ("ExecStart=/usr/bin/libwatch scan %i --trigger timer --wait-lock --skip-if-locked\n"
            in texts["libwatch-scan@.service"])
    assert ("ExecStart=/usr/bin/libwatch scan %i --trigger path --settle 10 --wait-lock --skip-if-locked "
            "--rescan-on-change\n" in texts["libwatch-watch@.service"])
    assert not any("TRIGGER_" in text for text in texts.values())
    assert "StateDirectory=libwatch\n" in texts["libwatch-scan@.service"]
    assert "CacheDirectory" not in texts["libwatch-scan@.service"]  # scans write only the state folder
    assert "CacheDirectory=libwatch\n" in texts["libwatch-worker.service"]
    assert "StateDirectory" not in texts["libwatch-worker.service"]  # the worker writes only the cache
    assert "ReadWritePaths" not in "".join(texts.values())
    assert all("User=libwatch\nGroup=libwatch\nConfigurationDirectory=libwatch\n" in texts[name]
               for name in texts if name.endswith(".service"))
    assert not any("SuccessExitStatus" in text for text in texts.values())  # every give-up but a skip fails


def test_folders_outside_var_are_made_writable_by_path() -> None:
    ctx = UnitContext(executable="/usr/bin/libwatch", state_dir="/srv/lw state", cache_dir="/var/cache/libwatch")
    texts = systemd.render_templates(ctx)
    assert 'ReadWritePaths="/srv/lw state"\n' in texts["libwatch-scan@.service"]
    assert "StateDirectory" not in texts["libwatch-scan@.service"]


def test_schedule_dropin_resets_then_sets_the_calendar() -> None:
    rendered = systemd.render_library_dropins(LibraryUnits("photos", "/srv/photos", on_calendar="hourly", watch=False))
    assert rendered.files["libwatch-scan@photos.timer.d/schedule.conf"] == (
        "# Written by libwatch from the library's settings; `libwatch units install` rewrites it.\n"
        "[Timer]\nOnCalendar=\nOnCalendar=hourly\n")


def test_every_folder_on_the_way_to_a_collection_is_watched() -> None:
    """2024/ holds no image, only 2024/trip/: a new album 2024/party appears in 2024/, so it is watched."""
    rendered = systemd.render_library_dropins(LibraryUnits("photos", "/srv/photos", watch_dirs=("2024/trip", "x/y/z")))
    lines = rendered.files["libwatch-watch@photos.path.d/paths.conf"].splitlines()[2:]
    assert lines == ["PathChanged=/srv/photos", "PathChanged=/srv/photos/2024", "PathChanged=/srv/photos/x",
                     "PathChanged=/srv/photos/2024/trip", "PathChanged=/srv/photos/x/y",
                     "PathChanged=/srv/photos/x/y/z"]


def test_the_library_root_is_read_only_and_a_home_library_stays_visible() -> None:
    files = systemd.render_library_dropins(LibraryUnits("photos", "/srv/photos")).files
    assert files["libwatch-scan@photos.service.d/library.conf"].endswith("[Service]\nReadOnlyPaths=-/srv/photos\n")
    assert files["libwatch-watch@photos.service.d/library.conf"] == files["libwatch-scan@photos.service.d/library.conf"]
    home = systemd.render_library_dropins(LibraryUnits("mine", "/home/al/pics")).files
    assert "ProtectHome=read-only\n" in home["libwatch-scan@mine.service.d/library.conf"]
    worker = systemd.render_worker_dropin(["/srv/b", "/home/al/pics", "/srv/b"])
    assert ("ReadOnlyPaths=-/home/al/pics -/srv/b\nProtectHome=read-only\n"
            in worker["libwatch-worker.service.d/library.conf"])


def test_paths_the_sandbox_hides_are_named_with_their_directive(tmp_path: Path) -> None:
    ctx = UnitContext(executable="/tmp/checkout/.venv/bin/libwatch", state_dir="/var/lib/libwatch",
                      cache_dir="/var/cache/libwatch")
    closed = tmp_path / "closed"
    (closed / "lib").mkdir(parents=True)
    closed.chmod(0o700)
    libs = [LibraryUnits("tmp", "/var/tmp/pics"), LibraryUnits("mine", "/home/al/pics"),
            LibraryUnits("closed", str(closed / "lib"))]
    warnings = systemd.sandbox_warnings(ctx, libs)
    assert any("ExecStart= /tmp/checkout/.venv/bin/libwatch" in w and "PrivateTmp=yes" in w for w in warnings)
    assert any("library tmp's root /var/tmp/pics" in w and "PrivateTmp=yes" in w for w in warnings)
    assert not any("library mine" in w for w in warnings)  # ProtectHome=read-only for it
    assert any(f"library closed's root {closed}/lib may not be readable" in w and "mode 700" in w for w in warnings)
    assert systemd.sandbox_warnings(replace(ctx, executable="/opt/libwatch/bin/libwatch"), libs[1:2]) == []


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
    prepared = systemd.prepare_host(ctx, directory=tmp_path / "units")
    assert prepared.notice == result.notice and not prepared.written  # install wrote the templates already
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
