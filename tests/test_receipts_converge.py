"""The invariant "what the astronaut sees is what ground did" (docs/PROTOCOL.md §9), attacked.

Stated once (``assert_converged``): every per-account state onboard shows equals ground's,
mapped by ``onboard_state``, and every post's status equals ``post_status`` of those states.
Attacked with a publisher committing on another connection while documents are built, with
ground's clock stepping backwards and repeating, and with small pages.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st

from ground import db as ground_db
from ground.home import GroundHome
from ground.ingest import ingest_bytes
from ground.platforms import ArchivePlatform
from ground.publish import publish_due
from ground.receipts import collect
from onboard import queue
from onboard.home import Home
from onboard.receipts import apply_document, onboard_state, post_status
from protocol import RemoteProtocolError, SigningKey
from protocol.ids import new_ulid
from protocol.receipts import (
    CommandOutcome,
    CommandReceipt,
    EnrolledReceipt,
    PublicationReceipt,
    sign_receipts,
    verify_receipts,
)
from protocol.transfer_wire import ReceiptsCursor, ReceiptsRequest, decode_request, encode_request

GROUND = SigningKey.from_seed(hashlib.sha256(b"ground receipt key").digest())
STATES = ("pending", "publishing", "published", "failed", "rejected", "cancelled", "retracted")


def drain(
    gconn: sqlite3.Connection, qconn: sqlite3.Connection, since: int, *, version: int = 3, **kw: object
) -> int:
    """Fetch, sign, verify and apply documents until ground says no more; returns the cursor.
    ``version``: the receipts version onboard asked for (this release asks for 3, §9.3)."""
    while True:
        receipts, since, more = collect(gconn, since, **kw)  # type: ignore[arg-type]
        doc = sign_receipts(GROUND, 0, receipts, version=version)
        apply_document(qconn, verify_receipts(doc, GROUND.public_key))
        if not more:
            return since


def ground_photos(gconn: sqlite3.Connection, item_id: str, account: str) -> tuple[str | None, str | None]:
    """What ground did with the photos of one (post, account), in onboard's stored form (§9.4):
    per photo [fidelity, original sha256 hex] as JSON, and the read-back words."""
    from ground.receipts import _rendition_notes, photo_notes

    state, fidelity, note, made = gconn.execute(
        "SELECT state, fidelity, fidelity_note, renditions FROM publications WHERE item_id = ? AND account = ?",
        (item_id, account),
    ).fetchone()
    if state != "published":
        return None, None
    photos = photo_notes(gconn, item_id, fidelity, _rendition_notes(made))
    as_stored = json.dumps([[str(p.fidelity), p.original_sha256.hex()] for p in photos]) if photos else None
    return as_stored, note or None


def assert_converged(
    gconn: sqlite3.Connection, qconn: sqlite3.Connection, *, photos: bool = True, urls: bool = False
) -> None:
    """The property of §9: onboard's view of every post equals ground's — each account's state,
    each post's status, (receipts version 3, §9.4) how faithfully each photo went out, and with
    ``urls`` (version 4 rebuilds them, §9.5) each published post's URL and platform id."""
    if urls:
        for item_id, account, url, remote in gconn.execute(
            "SELECT item_id, account, url, remote_id FROM publications WHERE state = 'published'"
        ):
            seen = qconn.execute(
                "SELECT url, remote_id FROM deliveries WHERE item_id = ? AND target = ?", (item_id, account)
            ).fetchone()
            assert seen == (url, remote), (item_id, account)
    ground: dict[str, dict[str, str]] = {}
    for item_id, account, state in gconn.execute("SELECT item_id, account, state FROM publications"):
        ground.setdefault(item_id, {})[account] = onboard_state(state)
    for item_id, accounts in ground.items():
        mine = dict(
            qconn.execute("SELECT target, state FROM deliveries WHERE item_id = ?", (item_id,)).fetchall()
        )
        assert mine == accounts, item_id
        (status,) = qconn.execute("SELECT status FROM items WHERE id = ?", (item_id,)).fetchone()
        assert status == post_status(set(accounts.values())), item_id
        if not photos:
            continue
        for account, state in accounts.items():
            if state != "published":
                continue  # what a post that is not out holds of its photos is not claimed
            seen = qconn.execute(
                "SELECT photos, read_back FROM deliveries WHERE item_id = ? AND target = ?",
                (item_id, account),
            ).fetchone()
            assert seen == ground_photos(gconn, item_id, account), (item_id, account)


