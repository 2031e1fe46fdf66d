"""The transfer machines over an in-memory pair with a hand-advanced clock (aioquic style)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.rangeset import RangeSet
from protocol.transfer import (
    CommitUpload,
    LinkDown,
    LinkFatal,
    LinkUp,
    ReceiptsReceived,
    ReceiptsWanted,
    ReceiverConfig,
    SenderConfig,
    TransferDone,
    TransferReceiver,
    TransferSender,
    TransferSpec,
    UploadChanged,
    WriteChunk,
)
from protocol.transfer_wire import (
    Chunk,
    ErrorFrame,
    LinkErrorCode,
    Open,
    Status,
    TransferKey,
    TransferKind,
    UploadState,
    decode_request,
    decode_response,
    encode_request,
)


def key_of(data: bytes, kind: TransferKind = TransferKind.BLOB) -> TransferKey:
    return TransferKey(kind=kind, sha256=hashlib.sha256(data).digest())


@dataclass
class Ground:
    """The receiver plus an in-memory 'disk' standing in for ground's driver."""

    receiver: TransferReceiver
    files: dict[TransferKey, bytearray] = field(default_factory=dict)
    committed: dict[TransferKey, bytes] = field(default_factory=dict)
    writes: int = 0
    commits: int = 0
    durable: list[UploadChanged] = field(default_factory=list)
    defer_store: bool = False
    deferred: list[int] = field(default_factory=list)

    def handle(self, data: bytes, now: float, station: str = "iss") -> bytes | None:
        rid = self.receiver.receive(data, now, station=station)
        self.drain(now)
        return self.receiver.response_for(rid)

    def drain(self, now: float) -> None:
        # As ground/server.py: a request's writes all done, then chunk_stored once for it (a
        # chunk overlapping stored bytes is written as several pieces, one WriteChunk each).
        stored: list[int] = []
        while (ev := self.receiver.next_event()) is not None or stored:
            if ev is None:
                for rid in stored:
                    self.receiver.chunk_stored(rid, now)
                stored = []
            elif isinstance(ev, WriteChunk):
                buf = self.files.setdefault(ev.key, bytearray())
                end = ev.offset + len(ev.data)
                if len(buf) < end:
                    buf.extend(b"\0" * (end - len(buf)))
                buf[ev.offset : end] = ev.data
                self.writes += 1
                if self.defer_store:
                    self.deferred.append(ev.rid)
                elif ev.rid not in stored:
                    stored.append(ev.rid)
            elif isinstance(ev, CommitUpload):
                self.commits += 1
                data = bytes(self.files[ev.key][: ev.size_bytes])
                if hashlib.sha256(data).digest() == ev.key.sha256:
                    self.committed[ev.key] = data
                    self.receiver.commit_done(ev.rid, now, state=UploadState.COMMITTED)
                else:
                    self.receiver.commit_done(
                        ev.rid, now, state=UploadState.REJECTED, code="media_hash_mismatch", message="hash"
                    )
            elif isinstance(ev, ReceiptsWanted):
                self.receiver.receipts_ready(ev.rid, b"doc", ev.since + 1, False)
            elif isinstance(ev, UploadChanged):
                self.durable.append(ev)


