"""Link version 3 (issue 14, docs/PROTOCOL.md §8.2): a new upload's OPEN carries its first
chunk, so its data leaves in the first flight instead of a round trip after the OPEN. Ground
keeps the carried chunk exactly as a CHUNK (same checks, limits and salvage on a cut);
negotiated by ground's capability token (``link=1,2,3``, now ``link=1,2,3,4``), and an older ground that refuses it
gets today's exchange.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from link_support import REFERENCE_EACH, link_to, running_ground, setup_station, spy_link_requests
from test_transfer import PHOTO, Pair, add, key_of, make_pair

from onboard.home import Home
from onboard.sync import sync
from protocol.capabilities import Capabilities
from protocol.transfer import ReceiverConfig, SenderConfig, TransferReceiver, TransferSender, TransferSpec
from protocol.transfer_wire import (
    FIRST_FLIGHT_LINK_VERSION,
    LINK_VERSIONS,
    Chunk,
    ErrorFrame,
    LinkErrorCode,
    Open,
    Request,
    Status,
    TransferKey,
    TransferKind,
    UploadState,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    salvage_chunk,
)

KEY = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(PHOTO).digest())


def _spy(pair: Pair) -> list[Request]:
    """Every request frame ground is handed, decoded, in order."""
    seen: list[Request] = []
    handle = pair.ground.handle

    def spy(data: bytes, now: float, station: str = "iss") -> bytes | None:
        seen.append(decode_request(data))
        return handle(data, now, station)

    pair.ground.handle = spy  # type: ignore[method-assign]
    return seen


def test_the_token_lists_link_version_3_and_an_older_one_does_not() -> None:
    assert FIRST_FLIGHT_LINK_VERSION in LINK_VERSIONS
    assert Capabilities(codecs=frozenset({0}), link=LINK_VERSIONS).to_token().endswith(";link=1,2,3,4")
    assert not Capabilities.from_token("codecs=0;link=1,2").speaks_link(FIRST_FLIGHT_LINK_VERSION)
    assert not Capabilities.from_token("codecs=0").speaks_link(FIRST_FLIGHT_LINK_VERSION)


@pytest.mark.parametrize("first_flight", [True, False])
def test_a_new_upload_opens_with_its_first_chunk_only_when_ground_speaks_3(first_flight: bool) -> None:
    pair = make_pair()
    pair.sender.first_flight = first_flight
    seen = _spy(pair)
    k = add(pair, PHOTO)
    pair.run()
    assert pair.ground.committed[k] == PHOTO
    first = seen[0]
    assert isinstance(first, Open)
    if first_flight:
        assert first.data == PHOTO[: len(first.data)] and 0 < len(first.data) < len(PHOTO)
        # No bare OPEN to open it: the only ones follow its first flight's answer (the OPENs
        # that sample the round trip once every upload is open, tests/test_link_fill.py).
        assert all(r.seq > first.seq for r in seen if isinstance(r, Open) and not r.data)
    else:
        assert first.data == b""
    assert pair.sender.stats.chunk_bytes == len(PHOTO)  # not a byte sent twice


def test_first_flight_saves_the_bare_open() -> None:
    sent = {}
    for first_flight in (True, False):
        pair = make_pair(rtt=1.0)
        # Without the OPENs that sample the round trip, whose count varies with the run.
        pair.sender = TransferSender(dataclasses.replace(pair.sender.config, sample_requests=0), 0.0)
        pair.sender.first_flight = first_flight
        k = add(pair, PHOTO)
        pair.run()
        assert pair.ground.committed[k] == PHOTO
        sent[first_flight] = pair.sent
    assert sent[True] == sent[False] - 1


def test_a_ground_before_link_3_refusing_it_gets_the_old_open() -> None:
    """A stale token (ground downgraded): the old receiver answers ``bad_offset`` (not
    retryable) to an OPEN carrying less than the whole upload. The station does not reject its
    photo for it: it opens again without data, and sends no such OPEN again in that sync."""
    pair = make_pair()
    pair.sender.first_flight = True
    handle = pair.ground.handle
    refused: list[int] = []

    def old_ground(data: bytes, now: float, station: str = "iss") -> bytes | None:
        req = decode_request(data)
        if isinstance(req, Open) and 0 < len(req.data) < req.size_bytes:
            refused.append(req.seq)
            msg = f"OPEN inline data is {len(req.data)} bytes; it must be the whole upload"
            return encode_response(
                ErrorFrame(seq=req.seq, code=LinkErrorCode.BAD_OFFSET, message=msg, retryable=False)
            )
        return handle(data, now, station)

    pair.ground.handle = old_ground  # type: ignore[method-assign]
    k = add(pair, PHOTO)
    k2 = add(pair, PHOTO[::-1])
    pair.run()
    assert pair.done() == {k: UploadState.COMMITTED, k2: UploadState.COMMITTED}
    assert 1 <= len(refused) <= 2  # those in flight together
    k3 = add(pair, PHOTO[1:])
    pair.run()
    assert pair.done()[k3] is UploadState.COMMITTED and len(refused) <= 2  # learnt: no more


def test_an_older_station_gets_what_it_always_got() -> None:
    """A station before link version 3 never sends a partial OPEN: bare OPENs, chunks and
    whole small uploads inline are answered as before by the new receiver."""
    pair = make_pair()
    assert not pair.sender.first_flight  # the default, until the driver reads the token
    seen = _spy(pair)
    k = add(pair, PHOTO)
    small = add(pair, b"a text bundle", kind=TransferKind.BUNDLE)
    pair.run()
    assert pair.done() == {k: UploadState.COMMITTED, small: UploadState.COMMITTED}
    opens = [r for r in seen if isinstance(r, Open)]
    assert all(not o.data or len(o.data) == o.size_bytes for o in opens)


# -- ground keeps the carried chunk exactly as a CHUNK ---------------------------------


@pytest.mark.parametrize(("receipts_since", "versions"), [(None, ()), (7, ()), (7, (3, 4))])
def test_salvage_of_an_open_gives_every_data_byte_that_arrived(
    receipts_since: int | None, versions: tuple[int, ...]
) -> None:
    data = bytes(range(256)) * 60
    req = Open(
        seq=5,
        key=KEY,
        size_bytes=50_000,
        owner="alice",
        data=data,
        receipts_since=receipts_since,
        receipts_versions=versions,
    )
    frame = encode_request(req)
    header = frame.index(data[:64])
    whole_data_end = header + len(data)
    for cut in range(len(frame) + 1):
        got = salvage_chunk(frame[:cut])
        if header < cut < whole_data_end:
            # The cursor (after the data) never arrives with a cut body: nobody hears back.
            assert got == Open(seq=5, key=KEY, size_bytes=50_000, owner="alice", data=data[: cut - header])
        else:
            assert got is None  # nothing of the data yet, or all of it (decode the frame instead)


def _store(receiver: TransferReceiver, frame: bytes) -> bytes | None:
    """Hand ``frame`` to the receiver and carry out its events, as ground's driver does."""
    rid = receiver.receive(frame, 0.0, station="iss")
    while (ev := receiver.next_event()) is not None:
        name = type(ev).__name__
        if name == "WriteChunk":
            receiver.chunk_stored(ev.rid, 0.0)  # type: ignore[union-attr]
        elif name == "CommitUpload":
            receiver.commit_done(ev.rid, 0.0, state=UploadState.COMMITTED)  # type: ignore[union-attr]
    return receiver.response_for(rid)


