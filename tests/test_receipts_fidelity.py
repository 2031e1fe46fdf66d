"""Receipts version 3: each account's photo fidelity, negotiated (docs/PROTOCOL.md §9.3, §9.4).

- the encoder/decoder: round trips (hypothesis), "decodes or raises the remote error", bad
  photo entries refused, a version-2 document of the same receipts is exactly what an older
  onboard reads (8 or 9 fields per publication, version 2);
- the negotiation: ground's token lists ``receipts=2,3``; onboard then asks for version 3 in
  the RECEIPTS frame's 7th field; an older ground (no ``receipts=``) is asked with the 6-field
  frame of before; an older onboard (no 7th field) gets version 2;
- the live link both ways, and the file hand-off (`ground receipts --version 3`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import RemoteProtocolError, SigningKey
from protocol.canonical import pack, unpack
from protocol.capabilities import Capabilities
from protocol.errors import ErrorCode
from protocol.ids import new_ulid, ulid_to_bytes
from protocol.keys import key_id
from protocol.receipts import (
    RECEIPTS_DOMAIN,
    PhotoFidelity,
    PhotoNote,
    PublicationReceipt,
    RenditionNote,
    answer_version,
    sign_receipts,
    verify_receipts,
)
from protocol.transfer_wire import ReceiptsRequest, decode_request, encode_request

GROUND = SigningKey.from_seed(hashlib.sha256(b"ground receipt key").digest())
ID = new_ulid(1_790_000_000_000, b"\x05" * 10)
SHA = hashlib.sha256(b"the signed photo").digest()

_sha = st.binary(min_size=32, max_size=32)
_photos = st.lists(
    st.builds(PhotoNote, fidelity=st.sampled_from(PhotoFidelity), original_sha256=_sha), max_size=16
)
_renditions = st.lists(
    st.builds(
        RenditionNote,
        photo=st.integers(1, 16),
        original_sha256=_sha,
        sha256=_sha,
        recipe=st.sampled_from(["rendition/v1"]),
        width=st.integers(1, 2**40),
        height=st.integers(1, 2**40),
    ),
    max_size=16,
)
_publications = st.builds(
    PublicationReceipt,
    item_id=st.integers(0, 2**48 - 1).map(lambda t: new_ulid(t, b"\x07" * 10)),
    account=st.text(max_size=30),
    state=st.sampled_from(["published", "failed", "pending", "retracted"]),
    url=st.none() | st.text(max_size=40),
    error=st.none() | st.text(max_size=40),
    seq=st.integers(0, 2**63 - 1),
    remote_id=st.none() | st.text(max_size=40),
    renditions=_renditions.map(tuple),
    photos=_photos.map(tuple),
    read_back=st.text(max_size=60),
)


def _entries(doc: bytes) -> tuple[int, list[list[Any]]]:
    body = unpack(unpack(doc, what="doc", max_bytes=1 << 24)[0], what="body", max_bytes=1 << 24)
    return body[0], body[2]


@settings(max_examples=200, deadline=None)
@given(st.lists(_publications, max_size=6))
def test_version_3_round_trips_every_publication_field(receipts: list[PublicationReceipt]) -> None:
    doc = verify_receipts(sign_receipts(GROUND, 3, receipts, version=3), GROUND.public_key)
    assert doc.version == 3 and list(doc.receipts) == receipts


@settings(max_examples=200, deadline=None)
@given(st.lists(_publications, max_size=6))
def test_version_2_of_the_same_receipts_is_what_an_older_onboard_reads(
    receipts: list[PublicationReceipt],
) -> None:
    """An onboard from before version 3 checks version == 2 and 8 or 9 fields per publication
    entry (its decoder, protocol/receipts.py at the previous release); it gets exactly that,
    and loses only the fields it cannot show."""
    data = sign_receipts(GROUND, 3, receipts)
    version, entries = _entries(data)
    assert version == 2 and all(len(e) in (8, 9) for e in entries)
    assert all(len(e) == 9 for e, r in zip(entries, receipts, strict=True) if r.renditions)
    doc = verify_receipts(data, GROUND.public_key)
    from dataclasses import replace

    assert list(doc.receipts) == [replace(r, photos=(), read_back="") for r in receipts]


def test_a_version_3_entry_is_11_fields_with_nil_for_nothing() -> None:
    bare = PublicationReceipt(item_id=ID, account="x:a", state="pending", url=None, error=None, seq=1)
    photo = PhotoNote(fidelity=PhotoFidelity.RE_ENCODED, original_sha256=SHA)
    full = PublicationReceipt(
        item_id=ID,
        account="x:a",
        state="published",
        url="u",
        error=None,
        seq=2,
        photos=(photo,),
        read_back="ok",
    )
    _, (e1, e2) = _entries(sign_receipts(GROUND, 1, [bare, full], version=3))
    assert e1[8:] == [None, None, None]
    assert e2[8:] == [None, [["re-encoded", SHA]], "ok"]


def _signed(entry: list[Any], version: int = 3) -> bytes:
    body = pack([version, 1, [entry]])
    return pack([body, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + body)])


BASE = [1, ulid_to_bytes(ID), "x:alice", "published", "https://x/1", None, 7, None]


@pytest.mark.parametrize(
    "tail",
    [
        [None, None],  # 10 fields: version 3 has at least 11
        [[], None, None],  # renditions: nil for none, never an empty list
        [None, [], None],  # photos likewise
        [None, [["resized", SHA]], None],  # a fidelity this version does not know
        [None, [["exact", SHA[:31]]], None],
        [None, [["exact"]], None],
        [None, [["exact", SHA, 1]], None],
        [None, [["exact", SHA]] * 17, None],  # a post has at most 16 photos
        [None, None, ""],  # read-back: nil for none
        [None, None, "x" * 4097],
        [None, None, 5],
    ],
)
def test_bad_version_3_publication_entries_are_malformed(tail: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        verify_receipts(_signed([*BASE, *tail]), GROUND.public_key)
    assert err.value.code == ErrorCode.MALFORMED


def test_fields_a_later_ground_appends_are_read_past() -> None:
    doc = verify_receipts(_signed([*BASE, None, [["exact", SHA]], None, "later", 42]), GROUND.public_key)
    (r,) = doc.receipts
    assert isinstance(r, PublicationReceipt) and r.photos == (
        PhotoNote(fidelity=PhotoFidelity.EXACT, original_sha256=SHA),
    )


def test_a_version_2_document_still_refuses_a_10th_field() -> None:
    with pytest.raises(RemoteProtocolError):
        verify_receipts(_signed([*BASE, None, [["exact", SHA]], None], version=2), GROUND.public_key)


def test_an_unknown_version_is_refused_naming_both() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        verify_receipts(_signed([*BASE, None, None, None], version=5), GROUND.public_key)
    assert err.value.code == ErrorCode.UNSUPPORTED_VERSION and "versions 2, 3, 4" in str(err.value)


_field = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=12),
    st.booleans(),
    st.lists(
        st.one_of(
            st.none(),
            st.text(max_size=12),
            st.lists(st.one_of(st.text(max_size=12), st.binary(max_size=33), st.integers(0, 20)), max_size=7),
        ),
        max_size=3,
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_field, max_size=14))
def test_any_signed_version_3_publication_decodes_or_raises_the_remote_error(fields: list[Any]) -> None:
    try:
        verify_receipts(_signed([1, ulid_to_bytes(ID), *fields]), GROUND.public_key)
    except RemoteProtocolError:
        pass


# --- negotiation ---------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    st.integers(0, 2**63 - 1),
    st.lists(_sha, max_size=5).map(tuple),
    st.lists(st.integers(0, 2**32), max_size=16).map(tuple),
)
def test_receipts_request_with_versions_round_trips(
    since: int, claims: tuple[bytes, ...], versions: tuple[int, ...]
) -> None:
    req = ReceiptsRequest(seq=4, since=since, claims=claims, versions=versions)
    assert decode_request(encode_request(req)) == req
    # Without versions the frame is the 6 fields every ground reads; with them, 7.
    assert len(unpack(encode_request(req), what="frame", max_bytes=1 << 20)) == (7 if versions else 6)


@pytest.mark.parametrize(
    "bad", [[1, 3, 1, 0, 2, [], []], [1, 3, 1, 0, 2, [], [-1]], [1, 3, 1, 0, 2, [], "3"]]
)
def test_bad_versions_lists_are_refused(bad: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_request(pack(bad))


def test_ground_answers_the_newest_version_both_know() -> None:
    assert answer_version(()) == 2  # an older onboard listed nothing: it reads 2 only
    assert answer_version((2, 3)) == 3
    assert answer_version((2, 3, 7)) == 3
    assert answer_version((9,)) == 2


def test_tokens_carry_receipts_and_compact_bodies() -> None:
    from ground.jxl import capabilities
    from onboard.export import CURRENT_GROUND
    from onboard.sync import receipt_versions

    token = capabilities().to_token()
    assert ";compact_bodies=1,2;receipts=2,3,4" in token
    caps = Capabilities.from_token(token)
    assert caps.writes_receipts(3) and caps.compact_carries(2) and caps == capabilities()
    assert receipt_versions(caps) == (2, 3, 4)
    assert CURRENT_GROUND.writes_receipts(3) and CURRENT_GROUND.compact_carries(2)
    # The token of the previous release: no receipts=, no compact_bodies=.
    old = Capabilities.from_token("codecs=0,1,2;dicts=6f700001;formats=1,2,3;bodies=1,2")
    assert old.receipts == {2} and old.compact_bodies == {1}
    assert receipt_versions(old) == ()
    # A side that says nothing new still writes the token it always wrote.
    assert Capabilities(codecs=frozenset({0, 1})).to_token() == "codecs=0,1;dicts=;formats=1"


def test_the_receiver_hands_ground_the_versions_asked_for() -> None:
    from protocol.transfer_receiver import ReceiptsWanted, TransferReceiver

    for versions in ((), (2, 3)):
        r = TransferReceiver()
        r.receive(encode_request(ReceiptsRequest(seq=1, since=0, versions=versions)), 0.0, station="iss")
        ev = r.next_event()
        assert isinstance(ev, ReceiptsWanted) and ev.versions == versions


# --- over the live link and by hand --------------------------------------------------------------


def _photo_post(cli: Cli, photo: Path) -> str:
    out = cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "From the cupola"
    )
    return out.output.split()[1]


async def _sync(cli: Cli) -> None:
    from onboard.home import Home
    from onboard.sync import sync
    from protocol.transfer import SenderConfig

    fast = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)
    await sync(Home(cli.onboard_home), config=fast, give_up_after_s=60, wait_published_s=60)


def _onboard_photos(cli: Cli, post_id: str) -> list[dict[str, Any]]:
    doc = json.loads(cli.onboard("queue", "--json").output)
    (item,) = [i for i in doc["items"] if i["id"] == post_id]
    (account,) = item["accounts"]
    return account.get("photos")  # type: ignore[no-any-return]


async def test_live_link_new_onboard_new_ground_gets_fidelity(
    cli: Cli, tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from link_support import link_to, running_ground, setup_station

    import protocol.transfer_receiver as receiver

    token = setup_station(cli, tmp_path)
    frames: list[int] = []
    real = receiver.decode_request

    def spy(data: bytes) -> Any:
        req = real(data)
        if isinstance(req, ReceiptsRequest):
            frames.append(len(unpack(data, what="frame", max_bytes=1 << 20)))
        return req

    monkeypatch.setattr(receiver, "decode_request", spy)
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        post_id = _photo_post(cli, photo)
        await _sync(cli)
    # Any RECEIPTS frame asks with 7 fields; with link version 2 the receipts may all have come
    # in the OPEN's answer instead (written in version 3 too: the fidelity below says so).
    assert set(frames) <= {7}
    signed = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert _onboard_photos(cli, post_id) == [{"photo": 1, "fidelity": "exact", "original_sha256": signed}]
    assert "[photo kept exactly]" in cli.onboard("queue").output


async def test_live_link_new_onboard_older_ground_is_asked_as_before(
    cli: Cli, tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ground of the previous release announces no receipts= and refuses a 7-field frame
    (its decoder took 4..6 fields): onboard sends it the 6-field frame and syncs as before."""
    from link_support import link_to, running_ground, setup_station

    import protocol.transfer_receiver as receiver

    token = setup_station(cli, tmp_path)
    doc = json.loads(token.read_text())
    doc["ground_decodes"] = "codecs=0,1,2;dicts=6f700001;formats=1,2,3;bodies=1,2"  # the older token
    token.write_text(json.dumps(doc))
    real = receiver.decode_request

    def older(data: bytes) -> Any:
        frame = unpack(data, what="frame", max_bytes=1 << 24)
        if frame[1] == 3 and len(frame) == 7:  # a RECEIPTS frame with a 7th field
            raise RemoteProtocolError(ErrorCode.MALFORMED, "RECEIPTS frame must be an array of 4..6 fields")
        return real(data)

    monkeypatch.setattr(receiver, "decode_request", older)
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        post_id = _photo_post(cli, photo)
        await _sync(cli)
    shown = json.loads(cli.onboard("queue", "--json").output)
    (item,) = [i for i in shown["items"] if i["id"] == post_id]
    assert item["status"] == "published" and item["fidelity"] is None, item["accounts"]
    assert _onboard_photos(cli, post_id) is None  # no receipt said: nothing is claimed


