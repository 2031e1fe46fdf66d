"""Issue 14: a cut costs the bytes in the network. The stream count holds the link's queue lower
once the link has been cut (``SenderConfig.cut_queue_rtt_ratio``), and the first round trip it
is sized by is measured ahead of the first flight, not behind it (docs/link.md, "Cuts")."""

from __future__ import annotations

import statistics

from hypothesis import given, settings
from hypothesis import strategies as st
from test_link_fill import _Path
from test_transfer import add, make_pair

from protocol.transfer import SenderConfig, TransferSender
from protocol.transfer_wire import Open, decode_request

# 12 streams fill the link; each further stream adds 0.1 s of queue (a 1.4 s path): the count
# settles where the queue reaches the target, 0.7 s (1.5 x) or 0.28 s once cut (1.2 x).
CFG = SenderConfig(
    window=4, initial_streams=4, max_window=40, initial_chunk_bytes=16_384, max_chunk_bytes=65_536
)


def _queue(path: _Path) -> float:
    return max(0, path.sender.streams - 12) * 0.1


def _cut(path: _Path) -> None:
    """Every connection drops now: each request in flight fails at once (before its deadline)."""
    for _, _, seq, _ in path.flying:
        path.sender.request_failed(seq, path.now, "connection reset")
    path.flying.clear()


def _timeout_all(path: _Path) -> None:
    """Every request in flight waited out its deadline (slow, not cut)."""
    for _, _, seq, _ in path.flying:
        req = path.sender._requests[seq]  # noqa: SLF001
        path.sender.request_failed(seq, req.deadline, "request timed out")
    path.flying.clear()


