"""Whether the process a run or a lease names (its host and pid) is gone.

Only a process of this host can be looked at: one recorded on another host counts as
alive (its lease runs out instead). A killed process its parent has not reaped yet (a
zombie) is gone all the same. Standard library only.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def gone(host: object, pid: object) -> bool:
    """True when ``pid`` on ``host`` is this host's and no longer runs (or is a zombie)."""
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")
