"""Manual pages generated from the command tree: `libwatch(1)` and `libwatch-COMMAND(1)`.

`python -m libwatch.cli.manpage man/` writes them; the package installs `man/*.1` under
`share/man/man1`, and a test fails when a page differs from what the commands say now, so
the pages cannot drift from `--help`. Only the documented click API is read (`params`,
`help`, `list_commands`/`get_command`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
import typer.main

from libwatch import __version__

SECTION = "1"


def _roff(text: str) -> str:
    """Text safe in roff: backslashes doubled, a leading dot or quote escaped."""
    lines = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _options(command: Any) -> list[str]:
    out: list[str] = []
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or getattr(param, "hidden", False):
            continue
        names = ", ".join(param.opts + param.secondary_opts)
        out += [".TP", f"\\fB{_roff(names)}\\fR", _roff(param.help or "")]
    return out


def _arguments(command: Any) -> str:
    return " ".join(f"[{p.name.upper()}]" if not p.required else p.name.upper()
                    for p in command.params if getattr(p, "param_type_name", "") == "argument")


def _commands(group: Any) -> list[tuple[str, Any]]:
    context = typer.Context(group)
    return [(name, group.get_command(context, name)) for name in group.list_commands(context)]


def page(command: Any, path: list[str]) -> str:
    """One manual page for `command` (called `path`, e.g. ["libwatch", "scan"])."""
    name = "-".join(path)
    help_text = (command.help or "").strip()
    summary = help_text.splitlines()[0] if help_text else name
    lines = [f'.TH {name.upper()} {SECTION} "" "libwatch {__version__}" "libwatch manual"',
             ".SH NAME", f"{_roff(name)} \\- {_roff(summary)}",
             ".SH SYNOPSIS", f"\\fB{_roff(' '.join(path))}\\fR [OPTIONS] {_roff(_arguments(command))}".rstrip()]
    if help_text:
        lines += [".SH DESCRIPTION"] + [".PP" if not paragraph.strip() else _roff(paragraph)
                                         for paragraph in help_text.splitlines()]
    if options := _options(command):
        lines += [".SH OPTIONS", *options]
    if hasattr(command, "list_commands"):
        lines.append(".SH COMMANDS")
        for sub_name, sub in _commands(command):
            lines += [".TP", f"\\fB{_roff(' '.join([*path, sub_name]))}\\fR",
                      _roff((sub.help or "").strip().splitlines()[0] if sub.help else "")]
    if len(path) == 1:
        lines += [".SH EXIT STATUS", _roff("0 done; 1 changes found (diff --exit-code); 2 usage error; "
                                           "3 done with problems; 4 doctor found a problem; 65 refused by a safety "
                                           "guard; 69 MongoDB, RabbitMQ or systemd unavailable; 70 internal error; "
                                           "71 operating-system failure; 74 library root unavailable; "
                                           "75 locked, try later; 130 interrupted.")]
    lines += [".SH SEE ALSO", "\\fBlibwatch\\fR(1)" if len(path) > 1 else
              ", ".join(f"\\fBlibwatch\\-{sub_name}\\fR(1)" for sub_name, _ in _commands(command))]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """Every page by file name: libwatch.1 and one per command (libwatch-library.1 covers its subcommands)."""
    from libwatch.cli.app import app

    top = typer.main.get_command(app)
    found = {f"libwatch.{SECTION}": page(top, ["libwatch"])}
    for name, command in _commands(top):
        found[f"libwatch-{name}.{SECTION}"] = page(command, ["libwatch", name])
    return found


def main() -> None:
    """Write the pages into the folder given (default: man/)."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "man")
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, text in pages().items():
        (folder / file_name).write_text(text)


if __name__ == "__main__":
    main()
