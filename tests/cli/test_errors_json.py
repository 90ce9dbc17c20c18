"""Every ending of a command has its documented exit code, and with --json one JSON document (issue 15)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

UNREACHABLE = {"LIBWATCH_MONGO_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"}
ERROR_KEYS = {"status", "error"}
DETAIL_KEYS = {"kind", "message", "exit_code"}


@pytest.mark.parametrize(("args", "env", "code", "kind"), [
    (["status", "nosuchlibrary"], {}, 2, "NotFound"),
    (["scan", "nosuchlibrary", "--no-such-option"], {}, 2, "UsageError"),
    (["no-such-command"], {}, 2, "UsageError"),
    (["history"], UNREACHABLE, 69, "CatalogUnavailable"),
])
@pytest.mark.parametrize("where", ["before", "after"])
def test_an_error_prints_one_json_document_with_the_same_exit_code(
        libwatch: Callable[..., Any], args: list[str], env: dict[str, str], code: int, kind: str, where: str) -> None:
    plain = libwatch(*args, env=env)
    assert plain.code == code and plain.stdout == "", plain
    assert plain.stderr.count("\n") >= 1 and "Traceback" not in plain.stderr
    done = libwatch(*(["--json", *args] if where == "before" else [*args, "--json"]), env=env)
    assert done.code == code, done
    document = json.loads(done.stdout)  # exactly one document: json.loads refuses trailing data
    assert set(document) == ERROR_KEYS and set(document["error"]) == DETAIL_KEYS
    assert document["status"] == "error" and document["error"]["exit_code"] == code
    assert document["error"]["kind"] == kind and document["error"]["message"]


def test_an_error_message_with_escape_sequences_is_shown_escaped(libwatch: Callable[..., Any]) -> None:
    done = libwatch("status", "evil\x1b]0;owned\x07")
    assert done.code == 2
    assert "\x1b" not in done.stderr and "\\x1b]0;owned\\x07" in done.stderr