def _pair(tmp_path: Path, n_posts: int, accounts: tuple[str, ...]) -> tuple[sqlite3.Connection, list[str]]:
    """A ground database with ``n_posts`` posts (one bundle from station iss), and an onboard
    queue that sent them; returns the ground connection and the ids."""
    g = ground_db.connect(tmp_path / "ground.db")
    q = queue.connect(tmp_path / "q.db")
    ids = [new_ulid(1_790_000_000_000 + i, bytes([i % 256]) * 10) for i in range(n_posts)]
    g.execute("BEGIN IMMEDIATE")
    bundle = new_ulid(1_780_000_000_000, b"\x09" * 10)
    g.execute("INSERT INTO bundles VALUES (?, ?, 0, 'link:iss', 1, ?)", (bundle, "ab" * 32, n_posts))
    for i in ids:
        g.execute(
            "INSERT INTO items (id, bundle_id, kind, author, key_id, body, signature, created_ms, received_ms) "
            "VALUES (?, ?, 'post', 'alice', x'00', x'00', x'00', 0, 0)",
            (i, bundle),
        )
        q.execute(
            "INSERT INTO items (id, kind, author, body, key_id, signature, created_ms, status) "
            "VALUES (?, 'post', 'alice', x'00', x'00', x'00', 0, 'sending')",
            (i,),
        )
        for a in accounts:
            g.execute("INSERT INTO publications (item_id, account, updated_ms) VALUES (?, ?, 0)", (i, a))
            q.execute("INSERT INTO deliveries (item_id, target, state) VALUES (?, ?, 'sending')", (i, a))
    g.execute("COMMIT")
    q.close()
    return g, ids


def read_while_writing(write: Callable[[], None], read_once: Callable[[], object]) -> int:
    """Run ``write`` in a thread and ``read_once`` over and over until it ends; re-raise what
    the writer raised; return how many reads ran beside it."""
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            write()
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    rounds = 0
    while not done.is_set():
        read_once()
        rounds += 1
    t.join()
    if errors:
        raise errors[0]
    return rounds


def test_publisher_committing_while_documents_are_built_skips_nothing(tmp_path: Path) -> None:
    """A writer on its own connection moves every publication through its states, with a wall
    clock that steps back and repeats, while another thread builds small documents and applies
    them. Each row's last change races the reader; a skipped one would stay stale for good."""
    accounts = ("archive:alice", "webhook:alice")
    g, ids = _pair(tmp_path, 40, accounts)
    writer = ground_db.connect(tmp_path / "ground.db")
    q = queue.connect(tmp_path / "q.db")
    rng = random.Random(11)
    clock = iter([5_000 - 7 * (n % 13) for n in range(10_000)])  # steps back, repeats

    def publish() -> None:
        jobs = [(i, a) for i in ids for a in accounts]
        rng.shuffle(jobs)
        for i, a in jobs:
            for state in ("publishing", rng.choice(("published", "failed", "pending", "published"))):
                with ground_db.transaction(writer):
                    writer.execute(
                        "UPDATE publications SET state = ?, updated_ms = ?, url = ? WHERE item_id = ? "
                        "AND account = ?",
                        (state, next(clock), f"https://x/{i}" if state == "published" else None, i, a),
                    )
                time.sleep(rng.uniform(0, 0.002))

    since = 0

    def read() -> None:
        nonlocal since
        since = drain(g, q, since, limit=5, station="iss")

    rounds = read_while_writing(publish, read)
    drain(g, q, since, limit=5, station="iss")
    assert rounds > 3  # the reader really ran alongside the writer
    assert_converged(g, q)
    for c in (g, q, writer):
        c.close()


def test_a_late_commit_with_an_older_time_is_not_skipped(tmp_path: Path) -> None:
    """The defect of issue 11, replayed: a change committed after a later-stamped one was sent."""
    g, (a, b) = _pair(tmp_path, 2, ("archive:alice",))
    q = queue.connect(tmp_path / "q.db")
    g.execute("UPDATE publications SET state = 'published', updated_ms = 9000 WHERE item_id = ?", (b,))
    since = drain(g, q, 0, station="iss")
    # Committed later, stamped earlier (a slow transaction, or the clock stepped back).
    g.execute("UPDATE publications SET state = 'published', updated_ms = 8000 WHERE item_id = ?", (a,))
    drain(g, q, since, station="iss")
    assert_converged(g, q)
    assert q.execute("SELECT status FROM items WHERE id = ?", (a,)).fetchone() == ("published",)


