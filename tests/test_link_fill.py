"""Issue 14: parallel streams sized from the round trips of the station's own small requests, and a cut chunk's bytes kept
on ground (docs/link.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from link_support import running_ground, setup_station
from test_transfer import PHOTO, add, make_pair

from protocol.transfer import LinkDown, Outgoing, SenderConfig, TransferSender, TransferSpec
from protocol.transfer_sender import RATE_FALL_PER_RTT
from protocol.transfer_wire import (
    Chunk,
    ErrorFrame,
    LinkErrorCode,
    Open,
    ReceiptsRequest,
    TransferKey,
    TransferKind,
    decode_request,
    encode_request,
    encode_response,
    salvage_chunk,
)

KEY = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(b"k").digest())


# -- streams ---------------------------------------------------------------------------


class _Path:
    """A link the test scripts: a request's answer comes ``rtt`` plus the queue (``queue_s(now)``)
    after it began, plus its payload at a loss-limited stream's rate; a request may first pay a
    TCP handshake first (with probability ``handshake``: one RTT before it begins on its
    connection)."""

    def __init__(self, config: SenderConfig, photos: int = 400, photo_bytes: int = 200_000) -> None:
        self.pair = make_pair()
        self.sender = self.pair.sender = TransferSender(config, 0.0)
        for i in range(photos):
            add(self.pair, i.to_bytes(4, "big") * (photo_bytes // 4))
        self.now = 0.0
        self.rng = random.Random(1)
        self.flying: list[tuple[float, float, int, bytes | None]] = []  # (answer at, began at, seq, frame)

    def run(
        self,
        until: float,
        *,
        rtt: float = 1.4,
        queue_s: Callable[[float], float] = lambda now: 0.0,
        stream_bytes_s: float = 12_000.0,
        handshake: float = 0.0,
    ) -> list[int]:
        """Run until ``until``; returns the stream count after each answer."""
        seen = []
        while self.now < until:
            for out in self.sender.data_to_send(self.now):
                began = self.now + (rtt if self.rng.random() < handshake else 0.0)
                answer_at = began + rtt + queue_s(self.now) + out.payload_bytes / stream_bytes_s
                resp = self.pair.ground.handle(out.data, began + rtt / 2)
                self.flying.append((answer_at, began, out.seq, resp))
            self.flying.sort()
            nxt = [self.flying[0][0]] if self.flying else []
            d = self.sender.next_deadline()
            if d is not None:
                nxt.append(d)
            if not nxt:
                break
            self.now = max(self.now, min(nxt))
            while self.flying and self.flying[0][0] <= self.now:
                _, began, seq, resp = self.flying.pop(0)
                assert resp is not None
                self.sender.receive(resp, self.now, started_at=began)
                seen.append(self.sender.streams)
            self.sender.handle_timeout(self.now)
            while self.sender.next_event() is not None:
                pass
        return seen


CFG = SenderConfig(
    window=4, initial_streams=4, max_window=24, initial_chunk_bytes=16_384, max_chunk_bytes=65_536
)


def test_streams_grow_while_the_queue_stays_empty_and_shed_when_it_fills() -> None:
    """Loss-limited streams and no queue: grow to max_window; the link's queue then fills
    (small requests' round trips 2x the base): shed back to window, never outside the bounds."""
    path = _Path(CFG, photos=1500, photo_bytes=60_000)
    seen = path.run(120.0)
    assert seen == sorted(seen) and seen[-1] == CFG.max_window
    t0 = path.now
    # (within rtt_window_s: a queue that never drains becomes the path's base RTT after it)
    seen = path.run(t0 + 280.0, queue_s=lambda now: 1.4)
    assert all(CFG.window <= n <= CFG.max_window for n in seen)
    assert path.sender.streams == CFG.window
    assert len(path.sender.data_to_send(path.now)) <= path.sender.streams


def test_a_queue_standing_past_the_base_window_does_not_size_the_path() -> None:
    """A queue that stands longer than ``rtt_window_s`` becomes the base RTT; the windows, the
    gate and the stream caps are sized by ``path_rtt_s`` (the least since the link came back),
    which stays the path's own. A return after a silence learns it afresh (a relay's handover
    may bring a longer path); a link called down with no silence (one request's deadline while
    others were answered) keeps it."""
    path = _Path(dataclasses.replace(CFG, max_window=4), photos=400, photo_bytes=60_000)
    path.run(20.0)
    assert path.sender.base_rtt_s == path.sender.path_rtt_s == pytest.approx(1.4)
    path.run(20.0 + CFG.rtt_window_s + 30.0, queue_s=lambda now: 0.16)
    base, least = path.sender.base_rtt_s, path.sender.path_rtt_s
    assert base is not None and least is not None
    assert (base, least) == (pytest.approx(1.56), pytest.approx(1.4))
    seqs = [seq for _, _, seq, _ in path.flying]
    path.sender.request_failed(seqs[0], path.now, "no answer before the deadline")
    assert not path.sender.link_up  # one request's deadline calls the link down ...
    path.sender._link_back(path.now + 0.1)  # noqa: SLF001  (... and the next answer back)
    assert path.sender.path_rtt_s == pytest.approx(1.4)  # no silence: the path is kept
    for seq in seqs[1:]:
        path.sender.request_failed(seq, path.now + 0.2, "cut")
    path.sender._link_back(path.now + 0.2 + 2 * 1.4)  # noqa: SLF001  (two round trips unheard)
    assert path.sender.path_rtt_s == base  # nothing learnt since the return: the base


def test_a_handshake_is_not_taken_for_a_queue() -> None:
    """Requests that first open a connection (a TCP handshake: one more RTT) are measured from
    when they began on it (the driver's ``started_at``): the path shows no queue, and the
    streams grow as on a warm pool. Every request on a fresh connection: the same."""
    for share in (0.5, 1.0):
        assert _Path(CFG).run(120.0, handshake=share)[-1] == CFG.max_window


def test_streams_follow_the_queue_behind_a_proxy() -> None:
    """What a TCP_INFO reading missed behind linkemu: the queue is at the far end, where only
    the requests' own round trips see it. A queue that grows with the streams (a link filled
    by them) holds the count near the point where it starts to grow."""
    path = _Path(CFG)
    # 12 streams fill the link; each further stream adds a round trip of queue.
    seen = path.run(300.0, queue_s=lambda now: max(0, path.sender.streams - 12) * 1.4)
    settled = seen[len(seen) // 2 :]
    assert 11 <= min(settled) and max(settled) <= 15, sorted(set(settled))


# 10 streams per second of the 1.4 s path: a cap of 14 the tests can reach in seconds.
CAPS_CFG = dataclasses.replace(
    CFG,
    max_window=96,
    streams_per_rtt_s=10.0,
    streams_floor_max=4,
    # (no cap by the rate delivered: these paths have no link rate, every stream adds 12 kB/s)
    stream_share_bytes=10**9,
    lossy_stream_share_bytes=10**9,
)


def test_a_faster_link_is_not_held_to_the_streams_per_second() -> None:
    """The caps are the larger of so many streams per second of round trip and as many as
    leave each stream its share of what the last interval delivered in that round trip: on
    1.5 Mbit/s (where the per-second caps were measured) the first binds the nominal count, on
    a faster link the second (a 6 Mbit/s link at 1.4 s / 1 % sat at 45 streams and 0.52-0.55
    of its rate). With no queue the share is smaller (4.4 kB: a stream at 3 % loss carries ~5
    kB a round trip), so there it binds on 1.5 Mbit/s at 1.4 s too."""
    s = TransferSender(SenderConfig(), 0.0)
    s._path_rtt_s = 1.4  # noqa: SLF001
    for rate, nominal, most in (
        (0.0, 34, 45),  # nothing delivered yet: 24 and 32 a second of 1.4 s
        (1_500_000 / 8 * 1.25, 34, 74),  # a 1.5 Mbit/s interval read high: 24 a second; its small shares
        (6_000_000 / 8 * 0.5, 44, 119),  # half of 6 Mbit/s delivered: its shares
        (6_000_000 / 8, 89, 160),  # all of it (``max_window`` with no queue)
        (12_000_000 / 8, 160, 160),  # twice that: ``max_window``
    ):
        assert s._stream_caps(100.0, 1.4, rate) == (nominal, most)  # noqa: SLF001


def _interval_with(s: TransferSender, now: float, delivered: int) -> None:
    """End one interval of the stream rule at ``now``: window-limited, no queue, ``delivered``
    bytes answered since it began."""
    s._standing_rtt = s.base_rtt_s  # noqa: SLF001
    s._window_limited = True  # noqa: SLF001
    s._delivered += delivered  # noqa: SLF001
    s._size_streams(now)  # noqa: SLF001


def test_an_interval_that_delivered_nothing_keeps_a_remembered_count() -> None:
    """A start's first interval ends before any chunk is answered: it measured nothing of what
    the streams carry, so its caps (the per-second counts alone) cannot take back the count a
    remembered link started with (6 Mbit/s, 2.6 s: 160 fell to 83 at 5.2 s and took 12 s to
    come back). Once an interval delivers, its caps decide as before; a start from nothing
    still grows."""
    s = TransferSender(SenderConfig(initial_streams=160, initial_rate_bytes_s=728_000.0), 0.0)
    s._rtts.append((0.0, 2.6))  # noqa: SLF001
    _interval_with(s, 5.2, 0)
    assert s.streams == 160
    assert s._interval_rate_bytes_s == 728_000.0  # noqa: SLF001  (kept: nothing measured)
    _interval_with(s, 10.4, 100_000)  # ~19 kB/s: a slow link after all
    assert s.streams < 160
    assert s._interval_rate_bytes_s == 100_000 / 5.2  # noqa: SLF001
    cold = TransferSender(SenderConfig(), 0.0)
    cold._rtts.append((0.0, 2.6))  # noqa: SLF001
    _interval_with(cold, 5.2, 0)
    assert cold.streams == 24  # 16 and half again, as before


def test_a_burst_of_answers_lowers_the_rate_by_one_round_at_most() -> None:
    """The chunks' rate falls by at most ``RATE_FALL_PER_RTT`` a round trip: 160 first flights
    sent at once are answered within half a second, each sample seeing only the answers ahead
    of it, and one fall per answer took a remembered 729 kB/s to 63 kB/s. It still falls
    round after round on a slower link, and rises at once."""
    rate = 728_000.0
    s = TransferSender(SenderConfig(initial_rate_bytes_s=rate), 0.0)
    s._rtts.append((0.0, 2.6))  # noqa: SLF001
    for i in range(160):
        s._rate_sample(i * 11_000 / 2.6, 5.2 + i / 320)  # noqa: SLF001
    assert s.rate_bytes_s >= RATE_FALL_PER_RTT * rate
    now = 5.7
    for _ in range(10):  # ten round trips of a link at a tenth of that
        for k in range(20):
            s._rate_sample(rate / 10, now + k * 0.1)  # noqa: SLF001
        now += 2.6
    low = s.rate_bytes_s
    assert low < 0.15 * rate
    s._rate_sample(rate, now)  # noqa: SLF001
    assert s.rate_bytes_s >= 2 * low  # rises at once


MIB = 1024 * 1024


def test_chunks_in_flight_reach_round_trips_of_a_fast_long_link() -> None:
    """All chunks in flight together: 2 MiB, or ``inflight_bdps`` round trips of what the last
    interval delivered if more, up to the ceiling: a request holds its bytes a round trip past
    its last one, and at 6 Mbit/s and 2.6 s 2 MiB is 1.07 BDP (docs/link.md "In flight: round
    trips of the rate"). On 1.5 Mbit/s links nothing changes."""
    s = TransferSender(SenderConfig(), 0.0)
    s._rtts.append((0.0, 2.6))  # noqa: SLF001
    bdps = s.config.inflight_bdps
    for rate, budget in (
        (0.0, 2 * MIB),  # nothing delivered yet
        (1_500_000 / 8, 2 * MIB),  # 1.5 Mbit/s: 2 MiB is the more
        (6_000_000 / 8, int(bdps * 6_000_000 / 8 * 2.6)),
        (1e9, 16 * MIB),  # the ceiling: half ground's body budget for one station
    ):
        s._interval_rate_bytes_s = rate  # noqa: SLF001
        assert s._inflight_budget() == budget  # noqa: SLF001
    s.streams, s._rate_samples, s.rate_bytes_s = 160, 1, 6_000_000 / 8  # noqa: SLF001
    s._interval_rate_bytes_s = 6_000_000 / 8  # noqa: SLF001
    assert s.chunk_bytes == int(bdps * 6_000_000 / 8 * 2.6) // 160


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 1e8),
    st.floats(0.01, 10.0),
    st.integers(1, 160),
    st.floats(0, 1e8),
)
def test_chunks_in_flight_stay_within_the_budget(
    interval_rate: float, rtt: float, streams: int, rate: float
) -> None:
    """Whatever the rates and the round trip: every stream's chunk together stay within the
    budget (or the least chunk each), and the budget within 2 MiB .. the ceiling."""
    s = TransferSender(SenderConfig(), 0.0)
    s._rtts.append((0.0, rtt))  # noqa: SLF001
    s._interval_rate_bytes_s = interval_rate  # noqa: SLF001
    s.streams, s._rate_samples, s.rate_bytes_s = streams, 1, rate  # noqa: SLF001
    budget = s._inflight_budget()  # noqa: SLF001
    c = s.config
    assert c.max_inflight_bytes <= budget <= max(c.max_inflight_bytes, c.inflight_ceiling_bytes)
    assert s.chunk_bytes * streams <= max(budget, c.min_chunk_bytes * streams)


