"""Receipts version 4: the same receipts as version 3 in fewer bytes (docs/PROTOCOL.md §9.5).

- URL templates (protocol/receipt_templates.py): whatever ``fit`` answers rebuilds the strings
  exactly; ``infer`` on the platforms' URL shapes finds the short key;
- the document: hypothesis round trips (templates in the document or held by the reader), and
  "decodes or raises the remote error" for any signed entry;
- ground's side (ground/url_templates.py): a template is sent once to a station reading version
  4, again to one that read an older version meanwhile; a file always carries its templates;
- the invariant, attacked: onboard's view (states, URLs, platform ids) equals ground's while a
  writer keeps publishing with URLs of every shape and the reader mixes versions 2, 3 and 4,
  live and by file;
- negotiation: the token lists 4, a bundle's OPEN lists the versions only to such a ground,
  and `onboard queue --json` says the same after a version-4 document as after a version-3 one.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_receipts_converge import _pair, assert_converged, read_while_writing

from ground import db as ground_db
from ground.home import GroundHome
from ground.receipts import build_document, ground_key
from onboard import queue
from onboard.receipts import apply_document, templates
from protocol import RemoteProtocolError, SigningKey
from protocol.canonical import pack, unpack
from protocol.capabilities import Capabilities
from protocol.ids import new_ulid, ulid_to_bytes
from protocol.keys import key_id
from protocol.receipt_templates import KEY, POST_ID, expand, fit, infer
from protocol.receipts import (
    PUBLICATION_STATES,
    RECEIPTS_DOMAIN,
    BundleReceipt,
    PublicationReceipt,
    Receipt,
    UnknownTemplateError,
    UrlTemplateReceipt,
    sign_receipts,
    verify_receipts,
)
from protocol.transfer_wire import Open, TransferKey, TransferKind, decode_request, encode_request

GROUND = SigningKey.from_seed(hashlib.sha256(b"ground receipt key").digest())
ID = new_ulid(1_790_000_000_000, b"\x05" * 10)
ID_BYTES = ulid_to_bytes(ID)


def _shapes(post_id: str, n: int) -> tuple[str | None, str | None]:
    """The URL and platform id shapes ground's adapters give (ground/platforms/)."""
    k = n % 6
    if k == 0:
        return f"file:///srv/g/archive/.packs/{post_id}-{n:08x}.jsonl#{post_id}", post_id
    if k == 1:
        rkey = f"3l{n:011d}"
        return f"https://bsky.app/profile/a.test/post/{rkey}", f"at://did:plc:abc/app.bsky.feed.post/{rkey}"
    if k == 2:
        return f"https://m.example/@alice/{113 * 10**15 + n}", str(113 * 10**15 + n)
    if k == 3:
        return f"https://x.com/alice/status/{1862 * 10**15 + n}", str(1862 * 10**15 + n)
    if k == 4:
        return None, f"urn:li:share:{n}"  # no URL at all
    return f"https://odd.example/p?id={n}&x={n * 7}", f"odd-{n}"  # a shape no template catches


# --- templates --------------------------------------------------------------------------------

_part = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from([POST_ID, KEY]))
_parts = st.none() | st.lists(_part, min_size=1, max_size=6).map(tuple)
_strings = st.none() | st.text(max_size=60)


@given(url_t=_parts, remote_t=_parts, url=_strings, remote=_strings, post=st.text(min_size=1, max_size=8))
def test_a_fitted_key_rebuilds_both_strings_exactly(
    url_t: Any, remote_t: Any, url: Any, remote: Any, post: str
) -> None:
    key = fit(url_t, remote_t, post, url, remote)
    if key is not None:
        assert (expand(url_t, post, key), expand(remote_t, post, key)) == (url, remote)


@given(url_t=_parts, remote_t=_parts, key=st.text(max_size=20), post=st.text(min_size=1, max_size=8))
def test_what_a_template_gives_it_fits(url_t: Any, remote_t: Any, key: str, post: str) -> None:
    url, remote = expand(url_t, post, key), expand(remote_t, post, key)
    found = fit(url_t, remote_t, post, url, remote)
    assert found is not None  # maybe another key (ambiguous templates), but one that rebuilds them
    assert (expand(url_t, post, found), expand(remote_t, post, found)) == (url, remote)


