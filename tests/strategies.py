"""Hypothesis strategies for protocol values, shared by the tests/test_protocol_*.py files.

Those tests run with ``deadline=None``: CI machines are shared and slow, and speed is shown
by benchmarks, never by timed assertions.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hypothesis import strategies as st

from protocol import Cancel, MediaRef, Post, Retract
from protocol.ids import new_ulid
from protocol.model import MAX_TIME_MS, MEDIA_TYPES

# Text that has broken "byte-exact" relays before: decomposed accents (NFD), CRLF and lone CR,
# emoji with skin tones and zero-width joiners, flags, a BOM, NUL, RTL marks, combining marks.
TRICKY_TEXT = (
    "First light over the Pacific 🌏",
    "Cafe\u0301 vs Caf\u00e9",  # NFD then NFC: must stay distinct byte sequences
    "line one\r\nline two\rline three\n",
    "👩🏽\u200d🚀 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 🇯🇵",
    "\ufeffBOM at the start",
    "nul\x00inside",
    "\u202eright-to-left override\u202c",
    "a\u0300\u0301\u0302\u0303 stacked marks",
    "𝕳𝖊𝖑𝖑𝖔 astral plane",
    " leading and trailing spaces ",
)

texts = st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=300))
times = st.integers(min_value=0, max_value=MAX_TIME_MS)
ulids = st.builds(
    new_ulid, st.integers(min_value=0, max_value=2**48 - 1), st.binary(min_size=10, max_size=10)
)
authors = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
platforms = st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True)
targets = st.builds(lambda p, a: f"{p}:{a}", platforms, st.text(min_size=1, max_size=40))
media_refs = st.builds(
    MediaRef,
    sha256=st.binary(min_size=32, max_size=32),
    size_bytes=st.integers(min_value=1, max_value=64 * 1024**2),
    media_type=st.sampled_from(sorted(MEDIA_TYPES)),
    alt=st.text(max_size=100),
)


@st.composite
def posts(draw: st.DrawFn, author: str | None = None) -> Post:
    media = tuple(draw(st.lists(media_refs, max_size=4)))
    text = draw(texts)
    if not text and not media:
        text = "x"
    return Post(
        id=draw(ulids),
        author=author if author is not None else draw(authors),
        created_ms=draw(times),
        text=text,
        media=media,
        targets=tuple(draw(st.lists(targets, min_size=1, max_size=4))),
        publish_at_ms=draw(st.none() | times),
    )


@st.composite
def commands(draw: st.DrawFn, author: str | None = None) -> Cancel | Retract:
    cls = draw(st.sampled_from([Cancel, Retract]))
    return cls(
        id=draw(ulids),
        author=author if author is not None else draw(authors),
        created_ms=draw(times),
        target_id=draw(ulids),
    )


def items(author: str | None = None) -> st.SearchStrategy[Post | Cancel | Retract]:
    return st.one_of(posts(author), commands(author))


# Values msgpack can carry, for the canonical codec and for structure-aware fuzzing.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reseal(data: bytes) -> bytes:
    """Recompute a bundle's trailing sha256, as an attacker (not a line fault) would."""
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def assemble(header: object, sections: list[bytes], *, version: int = 1, magic: bytes = b"ORBP") -> bytes:
    """Hand-build bundle bytes from a header value and raw sections (for hostile bundles)."""
    import struct

    from protocol.canonical import pack

    head = pack(header)
    body = head + b"".join(sections)
    total = 18 + len(body) + 32
    data = struct.pack(">4sHQI", magic, version, total, len(head)) + body
    return data + hashlib.sha256(data).digest()


@st.composite
def rendition_posts(draw: st.DrawFn, author: str | None = None) -> Post:
    """A post that allows a rendition for a non-empty subset of its distinct targets (body v2)."""
    p = draw(posts(author))
    distinct = list(dict.fromkeys(p.targets))
    chosen = draw(st.lists(st.sampled_from(distinct), min_size=1, max_size=len(distinct), unique=True))
    return replace(p, renditions=tuple(chosen))
