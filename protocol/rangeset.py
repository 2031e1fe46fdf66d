"""Byte ranges as sorted, merged half-open intervals (after aioquic's ``quic/rangeset.py``).

Ground reports what it has durably stored of an upload as a RangeSet; the sender sends
only the gaps. On the wire a RangeSet is a flat list ``[start0, stop0, start1, stop1, ...]``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .errors import ErrorCode, RemoteProtocolError


def _start_of(r: tuple[int, int]) -> int:
    return r[0]


def _stop_of(r: tuple[int, int]) -> int:
    return r[1]


class RangeSet:
    """A set of integers stored as disjoint, non-adjacent ``[start, stop)`` ranges."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        if isinstance(ranges, RangeSet):
            # Already sorted and merged: a copy is one list copy, O(n) (issue 16: copying a
            # fragmented upload's ranges through add() was O(n²) on ground's event loop).
            self._ranges: list[tuple[int, int]] = list(ranges._ranges)
            return
        self._ranges = []
        for start, stop in sorted(ranges):
            self._append(start, stop)

    def _append(self, start: int, stop: int) -> None:
        """Add a range starting at or after every range already held (O(1))."""
        if start >= stop:
            return
        if self._ranges and start <= self._ranges[-1][1]:
            s, e = self._ranges[-1]
            self._ranges[-1] = (s, max(e, stop))
        else:
            self._ranges.append((start, stop))

    def _touching(self, start: int, stop: int) -> tuple[int, int]:
        """Indices ``i, j``: ranges[i:j] are those ``[start, stop)`` overlaps or is adjacent to."""
        i = bisect_left(self._ranges, start, key=_stop_of)  # first range ending at or after start
        j = bisect_right(self._ranges, stop, key=_start_of)  # first range starting after stop
        return i, j

    def add(self, start: int, stop: int) -> None:
        """Add ``[start, stop)``, merging with any range it touches (O(log n) search)."""
        if start >= stop:
            return
        i, j = self._touching(start, stop)
        if i < j:
            start, stop = min(start, self._ranges[i][0]), max(stop, self._ranges[j - 1][1])
        self._ranges[i:j] = [(start, stop)]

    def count_after_add(self, start: int, stop: int) -> int:
        """How many ranges the set would hold after ``add(start, stop)`` (the set is unchanged)."""
        if start >= stop:
            return len(self._ranges)
        i, j = self._touching(start, stop)
        return len(self._ranges) + 1 - (j - i)

    def subtract(self, start: int, stop: int) -> None:
        """Remove ``[start, stop)``; an empty range changes nothing."""
        if start >= stop:
            return
        i = bisect_right(self._ranges, start, key=_stop_of)  # first range ending after start
        j = bisect_left(self._ranges, stop, key=_start_of)  # first range starting at or after stop
        keep: list[tuple[int, int]] = []
        if i < j:
            s, e = self._ranges[i][0], self._ranges[j - 1][1]
            if s < start:
                keep.append((s, start))
            if stop < e:
                keep.append((stop, e))
        self._ranges[i:j] = keep

    def covers(self, start: int, stop: int) -> bool:
        """True when every byte of ``[start, stop)`` is in the set."""
        if start >= stop:
            return True
        i = bisect_right(self._ranges, start, key=_start_of) - 1
        return i >= 0 and stop <= self._ranges[i][1]

    def gaps(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of ``[start, stop)`` not in the set, in order."""
        out: list[tuple[int, int]] = []
        pos = start
        for k in range(bisect_right(self._ranges, start, key=_stop_of), len(self._ranges)):
            s, e = self._ranges[k]
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
        return RangeSet([*self._ranges, *other._ranges])

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