def test_the_interval_records_what_it_delivered() -> None:
    """The budget follows the stream rule's own interval (not ``rate_bytes_s``, which rises
    fast on bunched answers)."""
    path = _Path(CFG)
    path.run(60.0)
    s = path.sender
    assert 0 < s._interval_rate_bytes_s <= s.stats.chunk_bytes / 60.0 * 2  # noqa: SLF001


def test_a_standing_queue_that_becomes_the_base_does_not_raise_the_cap() -> None:
    """The cap (streams per second of round trip) follows the least round trip measured, not
    the windowed base: a queue standing past ``rtt_window_s`` becomes the base, and a cap
    following it grew with the queue the streams made (2.6 s / 1 %: 83 -> 93 streams)."""
    cfg = dataclasses.replace(CAPS_CFG, lossy_streams_per_rtt_s=10.0, rtt_window_s=60.0)
    path = _Path(cfg, photos=3000, photo_bytes=60_000)
    assert path.run(100.0)[-1] == 14  # 10 per second of the 1.4 s path
    # 0.6 s of queue: under 1.5 x the base, so nothing sheds; past 60 s the base reads 2.0 s.
    seen = path.run(path.now + 200.0, queue_s=lambda now: 0.6)
    assert path.sender.base_rtt_s is not None and path.sender.base_rtt_s > 1.9
    assert max(seen) == 14


