"""Link version 2 (issue 14, docs/PROTOCOL.md §8.2): a bundle's OPEN carries the station's
receipts cursor and ground answers it, once the bundle is final, with the receipts inside its
STATUS: a lone text post costs one request and one answer. Negotiated by ground's capability
token (``link=1,2``); an older ground refuses such an OPEN and the station opens the old way.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from conftest import Cli
from hypothesis import given
from hypothesis import strategies as st
from link_support import link_requests, link_to, running_ground, setup_station
from test_transfer import add, make_pair

from linkemu import LinkProxy
from onboard.home import Home
from onboard.sync import sync
from protocol.capabilities import Capabilities
from protocol.errors import RemoteProtocolError
from protocol.rangeset import RangeSet
from protocol.transfer import ReceiptsReceived, ReceiptsWanted, TransferDone, TransferReceiver
from protocol.transfer_wire import (
    LINK_VERSIONS,
    ErrorFrame,
    LinkErrorCode,
    Open,
    ReceiptsBatch,
    Status,
    TransferKind,
    UploadState,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from protocol.transfer_wire import TransferKey as Key

KEY = Key(kind=TransferKind.BUNDLE, sha256=bytes(range(32)))


@given(since=st.integers(0, 2**63 - 1), data=st.binary(max_size=64))
def test_open_with_a_receipts_cursor_round_trips(since: int, data: bytes) -> None:
    req = Open(seq=3, key=KEY, size_bytes=max(1, len(data)), owner="alice", data=data, receipts_since=since)
    assert decode_request(encode_request(req)) == req


def test_the_old_forms_keep_their_bytes() -> None:
    """Nothing asked, nothing added: a plain OPEN and STATUS are byte for byte what link
    version 1 sent, so an older peer never sees a new field it was not offered."""
    plain = Open(seq=1, key=KEY, size_bytes=5, owner="a", data=b"abcde")
    assert encode_request(plain)[0] == 0x98  # fixarray of 8, as before
    status = Status(seq=1, key=KEY, state=UploadState.COMMITTED, ranges=RangeSet([(0, 5)]), size_bytes=5)
    assert encode_response(status)[0] == 0x9A  # fixarray of 10, as before


@given(
    doc=st.binary(max_size=600), nxt=st.integers(0, 2**63 - 1), more=st.booleans(), held=st.integers(0, 10**6)
)
def test_status_with_receipts_round_trips(doc: bytes, nxt: int, more: bool, held: int) -> None:
    batch = ReceiptsBatch(seq=9, document=doc, next_since=nxt, more=more)
    s = Status(
        seq=9,
        key=KEY,
        state=UploadState.COMMITTED,
        ranges=RangeSet([(0, 5)]),
        size_bytes=5,
        receipts=batch,
        held_ms=held,
    )
    assert decode_response(encode_response(s)) == s


def test_a_status_with_part_of_the_receipts_is_malformed() -> None:
    from protocol.canonical import pack

    base = [1, 16, 9, 2, bytes(32), 1, [0, 5], "", "", 5]
    for extra in ([b"doc"], [b"doc", 3], [b"doc", 3, False], [b"doc", 3, False, 0, 1]):
        with pytest.raises(RemoteProtocolError):
            decode_response(pack(base + extra))


def test_capability_token_says_which_link_versions() -> None:
    assert Capabilities.from_token("codecs=0,1").link == {1}  # an older ground's token
    caps = Capabilities(codecs=frozenset({0, 1}), link=LINK_VERSIONS)
    assert caps.to_token() == "codecs=0,1;dicts=;formats=1;link=1,2,3,4"
    assert Capabilities.from_token(caps.to_token()) == caps and caps.speaks_link(2)
    # Left out when it says nothing new, so older tokens stay what they were.
    assert "link" not in Capabilities(codecs=frozenset({0, 1})).to_token()


def _committed_bundle_answer(receiver: TransferReceiver, data: bytes, since: int | None) -> bytes | None:
    key = Key(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
    rid = receiver.receive(
        encode_request(
            Open(seq=7, key=key, size_bytes=len(data), owner="a", data=data, receipts_since=since)
        ),
        0.0,
        station="iss",
    )
    wanted = []
    while (ev := receiver.next_event()) is not None:
        name = type(ev).__name__
        if name == "WriteChunk":
            receiver.chunk_stored(ev.rid, 0.0)  # type: ignore[union-attr]
        elif name == "CommitUpload":
            receiver.commit_done(ev.rid, 0.0, state=UploadState.COMMITTED)  # type: ignore[union-attr]
        elif isinstance(ev, ReceiptsWanted):
            wanted.append(ev)
    assert [w.key for w in wanted] == ([key] if since is not None else [])
    for w in wanted:
        assert w.since == since and w.rid == rid
        receiver.receipts_ready(w.rid, b"signed receipts", 42, False, held_ms=150)
    return receiver.response_for(rid)


def test_ground_answers_a_committing_open_with_its_receipts() -> None:
    resp = decode_response(_committed_bundle_answer(TransferReceiver(), b"bundle bytes", 5) or b"")
    assert isinstance(resp, Status) and resp.state is UploadState.COMMITTED
    assert resp.receipts == ReceiptsBatch(seq=7, document=b"signed receipts", next_since=42, more=False)
    assert resp.held_ms == 150
    # Not asked: the answer is link version 1's.
    plain = decode_response(_committed_bundle_answer(TransferReceiver(), b"bundle bytes", None) or b"")
    assert isinstance(plain, Status) and plain.receipts is None


def test_receipts_that_cannot_be_built_leave_the_status_alone() -> None:
    """Ground's database failing while it builds them: the bundle is committed all the same;
    the STATUS says so, and the receipts come by a RECEIPTS request later."""
    r = TransferReceiver()
    data = b"bundle bytes"
    key = Key(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
    rid = r.receive(
        encode_request(Open(seq=1, key=key, size_bytes=12, owner="a", data=data, receipts_since=0)),
        0.0,
        station="iss",
    )
    while (ev := r.next_event()) is not None:
        if type(ev).__name__ == "WriteChunk":
            r.chunk_stored(rid, 0.0)
        elif type(ev).__name__ == "CommitUpload":
            r.commit_done(rid, 0.0, state=UploadState.COMMITTED)
    assert r.response_for(rid) is None  # held for its receipts
    r.store_failed(rid, "database is locked")
    resp = decode_response(r.response_for(rid) or b"")
    assert isinstance(resp, Status) and resp.state is UploadState.COMMITTED and resp.receipts is None


def test_sender_asks_with_a_bundle_open_only_and_takes_the_receipts() -> None:
    pair = make_pair()
    pair.sender.open_receipts_since = 4
    photo = add(pair, b"photo bytes" * 10)
    bundle = add(pair, b"a text bundle", kind=TransferKind.BUNDLE)
    sent: list[Open] = []
    handle = pair.ground.handle

    def spy(data: bytes, now: float, station: str = "iss") -> bytes | None:
        req = decode_request(data)
        if isinstance(req, Open):
            sent.append(req)
        return handle(data, now, station)

    pair.ground.handle = spy  # type: ignore[method-assign]
    pair.run()
    assert {o.key: o.receipts_since for o in sent} == {photo: None, bundle: 4}
    got = [e for e in pair.events if isinstance(e, ReceiptsReceived)]
    assert got == [ReceiptsReceived(document=b"doc", next_since=5, more=False, with_open=True)]
    done = {e.key: e.with_receipts for e in pair.events if isinstance(e, TransferDone)}
    assert done == {photo: False, bundle: True}
    # The bundle's TransferDone (with_receipts: the driver does not ask again) comes first, so
    # its outcome is recorded before its receipts apply; then the receipts.
    order = [
        e
        for e in pair.events
        if isinstance(e, ReceiptsReceived) or (isinstance(e, TransferDone) and e.key == bundle)
    ]
    assert [type(e).__name__ for e in order] == ["TransferDone", "ReceiptsReceived"]


def test_the_time_ground_held_the_answer_is_not_taken_for_path_delay() -> None:
    """As QUIC's ACK Delay: held_ms comes off the round-trip sample that sizes the streams."""
    pair = make_pair(rtt=0.6)
    pair.sender.open_receipts_since = 0
    receiver = pair.ground.receiver
    ready = receiver.receipts_ready

    def held(rid: int, document: bytes, next_since: int, more: bool, *, held_ms: int = 0) -> None:
        ready(rid, document, next_since, more, held_ms=2000)

    receiver.receipts_ready = held  # type: ignore[method-assign]
    handle = pair.ground.handle

    def slow(data: bytes, now: float, station: str = "iss") -> bytes | None:
        resp = handle(data, now, station)
        pair.now += 2.0  # ground held it 2 s
        return resp

    pair.ground.handle = slow  # type: ignore[method-assign]
    add(pair, b"a text bundle", kind=TransferKind.BUNDLE)
    pair.run()
    assert pair.sender.base_rtt_s == pytest.approx(0.6)


