"""The command line itself: help, suggestions, flags anywhere, no private Typer API (issues 11.5, 15)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libwatch

COMMAND_LIST = ["scan", "diff", "cleanup", "status", "history", "events", "failed", "doctor", "rebuild", "worker",
                "library", "store", "units", "web", "metrics"]


def test_help_lists_every_command_and_global_option(libwatch: Callable[..., Any]) -> None:
    done = libwatch("--help")
    assert done.code == 0, done.stderr
    listed = re.findall(r"^  ([a-z]+) ", done.stdout.split("Commands:")[1], re.M)
    assert listed == COMMAND_LIST
    for option in ("--mongo-uri", "--database", "--amqp-url", "--cache-dir", "--home", "--json", "--verbose",
                   "--quiet", "--debug", "--version", "--help"):
        assert option in done.stdout
    assert "╭" not in done.stdout  # plain help, the same on a terminal and in a pipe


def test_a_group_help_lists_its_commands(libwatch: Callable[..., Any]) -> None:
    done = libwatch("store", "-h")
    assert done.code == 0 and re.search(r"^  serve ", done.stdout, re.M), done
    assert "--install-completion" not in done.stdout


def test_did_you_mean(libwatch: Callable[..., Any]) -> None:
    top = libwatch("stauts")
    assert top.code == 2 and "No such command 'stauts'. Did you mean 'status'?" in top.stderr
    sub = libwatch("library", "ad")
    assert sub.code == 2 and "Did you mean 'add'?" in sub.stderr
    none = libwatch("zzzzzz")
    assert none.code == 2 and "No such command 'zzzzzz'." in none.stderr and "Did you mean" not in none.stderr


def test_no_private_typer_or_click_name_is_used() -> None:
    source = Path(libwatch.__file__).parent
    private = re.compile(r"typer\._click|get_command_from_info|get_group_from_info|\.commands\s*=|typer\.models")
    found = [f"{path}: {line}" for path in source.rglob("*.py") for line in path.read_text().splitlines()
             if private.search(line)]
    assert found == []


def test_global_flags_work_after_the_command(libwatch: Callable[..., Any]) -> None:
    before, after = libwatch("--json", "history"), libwatch("history", "--json")
    assert before.code == after.code == 0, (before, after)
    assert json.loads(before.stdout).keys() == json.loads(after.stdout).keys()
    quiet = libwatch("history", "-q")
    assert quiet.code == 0 and quiet.stdout == "" and quiet.stderr == ""
    verbose = libwatch("history", "-v")
    assert verbose.code == 0, verbose.stderr
    assert libwatch("library", "list", "-q").stdout == ""


def test_quiet_keeps_errors(libwatch: Callable[..., Any]) -> None:
    done = libwatch("-q", "status", "nosuchlibrary")
    assert done.code == 2 and done.stdout == "" and "nosuchlibrary" in done.stderr
