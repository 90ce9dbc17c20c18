"""A systemd container booted by harness.sh, as the tests drive it."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

HARNESS: Final = Path(__file__).with_name("harness.sh")
SHARE_INSIDE: Final = Path("/libwatch-e2e")
NEEDED_TOOLS: Final = ("unshare", "nsenter", "setpriv", "script", "pivot_root", "findmnt", "systemd-analyze", "socat")


@dataclass(frozen=True, slots=True)
class Container:
    """A running systemd container: its PID 1 as the host sees it and the folder shared with it."""

    pid: int
    share: Path

    def run(self, *command: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside every namespace of the container."""
        nsenter = ["nsenter", "--target", str(self.pid), "--mount", "--pid", "--uts", "--ipc", "--net", "--"]
        proc = subprocess.run([*nsenter, *command], capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def journal(self, unit: str) -> str:
        """PID 1's and the unit's messages about ``unit`` since boot."""
        return self.run("journalctl", "-q", "-b", "-o", "cat", "-u", unit, check=False).stdout

    def inside(self, host_path: Path) -> str:
        """Where a path under the share appears inside the container."""
        return str(SHARE_INSIDE / host_path.relative_to(self.share))


def missing_requirement() -> str | None:
    """Why this machine cannot boot a systemd container, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create namespaces"
    missing = [tool for tool in NEEDED_TOOLS if not shutil.which(tool)]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not os.access("/lib/systemd/systemd", os.X_OK):
        return "no /lib/systemd/systemd to boot"
    if " - cgroup2 " not in Path("/proc/self/mountinfo").read_text():
        return "no cgroup2 mount on the host"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "--cgroup", "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare cannot create namespaces here: {probe.stderr.strip()}"
    return None
