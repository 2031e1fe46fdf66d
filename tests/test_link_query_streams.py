"""Issue 14: requests that carry no data (an OPEN asking what ground has, a commit poll,
receipts) ride beside the data streams instead of holding one for a round trip
(``SenderConfig.query_streams``, docs/link.md)."""

from __future__ import annotations

import hashlib
import inspect

from hypothesis import given, settings
from hypothesis import strategies as st
from test_transfer import Pair, add, make_pair

from ground import cli as ground_cli
from ground.edge import EdgeLimits
from protocol.transfer import Outgoing, SenderConfig, TransferSender, TransferSpec
from protocol.transfer_wire import Chunk, Open, TransferKey, TransferKind, decode_request

CFG = SenderConfig(window=4, max_window=8, query_streams=3, initial_chunk_bytes=8192, open_ahead_rounds=2.0)


def _pair(cfg: SenderConfig) -> Pair:
    pair = make_pair()
    pair.sender = TransferSender(cfg, 0.0)
    return pair


def _kinds(outs: list[bytes]) -> tuple[int, int]:
    """(requests carrying upload bytes, requests carrying none) among these frames."""
    reqs = [decode_request(o) for o in outs]
    data = sum(1 for r in reqs if isinstance(r, Chunk) or (isinstance(r, Open) and r.data))
    return data, len(reqs) - data


def _check(outs: list[Outgoing], data: int, flying: int, streams: int, queries: int) -> None:
    """What was just sent respects the bounds: a data request only while fewer than ``streams``
    carry data, any request only while fewer than ``streams`` + ``queries`` fly. (Requests sent
    before the streams were shed may stay above the new count until answered.)"""
    if any(_kinds([o.data])[0] for o in outs):
        assert data <= streams
    if outs:
        assert flying <= streams + queries


def test_opens_ride_beside_the_streams_and_never_take_a_chunk_slot() -> None:
    """A photo backlog: every stream carries a chunk while the next photos are opened on the
    query slots; the data requests never exceed ``streams``, all of them ``streams`` + queries."""
    pair = _pair(CFG)
    for i in range(12):
        add(pair, bytes([i]) * 40_000)
    s = pair.sender
    flying: list[tuple[int, bytes]] = []
    most_data = 0
    for _ in range(60):
        outs = s.data_to_send(pair.now)
        flying += [(o.seq, o.data) for o in outs]
        data, _ = _kinds([d for _, d in flying])
        _check(outs, data, len(flying), s.streams, CFG.query_streams)
        most_data = max(most_data, data)
        if not flying:
            break
        pair.now += 1.0
        # Answer the oldest request: the others stay in flight (a long round trip).
        seq, frame = flying.pop(0)
        resp = pair.ground.handle(frame, pair.now)
        assert resp is not None
        s.receive(resp, pair.now)
        while s.next_event() is not None:
            pass
    assert most_data >= CFG.window  # every stream carried a chunk at once


def test_photos_are_opened_ahead_only_as_far_as_the_streams_need() -> None:
    """OPENs go ahead while the open photos hold less than a chunk for every stream; opening
    all of a backlog at once would hold state on ground and leave no OPENs to sample the
    path's round trip by later (the stream count would freeze)."""
    pair = _pair(CFG)
    for i in range(12):
        add(pair, bytes([i]) * 20_000)
    s = pair.sender
    outs = s.data_to_send(0.0)
    assert all(isinstance(decode_request(o.data), Open) for o in outs)
    want = int(CFG.open_ahead_rounds * s.streams * s.chunk_bytes)
    assert 20_000 * (len(outs) - 1) < want <= 20_000 * len(outs) < 12 * 20_000


def test_a_text_bundle_is_data_and_still_goes_first() -> None:
    """Priority is unchanged: a text bundle (whole inside its OPEN) waits for a data stream,
    and takes the first one that frees, before any photo chunk."""
    pair = _pair(CFG)
    for i in range(12):
        add(pair, bytes([i]) * 40_000)
    s = pair.sender
    flying = [(o.seq, o.data) for o in s.data_to_send(0.0)]
    for _seq, frame in flying:  # every photo opened: all streams take chunks
        resp = pair.ground.handle(frame, 1.0)
        assert resp is not None
        s.receive(resp, 1.0)
    flying = [(o.seq, o.data) for o in s.data_to_send(1.0)]
    text = b"a text post" * 10
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(text).digest())
    s.add(
        TransferSpec(key=key, size_bytes=len(text), owner="o0", priority=0), lambda o, n: text[o : o + n], 1.0
    )
    assert all(
        not (isinstance(r, Open) and r.key == key)
        for r in map(decode_request, (o.data for o in s.data_to_send(1.0)))
    )
    frame = next(d for _, d in flying if isinstance(decode_request(d), Chunk))
    resp = pair.ground.handle(frame, 2.0)  # a chunk is answered: a stream frees
    assert resp is not None
    s.receive(resp, 2.0)
    first = s.data_to_send(2.0)
    assert first and decode_request(first[0].data).key == key


def test_while_down_no_query_slots() -> None:
    """While the link is down only the probe (and the small uploads racing it) go."""
    s = TransferSender(CFG, 0.0)
    for i in range(12):
        data = bytes([i]) * 20_000
        k = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(data).digest())
        s.add(TransferSpec(key=k, size_bytes=len(data), owner="a"), lambda o, n, d=data: d[o : o + n], 0.0)
    out = s.data_to_send(0.0)
    assert len(out) >= 2
    for o in out:  # one cut drops them all
        s.request_failed(o.seq, 1.0, "cut")
    assert not s.link_up
    assert len(s.data_to_send(s.next_deadline() or 10.0)) == 1


def test_the_station_stays_within_grounds_connections_per_address() -> None:
    """Every stream and query in flight is a connection: at most ground's default per address
    (beyond it ground answers 503 busy), the warm-up's and a spare being the pool's + 2."""
    c = SenderConfig()
    assert c.max_window + c.query_streams + 2 <= EdgeLimits().max_conns_per_addr
    # ... and `ground serve --conns-per-address` defaults to the same.
    default = inspect.signature(ground_cli.serve).parameters["conns_per_address"].default
    assert default == EdgeLimits().max_conns_per_addr


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 6), st.integers(1, 6), st.lists(st.integers(0, 40), min_size=1, max_size=30))
def test_bounds_hold_whatever_answers_come_back(queries: int, window: int, picks: list[int]) -> None:
    cfg = SenderConfig(window=window, max_window=window + 4, query_streams=queries, initial_chunk_bytes=4096)
    pair = _pair(cfg)
    for i in range(8):
        add(pair, bytes([i]) * 20_000)
    s = pair.sender
    flying: list[tuple[int, bytes]] = []
    for pick in picks:
        outs = s.data_to_send(pair.now)
        flying += [(o.seq, o.data) for o in outs]
        data, _ = _kinds([d for _, d in flying])
        _check(outs, data, len(flying), s.streams, queries)
        if not flying:
            break
        pair.now += 0.5
        seq, frame = flying.pop(pick % len(flying))
        resp = pair.ground.handle(frame, pair.now)
        assert resp is not None
        s.receive(resp, pair.now)
        while s.next_event() is not None:
            pass
