"""One configuration for shell and units: `units install` writes the settings both read, and says where they differ."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libwatch import config
from libwatch.services import units as service

UNITS_COMMANDS = ("render", "install", "refresh", "uninstall", "status")


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user whose home is ``tmp_path``: its config, units and state under it."""
    return {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_RUNTIME_DIR": str(tmp_path / "run"), **extra}


def test_user_install_writes_the_shells_settings_with_the_mongo_uri(libwatch, db: Any, settings,
                                                                    tmp_path: Path) -> None:
    """Before: `units install --user` kept home and cache but dropped LIBWATCH_MONGO_URI."""
    (tmp_path / "photos").mkdir()
    assert libwatch("library", "add", "photos", str(tmp_path / "photos")).code == 0
    env = user_env(tmp_path)
    done = libwatch("units", "install", "--user", "--json", env=env)
    assert done.code == 0, done.stderr
    written = tmp_path / "config" / "libwatch" / "config.toml"
    unit = (tmp_path / "config" / "systemd" / "user" / "libwatch-scan@.service").read_text()
    assert f"Environment=LIBWATCH_CONFIG={written}\n" in unit
    units = config.load(environ={"LIBWATCH_CONFIG": str(written)})
    assert (units.mongo_uri, units.database, units.home) == (settings.mongo_uri, settings.database, settings.home)
    assert written.stat().st_mode & 0o777 == 0o640  # it may hold a password
    assert any("libwatch-scan@photos.timer.d" in path for path in json.loads(done.stdout)["written"])
    # The user's shell now reads the same file (no LIBWATCH_* of its own): nothing to warn about.
    plain = {**env, "LIBWATCH_CONFIG": "", "LIBWATCH_MONGO_URI": "", "LIBWATCH_DATABASE": "", "LIBWATCH_HOME": "",
             "LIBWATCH_CACHE_DIR": ""}
    again = libwatch("units", "install", "--user", "--json", env=plain)
    assert again.code == 0 and not [w for w in json.loads(again.stdout)["warnings"] if "settings" in w], again.stdout


def test_install_refuses_to_overwrite_other_settings_without_force(libwatch, db: Any, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    assert libwatch("units", "install", "--user", env=env).code == 0
    written = tmp_path / "config" / "libwatch" / "config.toml"
    before = written.read_text()
    other = {**env, "LIBWATCH_LEASE": "90"}
    render = libwatch("units", "render", "--user", "--output", str(tmp_path / "out"), "--json", env=other)
    assert any("lease_s: the shell has '90.0', the units '60.0'" in w for w in json.loads(render.stdout)["warnings"])

    dry = libwatch("units", "install", "--user", "--dry-run", "--json", env=other)
    assert dry.code == 0 and written.read_text() == before
    plan = json.loads(dry.stdout)
    assert plan["files"][str(written)].count("lease_s = 90.0\n") == 1
    assert f"+++ {written} (new)" in plan["diff"] and "+lease_s = 90.0" in plan["diff"]

    refused = libwatch("units", "install", "--user", env=other)
    assert refused.code == 2 and "holds other settings" in refused.stderr and "+lease_s = 90.0" in refused.stderr
    assert written.read_text() == before
    forced = libwatch("units", "install", "--user", "--force", env=other)
    assert forced.code == 0 and "lease_s = 90.0\n" in written.read_text()


def test_system_units_get_system_folders_the_store_and_a_warning_for_the_shell(settings, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A root shell with no settings file uses ~/.local/share: the units must not, and the admin is told."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(variable, raising=False)
    shell = config.load(environ={"LIBWATCH_CONFIG": os.devnull})
    draft = service.plan(shell, user=False)
    if draft.installed_text is not None:
        pytest.fail(f"this host has {draft.config_file}: the test compares against a fresh host")
    assert (str(draft.settings.home), str(draft.settings.cache_dir)) == ("/var/lib/libwatch", "/var/cache/libwatch")
    # The store service's URI (with its password) is read from the file it writes, never written here.
    assert draft.settings.mongo_uri_file == Path("/var/lib/libwatch/store.uri") and draft.ctx.store
    assert 'mongo_uri_file = "/var/lib/libwatch/store.uri"\n' in draft.config_text
    assert "mongo_uri =" not in draft.config_text
    assert any(w.startswith("the shell's settings differ from the units' (/etc/libwatch/config.toml): home: the "
                            f"shell has '{tmp_path}/.local/share/libwatch'") for w in draft.warnings), draft.warnings
    assert any("mongo_uri_file: the shell has unset" in w for w in draft.warnings)
    # A shell with its own MongoDB keeps it, and the units get no store.
    mongo = service.plan(settings, user=False)
    assert mongo.settings.mongo_uri == settings.mongo_uri and not mongo.ctx.store
    assert "Wants=network-online.target\n" in service.systemd.render_templates(mongo.ctx)["libwatch-scan@.service"]


def help_examples() -> list[tuple[str, str]]:
    """(command, example) for every `libwatch units` subcommand, from its --help."""
    examples = []
    for command in ("", *UNITS_COMMANDS):
        text = subprocess.run([sys.executable, "-m", "libwatch", "units", *([command] if command else []), "--help"],
                              capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "300"}).stdout
        lines = [line.strip() for line in text.splitlines() if line.strip().startswith("Example: ")]
        assert len(lines) == 1, f"units {command} --help has {len(lines)} examples"
        examples.append((command, lines[0].removeprefix("Example: ")))
    return examples


def test_every_units_help_example_runs_as_written(libwatch, db: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    """Before: `units render --help` showed `systemd-analyze verify /tmp/units/*`, which fails as written.

    Each example runs as root in a mount namespace of its own whose /etc is an overlay, so that
    `install` and `uninstall` change nothing on this machine.
    """
    (tmp_path / "photos").mkdir()
    assert libwatch("library", "add", "photos", str(tmp_path / "photos")).code == 0
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    become_root = [] if os.geteuid() == 0 else ["--map-root-user"]
    for command, example in help_examples():
        words = shlex.split(example)
        words = words[1:] if words[0] == "sudo" else words
        assert words[:2] == ["libwatch", "units"], example
        script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc && "
                  f"exec {shlex.quote(sys.executable)} -m libwatch {shlex.join(words[1:])}")
        done = subprocess.run(["unshare", *become_root, "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, cwd=tmp_path, env=cli_env, timeout=120)
        assert done.returncode == 0, f"units {command}: {example!r} exited {done.returncode}:\n{done.stderr}"
        assert "Traceback" not in done.stderr