@given(url=_strings, remote=_strings, post=st.text(min_size=1, max_size=30))
def test_an_inferred_template_fits_the_post_it_came_from(url: Any, remote: Any, post: str) -> None:
    guess = infer(post, url, remote)
    if guess is not None:
        assert fit(*guess, post, url, remote) is not None


@pytest.mark.parametrize("n", range(4))
def test_each_platform_shape_gives_a_short_key_that_fits_the_next_post(n: int) -> None:
    first, second = new_ulid(1_790_000_000_000, b"\x01" * 10), new_ulid(1_790_000_000_999, b"\x02" * 10)
    url, remote = _shapes(first, n)
    guess = infer(first, url, remote)
    assert guess is not None
    key = fit(*guess, second, *_shapes(second, n + 6))
    assert key is not None and len(key) <= 20, key


# --- the document -----------------------------------------------------------------------------

_accounts = st.sampled_from(["x:alice", "bluesky:a.test", "archive:alice", "mastodon:alice@m.example"])


@st.composite
def _documents(draw: Any) -> tuple[list[Receipt], list[UrlTemplateReceipt], list[UrlTemplateReceipt]]:
    """Receipts with a bundle entry, publications (some URLs from a template, some not), and
    templates: some in the document, some held by the reader."""
    ids = [new_ulid(1_790_000_000_000 + i, bytes([i]) * 10) for i in range(draw(st.integers(1, 4)))]
    pool = [
        UrlTemplateReceipt(number=n, account=draw(_accounts), url=draw(_parts), remote_id=draw(_parts), seq=n)
        for n in range(draw(st.integers(0, 4)))
    ]
    sent = draw(st.lists(st.sampled_from(pool), unique_by=lambda t: t.number)) if pool else []
    held = [t for t in pool if t not in sent]
    out: list[Receipt] = list(sent)
    out.append(
        BundleReceipt(
            bundle_sha256=bytes(32),
            bundle_id=ids[0],
            accepted=True,
            code="",
            message="",
            item_ids=tuple(ids),
            seq=9,
        )
    )
    for _ in range(draw(st.integers(0, 5))):
        item = draw(st.sampled_from(ids) | st.just(ID))
        if pool and draw(st.booleans()):
            t = draw(st.sampled_from(pool))
            key = draw(st.text(max_size=15))
            account, url, remote = t.account, expand(t.url, item, key), expand(t.remote_id, item, key)
        else:
            account, url, remote = draw(_accounts), draw(_strings), draw(_strings)
        out.append(
            PublicationReceipt(
                item_id=item,
                account=account,
                state=draw(st.sampled_from([*PUBLICATION_STATES, "later-state"])),
                url=url,
                error=draw(st.none() | st.text(max_size=10)),
                seq=draw(st.integers(0, 2**63 - 1)),
                remote_id=remote,
                read_back=draw(st.text(max_size=10)),
            )
        )
    return out, held, sent


@settings(max_examples=200, deadline=None)
@given(_documents())
def test_any_version_4_document_round_trips(doc: tuple[list[Receipt], list[UrlTemplateReceipt], Any]) -> None:
    receipts, held, _sent = doc
    data = sign_receipts(GROUND, 5, receipts, version=4, held_templates=held)
    got = verify_receipts(data, GROUND.public_key, templates={t.number: t for t in held})
    assert got.version == 4 and list(got.receipts) == receipts
    # Never larger than version 3 but for the templates it carries (each spelled out once).
    v3 = [r for r in receipts if not isinstance(r, UrlTemplateReceipt)]
    carried = sum(
        len(
            msgpack.packb(
                [6, t.number, t.account, t.url and list(t.url), t.remote_id and list(t.remote_id), t.seq]
            )
        )
        for t in receipts
        if isinstance(t, UrlTemplateReceipt)
    )
    assert len(data) <= len(sign_receipts(GROUND, 5, v3, version=3)) + carried + 16 * len(receipts)


