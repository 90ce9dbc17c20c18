"""`libwatch web` (the management page and JSON API) and `libwatch metrics` (Prometheus)."""
from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from libwatch.cli import context, output
from libwatch.errors import UsageError

DEFAULT_PORT = 8470


def _read_secret() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("secret: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two entries differ")
    return first


def web(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        help="Address to listen on; anything but loopback needs web_secret_hash.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = DEFAULT_PORT,
    hash_secret: Annotated[bool, typer.Option("--hash-secret", help="Read a password or token on stdin and print "
                                              "the web_secret_hash line for the config file; serve nothing.")] = False,
) -> None:
    """Serve the management page, the JSON API (/api/v1/) and /metrics; under systemd, on its socket.

    Example: libwatch web --port 8470   (then open http://127.0.0.1:8470/)
    """
    from libwatch.web import auth

    if hash_secret:
        hashed = auth.hash_secret(_read_secret())
        print(json.dumps({"web_secret_hash": hashed}) if context.wants_json(ctx, False)
              else f'web_secret_hash = "{hashed}"')
        return
    from libwatch.web import server

    server.serve(context.state(ctx).settings, host, port)


def metrics(
    ctx: typer.Context,
    textfile: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Write DIR/libwatch.prom atomically (node_exporter's textfile collector) "
                            "instead of printing.", show_default=False)] = None,
) -> None:
    """Print libwatch's Prometheus metrics (the /metrics of `libwatch web`), or write them for node_exporter.

    Example: libwatch metrics --textfile /var/lib/prometheus/node-exporter
    """
    from libwatch.services import reports
    from libwatch.web import broker
    from libwatch.web import metrics as exporter

    settings = context.state(ctx).settings
    as_json = context.wants_json(ctx, False)
    if textfile is None and as_json:
        raise UsageError("metrics prints the Prometheus text format, not JSON (`libwatch status --json` "
                         "has the same figures; with --textfile, --json says what was written)")
    if textfile is not None and not textfile.is_dir():
        raise UsageError(f"--textfile {textfile}: no such folder")
    with context.catalog(ctx) as db:
        status = reports.status(db).to_document()
    queues = broker.queues(settings)
    if textfile is None:
        sys.stdout.buffer.write(exporter.exposition(status, queues))
        sys.stdout.flush()
        return
    try:
        written = exporter.write_textfile(textfile, status, queues)
    except OSError as error:
        raise UsageError(f"--textfile {textfile}: {error.strerror or error}") from None
    raise typer.Exit(output.show(written, lambda console: None, as_json=as_json))  # quiet unless --json
