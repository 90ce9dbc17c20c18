"""`libwatch rebuild` and `libwatch worker`."""
from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from libwatch.cli import context, output, stopsignal
from libwatch.cli.options import JsonOption, TriggerOption, complete_library
from libwatch.cli.progress import Progress
from libwatch.errors import UsageError
from libwatch.messages import CACHE, MAX_BODY_BYTES, THUMBNAIL
from libwatch.services import rebuild as service
from libwatch.services.worker import MAX_PREFETCH, Worker, WorkerOptions, WorkerResult


def _kinds(cache: bool | None, thumbnails: bool | None) -> tuple[str, ...] | None:
    if cache is None and thumbnails is None:
        return None  # each library's own settings
    kinds = tuple(kind for kind, wanted in ((CACHE, cache), (THUMBNAIL, thumbnails)) if wanted is not False)
    if not kinds:
        raise UsageError("--no-cache and --no-thumbnails leave nothing to rebuild")
    return kinds


def _selection(pending: bool, missing: bool, failed: bool, all_: bool) -> str:
    chosen = [name for name, flag in (("pending", pending), ("missing", missing), ("failed", failed), ("all", all_))
              if flag]
    if len(chosen) > 1:
        raise UsageError("choose one of --pending, --missing, --failed and --all")
    return chosen[0] if chosen else "pending"


def _summary(console: Console, doc: dict[str, Any]) -> None:
    counts = doc["counts"]
    where = ", ".join(doc["libraries"]) or "no libraries"
    if doc["mode"] == "run":
        done = output.counted({key: counts[key] for key in ("done", "failed", "skipped", "changed", "retry")})
        console.print(f"rebuilt {doc['selection']} of {where} here: {output.count(counts['selected'], 'rendering')}"
                      + (f" ({done})" if done else ""), markup=False)
    else:
        console.print(f"rebuild {doc['selection']} of {where}: {output.count(counts['published'], 'request')} "
                      f"published, {output.number(counts['pending'])} pending", markup=False)
    if "headers_read" in counts:
        console.print(f"headers read again: {output.number(counts['headers_read'])} readable, "
                      f"{output.number(counts['headers_unreadable'])} still unreadable", markup=False)
    for failure in doc["failures"]:
        console.print(f"  {failure['status']:<7} {failure['kind']:<9} {output.escape(failure['path'])}: "
                      f"{output.escape(str(failure['error']))}", markup=False)


def rebuild(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="Library name (default: every library).", show_default=False, autocompletion=complete_library)] = None,
    collection: Annotated[str | None, typer.Option(
        help="Only this collection (folder path relative to the root, exactly).")] = None,
    path: Annotated[str | None, typer.Option(
        help="Only this file, or the files under this folder (relative or absolute).")] = None,
    pending: Annotated[bool, typer.Option(
        "--pending", help="Pending requests, and queued ones older than --queued-timeout (default).")] = False,
    missing: Annotated[bool, typer.Option(
        "--missing", help="Files whose cache image or thumbnail is not in the cache folder.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help=(
        "What `libwatch failed` lists: unreadable headers read again, failed renders retried."))] = False,
    all_: Annotated[bool, typer.Option(
        "--all", help="Everything, rendered again (e.g. after changing a size); low priority.")] = False,
    cache: Annotated[bool | None, typer.Option(
        "--cache/--no-cache", help="Cache images (default: the library's setting).", show_default=False)] = None,
    thumbnails: Annotated[bool | None, typer.Option(
        "--thumbnails/--no-thumbnails", help="Thumbnails (default: the library's setting).",
        show_default=False)] = None,
    priority: Annotated[int | None, typer.Option(
        min=0, max=10, help="Message priority 0-10 (default: 5; 1 for --all).", show_default=False)] = None,
    run: Annotated[bool, typer.Option(
        "--run", help="Render here in a process pool instead of publishing (always so without a broker).")] = False,
    processes: Annotated[int | None, typer.Option(
        min=1, help="Rendering processes for --run (default: the CPUs).", show_default=False)] = None,
    queued_timeout: Annotated[float, typer.Option(
        min=0, help="Seconds after which a queued request counts as lost (--pending).")] = service.QUEUED_TIMEOUT_S,
    trigger: TriggerOption = "manual",
    json_output: JsonOption = False,
) -> None:
    """Request cache images and thumbnails again for a scope, or render them here with --run.

    Example: libwatch rebuild photos --missing --thumbnails --no-cache
    """
    options = service.RebuildOptions(selection=_selection(pending, missing, failed, all_),
                                     kinds=_kinds(cache, thumbnails), collection=collection, path=path,
                                     priority=priority, run_here=run, queued_timeout_s=queued_timeout, trigger=trigger)
    shown = Progress("rendering", unit="rendering")
    try:
        with context.catalog(ctx) as db:
            report = service.rebuild(db, context.state(ctx).settings, name, options, processes=processes,
                                     progress=shown.advance)
    except KeyboardInterrupt:
        shown.close()
        output.errors.print(f"libwatch: {output.count(shown.done, 'rendering')} done before Ctrl-C; the rest stays "
                            "pending (`libwatch rebuild --run` goes on with it)", markup=False)
        raise
    shown.close()
    raise typer.Exit(output.show(report, lambda console: _summary(console, report.document),
                                 as_json=context.wants_json(ctx, json_output)))