@dataclass
class Pair:
    """Sender and ground joined by a link the test controls: delay, and which messages die."""

    sender: TransferSender
    ground: Ground
    now: float = 0.0
    rtt: float = 1.0
    drop_requests: set[int] = field(default_factory=set)  # by request ordinal (1-based)
    drop_responses: set[int] = field(default_factory=set)
    sent: int = 0
    events: list[object] = field(default_factory=list)
    wire_bytes: int = 0

    def step(self) -> bool:
        """Send what the sender wants; answer after one RTT; returns False when nothing moved."""
        out = self.sender.data_to_send(self.now)
        if not out:
            deadline = self.sender.next_deadline()
            if deadline is None:
                return False
            self.now = max(self.now, deadline)
            self.sender.handle_timeout(self.now)
            self._events()
            return True
        self.now += self.rtt / 2
        answers = []
        for o in out:
            self.sent += 1
            self.wire_bytes += len(o.data)
            if self.sent in self.drop_requests:
                answers.append((o.seq, None))
                continue
            resp = self.ground.handle(o.data, self.now)
            answers.append((o.seq, None if self.sent in self.drop_responses else resp))
        self.now += self.rtt / 2
        for seq, resp in answers:
            if resp is None:
                self.sender.request_failed(seq, self.now, "cut")
            else:
                self.sender.receive(resp, self.now)
        self._events()
        return True

    def _events(self) -> None:
        while (ev := self.sender.next_event()) is not None:
            self.events.append(ev)

    def run(self, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if self.sender.idle or not self.step():
                return
        raise AssertionError("did not finish")

    def done(self) -> dict[TransferKey, UploadState]:
        return {e.key: e.state for e in self.events if isinstance(e, TransferDone)}


def make_pair(**kw: object) -> Pair:
    cfg = SenderConfig(
        initial_chunk_bytes=4096, min_chunk_bytes=1024, max_chunk_bytes=8192, window=2, initial_streams=2
    )
    ground = Ground(TransferReceiver(ReceiverConfig(), have=lambda k: False))
    pair = Pair(sender=TransferSender(cfg, 0.0), ground=ground, **kw)  # type: ignore[arg-type]
    ground.receiver._have = lambda k: k in ground.committed  # noqa: SLF001
    return pair


def add(
    pair: Pair, data: bytes, *, kind: TransferKind = TransferKind.BLOB, owner: str = "alice", **kw
) -> TransferKey:  # type: ignore[no-untyped-def]
    k = key_of(data, kind)
    spec = TransferSpec(
        key=k, size_bytes=len(data), owner=owner, priority=0 if kind is TransferKind.BUNDLE else 1, **kw
    )
    pair.sender.add(spec, lambda off, n: data[off : off + n], pair.now)
    return k


PHOTO = bytes(range(256)) * 200  # 51,200 bytes


def test_transfer_arrives_whole_and_is_committed_once() -> None:
    pair = make_pair()
    k = add(pair, PHOTO)
    pair.run()
    assert pair.done() == {k: UploadState.COMMITTED}
    assert pair.ground.committed[k] == PHOTO
    assert pair.ground.commits == 1
    assert pair.sender.stats.chunk_bytes == len(PHOTO)  # not a byte sent twice


def test_blob_ground_already_has_never_crosses() -> None:
    pair = make_pair()
    pair.ground.committed[key_of(PHOTO)] = PHOTO
    k = add(pair, PHOTO)
    pair.run()
    assert pair.done() == {k: UploadState.COMMITTED}
    assert pair.sender.stats.chunk_bytes == 0


@pytest.mark.parametrize("lost", ["request", "response"])
@pytest.mark.parametrize("which", [1, 2, 3, 5, 8])
def test_resume_after_any_lost_message(lost: str, which: int) -> None:
    pair = make_pair()
    (pair.drop_requests if lost == "request" else pair.drop_responses).add(which)
    k = add(pair, PHOTO)
    pair.run()
    assert pair.ground.committed[k] == PHOTO
    s = pair.sender.stats
    # At most one chunk is paid twice per cut, and a lost *answer* costs no resend at all:
    # the sender asks what ground stored before sending more.
    assert s.chunk_bytes <= len(PHOTO) + s.max_chunk_bytes
    if lost == "response":
        assert s.chunk_bytes == len(PHOTO)
    assert any(isinstance(e, LinkDown) for e in pair.events)
    assert any(isinstance(e, LinkUp) for e in pair.events)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=40), max_size=8), st.sets(st.integers(1, 40), max_size=8))
def test_any_pattern_of_losses_delivers_exactly_once(req_drops: set[int], resp_drops: set[int]) -> None:
    pair = make_pair(drop_requests=req_drops, drop_responses=resp_drops)
    k = add(pair, PHOTO)
    pair.run()
    assert pair.ground.committed[k] == PHOTO and pair.ground.commits == 1
    s = pair.sender.stats
    assert s.chunk_bytes <= len(PHOTO) + len(req_drops) * s.max_chunk_bytes