def _settled(path: _Path, until: float) -> float:
    seen = path.run(until, queue_s=lambda now: _queue(path))
    return statistics.median(seen[len(seen) // 2 :])


def test_a_cut_lowers_the_queue_the_streams_keep_and_a_timeout_does_not() -> None:
    never = _Path(CFG, photos=800, photo_bytes=60_000)
    uncut = _settled(never, 400.0)
    assert 17 <= uncut <= 21, uncut  # the queue near 0.5 x the base RTT
    assert never.sender.queue_target_ratio(never.now) == CFG.queue_rtt_ratio

    cut = _Path(CFG, photos=800, photo_bytes=60_000)
    cut.run(30.0, queue_s=lambda now: _queue(cut))
    _cut(cut)
    assert not cut.sender.link_up
    after = _settled(cut, 400.0)
    assert 13 <= after <= 16, after  # near 0.2 x
    assert cut.sender.queue_target_ratio(cut.now) == CFG.cut_queue_rtt_ratio
    # ... for cut_memory_s, then the fuller queue again.
    assert cut.sender.queue_target_ratio(30.0 + CFG.cut_memory_s + 1) == CFG.queue_rtt_ratio

    slow = _Path(CFG, photos=800, photo_bytes=60_000)
    slow.run(30.0, queue_s=lambda now: _queue(slow))
    _timeout_all(slow)
    assert slow.sender.queue_target_ratio(slow.now) == CFG.queue_rtt_ratio


def test_a_failure_while_the_link_is_down_is_no_new_cut() -> None:
    """Probes into the dark fail as they will; only the failure that ends an up link counts."""
    s = TransferSender(CFG, 0.0)
    pair = make_pair()
    pair.sender = s
    add(pair, b"p" * 50_000)
    (first, *rest) = s.data_to_send(0.0)
    s.request_failed(first.seq, 1.0, "connection reset")
    assert not s.link_up and s.queue_target_ratio(1.0) == CFG.cut_queue_rtt_ratio
    at = s._cut_at  # noqa: SLF001
    for o in rest:
        s.request_failed(o.seq, 2.0, "connection reset")
    for o in s.data_to_send(s.next_deadline() or 10.0):
        s.request_failed(o.seq, 20.0, "connection refused")
    assert s._cut_at == at  # noqa: SLF001


def test_the_first_round_trip_is_measured_ahead_of_the_first_flight() -> None:
    """A backlog of photos at the start: 16 OPENs carrying their first chunk and the bare OPENs
    opened ahead (the samples); the bare ones are handed out first, so they cross before the
    first flight's initial windows fill the link's queue. Only the order changes: the same
    requests, each kind in its own order; once a round trip is measured, no reordering."""
    orders = {}
    for measured_first in (True, False):
        pair = make_pair()
        s = pair.sender = TransferSender(SenderConfig(window=8, initial_streams=16), 0.0)
        s.first_flight = True
        for i in range(40):
            add(pair, i.to_bytes(4, "big") * 40_000)
        if not measured_first:
            s._least_rtt_s = 1.4  # noqa: SLF001 (as after a round trip)
        frames = [decode_request(o.data) for o in s.data_to_send(0.0)]
        assert all(isinstance(f, Open) for f in frames)
        orders[measured_first] = [(f.seq, bool(f.data)) for f in frames]  # type: ignore[union-attr]
    first = orders[True]
    carrying = [i for i, (_, d) in enumerate(first) if d]
    assert len(carrying) == 16 and carrying == list(range(len(first) - 16, len(first)))
    assert sorted(first) == sorted(orders[False])
    assert [q for q, d in first if d] == [q for q, d in orders[False] if d]
    assert orders[False] == sorted(orders[False])  # handed out in order, data first, when measured


def test_a_lone_photo_still_opens_with_its_first_chunk() -> None:
    """Nothing is opened bare to measure by: a lone photo's first flight is not given up."""
    pair = make_pair()
    pair.sender.first_flight = True
    add(pair, b"q" * 50_000)
    (o,) = pair.sender.data_to_send(0.0)
    f = decode_request(o.data)
    assert isinstance(f, Open) and f.data


_EVENT = st.tuples(
    st.sampled_from(["answer", "cut", "timeout", "garbage"]),
    st.floats(-5.0, 30.0),  # clock step (backwards too: a driver's clock may step)
    st.floats(0.0, 3.0),  # queue ahead of the answers
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_EVENT, min_size=1, max_size=25))
def test_streams_stay_within_their_bounds_through_cuts_and_clock_steps(
    events: list[tuple[str, float, float]],
) -> None:
    """Whatever the samples, cuts, timeouts and clock steps: window <= streams <= max_window,
    the queue target is one of the two ratios, and no call hands out a data request beyond the
    streams (nor any request beyond the streams plus the query streams) while the link is up."""
    cfg = SenderConfig(
        window=3,
        initial_streams=5,
        max_window=9,
        query_streams=2,
        initial_chunk_bytes=4096,
        max_chunk_bytes=8192,
    )
    path = _Path(cfg, photos=40, photo_bytes=40_000)
    s = path.sender
    send = s.data_to_send

    def checked(now: float) -> list[object]:
        data_before = sum(1 for r in s._requests.values() if r.span is not None)  # noqa: SLF001
        all_before = len(s._requests)  # noqa: SLF001
        out = send(now)
        if s.link_up and out:
            data = sum(1 for r in s._requests.values() if r.span is not None)  # noqa: SLF001
            assert data <= max(s.streams, data_before)
            assert len(s._requests) <= max(s.streams + cfg.query_streams, all_before)  # noqa: SLF001
        return out  # type: ignore[return-value]

    s.data_to_send = checked  # type: ignore[method-assign, assignment]
    for kind, step, queue in events:
        if kind == "answer":
            path.run(path.now + abs(step), rtt=0.8, queue_s=lambda now, q=queue: q)  # type: ignore[misc]
        elif kind == "cut":
            _cut(path)
        elif kind == "timeout":
            _timeout_all(path)
        else:
            s.receive(b"\x00 not a frame", path.now + step)  # a clock that may have stepped back
        assert cfg.window <= s.streams <= cfg.max_window
        assert s.queue_target_ratio(path.now + step) in (cfg.queue_rtt_ratio, cfg.cut_queue_rtt_ratio)
