"""Issue 14: a cut costs the bytes in the network, the link's queue with them. The first round
trip the stream count is sized by is measured ahead of the first flight, not behind its queue
(so the count does not keep that queue for a base RTT); the count stays in its bounds through
cuts, timeouts and clock steps (docs/link.md, "Cuts")."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_link_fill import _Path
from test_transfer import add, make_pair

from protocol.transfer import SenderConfig, TransferSender
from protocol.transfer_wire import Open, TransferKind, decode_request


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


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 30), st.integers(0, 4), st.integers(1, 32), st.booleans())
def test_until_measured_the_small_requests_go_first(
    photos: int, texts: int, streams: int, first_flight: bool
) -> None:
    """Any backlog at the start: the small requests (<= small_request_bytes) first, then the
    rest, each in the order a sender that has measured a round trip hands them out. The uploads
    opened are the same, but where that sender would hand out no small request at all (every
    OPEN carries a first chunk), the last uploads in line (``first_samples``, leaving one a
    first flight) open bare to be them."""
    got = {}
    for measured in (False, True):
        pair = make_pair()
        s = pair.sender = TransferSender(SenderConfig(window=1, initial_streams=streams), 0.0)
        s.first_flight = first_flight
        for i in range(photos):
            add(pair, i.to_bytes(4, "big") * 30_000)
        for i in range(texts):
            add(pair, b"text %d" % i, kind=TransferKind.BUNDLE)
        if measured:
            s._least_rtt_s = 1.0  # noqa: SLF001
        in_line = [t.spec.key for t in sorted(s._transfers.values(), key=lambda t: t.order)]  # noqa: SLF001
        frames = [(decode_request(o.data), o.payload_bytes) for o in s.data_to_send(0.0)]
        got[measured] = [(f.key, n <= s.config.small_request_bytes) for f, n in frames]  # type: ignore[union-attr]
    early, late = got[False], got[True]
    small = [k for k, sm in early if sm]
    assert early == [(k, True) for k in small] + [(k, False) for k, sm in early if not sm]
    early_data, late_data = [k for k, sm in early if not sm], [k for k, sm in late if not sm]
    n = SenderConfig().first_samples
    assert early_data == [k for k in late_data if k in early_data] and len(late_data) <= len(early_data) + n
    if any(sm for _, sm in late) or early == [] or set(early) == set(late):
        assert sorted(early, key=str) == sorted(late, key=str)
    else:  # the start's samples: the last uploads open bare, not with their first chunks
        samples = [k for k, sm in early if sm]
        assert first_flight and 1 <= len(samples) <= n and early_data
        assert sorted(samples, key=str) == sorted(in_line[-len(samples) :], key=str)
        assert set(early) - {(k, True) for k in samples} <= set(late) and len(early) <= len(late) + n


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
    and no call hands out a data request beyond the streams (nor any request beyond the
    streams plus the query streams) while the link is up."""
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
