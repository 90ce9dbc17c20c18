"""The foundation: settings precedence, the embedded store, unreachable MongoDB, library commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libwatch import config
from libwatch.errors import ConfigError


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('database = "from-file"\namqp_url = "amqp://file"\ncache_dir = "/file/cache"\n')
    env = {"LIBWATCH_CONFIG": str(file), "LIBWATCH_DATABASE": "from-env", "LIBWATCH_CACHE_DIR": "/env/cache"}
    settings = config.load({"database": "from-flag"}, env)
    assert settings.database == "from-flag"
    assert settings.cache_dir == Path("/env/cache")
    assert settings.amqp_url == "amqp://file"
    assert settings.lease_s == config.Settings().lease_s


@pytest.mark.parametrize("content, words", [
    ("database = ", "not valid TOML"),
    ('colour = "red"', "unknown key 'colour'"),
    ("lease_s = \"soon\"", "lease_s must be a number, not 'soon'"),
    ("cache_edge = 1.5e400", "cache_edge must be a whole number"),
    ('image_format = "gif"', "image_format must be one of jpeg, webp, not 'gif'"),
    ("thumbnail_edge = 8", "thumbnail_edge must be at least 16 pixels, not 8"),
    ('amqp_url = "http://broker/"', "amqp_url must be a URL starting with amqp:// or amqps://, not 'http://broker/'"),
    ('mongo_uri = "mongo://db/"', r"mongo_uri must be a URL starting with mongodb:// or mongodb\+srv://"),
    ("cache_edge = 1.5", "cache_edge must be a whole number, not 1.5"),
])
def test_bad_config_file_is_one_line_naming_file_and_key(tmp_path: Path, content: str, words: str) -> None:
    file = tmp_path / "config.toml"
    file.write_text(content + "\n")
    with pytest.raises(ConfigError, match=words) as caught:
        config.load({}, {"LIBWATCH_CONFIG": str(file)})
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"config file {file}")
    assert "invalid literal" not in str(caught.value) and "could not convert" not in str(caught.value)


@pytest.mark.parametrize("variable, value, words", [
    ("LIBWATCH_AMQP_URL", "http://guest:hunter2@broker/", "amqp_url must be a URL starting with amqp://"),
    ("LIBWATCH_MONGO_URI", "postgres://me:hunter2@db/", "mongo_uri must be a URL starting with mongodb://"),
    ("LIBWATCH_CACHE_EDGE", "big", "cache_edge must be a whole number, not 'big'"),
    ("LIBWATCH_RETENTION_DAYS", "-3", "retention_days must not be negative"),
    ("LIBWATCH_IMAGE_FORMAT", "gif", "image_format must be one of jpeg, webp"),
])
def test_a_bad_environment_value_names_the_variable_and_the_key(libwatch, variable: str, value: str,
                                                                 words: str) -> None:
    done = libwatch("--json", "status", env={variable: value})
    assert done.code == 2, done
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"libwatch: error: environment {variable}: ") and words in line, line
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["error"]["kind"] == "ConfigError"


def test_bad_config_exits_2_without_traceback(libwatch, tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text("lease_s = -3\n")
    done = libwatch("library", "list", env={"LIBWATCH_CONFIG": str(file)})
    assert done.code == 2
    assert str(file) in done.stderr and "lease_s" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_password_is_masked() -> None:
    assert config.mask_url("mongodb://admin:hunter2@db:27017/x") == "mongodb://admin:***@db:27017/x"


def test_unreachable_mongodb_exits_69_with_masked_uri(libwatch) -> None:
    started = time.monotonic()
    done = libwatch("library", "list", env={"LIBWATCH_MONGO_URI": "mongodb://me:hunter2@127.0.0.1:9/?serverSelectionTimeoutMS=1500"})
    # the URI's own timeout is honoured: well under the 5 s default
    assert done.code == 69
    assert "hunter2" not in done.stderr and "me:***@127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 4.9  # the 5 s default plus start-up would exceed it


def test_library_lifecycle(libwatch, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    assert libwatch("library", "add", "photos", str(root)).code == 0
    listed = json.loads(libwatch("library", "list", "--json").stdout)
    assert [lib["name"] for lib in listed["libraries"]] == ["photos"]
    shown = json.loads(libwatch("--json", "library", "show", "photos").stdout)
    assert shown["path"] == str(root.resolve()) and shown["counts"] == {"files": 0, "missing": 0, "collections": 0}
    changed = json.loads(libwatch("library", "set", "photos", "--pause", "--schedule", "daily", "--json").stdout)
    assert changed["schedule"] == {"on_calendar": "daily", "enabled": True, "paused": True}
    assert libwatch("library", "remove", "photos").code == 0
    assert json.loads(libwatch("library", "list", "--json").stdout) == {"libraries": [], "status": "success",
                                                                        "problems": []}


@pytest.mark.parametrize("args, words", [
    (["Bad Name", "{root}"], "invalid library name"),
    (["ok", "{root}/nope"], "no such folder"),
    (["ok", "{file}"], "not a folder"),
])
def test_library_add_refuses_bad_input(libwatch, tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    args = [a.format(root=tmp_path, file=tmp_path / "file.txt") for a in args]
    done = libwatch("library", "add", *args)
    assert done.code == 2 and words in done.stderr and "Traceback" not in done.stderr


def test_duplicate_library_refused(libwatch, tmp_path: Path) -> None:
    assert libwatch("library", "add", "a", str(tmp_path)).code == 0
    again = libwatch("library", "add", "a", str(tmp_path / ".."))
    assert again.code == 2 and "already exists" in again.stderr
    same_path = libwatch("library", "add", "b", str(tmp_path))
    assert same_path.code == 2 and "already the library 'a'" in same_path.stderr


def test_embedded_store_persists_and_serialises_processes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBWATCH_")}
    env.update(LIBWATCH_CONFIG=os.devnull, LIBWATCH_HOME=str(tmp_path / "home"), LIBWATCH_STORE_WAIT="1")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "libwatch", *args], env=env, capture_output=True, text=True)

    assert run("library", "add", "one", str(tmp_path)).returncode == 0
    # A second process holding the store: hold the lock file from here and check the refusal.
    import fcntl
    with open(tmp_path / "home" / "db.lock", "r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.truncate(0)
        held.write('{"pid": 4242, "host": "here", "command": "libwatch scan"}')
        held.flush()
        busy = run("library", "list")
    assert busy.returncode == 75 and "pid 4242" in busy.stderr
    listed = run("library", "list", "--json")
    assert json.loads(listed.stdout)["libraries"][0]["name"] == "one"


def test_under_journald_log_lines_carry_their_syslog_priority(libwatch, tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    assert libwatch("library", "add", "paused", str(tmp_path / "lib")).code == 0
    assert libwatch("library", "set", "paused", "--pause").code == 0
    done = libwatch("scan", "paused", env={"JOURNAL_STREAM": "8:12345"})
    assert done.code == 0
    assert any(line.startswith("<4>") and "paused" in line for line in done.stderr.splitlines())
    plain = libwatch("scan", "paused")
    assert "libwatch: WARNING:" in plain.stderr and "<4>" not in plain.stderr