def test_text_goes_before_a_half_sent_photo() -> None:
    pair = make_pair()
    big = add(pair, PHOTO * 4)
    for _ in range(3):
        pair.step()
    assert 0 < pair.sender.progress(big)[0] < len(PHOTO) * 4  # type: ignore[index]
    text = add(pair, b"bundle of a text post", kind=TransferKind.BUNDLE)
    pair.step()  # the window's next slot goes to the text bundle
    pair.step()
    assert pair.done().get(text) is UploadState.COMMITTED
    assert big not in pair.done()
    pair.run()
    assert pair.done()[big] is UploadState.COMMITTED


def test_astronauts_get_fair_shares() -> None:
    pair = make_pair()
    a = add(pair, PHOTO * 2, owner="alice")
    b = add(pair, bytes(reversed(PHOTO)) * 2, owner="bob")
    for _ in range(6):
        pair.step()
    pa, pb = pair.sender.progress(a)[0], pair.sender.progress(b)[0]  # type: ignore[index]
    assert pa > 0 and pb > 0 and abs(pa - pb) <= pair.sender.config.max_chunk_bytes


def test_bundle_waits_for_its_photos() -> None:
    pair = make_pair()
    photo = add(pair, PHOTO)
    bundle = add(pair, b"items referencing the photo", kind=TransferKind.BUNDLE, depends_on=(photo,))
    pair.run()
    order = [e.key for e in pair.events if isinstance(e, TransferDone)]
    assert order == [photo, bundle]


def test_ack_only_after_store_is_durable() -> None:
    ground = Ground(TransferReceiver(), defer_store=True)
    k = key_of(PHOTO)
    assert isinstance(
        decode_response(
            ground.handle(encode_request(Open(seq=1, key=k, size_bytes=len(PHOTO), owner="a")), 0.0)
        ),
        Status,
    )  # type: ignore[arg-type]
    assert ground.handle(encode_request(Chunk(seq=2, key=k, offset=0, data=PHOTO[:1000])), 1.0) is None
    # Not durable yet: a status query must not claim those bytes.
    st_ = decode_response(
        ground.handle(encode_request(Open(seq=3, key=k, size_bytes=len(PHOTO), owner="a")), 1.0)
    )  # type: ignore[arg-type]
    assert isinstance(st_, Status) and st_.ranges.total == 0
    ground.receiver.chunk_stored(ground.deferred.pop(), 2.0)
    ground.drain(2.0)
    ack = decode_response(ground.receiver.data_to_send()[0][1])
    assert isinstance(ack, Status) and list(ack.ranges) == [(0, 1000)]
    assert ground.durable[-1].record.ranges.total == 1000  # persisted before the ack goes out


def test_duplicate_chunk_and_bundle_change_nothing() -> None:
    pair = make_pair()
    k = add(pair, PHOTO)
    pair.run()
    writes, commits = pair.ground.writes, pair.ground.commits
    again = pair.ground.handle(encode_request(Chunk(seq=99, key=k, offset=0, data=PHOTO[:4096])), 10.0)
    resp = decode_response(again)  # type: ignore[arg-type]
    assert isinstance(resp, Status) and resp.state is UploadState.COMMITTED
    reopen = decode_response(
        pair.ground.handle(encode_request(Open(seq=100, key=k, size_bytes=len(PHOTO), owner="x")), 10.0)
    )  # type: ignore[arg-type]
    assert isinstance(reopen, Status) and reopen.state is UploadState.COMMITTED
    assert (pair.ground.writes, pair.ground.commits) == (writes, commits)


def test_overlapping_chunk_writes_only_missing_bytes() -> None:
    ground = Ground(TransferReceiver())
    k = key_of(PHOTO)
    ground.handle(encode_request(Open(seq=1, key=k, size_bytes=len(PHOTO), owner="a")), 0)
    ground.handle(encode_request(Chunk(seq=2, key=k, offset=0, data=PHOTO[:1000])), 0)
    w = ground.writes
    resp = decode_response(
        ground.handle(encode_request(Chunk(seq=3, key=k, offset=500, data=b"X" * 1000)), 0)
    )  # type: ignore[arg-type]
    assert ground.writes == w + 1
    assert bytes(ground.files[k][:1000]) == PHOTO[:1000]  # the stored half was not rewritten
    assert isinstance(resp, Status) and list(resp.ranges) == [(0, 1500)]


