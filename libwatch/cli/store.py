"""`libwatch store serve`: the embedded store as a loopback server several processes can share."""
from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from libwatch import systemd
from libwatch.catalog import store
from libwatch.cli import context, output

app = typer.Typer(help="The embedded store (SecantusDB) for hosts without a MongoDB.\n\n"
                       "Example: libwatch store serve --port 27017", no_args_is_help=True)


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="TCP port on the loopback interface.")] = 27017,
    host: Annotated[str, typer.Option(
        help="Address to listen on (keep it loopback: there is no authentication).")] = "127.0.0.1",
) -> None:
    """Serve the catalog under --home until SIGTERM or Ctrl-C; point LIBWATCH_MONGO_URI at it.

    Example: LIBWATCH_HOME=/var/lib/libwatch libwatch store serve --port 27017
    """
    settings = context.state(ctx).settings
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with store.exclusive_store(settings) as data_dir, store.embedded_server(data_dir, port=port, host=host) as server:
        output.errors.print(f"serving {data_dir} at {server.uri} (LIBWATCH_MONGO_URI={server.uri})")
        systemd.notify_ready(f"serving {server.uri}")  # libwatch-store.service is Type=notify
        stop.wait()
    output.errors.print("store stopped")
