"""Byte ranges as sorted, merged half-open intervals (after aioquic's ``quic/rangeset.py``).

Ground reports what it has durably stored of an upload as a RangeSet; the sender sends
only the gaps. On the wire a RangeSet is a flat list ``[start0, stop0, start1, stop1, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .errors import ErrorCode, RemoteProtocolError


class RangeSet:
    """A set of integers stored as disjoint, non-adjacent ``[start, stop)`` ranges."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, stop in ranges:
            self.add(start, stop)

    def add(self, start: int, stop: int) -> None:
        """Add ``[start, stop)``, merging with any range it touches."""
        if start >= stop:
            return
        out: list[tuple[int, int]] = []
        placed = False
        for s, e in self._ranges:
            if e < start:
                out.append((s, e))
            elif stop < s:
                if not placed:
                    out.append((start, stop))
                    placed = True
                out.append((s, e))
            else:
                start, stop = min(s, start), max(e, stop)
        if not placed:
            out.append((start, stop))
        self._ranges = out

    def subtract(self, start: int, stop: int) -> None:
        """Remove ``[start, stop)``; an empty range changes nothing."""
        if start >= stop:
            return
        out: list[tuple[int, int]] = []
        for s, e in self._ranges:
            if e <= start or stop <= s:
                out.append((s, e))
                continue
            if s < start:
                out.append((s, start))
            if stop < e:
                out.append((stop, e))
        self._ranges = out

    def covers(self, start: int, stop: int) -> bool:
        """True when every byte of ``[start, stop)`` is in the set."""
        if start >= stop:
            return True
        return any(s <= start and stop <= e for s, e in self._ranges)

    def gaps(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of ``[start, stop)`` not in the set, in order."""
        out: list[tuple[int, int]] = []
        pos = start
        for s, e in self._ranges:
            if e <= pos:
                continue
            if s >= stop:
                break
            if s > pos:
                out.append((pos, min(s, stop)))
            pos = max(pos, e)
            if pos >= stop:
                break
        if pos < stop:
            out.append((pos, stop))
        return out

    def union(self, other: RangeSet) -> RangeSet:
        out = RangeSet(self._ranges)
        for s, e in other:
            out.add(s, e)
        return out

    @property
    def total(self) -> int:
        """How many integers (bytes) the set holds."""
        return sum(e - s for s, e in self._ranges)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def __len__(self) -> int:
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and other._ranges == self._ranges

    def __hash__(self) -> int:  # pragma: no cover - mutable, but dataclass fields may need it
        raise TypeError("RangeSet is mutable")

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges!r})"

    def to_wire(self) -> list[int]:
        return [x for r in self._ranges for x in r]

    @classmethod
    def from_wire(cls, value: Any, *, size_bytes: int, max_ranges: int) -> RangeSet:
        """Parse a flat list, checking it is sorted, disjoint and inside ``[0, size_bytes]``."""
        if not isinstance(value, list) or len(value) % 2 or len(value) > 2 * max_ranges:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED,
                f"a range list must be an even-length list of at most {2 * max_ranges} ints",
            )
        out = cls()
        prev = -1
        flat: Sequence[Any] = value
        for i in range(0, len(flat), 2):
            s, e = flat[i], flat[i + 1]
            if not (type(s) is int and type(e) is int and prev < s < e <= size_bytes):
                raise RemoteProtocolError(
                    ErrorCode.MALFORMED, f"range [{s!r}, {e!r}) is out of order or outside 0..{size_bytes}"
                )
            out._ranges.append((s, e))
            prev = e  # strict: adjacent ranges must arrive merged (one wire form per set)
        return out