def test_after_a_dark_a_longer_path_is_learnt_once_the_base_has() -> None:
    """The caps' least round trip starts afresh when the link comes back: a return onto a
    path twice as long (a relay's handover) keeps the old caps only while the old base is in
    its window, then sizes by the new path (the least ever measured would keep 14 for good)."""
    cfg = dataclasses.replace(CAPS_CFG, lossy_streams_per_rtt_s=10.0, rtt_window_s=60.0)
    path = _Path(cfg, photos=3000, photo_bytes=60_000)
    assert path.run(100.0)[-1] == 14
    for _, _, seq, _ in path.flying:  # the dark: every request in flight dies with the link
        path.sender.request_failed(seq, path.now, "cut")
    path.flying.clear()
    assert not path.sender.link_up
    seen = path.run(path.now + 200.0, rtt=2.8)
    assert path.sender.link_up and path.sender.base_rtt_s is not None and path.sender.base_rtt_s > 2.7
    assert seen[-1] == 28 and max(seen) == 28


def test_streams_beyond_the_nominal_count_only_while_the_link_shows_no_queue() -> None:
    """Loss-limited streams and no queue at all: up to ``lossy_streams_per_rtt_s``; once a
    queue shows (the standing round trip 1.1-1.5 x the base, where the nominal rule still
    grows) the extra streams are shed back to the nominal count, and no further."""
    cfg = dataclasses.replace(CAPS_CFG, lossy_streams_per_rtt_s=20.0)
    path = _Path(cfg, photos=3000, photo_bytes=60_000)
    seen = path.run(150.0)
    assert seen[-1] == 28 and max(seen) == 28  # 20 per second of the 1.4 s path
    seen = path.run(path.now + 100.0, queue_s=lambda now: 0.3)  # 1.21 x the base
    assert path.sender.streams == 14 and min(seen[len(seen) // 2 :]) == 14
    seen = path.run(path.now + 100.0)  # the queue drains: the extra streams come back
    assert path.sender.streams == 28


def test_a_backlog_of_a_few_large_photos_still_sizes_its_streams() -> None:
    """Every photo open and nothing left to open ahead: an OPEN of a photo already sending
    samples the round trip, so the count still follows the queue (without it no small request
    was left, the count froze where it was and a standing queue became the base RTT: 1.86 s
    on a 1.4 s path, ~1.7 BDP in the network, in the simulator)."""
    path = _Path(CFG, photos=2, photo_bytes=40_000_000)
    seen = path.run(300.0, queue_s=lambda now: max(0, path.sender.streams - 12) * 1.4)
    settled = seen[len(seen) // 2 :]
    assert 11 <= min(settled) and max(settled) <= 15, sorted(set(settled))
    assert path.sender.base_rtt_s is not None and path.sender.base_rtt_s < 1.5


def test_a_start_whose_every_open_carries_a_chunk_samples_ahead_of_them() -> None:
    """Every photo's OPEN carrying its first chunk (link version 3), no small request was left
    at the start: the first round trip came from the first answers, behind every first flight
    (13 s into a 2.6 s start in the simulator, the count at 16 streams until then). The last
    two photos in line open bare and leave first; every other stream still takes a first
    flight. The first answer back sets the base: one whose answer lost a segment (3 s late)
    does not make a 1.4 s path read 4.4 s."""
    cfg = dataclasses.replace(CFG, initial_streams=16, window=8, max_window=96)
    path = _Path(cfg, photos=16, photo_bytes=6_000_000)
    s = path.sender
    s.first_flight = True
    first = [decode_request(o.data) for o in s.data_to_send(0.0)]
    bare = [f for f in first if isinstance(f, Open) and not f.data]
    assert len(bare) == 2 and first[:2] == bare
    last_two = sorted(s._transfers.values(), key=lambda t: t.order)[-2:]  # noqa: SLF001
    assert {b.key for b in bare} == {t.spec.key for t in last_two}
    assert sum(1 for f in first if isinstance(f, Open) and f.data) == 14
    for o in first:  # answered like the rest: 1.4 s plus the payload at 12 kB/s ...
        resp = path.pair.ground.handle(encode_request(o), 0.7)
        assert resp is not None
        late = 3.0 if o is first[0] else 0.0  # ... but the first sample's answer lost a segment
        path.flying.append(
            (1.4 + late + (len(o.data) if isinstance(o, Open) else 0) / 12_000, 0.0, o.seq, resp)
        )
    path.flying.sort()
    path.run(1.5)
    assert s.base_rtt_s == 1.4  # by the second bare OPEN's answer, before any first flight's


def test_a_start_of_two_uploads_keeps_a_first_flight() -> None:
    """The samples never take every upload's first flight: of two photos, one opens bare."""
    cfg = dataclasses.replace(CFG, initial_streams=16, window=8, max_window=96)
    path = _Path(cfg, photos=2, photo_bytes=6_000_000)
    path.sender.first_flight = True
    first = [decode_request(o.data) for o in path.sender.data_to_send(0.0)]
    opens = [f for f in first if isinstance(f, Open)]
    assert len(opens) == 2 and sorted(bool(f.data) for f in opens) == [False, True]


def test_a_sampling_open_holds_back_no_chunk() -> None:
    """The OPEN that samples the round trip asks about a photo ground holds: whenever the
    sender hands out requests while such an OPEN is on its way, every data stream still gets
    a chunk (the photo's own included), and one such OPEN flies at a time."""
    path = _Path(CFG, photos=1, photo_bytes=40_000_000)
    s = path.sender
    real = s.data_to_send
    opens: list[float] = []

    def recording(now: float) -> list[Outgoing]:
        out = real(now)
        opens.extend(now for o in out if isinstance(decode_request(o.data), Open))
        asking = [r for r in s._requests.values() if r.span is None]  # noqa: SLF001
        assert len(asking) <= 1
        if asking and now > 10.0:  # (the photo's first OPEN: nothing of it is known yet)
            assert s._data_requests() == s.streams  # noqa: SLF001
        return out

    s.data_to_send = recording  # type: ignore[method-assign]
    path.run(120.0)
    assert len(opens) > 30  # about one a round trip, not one for the photo alone


def test_streams_do_not_grow_when_the_queue_not_the_window_holds_requests() -> None:
    """App-limited (one small text bundle): more streams would carry nothing more."""
    s = TransferSender(SenderConfig(window=4, initial_streams=4), 0.0)
    data = b"x" * 100
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
    s.add(
        TransferSpec(key=key, size_bytes=len(data), owner="a", priority=0), lambda o, n: data[o : o + n], 0.0
    )
    now = 0.0
    for _ in range(10):
        now += 3.0
        for out in s.data_to_send(now):
            s.request_failed(out.seq, now + 1.4, "cut")
    assert s.streams == 4
    path = _Path(SenderConfig(window=4, initial_streams=4), photos=1, photo_bytes=2000)
    path.run(60.0)
    assert path.sender.streams == 4


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 30.0), st.floats(0.1, 3.0)), min_size=1, max_size=8))
def test_streams_stay_within_their_bounds(queues: list[tuple[float, float]]) -> None:
    cfg = SenderConfig(
        window=3, initial_streams=3, max_window=9, initial_chunk_bytes=4096, max_chunk_bytes=8192
    )
    path = _Path(cfg, photos=60, photo_bytes=40_000)
    for span, queue in queues:
        seen = path.run(path.now + span, rtt=0.8, queue_s=lambda now, q=queue: q)  # type: ignore[misc]
        assert all(cfg.window <= n <= cfg.max_window for n in seen)


