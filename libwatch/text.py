"""Untrusted text made safe to print or log: file names, message fields, reasons.

A name another user chose may hold escape sequences (``ESC ] 0 ;`` sets the window title,
``ESC [ 2 J`` clears the screen), a newline that forges an output row or a log line, or
U+202E (right-to-left override) that makes ``gpj.exe`` read as ``exe.jpg``. `escape` shows
each such character as ``\\x1b``, ``\\n`` or ``\\u202e`` and quotes the name when it did,
as ``ls`` and git's ``core.quotePath`` do; `json_safe` does the same inside JSON text,
where the escapes decode back to the exact characters.

Escaped: every character of Unicode categories Cc (C0 and C1 controls, DEL), Cf (format:
bidi controls, zero-width characters, BOM), Zl and Zp (line and paragraph separators) and
Cs (lone surrogates, which is how Python keeps undecodable bytes of a file name).
"""
from __future__ import annotations

import re
from typing import Final

# Every code point of Unicode 15's categories Cc, Cf, Zl, Zp and Cs (a test checks this list
# against the running Python's unicodedata, character by character).
UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_SHORT: Final = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
LOG_LIMIT: Final = 300  # characters of one untrusted value in a log line: a 5 MB field stays a short line


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str, *, limit: int | None = None) -> str:
    """`text` safe for a terminal or a log line: unsafe characters escaped, the whole quoted if any was.

    Inside the quotes ``\\`` and ``"`` are escaped too, so the quoted form reads back
    unambiguously. With `limit`, at most that many characters of `text` are kept and the
    rest is counted: ``…(+12345 characters)``.
    """
    cut = ""
    if limit is not None and len(text) > limit:
        text, cut = text[:limit], f"…(+{len(text) - limit} characters)"
    if UNSAFE.search(text) is None:
        return text + cut
    inner = UNSAFE.sub(_shown, text.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{inner}"{cut}'


def for_log(text: object) -> str:
    """An untrusted value for a log line: escaped and capped at `LOG_LIMIT` characters."""
    return escape(str(text), limit=LOG_LIMIT)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_safe(json_text: str) -> str:
    """JSON text with every unsafe character written as a ``\\uXXXX`` escape (the data is unchanged).

    `json.dumps(ensure_ascii=False)` escapes C0 controls but leaves DEL, C1 controls, bidi
    and format characters raw; they can occur only inside strings, where an escape means
    the same character.
    """
    return UNSAFE.sub(_json_escape, json_text)