async def test_live_link_older_onboard_gets_version_2(cli: Cli, tmp_path: Path, photo: Path) -> None:
    """An onboard of the previous release asks without versions: ground answers version 2,
    which that onboard's strict decoder reads (checked here on the raw document)."""
    from link_support import link_to, running_ground, setup_station

    from ground.home import GroundHome
    from ground.receipts import build_document

    token = setup_station(cli, tmp_path)
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        _photo_post(cli, photo)
        await _sync(cli)
    home = GroundHome(cli.ground_home)
    try:
        old, _, _ = build_document(home, 0, 1, station="iss")  # what the 6-field frame gets
        new, _, _ = build_document(home, 0, 1, station="iss", versions=(2, 3))
    finally:
        home.close()
    version, entries = _entries(old)
    pubs = [e for e in entries if e[0] == 1]
    assert version == 2 and pubs and all(len(e) == 8 for e in pubs)
    version, entries = _entries(new)
    assert version == 3 and [e[9] for e in entries if e[0] == 1][0][0][0] == "exact"


def test_file_hand_off_version_3(cli: Cli, tmp_path: Path, photo: Path) -> None:
    from link_support import link_to, setup_station

    link_to(cli, "http://127.0.0.1:9", setup_station(cli, tmp_path))  # pins ground's key; never dialled
    post_id = _photo_post(cli, photo)
    cli.onboard("export", str(tmp_path / "OUT"))
    cli.ground("ingest", str(tmp_path / "OUT"))
    cli.ground("publish")
    bad = cli.ground("receipts", "--out", str(tmp_path / "r.bin"), "--version", "5", ok=False)
    assert bad.exit_code == 1 and "versions 2, 3, 4" in str(bad.exception or bad.output)
    cli.ground("receipts", "--out", str(tmp_path / "r2.bin"))
    cli.onboard("receipts", "import", str(tmp_path / "r2.bin"))
    assert _onboard_photos(cli, post_id) is None  # version 2 (the default) says nothing of photos
    cli.ground("receipts", "--out", str(tmp_path / "r3.bin"), "--version", "3")
    cli.onboard("receipts", "import", str(tmp_path / "r3.bin"))
    signed = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert _onboard_photos(cli, post_id) == [{"photo": 1, "fidelity": "exact", "original_sha256": signed}]
    # A version-2 document applied later (a newer seq or not) never erases what version 3 said.
    cli.onboard("receipts", "import", str(tmp_path / "r2.bin"))
    assert _onboard_photos(cli, post_id)