def test_corrupt_upload_is_rejected_with_reason() -> None:
    pair = make_pair()
    data = PHOTO
    k = key_of(data)
    bad = bytearray(data)
    bad[7] ^= 1
    pair.sender.add(
        TransferSpec(key=k, size_bytes=len(data), owner="a"), lambda o, n: bytes(bad[o : o + n]), 0.0
    )
    pair.run()
    done = [e for e in pair.events if isinstance(e, TransferDone)]
    assert done[0].state is UploadState.REJECTED and done[0].code == "media_hash_mismatch"


def _err(ground: Ground, req: bytes, station: str = "iss") -> ErrorFrame:
    resp = decode_response(ground.handle(req, 0.0, station))  # type: ignore[arg-type]
    assert isinstance(resp, ErrorFrame), resp
    return resp


def test_bad_requests_get_specific_errors_and_change_nothing() -> None:
    ground = Ground(TransferReceiver(ReceiverConfig(max_chunk_bytes=2048, station_quota_bytes=100_000)))
    k = key_of(PHOTO)
    assert _err(ground, b"\x93garbage").code == LinkErrorCode.BAD_FRAME
    assert (
        _err(ground, encode_request(Chunk(seq=1, key=k, offset=0, data=b"x"))).code
        == LinkErrorCode.UNKNOWN_UPLOAD
    )
    ground.handle(encode_request(Open(seq=2, key=k, size_bytes=len(PHOTO), owner="a")), 0)
    before = (ground.writes, list(ground.receiver.upload("iss", k).ranges))  # type: ignore[union-attr]
    assert (
        _err(ground, encode_request(Chunk(seq=3, key=k, offset=len(PHOTO) - 1, data=b"xy"))).code
        == LinkErrorCode.BAD_OFFSET
    )
    assert (
        _err(ground, encode_request(Chunk(seq=4, key=k, offset=0, data=b"x" * 4096))).code
        == LinkErrorCode.CHUNK_TOO_LARGE
    )
    assert (
        _err(ground, encode_request(Open(seq=5, key=k, size_bytes=7, owner="a"))).code
        == LinkErrorCode.SIZE_CONFLICT
    )
    other = key_of(b"other")
    assert (
        _err(ground, encode_request(Open(seq=6, key=other, size_bytes=60_000, owner="a"))).code
        == LinkErrorCode.QUOTA_EXCEEDED
    )
    assert (
        _err(ground, encode_request(Open(seq=7, key=other, size_bytes=10**12, owner="a"))).code
        == LinkErrorCode.UPLOAD_TOO_LARGE
    )
    # Another station cannot write into iss's upload.
    assert (
        _err(ground, encode_request(Chunk(seq=8, key=k, offset=0, data=b"x")), "mir").code
        == LinkErrorCode.UNKNOWN_UPLOAD
    )
    assert (ground.writes, list(ground.receiver.upload("iss", k).ranges)) == before  # type: ignore[union-attr]


def test_unauthorized_stops_the_link() -> None:
    s = TransferSender(SenderConfig(), 0.0)
    s.add(TransferSpec(key=key_of(b"x"), size_bytes=1, owner="a"), lambda o, n: b"x", 0.0)
    (o,) = s.data_to_send(0.0)
    s.receive_error(o.seq, "unauthorized", "bad token", False, 1.0)
    assert isinstance(s.next_event(), LinkFatal)
    assert s.data_to_send(100.0) == []


def test_silence_times_out_backs_off_and_probes() -> None:
    s = TransferSender(SenderConfig(min_timeout_s=10, backoff_initial_s=0.5, backoff_max_s=4), 0.0)
    s.add(
        TransferSpec(key=key_of(PHOTO), size_bytes=len(PHOTO), owner="a"), lambda o, n: PHOTO[o : o + n], 0.0
    )
    (o,) = s.data_to_send(0.0)
    assert s.next_deadline() == o.deadline and o.deadline >= 10
    s.handle_timeout(o.deadline)
    assert isinstance(s.next_event(), LinkDown)
    # It waited out its deadline, longer than any backoff: the probe leaves at once, racing its
    # connection for the link's return (issue 14), with the long deadline of a probe.
    probes = s.data_to_send(o.deadline)
    assert len(probes) == 1  # one probe at a time while the link is down
    assert probes[0].deadline - o.deadline >= s.config.down_probe_timeout_s
    assert probes[0].race_every_s is not None and probes[0].race_every_s < s.srtt_s
    # A probe refused at once waits the backoff, which never exceeds its ceiling however long
    # the dark lasts.
    now = o.deadline
    for _ in range(20):
        s.request_failed(probes[0].seq, now, "refused")
        assert s.data_to_send(now) == []  # backing off
        nxt = s.next_deadline()
        assert nxt is not None and 0 < nxt - now <= 4.0 + 1e-9
        now = nxt
        probes = s.data_to_send(now)
        assert len(probes) == 1


