"""Post ids: ULIDs (48-bit ms timestamp + 80 random bits), sortable by creation time.

Randomness and time come in as arguments so this module stays pure.
"""

from __future__ import annotations

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Ids are encoded and decoded tens of thousands of times per large bundle (issue 18): two
# characters per table lookup one way, int(..., 32) the other, not a loop per character.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters
_SHIFTS = tuple(range(120, -1, -10))  # 13 groups of 10 bits: 130 bits, the top 2 always 0
_VALID = frozenset(_ALPHABET + _ALPHABET.lower())
_TO_DIGITS = str.maketrans(_ALPHABET + _ALPHABET.lower(), "0123456789abcdefghijklmnopqrstuv" * 2)


def new_ulid(now_ms: int, entropy: bytes) -> str:
    """Return a ULID string for ``now_ms`` (ms since epoch) and 10 bytes of ``entropy``."""
    if len(entropy) != 10:
        raise LocalProtocolError("ULID entropy must be exactly 10 bytes")
    if not 0 <= now_ms < 2**48:
        raise LocalProtocolError(f"ULID time {now_ms} out of range")
    return ulid_from_bytes(now_ms.to_bytes(6, "big") + entropy)


def ulid_from_bytes(raw: bytes) -> str:
    """Encode 16 bytes as the 26-character Crockford base32 ULID text."""
    if len(raw) != 16:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"an id must be 16 bytes, got {len(raw)}")
    n = int.from_bytes(raw, "big")
    pairs = _PAIRS
    return "".join([pairs[(n >> s) & 1023] for s in _SHIFTS])


def ulid_to_bytes(text: str) -> bytes:
    """Decode a ULID string to its 16 bytes; accepts lower case."""
    if len(text) != 26:
        raise LocalProtocolError(f"{text!r} is not a post id (26 characters, like 01J...)")
    if not _VALID.issuperset(text):
        ch = next(c for c in text if c not in _VALID)
        raise LocalProtocolError(f"{text!r} is not a post id: {ch!r} is not base32")
    n = int(text.translate(_TO_DIGITS), 32)  # only 0-9 and a-v are left: no sign, space or _
    if n >= 2**128:
        raise LocalProtocolError(f"{text!r} is not a post id: out of range")
    return n.to_bytes(16, "big")


def ulid_time_ms(text: str) -> int:
    """The creation time (ms since epoch) embedded in a ULID."""
    return int.from_bytes(ulid_to_bytes(text)[:6], "big")


def derived_ulid(time_ms: int, digest: bytes) -> str:
    """A ULID whose 80 "random" bits are the first 10 bytes of ``digest`` (a content hash).

    Bundle format 2 leaves such ids off the wire: the receiver recomputes them
    (docs/PROTOCOL.md §14), which saves 10 incompressible bytes per post.
    """
    return new_ulid(time_ms, digest[:10])