def test_an_older_ground_refusing_the_cursor_gets_the_old_open() -> None:
    """A ground before link version 2 answers bad_frame (not retryable) to an OPEN with nine
    fields: the station does not reject its bundle for it; it opens again without the cursor
    and asks for receipts the old way from then on."""
    pair = make_pair()
    pair.sender.open_receipts_since = 0
    handle = pair.ground.handle
    refused: list[int] = []

    def old_ground(data: bytes, now: float, station: str = "iss") -> bytes | None:
        req = decode_request(data)
        if isinstance(req, Open) and req.receipts_since is not None:
            refused.append(req.seq)
            return encode_response(
                ErrorFrame(
                    seq=req.seq, code=LinkErrorCode.BAD_FRAME, message="OPEN frame: 9 fields", retryable=False
                )
            )
        return handle(data, now, station)

    pair.ground.handle = old_ground  # type: ignore[method-assign]
    k = add(pair, b"a text bundle", kind=TransferKind.BUNDLE)
    k2 = add(pair, b"another text bundle", kind=TransferKind.BUNDLE)
    pair.run()
    assert pair.done() == {k: UploadState.COMMITTED, k2: UploadState.COMMITTED}
    assert len(refused) == 2  # both were in flight together
    k3 = add(pair, b"a later text bundle", kind=TransferKind.BUNDLE)
    pair.run()
    assert pair.done()[k3] is UploadState.COMMITTED and len(refused) == 2  # learnt: no more
    assert not [e for e in pair.events if isinstance(e, ReceiptsReceived)]