def _cut_every_request(s: TransferSender, now: float) -> float:
    """Fail every request the sender wants to send now (a cut); the time after its backoff."""
    for o in s.data_to_send(now):
        s.request_failed(o.seq, now, "cut")
    return s.next_deadline() or now + 5


def test_chunks_shrink_when_cuts_are_frequent() -> None:
    # Cuts with the link up between them: each cut halves the chunk.
    cfg = SenderConfig(
        initial_chunk_bytes=64 * 1024, initial_rate_bytes_s=100_000, window=2, initial_streams=2
    )
    pair = Pair(sender=TransferSender(cfg, 0.0), ground=Ground(TransferReceiver(ReceiverConfig())), rtt=0.1)
    s = pair.sender
    for k in range(12):
        data = PHOTO[k * 97 :] + bytes([k])
        s.add(
            TransferSpec(key=key_of(data), size_bytes=len(data), owner="a"),
            lambda o, n, d=data: d[o : o + n],
            0,
        )
    before = s.chunk_bytes
    for _ in range(4):
        assert pair.step()  # the link answers: up
        assert s.link_up
        pair.now = _cut_every_request(s, pair.now)
        assert not s.link_up
    assert s.chunk_bytes < before / 4


@given(st.integers(1, 40))
def test_a_long_dark_is_one_cut(failed_probes: int) -> None:
    """The requests dying in a loss of signal and every probe failing in the dark after it halve
    the chunk once, not once each: one dark used to take chunks to the floor (1 KiB), and the
    link refilled seconds late after a return."""
    s = TransferSender(SenderConfig(initial_rate_bytes_s=100_000), 0.0)
    for k in range(8):
        data = PHOTO[k * 101 :] + bytes([k])
        s.add(
            TransferSpec(key=key_of(data), size_bytes=len(data), owner="a"),
            lambda o, n, d=data: d[o : o + n],
            0.0,
        )
    before = s.chunk_bytes
    now = 0.0
    for _ in range(failed_probes):
        now = _cut_every_request(s, now)
    assert s.chunk_bytes == before // 2


def test_receipts_request_round_trip() -> None:
    pair = make_pair()
    pair.sender.request_receipts(5)
    pair.run()
    (ev,) = [e for e in pair.events if isinstance(e, ReceiptsReceived)]
    assert ev.document == b"doc" and ev.next_since == 6


def test_expired_partial_upload_is_forgotten() -> None:
    ground = Ground(TransferReceiver(ReceiverConfig(upload_ttl_s=100)))
    k = key_of(PHOTO)
    ground.handle(encode_request(Open(seq=1, key=k, size_bytes=len(PHOTO), owner="a")), 0)
    assert ground.receiver.next_deadline() == 100
    ground.receiver.handle_timeout(100)
    ev = ground.receiver.next_event()
    assert ev is not None and type(ev).__name__ == "UploadExpired"
    assert ground.receiver.upload("iss", k) is None


# -- rangeset ----------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=30))
def test_rangeset_matches_a_set_model(ops: list[tuple[int, int]]) -> None:
    rs, model = RangeSet(), set()
    for i, (a, b) in enumerate(ops):
        lo, hi = min(a, b), max(a, b)
        if i % 3 == 2:
            rs.subtract(lo, hi)
            model -= set(range(lo, hi))
        else:
            rs.add(lo, hi)
            model |= set(range(lo, hi))
    assert rs.total == len(model)
    assert {x for s, e in rs for x in range(s, e)} == model
    flat = list(rs)
    assert all(flat[i][1] < flat[i + 1][0] for i in range(len(flat) - 1))  # merged, sorted
    gaps = rs.gaps(0, 210)
    assert {x for s, e in gaps for x in range(s, e)} == set(range(210)) - model
    assert RangeSet.from_wire(rs.to_wire(), size_bytes=210, max_ranges=1000) == rs


