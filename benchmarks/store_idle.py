"""The store's background activity against a long first scan (issue 17): SecantusDB's defaults vs libwatch's.

For each server configuration, starts a SecantusDB server in a process of its own (as `libwatch
store serve` runs it), lets it idle for --idle seconds (SecantusDB's TTL sweeper first runs after
60 s), then times `libwatch scan` of a new library of --files 1 KiB files in folders of 100.
The catalog is the default database, `libwatch`: SecantusDB routes each collection to one of its
tables by a hash of its name, and `libwatch.libraries` shares one with `libwatch.events` (the
sweeper's parked cursor stalls the events only then; `scale.libraries` and `scale.events` do not
share one).

  defaults   SecantusDBServer's own defaults (replica set and oplog, TTL sweeper every 60 s)
  libwatch   libwatch.catalog.store.SERVER_OPTIONS (nothing in the background)
  serve      `libwatch store serve` itself (SERVER_OPTIONS, password required)

    .venv/bin/python benchmarks/store_idle.py --files 20000 --idle 70
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from scale import NAME, Libwatch, build

from libwatch.catalog.store import SERVER_OPTIONS

SERVER: Final = """
import json, sys, signal, threading
import secantus
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
server = secantus.SecantusDBServer(storage_path=sys.argv[1], sync_on_commit=True, **json.loads(sys.argv[2]))
server.start()
print(server.uri, flush=True)
stop.wait()
server.stop()
"""
CONFIGS: Final = {"defaults": {}, "libwatch": SERVER_OPTIONS, "serve": SERVER_OPTIONS}


def _start(top: Path, config: str) -> tuple[subprocess.Popen[str], str]:
    """The server of `config` in a process of its own; (process, URI)."""
    if config == "serve":
        home = top / "home-serve"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIBWATCH_")}
        server = subprocess.Popen([sys.executable, "-m", "libwatch", "store", "serve", "--port", "0"], text=True,
                                  env={**env, "LIBWATCH_HOME": str(home), "LIBWATCH_CONFIG": os.devnull},
                                  stderr=subprocess.PIPE)
        assert server.stderr is not None
        server.stderr.readline()  # "serving ...": the URI file is written
        return server, (home / "store.uri").read_text().strip()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(top / f"db-{config}"), json.dumps(CONFIGS[config])],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def first_scan(top: Path, root: Path, config: str, idle: float) -> float:
    """Seconds of the first scan of `root` on a fresh server of `config` that idled `idle` seconds."""
    server, uri = _start(top, config)
    try:
        libwatch = Libwatch(top / f"home-{config}", uri)
        libwatch.env["LIBWATCH_DATABASE"] = "libwatch"
        libwatch.run("library", "add", NAME, str(root))
        time.sleep(idle)
        return libwatch.scan(f"first scan ({config})").seconds
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000, help="number of 1 KiB files (default 20000)")
    parser.add_argument("--idle", type=float, default=70.0, help="seconds the server idles before the scan (70)")
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="libwatch-store-idle-"))
    try:
        build(top / "library", args.files, "small")
        for config in args.configs:
            seconds = first_scan(top, top / "library", config, args.idle)
            print(f"{config:<9} first scan of {args.files:,} files after {args.idle:g} s idle: {seconds:7.1f} s "
                  f"({seconds / args.files * 1e6:,.0f} us a file)", flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
