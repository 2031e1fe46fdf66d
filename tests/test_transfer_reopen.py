"""After a cut: what may leave while the OPEN asks ground what it kept (docs/link.md).

Only bytes that were in a failed request can be on ground unknown to the station; every other
gap was never sent. Those leave with the OPEN instead of a round trip after its answer, and
nothing the station never sent is held back, nor anything ground holds sent twice."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from test_transfer import Pair, add, make_pair

from protocol.rangeset import RangeSet
from protocol.transfer_wire import Chunk, Open, UploadState, decode_request

BIG = bytes(range(251)) * 800  # 200,800 bytes: many chunks of make_pair's 4-8 KiB


@dataclass
class Flights:
    """Every request the sender handed out, flight by flight, and the spans that failed."""

    flights: list[list[object]] = field(default_factory=list)
    failed: RangeSet = field(default_factory=RangeSet)
    sent: list[tuple[int, int]] = field(default_factory=list)


def _record(pair: Pair) -> Flights:
    """Wrap the pair so each flight's decoded requests and each failed request's span are kept."""
    rec = Flights()
    send, fail = pair.sender.data_to_send, pair.sender.request_failed
    spans: dict[int, tuple[int, int]] = {}

    def data_to_send(now: float):  # type: ignore[no-untyped-def]
        out = send(now)
        if out:
            reqs = [decode_request(o.data) for o in out]
            rec.flights.append(reqs)
            for r in reqs:
                span = _span(r)
                if span is not None:
                    spans[r.seq] = span  # type: ignore[attr-defined]
                    rec.sent.append(span)
        return out

    def request_failed(seq: int, now: float, reason: str) -> None:
        if seq in spans:
            rec.failed.add(*spans[seq])
        fail(seq, now, reason)

    pair.sender.data_to_send = data_to_send  # type: ignore[method-assign]
    pair.sender.request_failed = request_failed  # type: ignore[method-assign]
    return rec


def _span(r: object) -> tuple[int, int] | None:
    if isinstance(r, Chunk):
        return r.offset, r.offset + len(r.data)
    if isinstance(r, Open) and r.data:
        return 0, len(r.data)
    return None


def _overlap(rs: RangeSet, a: int, b: int) -> RangeSet:
    """The part of [a, b) that ``rs`` holds."""
    out = RangeSet([(a, b)])
    for s, e in rs.gaps(a, b):
        out.subtract(s, e)
    return out


def _sent_twice(sent: list[tuple[int, int]]) -> RangeSet:
    seen, twice = RangeSet(), RangeSet()
    for a, b in sent:
        for s, e in _overlap(seen, a, b):
            twice.add(s, e)
        seen.add(a, b)
    return twice


def test_bytes_never_sent_leave_with_the_reopen() -> None:
    """A cut kills a whole flight of two photos' chunks. Once the link is back, the flight
    that carries the OPEN asking what ground kept of the second photo carries chunks of its
    bytes never sent too; its cut ones wait for that OPEN's answer."""
    pair = make_pair()
    rec = _record(pair)
    a, b = add(pair, BIG), add(pair, BIG[::-1], owner="bob")
    while len(rec.flights) < 5:
        pair.step()
    pair.drop_requests.update(range(pair.sent + 1, pair.sent + 20))  # the next flight, whole
    pair.step()
    pair.drop_requests.clear()
    failed_b = RangeSet(_span(r) for r in rec.flights[-1] if isinstance(r, Chunk) and r.key == b)  # type: ignore[misc]
    assert failed_b.total > 0
    cut = len(rec.flights)
    while not any(isinstance(r, Open) and r.key == b for r in rec.flights[-1]) or len(rec.flights) == cut:
        assert pair.step()
    chunks = [r for r in rec.flights[-1] if isinstance(r, Chunk) and r.key == b]
    assert chunks, "the flight with the OPEN carried no chunk"
    for c in chunks:
        assert not _overlap(failed_b, c.offset, c.offset + len(c.data)).total, (
            "a cut chunk went before the answer"
        )
    pair.run()
    assert pair.ground.committed[a] == BIG and pair.ground.committed[b] == BIG[::-1]


@settings(max_examples=60, deadline=None)
@given(
    drops=st.sets(st.integers(min_value=1, max_value=60), max_size=12),
    answers_lost=st.booleans(),
)
def test_only_bytes_of_failed_requests_are_ever_sent_twice(drops: set[int], answers_lost: bool) -> None:
    """Requests or their answers lost anywhere: the upload still commits whole; a byte goes
    twice only if a request carrying it failed; with only answers lost (ground kept every
    byte), none goes twice."""
    pair = make_pair()
    rec = _record(pair)
    (pair.drop_responses if answers_lost else pair.drop_requests).update(drops)
    k = add(pair, BIG)
    pair.run()
    assert pair.done() == {k: UploadState.COMMITTED}
    assert pair.ground.committed[k] == BIG
    twice = _sent_twice(rec.sent)
    for s, e in twice:
        assert rec.failed.covers(s, e), f"[{s}, {e}) went twice but no request carrying it failed"
    if answers_lost:
        assert twice.total == 0