# -- a cut chunk's bytes ---------------------------------------------------------------


def test_salvage_gives_every_data_byte_that_arrived() -> None:
    data = bytes(range(256)) * 300
    frame = encode_request(Chunk(seq=7, key=KEY, offset=4096, data=data))
    header = len(frame) - len(data)
    for cut in range(len(frame) + 1):
        got = salvage_chunk(frame[:cut])
        if header < cut < len(frame):
            assert got == Chunk(seq=7, key=KEY, offset=4096, data=data[: cut - header])
        else:
            assert got is None  # nothing of the data yet, or the whole frame (decode it instead)


def test_salvage_refuses_what_carries_no_data() -> None:
    for req in (
        Open(seq=1, key=KEY, size_bytes=10_000, owner="a"),
        Open(seq=1, key=KEY, size_bytes=10_000, owner="a", receipts_since=3),
        ReceiptsRequest(seq=2, since=5),
    ):
        frame = encode_request(req)
        assert all(salvage_chunk(frame[:n]) is None for n in range(len(frame) + 1))
    bad_version = bytearray(encode_request(Chunk(seq=1, key=KEY, offset=0, data=b"z" * 300)))
    bad_version[1] = 9
    assert salvage_chunk(bytes(bad_version[:200])) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_salvage_of_garbage_is_none_or_a_valid_chunk(data: bytes) -> None:
    got = salvage_chunk(data)
    if got is not None:
        assert decode_request(encode_request(got)) == got


