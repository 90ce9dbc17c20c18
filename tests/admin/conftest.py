"""Fixtures of the admin tests (the builders are in catalog_docs.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def cache_dir(settings: Any) -> Path:
    """The test's cache folder, created."""
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    return settings.cache_dir