@contextmanager
def _stopped_by_signals() -> Iterator[Callable[[Callable[[], None]], None]]:
    """SIGTERM (systemd) and SIGINT (Ctrl-C) stop the worker after the current image, exit 0.

    Installed first thing in the command; yields ``attach(stop)``, which calls
    ``stop`` at once if a signal came before it (also one the early handler of
    ``stopsignal`` remembered during the imports).
    """
    stops: list[Callable[[], None]] = []

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopsignal.received.set()
        for stop in stops:
            stop()

    def attach(stop: Callable[[], None]) -> None:
        stops.append(stop)
        if stopsignal.received.is_set():
            stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield attach
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summary_line(console: Console, result: WorkerResult) -> None:
    text = output.counted(dict(sorted(result.counts.items()))) or "no messages"
    console.print(f"worker: {text} (run {result.run_id})", markup=False)


def worker(
    ctx: typer.Context,
    prefetch: Annotated[int, typer.Option(
        min=1, max=MAX_PREFETCH, help="Messages the broker hands over ahead of the acks, per queue.")] = 100,
    max_messages: Annotated[int | None, typer.Option(
        min=1, help="Stop after handling this many messages.", show_default=False)] = None,
    idle_exit: Annotated[float | None, typer.Option(
        min=0, help="Stop after this many seconds without a message.", show_default=False)] = None,
    processes: Annotated[int | None, typer.Option(
        min=1, help="Rendering processes (default: the CPUs).", show_default=False)] = None,
    max_message_size: Annotated[int, typer.Option(
        min=1, help="Bytes; a larger message body is rejected unread.")] = MAX_BODY_BYTES,
    heartbeat: Annotated[float, typer.Option(
        min=0.001, help="Seconds between the info lines that show the worker alive.")] = 60.0,
    json_output: JsonOption = False,
) -> None:
    """Consume rebuild messages and render cache images and thumbnails; SIGTERM stops it cleanly.

    Logs a start line and a heartbeat at info level (shown unless -q).
    Example: libwatch worker --prefetch 50 --idle-exit 60
    """
    with _stopped_by_signals() as attach:
        if context.state(ctx).verbosity >= 0:
            logger = logging.getLogger("libwatch.worker")
            logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        options = WorkerOptions(prefetch=prefetch, max_messages=max_messages, idle_exit_s=idle_exit,
                                max_message_bytes=max_message_size, heartbeat_s=heartbeat)
        with context.catalog(ctx) as db:
            consumer = Worker(db, context.state(ctx).settings, options, processes=processes)
            attach(consumer.stop)
            result = consumer.run()
    raise typer.Exit(output.show(result, lambda console: _summary_line(console, result),
                                 as_json=context.wants_json(ctx, json_output)))
