"""The core imports no adapter: it must run without MongoDB, RabbitMQ, Pillow or the CLI stack."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SNIPPET = """
import sys
import libwatch.core.paths, libwatch.core.walk, libwatch.core.parallel_walk, libwatch.core.hashing, libwatch.core.diff
print(",".join(sorted(m for m in ("pymongo", "pika", "PIL", "typer", "rich", "bson", "secantus") if m in sys.modules)))
"""


def test_core_imports_no_adapter() -> None:
    out = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == ""