def test_other_stations_changes_are_not_sent_but_the_cursor_moves_past_them(tmp_path: Path) -> None:
    g, ids = _pair(tmp_path, 3, ("archive:alice",))
    receipts, since, more = collect(g, 0, station="mars")
    assert not more and since > 0
    assert all(not isinstance(r, PublicationReceipt) for r in receipts)  # enrolled/limits only


async def test_clock_stepping_back_through_the_real_publisher(cli: Cli, tmp_path: Path) -> None:
    """Real bundles and the real publisher, with ground's time injected: 5 s, back to 3 s, 3 s again."""
    cli.onboard("keys", "new", "alice")
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, "--account", "archive:alice", "--account", "archive:alice2")
    home = GroundHome(cli.ground_home)
    plats = {"archive": ArchivePlatform(home.archive_dir)}
    q = queue.connect(Home(cli.onboard_home).db_path)
    since = 0
    for step, now in enumerate((5_000, 3_000, 3_000, 4_000)):
        for k in range(3):
            cli.onboard(
                "post", "--as", "alice", "--to", "archive:alice,archive:alice2", f"step {step} post {k}"
            )
        out = tmp_path / f"out{step}"
        cli.onboard("export", str(out))
        for f in sorted(out.iterdir()):
            ingest_bytes(home, f.read_bytes(), source="link:iss", now_ms=now)
        since = drain(home.conn, q, since, station="iss", limit=4)
        await publish_due(home, now, plats)  # type: ignore[arg-type]
        if step % 2:
            since = drain(home.conn, q, since, station="iss", limit=4)
    drain(home.conn, q, since, station="iss", limit=4)
    assert_converged(home.conn, q)
    assert {s for (s,) in q.execute("SELECT state FROM deliveries")} == {"published"}
    q.close()
    home.close()


def test_photo_fidelity_converges_while_ground_keeps_changing_it(
    cli: Cli, tmp_path: Path, photo: Path
) -> None:
    """Real photo posts (two photos each) on three accounts; a writer on its own connection
    publishes them with a fidelity, a read-back note and renditions that it keeps changing
    (and some back to failed/pending), while small version-3 documents are built and applied.
    When it stops and a last sync is done, every account's photo fidelity onboard equals
    ground's (``assert_converged``), and what the astronaut reads says so."""
    accounts = ("archive:alice", "x:alice", "flickr:alice")
    cli.onboard("keys", "new", "alice")
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, *(a for acct in accounts for a in ("--account", acct)))
    second = tmp_path / "second.png"
    second.write_bytes(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e6a2b2250000000049454e44ae426082"
    ))  # fmt: skip
    for k in range(4):
        cli.onboard(
            "post", "--as", "alice", "--to", ",".join(accounts), "--photo", str(photo), "--photo",
            str(second), f"two photos {k}",
        )  # fmt: skip
    cli.onboard("export", str(tmp_path / "OUT"))
    home = GroundHome(cli.ground_home)
    for f in sorted((tmp_path / "OUT").iterdir()):
        ingest_bytes(home, f.read_bytes(), source="link:iss", now_ms=1_000)
    ids = [i for (i,) in home.conn.execute("SELECT id FROM items")]
    writer = ground_db.connect(cli.ground_home / "ground.db")
    q = queue.connect(Home(cli.onboard_home).db_path)
    rng = random.Random(13)

    def made() -> str | None:
        if rng.random() < 0.5:
            return None
        return json.dumps([{"photo": 1, "original_sha256": "ab" * 32, "sha256": "cd" * 32,
                            "recipe": "rendition/v1", "width": 8, "height": 8}])  # fmt: skip

    def publish() -> None:
        for _ in range(6):
            for i in ids:
                for a in accounts:
                    state = rng.choice(("published", "published", "failed", "pending"))
                    published = state == "published"
                    with ground_db.transaction(writer):
                        writer.execute(
                            "UPDATE publications SET state = ?, url = ?, fidelity = ?, fidelity_note = ?, "
                            "renditions = ? WHERE item_id = ? AND account = ?",
                            (
                                state,
                                f"https://x/{i}" if published else None,
                                rng.choice(("exact", "re-encoded")) if published else None,
                                rng.choice((None, "read back: sha256 matches", "text read back: exact")),
                                made() if published else None,
                                i,
                                a,
                            ),
                        )
                    if published and rng.random() < 0.3:
                        # Only the fidelity changes (a later read-back): still a change (§9.4).
                        with ground_db.transaction(writer):
                            writer.execute(
                                "UPDATE publications SET fidelity = 're-encoded', fidelity_note = ? "
                                "WHERE item_id = ? AND account = ?",
                                (f"read back {rng.random():.6f}: differs", i, a),
                            )

    since = 0

    def read() -> None:
        nonlocal since
        since = drain(home.conn, q, since, limit=3, station="iss")
        if rng.random() < 0.3:
            # A version-2 file carried by hand (`ground receipts --out F`, no cursor moved): it
            # says nothing of photos, and must leave nothing stale behind.
            drain(home.conn, q, 0, version=2, station="iss", limit=10_000)

    read_while_writing(publish, read)
    drain(home.conn, q, 0, version=2, station="iss", limit=10_000)  # last, a file from before
    drain(home.conn, q, since, limit=3, station="iss")
    assert_converged(home.conn, q)
    seen = q.execute("SELECT COUNT(*) FROM deliveries WHERE photos IS NOT NULL").fetchone()[0]
    assert seen > 0  # the property was about something
    for c in (q, writer):
        c.close()
    home.close()
    shown = cli.onboard("queue", "--json").output
    for item in json.loads(shown)["items"]:
        for a in item["accounts"]:
            if a["state"] == "published":
                assert [p["photo"] for p in a["photos"]] == [1, 2]