def test_the_carried_chunk_gets_a_chunks_limits() -> None:
    r = TransferReceiver(ReceiverConfig(max_chunk_bytes=1000))
    too_big = Open(seq=1, key=KEY, size_bytes=len(PHOTO), owner="a", data=PHOTO[:1001])
    err = decode_response(_store(r, encode_request(too_big)) or b"")
    assert isinstance(err, ErrorFrame) and err.code == LinkErrorCode.CHUNK_TOO_LARGE and err.retryable
    rec = r.upload("iss", KEY)
    assert rec is not None and rec.ranges.total == 0  # opened, nothing stored
    ok = decode_response(_store(r, encode_request(dataclasses.replace(too_big, data=PHOTO[:1000]))) or b"")
    assert isinstance(ok, Status) and ok.ranges.total == 1000
    # The same bytes again as a CHUNK change nothing (a duplicate is never rewritten).
    again = decode_response(
        _store(r, encode_request(Chunk(seq=3, key=KEY, offset=0, data=PHOTO[:1000]))) or b""
    )
    assert isinstance(again, Status) and again.ranges.total == 1000


@settings(max_examples=60, deadline=None)
@given(cut_frac=st.floats(0.0, 1.0), chunk=st.sampled_from([1024, 4096, 8192]))
def test_a_first_flight_cut_mid_body_costs_only_what_did_not_arrive(cut_frac: float, chunk: int) -> None:
    """The OPEN carrying the first chunk is cut anywhere in its body: ground keeps what reached
    it (salvage, as a CHUNK's), the station's next OPEN learns it and sends only the rest; the
    photo is stored byte for byte."""
    pair = make_pair()
    pair.sender.first_flight = True
    pair.sender.config = dataclasses.replace(pair.sender.config, initial_chunk_bytes=chunk)
    k = add(pair, PHOTO)
    out = pair.sender.data_to_send(pair.now)
    first = decode_request(out[0].data)
    assert isinstance(first, Open) and len(first.data) == chunk
    cut = int(len(out[0].data) * cut_frac)
    kept = salvage_chunk(out[0].data[:cut])
    if kept is not None:
        pair.ground.handle(encode_request(kept), pair.now)  # ground stores it; nobody hears back
    for o in out:
        pair.sender.request_failed(o.seq, pair.now + 1, "cut")
    before = pair.sender.stats.chunk_bytes
    pair.now += 2.0
    pair.run()
    assert pair.ground.committed[k] == PHOTO
    got = 0 if kept is None else len(kept.data)
    assert pair.sender.stats.chunk_bytes - before <= len(PHOTO) - got