def test_the_compact_form_is_what_is_signed_and_expanded() -> None:
    """A URL the template gives is sent as its key; one it does not is spelled out."""
    t = UrlTemplateReceipt(
        number=7, account="x:alice", url=("https://x.com/alice/status/", KEY), remote_id=(KEY,), seq=1
    )
    fits = PublicationReceipt(
        item_id=ID, account="x:alice", state="published", url="https://x.com/alice/status/42", error=None, seq=2,
        remote_id="42",
    )  # fmt: skip
    odd = PublicationReceipt(
        item_id=ID, account="x:alice", state="published", url="https://x.com/i/web/status/43", error=None, seq=3,
        remote_id="43",
    )  # fmt: skip
    body = unpack(unpack(sign_receipts(GROUND, 1, [fits, odd], version=4, held_templates=[t]), what="d", max_bytes=1 << 20)[0], what="b", max_bytes=1 << 20)  # fmt: skip
    assert body[2][0] == [1, ID_BYTES, "x:alice", 3, 2, [7, "42"]]
    assert body[2][1][5] == ["https://x.com/i/web/status/43", "43"]


def _signed(body: list[Any]) -> bytes:
    raw = pack(body)
    return pack([raw, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + raw)])


_field = st.one_of(
    st.none(),
    st.integers(-2, 2**33),
    st.booleans(),
    st.binary(min_size=15, max_size=17),
    st.text(max_size=5),
    st.lists(st.none() | st.integers(-1, 9) | st.text(max_size=4), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([1, 6]), fields=st.lists(_field, min_size=0, max_size=11))
def test_any_signed_entry_decodes_or_raises_the_remote_error(kind: int, fields: list[Any]) -> None:
    template = [6, 0, "x:alice", ["https://x.com/alice/status/", 1], [1], 1]
    bundle = [2, bytes(32), bytes(16), True, "", "", [bytes(16)], 2]
    try:
        verify_receipts(_signed([4, 1, [template, bundle, [kind, *fields]]]), GROUND.public_key)
    except RemoteProtocolError:
        pass


def test_an_unknown_template_names_what_to_do(tmp_path: Path) -> None:
    pub = PublicationReceipt(
        item_id=ID, account="x:alice", state="published", url="https://x.com/alice/status/42", error=None, seq=2,
        remote_id="42",
    )  # fmt: skip
    t = UrlTemplateReceipt(
        number=7, account="x:alice", url=("https://x.com/alice/status/", KEY), remote_id=(KEY,), seq=1
    )
    data = sign_receipts(GROUND, 1, [pub], version=4, held_templates=[t])
    with pytest.raises(UnknownTemplateError, match="URL template 7, which this reader was never sent") as e:
        verify_receipts(data, GROUND.public_key)
    assert (e.value.number, e.value.account, e.value.code) == (7, "x:alice", "malformed")
    # A live reader heals (tests/test_receipts_heal.py); a file carries its templates, so there
    # onboard says to make it again.
    from onboard.receipts import MissingTemplate, verify_document

    q = queue.connect(tmp_path / "q.db")
    with pytest.raises(MissingTemplate, match="template 7.*make it again"):
        verify_document(q, data, GROUND.public_key)
    q.close()


# --- ground's side ----------------------------------------------------------------------------


def _ground(
    tmp_path: Path, n_posts: int, accounts: tuple[str, ...]
) -> tuple[GroundHome, sqlite3.Connection, list[str]]:
    g, ids = _pair(tmp_path, n_posts, accounts)
    g.close()
    home = GroundHome(tmp_path)
    q = queue.connect(tmp_path / "q.db")
    return home, q, ids


def _publish(conn: sqlite3.Connection, item_id: str, account: str, n: int, state: str = "published") -> None:
    url, remote = _shapes(item_id, n) if state == "published" else (None, None)
    with ground_db.transaction(conn):
        conn.execute(
            "UPDATE publications SET state = ?, url = ?, remote_id = ? WHERE item_id = ? AND account = ?",
            (state, url, remote, item_id, account),
        )


def _sync(
    home: GroundHome, q: sqlite3.Connection, since: int, versions: tuple[int, ...], **kw: Any
) -> tuple[int, bytes]:
    """One live exchange (or a file, ``live=False``): build, verify with onboard's templates, apply."""
    doc, nxt, _more = build_document(home, since, 1, station="iss", versions=versions, checkpoint=False, **kw)
    apply_document(q, verify_receipts(doc, ground_key(home).public_key, templates=templates(q)))
    return nxt, doc


def _template_entries(doc: bytes) -> int:
    body = unpack(unpack(doc, what="d", max_bytes=1 << 24)[0], what="b", max_bytes=1 << 24)
    return sum(1 for e in body[2] if e[0] == 6)


def test_a_template_goes_once_and_again_after_an_older_version(tmp_path: Path) -> None:
    home, q, ids = _ground(tmp_path, 4, ("x:alice",))
    _publish(home.conn, ids[0], "x:alice", 3)
    since, doc = _sync(home, q, 0, (2, 3, 4))
    assert _template_entries(doc) == 1
    _publish(home.conn, ids[1], "x:alice", 9)
    since, doc = _sync(home, q, since, (2, 3, 4))
    assert _template_entries(doc) == 0  # the station holds it: the publication is its key only
    _publish(home.conn, ids[2], "x:alice", 15)
    since, _ = _sync(home, q, since, (2, 3))  # e.g. an older onboard for a while: no templates
    _publish(home.conn, ids[3], "x:alice", 21)
    fresh = queue.connect(tmp_path / "fresh.db")  # what that onboard would hold: no templates
    for i in ids:
        fresh.execute("INSERT INTO items (id, kind, author, body, key_id, signature, created_ms, status) "
                      "VALUES (?, 'post', 'alice', x'00', x'00', x'00', 0, 'sending')", (i,))  # fmt: skip
        fresh.execute(
            "INSERT INTO deliveries (item_id, target, state) VALUES (?, 'x:alice', 'sending')", (i,)
        )
    _, doc = _sync(home, fresh, since, (2, 3, 4))
    assert _template_entries(doc) == 1  # its cursor passed the template under version 3: sent again
    _sync(home, q, since, (2, 3, 4))
    assert_converged(home.conn, q, urls=True)
    # A file: every template it uses, whatever the station read.
    _, doc = _sync(home, fresh, 0, (4,), live=False)
    assert _template_entries(doc) == 1
    for c in (q, fresh):
        c.close()
    home.close()


def test_views_converge_with_every_url_shape_and_versions_mixed(tmp_path: Path) -> None:
    """A writer publishes, fails and re-publishes posts with every URL shape while the reader
    syncs with small pages in version 4 — now and then in 3 or 2 (an older onboard; its cursor
    moves past templates), or from a file of any version. At the end onboard's states, URLs
    and platform ids equal ground's."""
    accounts = ("archive:alice", "bluesky:a.test", "x:alice", "mastodon:alice@m.example")
    home, q, ids = _ground(tmp_path, 12, accounts)
    writer = ground_db.connect(tmp_path / "ground.db")
    rng = random.Random(4)

    def publish() -> None:
        for round_ in range(5):
            for n, i in enumerate(ids):
                for k, a in enumerate(accounts):
                    state = rng.choice(("published", "published", "failed", "pending"))
                    _publish(writer, i, a, n * 24 + round_ * 6 + (k if rng.random() < 0.8 else 5), state)

    since = 0

    def read() -> None:
        nonlocal since
        r = rng.random()
        if r < 0.15:
            since, _ = _sync(home, q, since, rng.choice(((2, 3), ())), limit=3)
        elif r < 0.25:
            _sync(home, q, 0, (rng.choice((2, 3, 4)),), live=False, limit=10_000)
        else:
            since, _ = _sync(home, q, since, (2, 3, 4), limit=3)

    read_while_writing(publish, read)
    more = True
    while more:
        doc, since, more = build_document(
            home, since, 1, 3, station="iss", versions=(2, 3, 4), checkpoint=False
        )
        apply_document(q, verify_receipts(doc, ground_key(home).public_key, templates=templates(q)))
    assert_converged(home.conn, q, photos=False, urls=True)
    assert q.execute("SELECT COUNT(*) FROM url_templates").fetchone()[0] >= 4
    writer.close()
    q.close()
    home.close()


# --- negotiation --------------------------------------------------------------------------------


def test_tokens_and_opens_list_version_4_only_to_a_ground_that_reads_it() -> None:
    from ground.jxl import capabilities
    from onboard.sync import open_receipt_versions, receipt_versions

    caps = capabilities()
    assert "receipts=2,3,4" in caps.to_token()
    assert receipt_versions(caps) == (2, 3, 4) and open_receipt_versions(caps) == (2, 3, 4)
    older = Capabilities.from_token(caps.to_token().replace("receipts=2,3,4", "receipts=2,3"))
    assert receipt_versions(older) == (2, 3) and open_receipt_versions(older) == ()
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=bytes(32))
    plain = Open(seq=1, key=key, size_bytes=3, owner="a", data=b"abc", receipts_since=5)
    listed = Open(
        seq=1, key=key, size_bytes=3, owner="a", data=b"abc", receipts_since=5, receipts_versions=(2, 3, 4)
    )
    assert decode_request(encode_request(listed)) == listed
    assert len(encode_request(listed)) == len(encode_request(plain)) + 4  # [2, 3, 4]: what it costs up


