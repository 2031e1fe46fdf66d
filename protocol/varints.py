"""LEB128 varints as bundle format 2's columns hold them (docs/PROTOCOL.md §14.1).

Shortest form only and at most 8 bytes, so every value has exactly one encoding.
"""

from __future__ import annotations

from .errors import ErrorCode, RemoteProtocolError


def varint(n: int) -> bytes:
    """``n`` ≥ 0 as an unsigned LEB128 varint in its shortest form."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag_varint(n: int) -> bytes:
    """A signed ``n`` as a zigzag-mapped varint (0, -1, 1, -2 … → 0, 1, 2, 3 …)."""
    return varint(n * 2 if n >= 0 else -n * 2 - 1)


def read_varints(data: bytes, count: int, what: str, *, signed: bool = False) -> list[int]:
    """Exactly ``count`` minimal LEB128 varints (at most 8 bytes each) filling ``data``."""
    out: list[int] = []
    pos = 0
    for k in range(count):
        n = shift = 0
        start = pos
        while True:
            if pos >= len(data):
                raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} ends inside entry {k} of {count}")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if pos - start >= 8:
                raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} entry {k} is longer than 8 bytes")
        if pos - start > 1 and data[pos - 1] == 0:
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} entry {k} is not in its shortest form")
        out.append((n >> 1) ^ -(n & 1) if signed else n)
    if pos != len(data):
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"{what} has {len(data) - pos} bytes after its {count} entries"
        )
    return out