def test_ground_keeps_what_reached_it_so_resume_sends_only_the_rest() -> None:
    """The in-memory pair: a chunk cut after half its bytes costs only the other half."""
    pair = make_pair()
    k = add(pair, PHOTO)
    pair.step()  # OPEN answered
    out = pair.sender.data_to_send(pair.now)
    frame = next(o.data for o in out if isinstance(decode_request(o.data), Chunk))  # (beside a sampling OPEN)
    first = decode_request(frame)
    assert isinstance(first, Chunk)
    cut = len(frame) - len(first.data) // 2
    partial = salvage_chunk(frame[:cut])
    assert partial is not None and len(partial.data) == len(first.data) - len(first.data) // 2
    pair.ground.handle(encode_request(partial), pair.now)  # ground stores it; nobody hears back
    for o in out:
        pair.sender.request_failed(o.seq, pair.now + 1, "cut")
    before = pair.sender.stats.chunk_bytes
    pair.now += 2.0
    pair.run()
    assert pair.ground.committed[k] == PHOTO
    resent = pair.sender.stats.chunk_bytes - before
    assert resent <= len(PHOTO) - len(partial.data)


async def test_real_ground_keeps_the_bytes_of_a_request_cut_mid_body(cli: Cli, tmp_path: Path) -> None:
    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    data = bytes(range(256)) * 400  # 102,400 bytes
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(data).digest())
    async with running_ground(cli.ground_home) as url:
        host, port = url.removeprefix("http://").split(":")

        async def raw_post(body: bytes, send: int) -> bytes:
            r, w = await asyncio.open_connection(host, int(port))
            head = (
                f"POST /v1/link HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/x-orbitpost-frame\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            w.write(head + body[:send])
            await w.drain()
            if send < len(body):
                await asyncio.sleep(0.3)
                w.transport.abort()  # the link drops mid-request
                return b""
            answer = await r.read(65536)
            w.close()
            return answer

        opened = await raw_post(
            encode_request(Open(seq=1, key=key, size_bytes=len(data), owner="alice")), 10**9
        )
        assert b" 200 " in opened.split(b"\r\n")[0]
        chunk = encode_request(Chunk(seq=2, key=key, offset=0, data=data))
        await raw_post(chunk, len(chunk) - 40_000)
        for _ in range(100):
            conn = sqlite3.connect(cli.ground_home / "ground.db")
            (stored,) = conn.execute("SELECT received_bytes FROM transfers").fetchone()
            conn.close()
            if stored:
                break
            await asyncio.sleep(0.05)
    # Every data byte that reached ground was kept (the frame header is 46 bytes).
    assert stored == len(data) - 40_000


def test_ground_busy_caps_the_streams_without_calling_the_link_down() -> None:
    """Ground answers ``503 busy`` past the requests it holds for a station: the sender keeps
    to that many, resends what was refused, and never reports the link down."""
    path = _Path(
        SenderConfig(window=8, initial_streams=8, max_window=24, initial_chunk_bytes=16_384), photos=30
    )
    s, ground = path.sender, path.pair.ground
    held = 5
    now = 0.0
    refused = False
    for _ in range(400):
        outs = s.data_to_send(now)
        answers = []
        for i, out in enumerate(outs):
            if len(s._requests) - len(outs) + i >= held:  # noqa: SLF001 - ground's view
                refused = True
                answers.append(
                    encode_response(
                        ErrorFrame(seq=out.seq, code=LinkErrorCode.BUSY, message="", retryable=True)
                    )
                )
            else:
                resp = ground.handle(out.data, now + 0.7)
                assert resp is not None
                answers.append(resp)
        now += 1.4
        for a in answers:
            s.receive(a, now)
        while (ev := s.next_event()) is not None:
            assert not isinstance(ev, LinkDown)
        assert s.streams <= held or not refused
        if s.idle:
            break
        now = max(now, s.next_deadline() or now) if not outs else now
    assert s.idle and len(ground.committed) == 30
