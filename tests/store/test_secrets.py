"""Secrets out of sight (issue 12, item 6): read from files, masked in messages, warned about on the
command line and in files others may read; the state folder the owner's alone."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from libwatch import config
from libwatch.errors import ConfigError

from .test_store_auth import assert_private


def secret(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_urls_are_read_from_the_files_the_environment_or_the_config_file_name(tmp_path: Path) -> None:
    mongo = secret(tmp_path, "mongo", "mongodb://me:pw@db:27017/")
    amqp = secret(tmp_path, "amqp", "amqp://me:pw@mq/")
    settings = config.load(environ={"LIBWATCH_CONFIG": os.devnull, "LIBWATCH_MONGO_URI_FILE": str(mongo),
                                    "LIBWATCH_AMQP_URL_FILE": str(amqp)})
    assert (settings.mongo_uri, settings.amqp_url) == ("mongodb://me:pw@db:27017/", "amqp://me:pw@mq/")
    file = tmp_path / "config.toml"
    file.write_text(f'mongo_uri_file = "{mongo}"\namqp_url = "amqp://plain/"\n')
    settings = config.load(environ={"LIBWATCH_CONFIG": str(file)})
    assert (settings.mongo_uri, settings.mongo_uri_file, settings.amqp_url) == (
        "mongodb://me:pw@db:27017/", mongo, "amqp://plain/")
    # A higher source's URL beats a lower source's file, and a higher source's file a lower URL.
    assert config.load({"mongo_uri": "mongodb://flag/"}, {"LIBWATCH_CONFIG": str(file)}).mongo_uri == "mongodb://flag/"
    assert config.load(environ={"LIBWATCH_CONFIG": str(file), "LIBWATCH_AMQP_URL_FILE": str(amqp)}).amqp_url == \
        "amqp://me:pw@mq/"


@pytest.mark.parametrize("content, words", [
    ('mongo_uri = "mongodb://a/"\nmongo_uri_file = "/x"', "give mongo_uri or mongo_uri_file, not both"),
    ('amqp_url_file = "/nonexistent/amqp"', "cannot read amqp_url_file from /nonexistent/amqp"),
])
def test_bad_secret_settings_are_one_line(tmp_path: Path, content: str, words: str) -> None:
    file = tmp_path / "config.toml"
    file.write_text(content + "\n")
    with pytest.raises(ConfigError, match=words) as caught:
        config.load({}, {"LIBWATCH_CONFIG": str(file)})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("url, shown", [
    ("mongodb://admin:hunter2@db:27017/x", "mongodb://admin:***@db:27017/x"),
    ("mongodb://a:p%40ss@h1:1,h2:2/?tls=true&tlsCertificateKeyFilePassword=s3&appname=x",
     "mongodb://a:***@h1:1,h2:2/?tls=true&tlsCertificateKeyFilePassword=***&appname=x"),
    ("mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok",
     "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=***"),
    ("amqp://guest@mq/%2F?password=x&heartbeat=30", "amqp://guest@mq/%2F?password=***&heartbeat=30"),
    ("mongodb://db/?ssl_keyfile_password=x", "mongodb://db/?ssl_keyfile_password=***"),
    ("mongodb://db:27017/?tls=true", "mongodb://db:27017/?tls=true"),
])
def test_mask_url_hides_passwords_and_secret_parameters(url: str, shown: str) -> None:
    assert config.mask_url(url) == shown
    assert config.has_password(url) == (url != shown)


def test_a_password_flag_gets_one_warning_line(libwatch: Any) -> None:
    done = libwatch("--amqp-url", "amqp://me:s3cret@127.0.0.1:9/", "library", "list")
    warnings = [line for line in done.stderr.splitlines() if "holds a password" in line]
    assert done.code == 0 and len(warnings) == 1 and "s3cret" not in done.stderr
    assert "LIBWATCH_AMQP_URL_FILE" in warnings[0]
    assert "holds a password" not in libwatch("--amqp-url", "amqp://127.0.0.1:9/", "library", "list").stderr


def test_doctor_warns_of_a_readable_file_holding_a_password(libwatch: Any, tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('amqp_url = "amqp://me:s3cret@127.0.0.1:9/"\n')
    uri_file = secret(tmp_path, "mongo", "mongodb://127.0.0.1:9/")
    env = {"LIBWATCH_CONFIG": str(file), "LIBWATCH_MONGO_URI": "", "LIBWATCH_MONGO_URI_FILE": str(uri_file)}
    for mode, status in ((0o644, "warn"), (0o640, "ok")):
        file.chmod(mode)
        done = libwatch("doctor", "--json", env=env)
        check = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "secrets")
        assert check["status"] == status, check
        assert (str(file) in check["detail"]) == (status == "warn") and "s3cret" not in done.stdout
    uri_file.chmod(0o604)
    done = libwatch("doctor", "--json", env=env)
    check = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "secrets")
    assert check["status"] == "warn" and check["data"]["readable"] == [str(uri_file)]


def test_the_embedded_stores_folder_and_the_stat_index_are_the_owners(libwatch: Any, tmp_path: Path) -> None:
    home, photos = tmp_path / "home", tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    (photos / "a" / "x.jpg").write_bytes(b"\xff\xd8not really")
    env = {"LIBWATCH_MONGO_URI": "", "LIBWATCH_HOME": str(home)}
    for args in (("library", "add", "photos", str(photos)), ("scan", "photos", "--no-publish")):
        done = libwatch(*args, env=env)
        assert done.code in (0, 3), done.stderr
    assert list(home.glob("index/*/photos.idx"))
    assert_private(home)