# -- wire frames -------------------------------------------------------------------------

FRAMES = [
    encode_request(Open(seq=1, key=key_of(b"a"), size_bytes=10, owner="alice")),
    encode_request(Chunk(seq=2, key=key_of(b"a", TransferKind.BUNDLE), offset=3, data=b"xyz")),
]


@pytest.mark.parametrize("frame", FRAMES)
def test_request_frames_round_trip_and_reject_every_truncation(frame: bytes) -> None:
    assert encode_request(decode_request(frame)) == frame
    from protocol import RemoteProtocolError

    for n in range(len(frame)):
        with pytest.raises(RemoteProtocolError):
            decode_request(frame[:n])
    with pytest.raises(RemoteProtocolError):
        decode_request(frame + b"\x00")


@given(st.binary(max_size=200))
def test_garbage_decodes_or_raises_remote_error(data: bytes) -> None:
    from protocol import RemoteProtocolError

    for decode in (decode_request, decode_response):
        try:
            decode(data)
        except RemoteProtocolError:
            pass


@given(st.integers(0, 10_000), st.data())
def test_every_single_byte_flip_decodes_or_raises_remote_error(seed: int, data: st.DataObject) -> None:
    from protocol import RemoteProtocolError

    frame = FRAMES[seed % 2]
    i = data.draw(st.integers(0, len(frame) - 1))
    flipped = bytearray(frame)
    flipped[i] ^= data.draw(st.integers(1, 255))
    try:
        decode_request(bytes(flipped))
    except RemoteProtocolError:
        pass


def test_small_upload_rides_inside_its_open() -> None:
    pair = make_pair()
    k = add(pair, b"a small text bundle", kind=TransferKind.BUNDLE)
    pair.run()
    assert pair.done() == {k: UploadState.COMMITTED}
    assert pair.sent == 1  # one request, one round trip
    frame = encode_request(Open(seq=1, key=k, size_bytes=3, owner="a", data=b"abc"))
    assert decode_request(frame) == Open(seq=1, key=k, size_bytes=3, owner="a", data=b"abc")
    # Link version 3: shorter inline data is the upload's first chunk, kept like a CHUNK at
    # offset 0; data past the upload's end is refused (as a CHUNK's) and stores nothing.
    ground = Ground(TransferReceiver())
    got = decode_response(
        ground.handle(encode_request(Open(seq=2, key=k, size_bytes=10, owner="a", data=b"abc")), 0.0, "iss")
    )  # type: ignore[arg-type]
    assert isinstance(got, Status) and got.ranges == RangeSet([(0, 3)]) and ground.writes == 1
    err = _err(ground, encode_request(Open(seq=3, key=k, size_bytes=2, owner="a", data=b"abc")))
    assert err.code == LinkErrorCode.SIZE_CONFLICT and ground.writes == 1
    other = key_of(b"another")
    err = _err(ground, encode_request(Open(seq=4, key=other, size_bytes=2, owner="a", data=b"abc")))
    assert err.code == LinkErrorCode.BAD_OFFSET and ground.writes == 1


def test_lost_inline_open_resumes() -> None:
    pair = make_pair(drop_requests={1})
    k = add(pair, b"a small text bundle", kind=TransferKind.BUNDLE)
    pair.run()
    assert pair.ground.committed[k] == b"a small text bundle"


def test_sources_are_read_a_chunk_at_a_time() -> None:
    """Media is streamed: the sender never asks its source for more than one chunk."""
    pair = make_pair()
    big = PHOTO * 40  # 2 MB
    asked: list[int] = []

    def source(off: int, n: int) -> bytes:
        asked.append(n)
        return big[off : off + n]

    k = key_of(big)
    pair.sender.add(TransferSpec(key=k, size_bytes=len(big), owner="a"), source, 0.0)
    pair.run()
    assert pair.ground.committed[k] == big
    cap = pair.sender.config.max_chunk_bytes
    assert max(asked) <= cap + cap // 4 and sum(asked) == len(big)