def test_a_very_long_read_back_note_is_cut_not_a_refused_document(tmp_path: Path) -> None:
    """An adapter's note over 4,096 characters would make the station refuse the whole document
    (§9.4): ground cuts it for the receipt; its database keeps it whole."""
    from test_receipts_converge import _pair

    from ground.receipts import collect

    g, (item,) = _pair(tmp_path, 1, ("archive:alice",))
    g.execute(
        "UPDATE publications SET state = 'published', fidelity_note = ? WHERE item_id = ?",
        ("n" * 10_000, item),
    )
    receipts, _, _ = collect(g, 0, station="iss")
    doc = verify_receipts(sign_receipts(GROUND, 1, receipts, version=3), GROUND.public_key)
    (pub,) = [r for r in doc.receipts if isinstance(r, PublicationReceipt)]
    assert len(pub.read_back) == 4096 and pub.read_back.endswith("…")


def test_the_sentence_the_astronaut_reads() -> None:
    from onboard.receipts import account_words, fidelity_sentence

    a, b = "ab" * 32, "cd" * 32
    one = {
        "x:alice": (("re-encoded", a),),
        "flickr:alice": (("exact", a),),
        "bluesky:alice.test": (("exact", a),),
    }
    assert fidelity_sentence(one) == (
        f"x:alice re-encoded this photo; bluesky:alice.test and flickr:alice kept it exactly (sha256 {a[:16]}…)"
    )
    two = {
        "x:alice": (("re-encoded", a), ("rendition", b)),
        "instagram:alice": (("re-encoded", a), ("re-encoded", b)),
        "archive:alice": (("exact", a), ("exact", b)),
    }
    assert fidelity_sentence(two) == (
        "instagram:alice re-encoded these photos; x:alice: photo 1 re-encoded by the platform, photo 2 sent "
        f"as a rendition (allowed); archive:alice kept them exactly (sha256 {a[:16]}…, {b[:16]}…)"
    )
    assert fidelity_sentence({}) == "" and fidelity_sentence({"x:alice": ()}) == ""
    assert account_words((("exact", a), ("exact", b))) == "photos kept exactly"
    assert fidelity_sentence({"x:alice": (("rendition", a),)}) == (
        f"x:alice got a rendition of this photo (as allowed) (sha256 {a[:16]}…)"
    )