# --- the new receipt entries and the RECEIPTS frame ---------------------------------------------

_ids = st.integers(0, 2**48 - 1).map(lambda t: new_ulid(t, b"\x07" * 10))
_entries = st.one_of(
    st.builds(
        PublicationReceipt,
        item_id=_ids,
        account=st.text(max_size=30),
        state=st.sampled_from(STATES) | st.text(max_size=10),
        url=st.none() | st.text(max_size=40),
        error=st.none() | st.text(max_size=40),
        seq=st.integers(0, 2**63 - 1),
        remote_id=st.none() | st.text(max_size=40),
    ),
    st.builds(
        EnrolledReceipt,
        astronaut=st.text(max_size=20),
        accounts=st.lists(st.text(max_size=30), max_size=6).map(tuple),
        seq=st.integers(0, 2**63 - 1),
    ),
    st.builds(
        CommandReceipt,
        command_id=_ids,
        target_id=_ids,
        outcome=st.sampled_from(CommandOutcome),
        detail=st.text(max_size=60),
        seq=st.integers(0, 2**63 - 1),
    ),
)


@settings(max_examples=200)
@given(st.lists(_entries, max_size=8))
def test_any_document_of_the_new_entries_round_trips(entries: list[object]) -> None:
    doc = verify_receipts(sign_receipts(GROUND, 3, entries), GROUND.public_key)  # type: ignore[arg-type]
    assert list(doc.receipts) == entries


_field = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.lists(st.one_of(st.binary(max_size=20), st.text(max_size=5), st.integers(0, 9)), max_size=3),
)


@settings(max_examples=400)
@given(st.integers(0, 7), st.lists(_field, max_size=10))
def test_any_signed_entry_decodes_or_raises_the_remote_error(kind: int, fields: list[object]) -> None:
    """A correctly signed document whose entry is anything: decoded, or RemoteProtocolError."""
    from protocol.canonical import pack
    from protocol.keys import key_id
    from protocol.receipts import RECEIPTS_DOMAIN

    body = pack([2, 1, [[kind, *fields]]])
    data = pack([body, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + body)])
    try:
        verify_receipts(data, GROUND.public_key)
    except RemoteProtocolError:
        pass


@settings(max_examples=200)
@given(
    st.integers(0, 2**63 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=5).map(tuple),
)
def test_receipts_request_round_trips(since: int, claims: tuple[bytes, ...]) -> None:
    req = ReceiptsRequest(seq=4, since=since, claims=claims)
    assert decode_request(encode_request(req)) == req