# -- the real ground and `onboard sync` --------------------------------------------------


async def _photo_post(
    cli: Cli, tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch, *, token_link: str | None
) -> list[Request]:
    """A photo post through the real ground server and `onboard sync`; the request frames
    ground decoded. ``token_link``: the station token's ``link=`` as an older ground wrote it."""
    token = setup_station(cli, tmp_path)
    if token_link is not None:
        doc = json.loads(token.read_text())
        now = ";link=" + ",".join(map(str, sorted(LINK_VERSIONS)))
        assert now in doc["ground_decodes"]
        doc["ground_decodes"] = doc["ground_decodes"].replace(now, token_link)
        token.write_text(json.dumps(doc))
    seen = spy_link_requests(monkeypatch)
    cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "x", "a photo"
    )
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        result = await sync(Home(cli.onboard_home), wait_published_s=20)
    assert result.committed == 2 and result.pending_items == 0
    assert "published" in cli.onboard("queue").output
    return seen


def _photo_opens(seen: list[Request]) -> list[Open]:
    return [r for r in seen if isinstance(r, Open) and r.key.kind is not TransferKind.BUNDLE]


async def test_real_photo_leaves_with_its_open(
    cli: Cli, tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A station's first sync, knowing nothing of its link, sends a first flight sized on the
    reference link (protocol/link_memory.py ``reference_link``), not a 64 KiB chunk."""
    opens = _photo_opens(await _photo_post(cli, tmp_path, photo, monkeypatch, token_link=None))
    assert opens and opens[0].data and opens[0].size_bytes > 16 * 1024
    assert len(opens[0].data) == REFERENCE_EACH == 6_328


@pytest.mark.parametrize("token_link", [";link=1,2", ""])
async def test_with_an_older_grounds_token_photos_open_the_old_way(
    cli: Cli, tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch, token_link: str
) -> None:
    opens = _photo_opens(await _photo_post(cli, tmp_path, photo, monkeypatch, token_link=token_link))
    assert opens and all(not o.data for o in opens)


def test_the_receiver_stores_what_the_link_vectors_say() -> None:
    """tests/vectors/link-*.bin (docs §8.2, the second implementation reads them too): ground
    stores each frame's range, keeps a cut one's data bytes, refuses the bad one."""
    vectors = Path(__file__).parent / "vectors"
    manifest = json.loads((vectors / "manifest.json").read_text(encoding="utf-8"))
    for v in manifest["link_frames"]:
        data, expect = (vectors / v["file"]).read_bytes(), v["expect"]
        r = TransferReceiver()
        if "salvage" in expect:
            kept = salvage_chunk(data)
            assert kept is not None
            data = encode_request(kept)
        req = decode_request(data)
        if isinstance(req, Chunk):  # a CHUNK needs its upload open first
            _store(r, encode_request(Open(seq=1, key=req.key, size_bytes=100_000, owner="a")))
        resp = decode_response(_store(r, data) or b"")
        if expect.get("code"):
            assert isinstance(resp, ErrorFrame) and resp.code == expect["code"], v["file"]
            continue
        want = expect.get("salvage") or expect["stores"]
        assert isinstance(resp, Status) and list(resp.ranges) == [tuple(want)], v["file"]


async def test_real_ground_keeps_the_first_chunk_of_an_open_cut_mid_body(cli: Cli, tmp_path: Path) -> None:
    """ground/server.py: an OPEN carrying its upload's first chunk, cut mid-body, leaves the
    upload opened and every data byte that reached ground stored, as a cut CHUNK does."""
    import asyncio
    import sqlite3

    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    data = bytes(range(256)) * 400  # 102,400 bytes
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(data).digest())
    frame = encode_request(Open(seq=1, key=key, size_bytes=len(data) * 2, owner="alice", data=data))
    async with running_ground(cli.ground_home) as url:
        host, port = url.removeprefix("http://").split(":")
        r, w = await asyncio.open_connection(host, int(port))
        head = (
            f"POST /v1/link HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(frame)}\r\n\r\n"
        ).encode()
        w.write(head + frame[: len(frame) - 40_000])
        await w.drain()
        await asyncio.sleep(0.3)
        w.transport.abort()  # the link drops mid-request
        stored = 0
        for _ in range(100):
            conn = sqlite3.connect(cli.ground_home / "ground.db")
            row = conn.execute("SELECT received_bytes FROM transfers").fetchone()
            conn.close()
            stored = row[0] if row else 0
            if stored:
                break
            await asyncio.sleep(0.05)
    assert stored == len(data) - 40_000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(16 * 1024 + 1, 3_000_000), min_size=1, max_size=40),
    st.integers(1, 32),
    st.integers(1024, 64 * 1024),
)
def test_the_first_flight_puts_no_more_than_initial_windows_in_the_network(
    sizes: list[int], streams: int, most: int
) -> None:
    """Before any round trip is measured no window can hold the station's bytes, so each first
    flight carries at most ``first_flight_bytes`` (one fresh connection's initial window with
    its request): the whole first round trip is at most the streams × that, not × a chunk
    (16 × 64 KiB was ~9 BDP at 0.6 s RTT; docs/link.md "A cut in real time")."""
    cfg = SenderConfig(initial_streams=streams, window=min(8, streams), first_flight_bytes=most)
    s = TransferSender(cfg, 0.0)
    s.first_flight = True
    for i, n in enumerate(sizes):
        body = i.to_bytes(4, "big") * (n // 4 + 1)
        s.add(
            TransferSpec(key=key_of(body[:n], TransferKind.BLOB), size_bytes=n, owner="alice", priority=1),
            lambda off, k, b=body: b[off : off + k],
            0.0,
        )
    frames = [decode_request(o.data) for o in s.data_to_send(0.0)]
    carried = [len(f.data) for f in frames if isinstance(f, Open) and f.data]
    assert carried, "a backlog's first requests carry its first bytes"
    assert max(carried) <= min(most, s.chunk_bytes)
    assert sum(carried) <= s.streams * most


def test_a_capped_first_flight_still_delivers_every_byte_once() -> None:
    """The smaller first chunk changes where the next one starts, nothing else."""
    pair = make_pair()
    pair.sender = TransferSender(dataclasses.replace(pair.sender.config, first_flight_bytes=1500), 0.0)
    pair.sender.first_flight = True
    seen = _spy(pair)
    k = add(pair, PHOTO)
    pair.run()
    assert pair.ground.committed[k] == PHOTO
    first = seen[0]
    assert isinstance(first, Open) and first.data == PHOTO[:1500]
    assert pair.sender.stats.chunk_bytes == len(PHOTO)
