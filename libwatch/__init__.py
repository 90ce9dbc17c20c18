"""libwatch: keep a MongoDB catalog of image libraries in step with the disk."""
from __future__ import annotations

__version__ = "0.1.0"