def test_an_old_time_cursor_request_is_refused_with_a_clear_message() -> None:
    from protocol.transfer_receiver import TransferReceiver
    from protocol.transfer_wire import ErrorFrame, decode_response

    old = encode_request(ReceiptsRequest(seq=1, since=1_790_000_000_000, cursor=ReceiptsCursor.TIME))
    assert len(decode_request(old).__slots__) and decode_request(old).cursor is ReceiptsCursor.TIME
    r = TransferReceiver()
    rid = r.receive(old, 0.0, station="iss")
    while r.next_event() is not None:
        pass
    resp = decode_response(r.response_for(rid) or b"")
    assert isinstance(resp, ErrorFrame) and not resp.retryable
    assert "by time" in resp.message and "upgrade onboard" in resp.message
    assert "onboard receipts import" in resp.message


@pytest.mark.parametrize("bad", [[1, 3, 1, 0, 9, []], [1, 3, 1, 0, 2, [b"short"]], [1, 3, 1, 0, 2, "x"]])
def test_bad_receipts_requests_are_refused(bad: list[object]) -> None:
    from protocol.canonical import pack

    with pytest.raises(RemoteProtocolError):
        decode_request(pack(bad))


# --- Bluesky: the at:// URI is kept, the web URL comes from a per-service setting ---------------


def test_bluesky_web_url_per_service(cli: Cli) -> None:
    from ground.platforms.bluesky import post_url, web_apps

    root = cli.ground_home
    uri = "at://did:plc:abc/app.bsky.feed.post/3kxyz"
    apps = web_apps(root)
    assert apps == {"https://bsky.social": "https://bsky.app"}  # the default, and only that
    assert post_url(apps.get("https://bsky.social"), "a.bsky.social", "3kxyz", uri) == (
        "https://bsky.app/profile/a.bsky.social/post/3kxyz"
    )
    # Another PDS has no web app: the post's URL is its at:// URI, never a bsky.app link.
    assert post_url(apps.get("https://pds.example.org"), "a.example.org", "3kxyz", uri) == uri
    cli.ground("account", "bluesky-web", "https://pds.example.org/", "https://social.example.org/")
    assert web_apps(root)["https://pds.example.org"] == "https://social.example.org"
    cli.ground("account", "bluesky-web", "https://bsky.social")  # none: at:// URIs only
    assert "https://bsky.social" not in web_apps(root)
    bad = cli.ground("account", "bluesky-web", "pds.example.org", ok=False)
    assert bad.exit_code == 1


def test_onboard_shows_the_at_uri_beside_the_url(tmp_path: Path) -> None:
    q = queue.connect(tmp_path / "q.db")
    i = new_ulid(1_790_000_000_000, b"\x05" * 10)
    q.execute(
        "INSERT INTO items (id, kind, author, body, key_id, signature, created_ms, status) "
        "VALUES (?, 'post', 'alice', x'00', x'00', x'00', 0, 'sending')",
        (i,),
    )
    q.execute(
        "INSERT INTO deliveries (item_id, target, state) VALUES (?, 'bluesky:a.example.org', 'sending')", (i,)
    )
    uri = "at://did:plc:abc/app.bsky.feed.post/3kxyz"
    doc = sign_receipts(
        GROUND,
        1,
        [
            PublicationReceipt(
                item_id=i,
                account="bluesky:a.example.org",
                state="published",
                url=uri,
                error=None,
                seq=3,
                remote_id=uri,
            )
        ],
    )
    apply_document(q, verify_receipts(doc, GROUND.public_key))
    assert queue.deliveries(q, i) == [("bluesky:a.example.org", "published", uri, None)]
    q.execute("UPDATE deliveries SET url = 'https://bsky.app/profile/a/post/3kxyz'")
    assert queue.deliveries(q, i)[0][2] == f"https://bsky.app/profile/a/post/3kxyz {uri}"
    q.close()


def test_a_database_from_before_the_change_log_gets_every_row_stamped(tmp_path: Path) -> None:
    g, ids = _pair(tmp_path, 3, ("archive:alice",))
    g.execute("UPDATE publications SET state = 'published'")
    for (name,) in g.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'changes_%'"
    ).fetchall():
        g.execute(f"DROP TRIGGER {name}")
    g.execute("DROP TABLE changes")  # as an earlier release left it
    g.close()
    g = ground_db.connect(tmp_path / "ground.db")
    q = queue.connect(tmp_path / "q.db")
    drain(g, q, 0, station="iss")
    assert_converged(g, q)
    assert {s for (s,) in q.execute("SELECT status FROM items")} == {"published"}
