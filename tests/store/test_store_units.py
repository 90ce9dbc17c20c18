"""The units reach the store service with its password, which never sits in the settings file (issue 14)."""
from __future__ import annotations

from pathlib import Path

import pytest

from libwatch import config
from libwatch.config import Settings
from libwatch.services import units as service


@pytest.mark.parametrize("mongo_uri", [None, "mongodb://127.0.0.1:27017/"])
def test_units_without_a_mongodb_read_the_store_services_uri_file(tmp_path: Path, mongo_uri: str | None) -> None:
    """No mongo_uri, or the previous version's store URI without a password: the store's URI file."""
    shell = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache", mongo_uri=mongo_uri)
    units = service.host_settings(shell, user=True)
    assert (units.mongo_uri, units.mongo_uri_file) == (None, tmp_path / "home" / "store.uri")
    assert service.uses_store(units)
    text = service.config_text(units)
    assert f'mongo_uri_file = "{tmp_path}/home/store.uri"\n' in text and "mongo_uri =" not in text


def test_a_mongodb_of_ones_own_is_kept_and_a_secret_file_stays_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "mongo"
    secret.write_text("mongodb://me:pw@db/\n")
    shell = Settings(home=tmp_path / "home", mongo_uri="mongodb://me:pw@db/", mongo_uri_file=secret)
    units = service.host_settings(shell, user=True)
    assert not service.uses_store(units)
    text = service.config_text(units)
    assert f'mongo_uri_file = "{secret}"\n' in text and "pw" not in text
    # The units' settings file read without its secrets (as `units install` compares it): no difference.
    (tmp_path / "config.toml").write_text(text)
    unread = config.load(environ={"LIBWATCH_CONFIG": str(tmp_path / "config.toml")}, secrets=False)
    assert unread.mongo_uri is None and not service.settings_differences(shell, unread)
