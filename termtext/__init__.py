"""User text on a terminal: shown as written, never obeyed.

Posts, alt texts, account names and the error messages that quote them are the astronaut's
(or a hostile peer's) bytes. Printed raw, an ESC sequence would recolour or retitle the
operator's terminal, an OSC 8 would plant a link, ``\\r`` would overwrite the start of the line,
a bidi override would reverse what follows and a zero-width space would hide a difference.
:func:`visible` returns the text with every such character replaced by a visible escape
(``\\x1b``, ``\\r``, ``\\u202e``): for display only — storage and publication keep the exact
bytes. Nothing here interprets markup, so ``[/b]`` or ``<script>`` print as they are.

Shared by onboard and ground (each side stands alone; see tests/test_layering.py).
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

# Joiners and tag characters are format characters too, but emoji need them (👩‍🚀, 🏴 flags):
# they are kept between two visible non-ASCII characters, escaped anywhere else.
_ZWJ = "\u200d"
_TAGS = range(0xE0020, 0xE0080)
_BLACK_FLAG = "\U0001f3f4"


def _needs_escape(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn") and ch != "\t"


def _kept_format(text: str, i: int) -> bool:
    ch = text[i]
    prev = text[i - 1] if i > 0 else ""
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if ch == _ZWJ:
        return bool(prev and nxt) and ord(prev) > 0x7F and ord(nxt) > 0x7F and not _needs_escape(nxt)
    if ord(ch) in _TAGS:
        # Only inside a subdivision flag: U+1F3F4 then tags, ended by U+E007F.
        j = i
        while j > 0 and ord(text[j - 1]) in _TAGS:
            j -= 1
        return j > 0 and text[j - 1] == _BLACK_FLAG
    return False


def _escape(ch: str) -> str:
    n = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def visible(text: object, *, tabs: bool = False) -> str:
    """``text`` (str() of it) with control, format and bidi characters shown as escapes.

    Printable text, including emoji sequences, markup-like brackets and HTML, is unchanged.
    A backslash is left as it is, so the result is for reading, not for parsing back.
    ``tabs=False`` escapes tabs too (tab-separated output keeps its columns).
    """
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for i, ch in enumerate(s):
        if ch == "\t":
            out.append("\t" if tabs else "\\t")
        elif _needs_escape(ch) and not _kept_format(s, i):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def row(*fields: object) -> str:
    """One tab-separated line of visible fields: never wrapped, never split, easy to ``cut``."""
    return "\t".join(visible(f) for f in fields)


def write_lines(lines: Iterable[str], stream: TextIO | None = None) -> None:
    """Print lines as they are: no markup, no wrapping at the terminal's width."""
    out = stream or sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()


def dump_json(schema: str, version: int, body: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """Write one JSON document ``{"schema": ..., "version": ..., **body}`` (docs/cli-json.md).

    Strings are the exact text, every non-ASCII character as a \\u escape: a parser gets the
    real bytes back, and a terminal shown the document raw has nothing to obey.
    """
    out = stream or sys.stdout
    doc = {"schema": schema, "version": version, **body}
    out.write(json.dumps(doc, ensure_ascii=True, indent=2) + "\n")
    out.flush()
