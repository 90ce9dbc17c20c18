"""`libwatch doctor`: the JSON report and its exit code, against the real SecantusDB and RabbitMQ."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .catalog_docs import add_library

CHECKS = ["mongodb", "rabbitmq", "cache_dir", "inotify", "units", "libraries", "secrets"]
CHECK_KEYS = {"name", "status", "required", "detail", "data"}


def _report(libwatch, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    done = libwatch("doctor", "--json", *args, env=env)
    assert "Traceback" not in done.stderr
    return done.code, json.loads(done.stdout)


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def test_doctor_json_when_all_is_well(libwatch, db: Any, tmp_path: Path) -> None:
    add_library(db, "photos", tmp_path / "photos")
    code, report = _report(libwatch)
    assert code == 0 and report["ok"] is True
    assert set(report) == {"ok", "checks", "status", "problems"} and report["problems"] == []
    assert [check["name"] for check in report["checks"]] == CHECKS
    assert all(set(check) == CHECK_KEYS for check in report["checks"])
    checks = _by_name(report)
    assert checks["mongodb"]["status"] == "ok" and checks["mongodb"]["data"]["version"]
    # The tests' catalog is SecantusDB: named as what it is, not as the MongoDB version it speaks.
    assert checks["mongodb"]["data"]["product"] == "SecantusDB"
    mongodb = checks["mongodb"]["detail"]
    assert mongodb.startswith("SecantusDB 0.") and "(speaks MongoDB 8." in mongodb
    assert checks["rabbitmq"]["status"] == "skip" and "not configured" in checks["rabbitmq"]["detail"]
    assert checks["inotify"]["data"]["max_user_watches"] > 0
    assert checks["libraries"]["data"]["filesystems"].keys() == {"photos"}


def test_doctor_fails_on_unreachable_mongodb(libwatch) -> None:
    code, report = _report(libwatch, env={"LIBWATCH_MONGO_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1000"})
    assert code == 4 and report["ok"] is False
    checks = _by_name(report)
    assert checks["mongodb"]["status"] == "fail" and "127.0.0.1:9" in checks["mongodb"]["detail"]
    assert checks["libraries"]["status"] == "skip"


def test_doctor_fails_on_an_unwritable_cache_dir(libwatch, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    code, report = _report(libwatch, env={"LIBWATCH_CACHE_DIR": str(not_a_folder)})
    assert code == 4 and _by_name(report)["cache_dir"]["status"] == "fail"


def test_doctor_warns_about_a_missing_root(libwatch, db: Any, tmp_path: Path) -> None:
    add_library(db, "nas", tmp_path / "nas")
    (tmp_path / "nas").rmdir()
    code, report = _report(libwatch)
    assert code == 0
    assert _by_name(report)["libraries"]["status"] == "warn" and "nas" in _by_name(report)["libraries"]["detail"]


def test_doctor_checks_a_configured_broker(libwatch, amqp_url: str) -> None:
    code, report = _report(libwatch, env={"LIBWATCH_AMQP_URL": amqp_url})
    rabbit = _by_name(report)["rabbitmq"]
    assert code == 0 and rabbit["status"] in ("ok", "warn") and rabbit["required"] is True
    assert rabbit["data"]["version"].startswith("RabbitMQ") and "guest:***" in rabbit["detail"]

    code, report = _report(libwatch, env={"LIBWATCH_AMQP_URL": "amqp://guest:guest@127.0.0.1:9/%2F"})
    assert code == 4 and _by_name(report)["rabbitmq"]["status"] == "fail"


def test_doctor_reads_the_configured_topology_and_names_its_queues(libwatch, amqp_url: str, topology: Any) -> None:
    """Before: doctor ignored LIBWATCH_AMQP_PREFIX and reported the unprefixed deployment's queues."""
    import pika

    from libwatch.bus import declare

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        declare(channel, topology)
        for _ in range(3):
            channel.basic_publish(topology.exchange, topology.routing_key("cache"), b"{}")
    finally:
        connection.close()
    prefix = topology.exchange.removesuffix("libwatch")
    code, report = _report(libwatch, env={"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_AMQP_PREFIX": prefix})
    rabbit = _by_name(report)["rabbitmq"]
    assert code == 0, rabbit
    assert rabbit["data"]["queues"]["cache"] == 3
    assert rabbit["data"]["queue_names"]["cache"] == f"{prefix}libwatch.rebuild.cache"
    assert f"{prefix}libwatch.rebuild.cache 3" in rabbit["detail"] and f"{prefix}libwatch.dead 0" in rabbit["detail"]


def test_doctor_warns_when_the_shell_reads_other_settings_than_the_installed_units(settings: Any, db: Any,
                                                                                    tmp_path: Path) -> None:
    """The units read the settings file their LIBWATCH_CONFIG names; a shell that reads others is told how."""
    from libwatch import systemd
    from libwatch.services import doctor

    units_config = tmp_path / "units.toml"
    same = (f'mongo_uri = "{settings.mongo_uri}"\ndatabase = "{settings.database}"\n'
            f'home = "{settings.home}"\ncache_dir = "{settings.cache_dir}"\n')
    ctx = systemd.UnitContext(executable="/usr/bin/libwatch", state_dir=str(settings.home),
                              cache_dir=str(settings.cache_dir), config_file=str(units_config))
    systemd.write_units(tmp_path / "units", systemd.render_templates(ctx))

    units_config.write_text(same + "lease_s = 90.0\n")
    units = {c.name: c for c in doctor.diagnose(settings, unit_dir=tmp_path / "units").checks}["units"]
    assert units.status == "warn" and "lease_s: the shell has '60.0', the units '90.0'" in units.detail, units.detail

    units_config.write_text(same)
    units = {c.name: c for c in doctor.diagnose(settings, unit_dir=tmp_path / "units").checks}["units"]
    assert units.status == "ok" and units.data["settings_differ"] == [], units.detail
