"""`libwatch doctor`."""
from __future__ import annotations

from typing import Final

import typer
from rich.console import Console

from libwatch.cli import context, output
from libwatch.cli.options import JsonOption
from libwatch.services import doctor as service

MARKS: Final = {service.OK: "ok", service.WARN: "WARN", service.FAIL: "FAIL", service.SKIP: "-"}


def _show(console: Console, report: service.Report) -> None:
    output.table(console, ("check", "status", "detail"),
                 [(check.name + ("" if check.required else " (optional)"), MARKS[check.status], check.detail)
                  for check in report.checks])
    verdict = "all required parts work" if report.ok else f"a required part does not work (exit {report.exit_code})"
    console.print(verdict, markup=False)


def doctor(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Check MongoDB, RabbitMQ, the cache folder, inotify limits, the installed units and the libraries.

    Exits 0 when every required part works, 4 otherwise; warnings do not fail it.

    Example: libwatch doctor --json
    """
    report = service.diagnose(context.state(ctx).settings)
    raise typer.Exit(output.show(report, lambda console: _show(console, report),
                                 as_json=context.wants_json(ctx, json_output)))
