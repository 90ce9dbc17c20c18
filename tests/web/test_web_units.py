"""libwatch-web.socket/.service and the metrics drop-ins as `units install --web --metrics-textfile DIR` writes them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from libwatch import systemd
from libwatch.systemd import LibraryUnits, UnitContext

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")

LIBWATCH = systemd.find_executable()  # verify checks that ExecStart= exists
CTX = UnitContext(executable=LIBWATCH, state_dir="/var/lib/libwatch",
                  cache_dir="/var/cache/libwatch", store=True)
PHOTOS = LibraryUnits("photos", "/srv/photos", watch_dirs=("2024/trip",))


def test_web_units_verify_and_score_at_most_2_5(tmp_path: Path) -> None:
    systemd.write_units(tmp_path, systemd.render_all(CTX, [PHOTOS]).files)
    service = (tmp_path / "libwatch-web.service").read_text()
    assert f"ExecStart={LIBWATCH} web\n" in service
    assert "User=libwatch\n" in service and "Requires=libwatch-web.socket\n" in service
    assert "ListenStream=127.0.0.1:8470\n" in (tmp_path / "libwatch-web.socket").read_text()
    assert systemd.verify(tmp_path, list(systemd.WEB_UNITS)) == []
    assert systemd.security_exposure(tmp_path, "libwatch-web.service") <= 2.5


def test_install_with_metrics_textfile_writes_a_step_after_every_scan(tmp_path: Path) -> None:
    units = tmp_path / "units"
    result = systemd.install(CTX, [PHOTOS], directory=units, metrics_textfile="/var/lib/node-exporter", web=True)
    for unit in ("libwatch-scan@.service", "libwatch-watch@.service"):
        dropin = units / f"{unit}.d" / systemd.METRICS_DROPIN
        assert dropin in result.written
        text = dropin.read_text()
        assert f"ExecStopPost=-{LIBWATCH} metrics --textfile /var/lib/node-exporter\n" in text
        assert "ReadWritePaths=-/var/lib/node-exporter\n" in text
    assert systemd.verify(units, ["libwatch-scan@photos.service", "libwatch-watch@photos.service"]) == []
    assert systemd.security_exposure(units, "libwatch-scan@photos.service") <= 2.5

    removed = systemd.uninstall(None, directory=units)
    assert units / "libwatch-scan@.service.d" / systemd.METRICS_DROPIN in removed.removed
    assert not any(units.rglob("*.conf")) and not (units / "libwatch-web.socket").exists()


def test_the_polkit_rule_lets_the_service_user_start_scan_units_only() -> None:
    rule = systemd.POLKIT_TEXT
    assert 'subject.user == "libwatch"' in rule and 'action.lookup("verb") == "start"' in rule
    assert r"/^libwatch-scan@[a-z0-9][a-z0-9_-]{0,62}\.service$/" in rule
