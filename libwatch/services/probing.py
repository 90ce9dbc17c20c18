"""Reading an image's header for the catalog: its size and format, or why it could not be read.

The scan probes each new or changed file; `rebuild --failed` probes again the files whose
header could not be read (a newer Pillow, a plugin installed, a file repaired in place).
"""
from __future__ import annotations

import os

from libwatch.catalog.files import Probe
from libwatch.core.walk import reason_of


def probe_header(root: str | bytes, raw: bytes) -> Probe:
    """The header of the file ``raw`` (its path relative to ``root``, as bytes), or why it could not be read.

    ``hopeless`` is set when no render of these bytes can succeed (``imaging.hopeless``).
    Imports Pillow (about 25 ms) on first use.
    """
    from libwatch import imaging

    try:
        info = imaging.probe(os.path.join(os.fsencode(root), raw))
    except imaging.ImageError as error:
        return Probe(error=error.reason, hopeless=imaging.hopeless(error))
    except OSError as error:  # gone, unreadable or turned into a folder since it was hashed
        return Probe(error=f"{reason_of(error)}: {error.strerror or error}")
    return Probe(info.width, info.height, info.format)
