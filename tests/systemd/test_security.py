"""Every service unit libwatch installs scores at most 2.5 in `systemd-analyze security` (lower is safer)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from libwatch import systemd
from libwatch.systemd import LibraryUnits, UnitContext

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")

GOAL = 2.5
LIBRARIES = (LibraryUnits("photos", "/srv/photos", watch_dirs=("2024/trip",)),
             LibraryUnits("home_pics", "/home/alice/pictures"))  # ProtectHome=read-only, not yes


def rendered_services(tmp_path: Path, ctx: UnitContext) -> list[str]:
    """Write every unit for the libraries; the service units (one instance per library for templates)."""
    rendered = systemd.render_all(ctx, LIBRARIES)
    systemd.write_units(tmp_path, rendered.files)
    services = []
    for name in rendered.files:
        if "/" in name or not name.endswith(".service"):
            continue
        services += [name.replace("@.", f"@{lib.name}.") for lib in LIBRARIES] if "@." in name else [name]
    return services


@pytest.mark.parametrize("store", [True, False], ids=["store", "mongodb"])
def test_every_rendered_service_scores_at_most_2_5(tmp_path: Path, store: bool) -> None:
    ctx = UnitContext(executable="/opt/libwatch/bin/libwatch", state_dir="/var/lib/libwatch",
                      cache_dir="/var/cache/libwatch", store=store)
    services = rendered_services(tmp_path, ctx)
    assert len(services) == 2 * len(LIBRARIES) + 4  # scan@, watch@ per library; worker, cleanup, store, web
    scores = {unit: systemd.security_exposure(tmp_path, unit) for unit in services}
    assert all(score <= GOAL for score in scores.values()), scores


def test_the_score_reads_the_sandbox(tmp_path: Path) -> None:
    """The measure can fail: the same worker without its sandbox scores as unsafe."""
    ctx = UnitContext(executable="/opt/libwatch/bin/libwatch", state_dir="/var/lib/libwatch",
                      cache_dir="/var/cache/libwatch")
    text = systemd.render_templates(ctx)["libwatch-worker.service"].replace(systemd.SANDBOX, "")
    text = text.replace("User=libwatch\nGroup=libwatch\n", "")
    systemd.write_units(tmp_path, {"libwatch-worker.service": text})
    assert systemd.security_exposure(tmp_path, "libwatch-worker.service") > 9.0