async def _one_lone_post(cli: Cli, tmp_path: Path, *, older_token: bool) -> tuple[int, str]:
    """A lone post through the real ground server and `onboard sync`: (link requests ground
    counted, what `onboard queue` shows)."""
    token = setup_station(cli, tmp_path)
    if older_token:  # the token file a ground before link version 2 wrote: no link=… part
        doc = json.loads(token.read_text())
        assert ";link=1,2,3" in doc["ground_decodes"]
        doc["ground_decodes"] = re.sub(r";link=[0-9,]+", "", doc["ground_decodes"])
        token.write_text(json.dumps(doc))
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "a lone post")
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        result = await sync(Home(cli.onboard_home), wait_published_s=20)
    assert result.committed == 1 and result.pending_items == 0
    return link_requests(cli.ground_home), cli.onboard("queue").output


async def test_a_lone_post_is_one_request_and_comes_back_published(cli: Cli, tmp_path: Path) -> None:
    n, queue = await _one_lone_post(cli, tmp_path, older_token=False)
    assert n == 1  # the OPEN with the bundle inside; its answer carried the receipts
    assert "published" in queue and "archive:alice" in queue


async def test_with_an_older_grounds_token_the_old_path_still_works(cli: Cli, tmp_path: Path) -> None:
    n, queue = await _one_lone_post(cli, tmp_path, older_token=True)
    # The OPEN, then RECEIPTS requests: one, or more when the first came before the publisher
    # had tried the post (an older ground does not hold the OPEN's answer for it).
    assert n >= 2
    assert "published" in queue


async def test_real_bytes_of_lone_posts_through_the_link_emulator(cli: Cli, tmp_path: Path) -> None:
    """The real ground server and `onboard sync` through linkemu, bytes counted on the wire:
    each lone post (after the station's first, which also brings the enrolled accounts, the
    account's URL template and the day's log checkpoint) costs ≤ 2 × its bundle each way, the
    shortest texts included: receipts version 4 (§9.5) sends the archive's ~180 characters of
    URL and post id as the pack's 9-character key."""
    token = setup_station(cli, tmp_path)
    rows = []
    async with running_ground(cli.ground_home) as url:
        port = int(url.rsplit(":", 1)[1])
        for text in ("first post of the station", "a", "Hi!", "Привет, Земля! 🌍", "x" * 280):
            cli.onboard("post", "--as", "alice", "--to", "archive:alice", text)
            async with LinkProxy("127.0.0.1", port) as proxy:
                link_to(cli, proxy.url, token)
                result = await sync(Home(cli.onboard_home), wait_published_s=20)
            assert result.requests == 1 and result.pending_items == 0
            conn = sqlite3.connect(cli.onboard_home / "onboard.db")
            (bundle,) = conn.execute(
                "SELECT size_bytes FROM link_transfers WHERE kind = 'bundle' ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            conn.close()
            names = sqlite3.connect(cli.ground_home / "ground.db").execute(
                "SELECT LENGTH(url) + LENGTH(remote_id) FROM publications ORDER BY rowid DESC LIMIT 1"
            )
            (named,) = names.fetchone()
            rows.append((len(text.encode()), bundle, proxy.stats.bytes_up, proxy.stats.bytes_down, named))
    print("\n(text B, bundle B, up B, down B, URL + id chars):", rows)
    for text_bytes, bundle, up, down, _named in rows[1:]:
        assert up <= 2 * bundle, (text_bytes, bundle, up)
        assert down <= 2 * bundle, (text_bytes, bundle, down)
    assert "published" in cli.onboard("queue").output