def test_the_queue_json_is_the_same_after_version_4_as_after_version_3(cli: Cli, tmp_path: Path) -> None:
    from link_support import link_to, setup_station

    link_to(cli, "http://127.0.0.1:9", setup_station(cli, tmp_path))  # pins ground's key; never dialled
    for text in ("one", "two"):
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", text)
    cli.onboard("export", str(tmp_path / "OUT"))
    cli.ground("ingest", str(tmp_path / "OUT"))
    cli.ground("publish")
    views = {}
    for version in ("3", "4"):
        cli.ground("receipts", "--out", str(tmp_path / f"r{version}.bin"), "--version", version)
        laptop = Cli(cli.runner, tmp_path / f"A{version}", cli.ground_home)  # the same laptop, copied
        shutil.copytree(cli.onboard_home, laptop.onboard_home)
        laptop.onboard("receipts", "import", str(tmp_path / f"r{version}.bin"))
        views[version] = json.loads(laptop.onboard("queue", "--json").output)
    assert views["3"] == views["4"]
    assert "/.packs/" in json.dumps(views["4"])  # the URL, rebuilt from the archive's template


def test_a_bundle_open_asking_version_4_gets_it_and_one_asking_nothing_gets_3() -> None:
    from protocol.transfer_receiver import ReceiptsWanted, TransferReceiver
    from protocol.transfer_wire import UploadState

    data = b"a text bundle"
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
    for listed, asked in (((2, 3, 4), (2, 3, 4)), ((), (2, 3))):
        r = TransferReceiver()
        req = Open(
            seq=1,
            key=key,
            size_bytes=len(data),
            owner="a",
            data=data,
            receipts_since=0,
            receipts_versions=listed,
        )
        r.receive(encode_request(req), 0.0, station="iss")
        wanted = []
        while (ev := r.next_event()) is not None:
            name = type(ev).__name__
            if name == "WriteChunk":
                r.chunk_stored(ev.rid, 0.0)  # type: ignore[union-attr]
            elif name == "CommitUpload":
                r.commit_done(ev.rid, 0.0, state=UploadState.COMMITTED)  # type: ignore[union-attr]
            elif isinstance(ev, ReceiptsWanted):
                wanted.append(ev.versions)
        assert wanted == [asked]
    bad = [1, 1, 1, 2, bytes(32), 3, "a", b"abc", 0, []]  # an empty versions list
    with pytest.raises(RemoteProtocolError):
        decode_request(pack(bad))


def test_urls_that_vary_beyond_the_key_stop_making_templates(tmp_path: Path) -> None:
    """Each URL fits only its own template: past MAX_TEMPLATES_PER_ACCOUNT they are spelled out,
    and onboard still shows each one exactly."""
    from ground.url_templates import MAX_TEMPLATES_PER_ACCOUNT

    home, q, ids = _ground(tmp_path, MAX_TEMPLATES_PER_ACCOUNT + 4, ("webhook:alice",))
    with ground_db.transaction(home.conn):
        for n, i in enumerate(ids):
            home.conn.execute(
                "UPDATE publications SET state = 'published', url = ?, remote_id = ? WHERE item_id = ?",
                (f"https://odd.example/{n * 7 + 1000}/{n}", str(n), i),
            )
    _sync(home, q, 0, (2, 3, 4))
    (made,) = home.conn.execute("SELECT COUNT(*) FROM url_templates").fetchone()
    assert made == MAX_TEMPLATES_PER_ACCOUNT
    assert_converged(home.conn, q, photos=False, urls=True)
    q.close()
    home.close()
