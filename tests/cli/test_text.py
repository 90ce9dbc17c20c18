"""Escaping untrusted text for terminals, logs and JSON (issue 12.4)."""
from __future__ import annotations

import contextlib
import io
import json
import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from libwatch.cli import output
from libwatch.result import Listing
from libwatch.text import UNSAFE, escape, for_log, json_safe

UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def test_every_control_format_and_separator_character_is_unsafe() -> None:
    missed = [hex(cp) for cp in range(sys.maxunicode + 1)
              if unicodedata.category(chr(cp)) in UNSAFE_CATEGORIES and not UNSAFE.match(chr(cp))]
    assert missed == []


def test_no_letter_digit_mark_punctuation_symbol_or_space_is_escaped() -> None:
    wrongly = [hex(cp) for cp in range(sys.maxunicode + 1)
               if unicodedata.category(chr(cp))[0] in "LMNPSZ" and unicodedata.category(chr(cp)) not in ("Zl", "Zp")
               and UNSAFE.match(chr(cp))]
    assert wrongly == []


def test_terminal_attacks_are_shown_escaped_and_quoted() -> None:
    assert escape("\x1b]0;owned\x07title.jpg") == '"\\x1b]0;owned\\x07title.jpg"'
    assert escape("\x1b[2Jclear.jpg") == '"\\x1b[2Jclear.jpg"'
    assert escape("row\nforged.jpg") == '"row\\nforged.jpg"'
    assert escape("gpj\u202eexe.jpg") == '"gpj\\u202eexe.jpg"'
    assert escape("c1\x9bcsi") == '"c1\\x9bcsi"'
    assert escape("del\x7f") == '"del\\x7f"'
    assert escape("tag\U000e0041") == '"tag\\U000e0041"'
    assert escape(b"raw\xff.jpg".decode("utf-8", "surrogateescape")) == '"raw\\xff.jpg"'


def test_safe_names_are_left_alone_and_quotes_are_unambiguous() -> None:
    assert escape("2024/trip/été 北京.jpg") == "2024/trip/été 北京.jpg"
    assert escape('say "hi"\\') == 'say "hi"\\'
    assert escape('"q"\n') == '"\\"q\\"\\n"'


def test_log_values_are_capped() -> None:
    assert for_log("x" * 5_000_000) == "x" * 300 + "…(+4999700 characters)"
    assert escape("\n" * 10, limit=3) == '"\\n\\n\\n"…(+7 characters)'


@given(st.text())
def test_escaped_text_holds_nothing_unsafe(text: str) -> None:
    assert UNSAFE.search(escape(text)) is None


@given(st.text())
def test_json_output_holds_nothing_unsafe_and_decodes_to_the_same_text(text: str) -> None:
    dumped = output.to_json({"path": text})
    assert UNSAFE.search(dumped) is None
    assert json.loads(dumped) == {"path": text}


def test_json_escapes_bidi_characters() -> None:
    assert output.to_json({"path": "gpj\u202eexe.jpg"}) == '{"path": "gpj\\u202eexe.jpg"}'
    assert json_safe('"\U000e0041"') == '"\\udb40\\udc41"'


def test_count_has_one_number_format_and_plural() -> None:
    assert output.count(1, "library") == "1 library"
    assert output.count(2, "library") == "2 libraries"
    assert output.count(12345, "file") == "12,345 files"
    assert output.count(0, "day") == "0 days"


def test_undecodable_bytes_stay_exact_in_json() -> None:
    name = b"raw\xff.jpg".decode("utf-8", "surrogateescape")
    assert output.to_json({"path": name}) == '{"path": "raw\\udcff.jpg"}'
    assert json.loads(output.to_json({"path": name}))["path"] == name


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=12))
def test_a_streamed_document_is_the_json_of_the_same_document_whole(value: object) -> None:
    """Lists written as Listings (item by item, as a report is read from its spill) give the same bytes."""
    def streamed(v: object) -> object:
        if isinstance(v, list):
            items = [streamed(item) for item in v]
            return Listing(lambda: iter(items), len(items))
        if isinstance(v, dict):
            return {key: streamed(item) for key, item in v.items()}
        return v

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        output._write_json({"document": streamed(value)})
    assert buffer.getvalue() == output.to_json({"document": value}) + "\n"
