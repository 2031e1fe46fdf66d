"""Receipts version 4 heals itself when ground is wrong about a laptop's URL templates (§9.5).

Ground infers which templates a station holds (``receipt_readers.v4_from`` and its cursor).
When that is wrong — onboard's rows lost, an older onboard.db restored, two laptops sharing one
station's token on different versions, a version-3 and a version-4 request racing — a document
names a template the laptop lacks. The laptop does not apply it (its cursor stays), asks once
without version 4, and goes on: nothing skipped, nothing applied twice, no error. Attacked:

- ground's record: a version-3 document raises ``v4_from`` to its cursor, and a version-4
  request still on its way can no longer register the station below it (the race replayed);
- a hypothesis property: any interleaving of publications (new templates with them), reader
  versions, racing requests, imported files, lost template rows, restored backups and a second
  laptop on the same token, then one exchange per laptop: every laptop's view (states, URLs,
  platform ids) equals ground's, and never an error (a short run, named cases, a slow long run);
- bounded: a ground that keeps naming templates after being told gets a clear error;
- the real ground server and `onboard sync` on loopback: rows deleted, onboard.db restored,
  two homes on one token alternating version 3 and 4, a RECEIPTS and an OPEN racing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from link_support import link_to, running_ground, setup_station
from test_receipts_compact import GROUND, _ground, _publish
from test_receipts_converge import assert_converged

from ground.home import GroundHome
from ground.receipts import build_document, ground_key
from onboard import link, queue
from onboard.errors import OnboardError
from onboard.home import Home
from onboard.receipts import (
    CURSOR_KEY,
    MAX_DETOURS,
    MissingTemplate,
    apply_document,
    cursor,
    ensure_schema,
    heal_applied,
    heal_begins,
    heal_state,
    onboard_state,
    verify_document,
    versions_to_ask,
)
from onboard.sync import sync
from protocol.ids import new_ulid
from protocol.receipt_templates import KEY
from protocol.receipts import PublicationReceipt, UrlTemplateReceipt, sign_receipts

V4, V3, V2 = (2, 3, 4), (2, 3), ()


def _verify(home: GroundHome, q: sqlite3.Connection, doc: bytes) -> Any:
    return verify_document(q, doc, ground_key(home).public_key)


def _apply(q: sqlite3.Connection, d: Any, next_since: int) -> None:
    """What `onboard sync` does with a verified live page (onboard/sync.py _ReceiptsExchange)."""
    apply_document(q, d)
    link.set_state(q, CURSOR_KEY, str(max(cursor(q), next_since)))
    heal_applied(q, d.version)


def _live(home: GroundHome, q: sqlite3.Connection, versions: tuple[int, ...], *, limit: int = 500) -> int:
    """One receipts exchange as `onboard sync` makes it: ask (less version 4 while a heal is
    due), verify; a missing template starts a heal and asks again; else apply and move the
    cursor; follow ``more``. Returns the requests made."""
    requests = 0
    while True:
        assert requests < 100, "the exchange does not end"
        doc, nxt, more = build_document(
            home, cursor(q), 1, limit, station="iss", versions=versions_to_ask(q, versions), checkpoint=False
        )
        requests += 1
        try:
            d = _verify(home, q, doc)
        except MissingTemplate as exc:
            heal_begins(q, exc)
            continue
        _apply(q, d, nxt)
        if not more:
            return requests


def _lose_templates(q: sqlite3.Connection, keep_every: int = 0) -> int:
    """Delete onboard's template rows (all, or all but every ``keep_every``-th)."""
    ensure_schema(q)
    where = f"WHERE number % {keep_every} != 0" if keep_every else ""
    return q.execute(f"DELETE FROM url_templates {where}").rowcount


# --- ground's record --------------------------------------------------------------------------


def test_an_older_document_raises_the_floor_and_a_late_version_4_request_cannot_lower_it(
    tmp_path: Path,
) -> None:
    """The race the author saw: a version-3 and a version-4 request from one cursor. The v3
    document moves the laptop past a template; the v4 one, built after, used to register the
    station at its older cursor, and ground then counted that template as held."""
    home, q, ids = _ground(tmp_path, 3, ("x:alice", "bluesky:a.test"))
    _publish(home.conn, ids[0], "x:alice", 3)
    _live(home, q, V4)  # registered; holds x:alice's template
    since = cursor(q)
    _publish(home.conn, ids[1], "bluesky:a.test", 1)  # a new account shape: a new template
    # A v4 request makes the template (it is in its document) ...
    d4, n4, _ = build_document(home, since, 1, station="iss", versions=V4, checkpoint=False)
    # ... and a v3 request racing it from the same cursor sees it too, but does not carry it.
    d3, n3, _ = build_document(home, since, 1, station="iss", versions=V3, checkpoint=False)
    (floor,) = home.conn.execute("SELECT v4_from FROM receipt_readers WHERE station = 'iss'").fetchone()
    assert floor == n3 >= n4
    _lose_templates(q)  # and the laptop applies only the v3 one (the v4 answer lost on the link)
    _apply(q, _verify(home, q, d3), n3)
    _publish(home.conn, ids[2], "bluesky:a.test", 7)
    assert _live(home, q, V4) == 1  # the template comes in the document: no heal needed
    assert_converged(home.conn, q, photos=False, urls=True)
    q.close()
    home.close()


def test_lost_template_rows_heal_with_one_version_3_document(tmp_path: Path) -> None:
    home, q, ids = _ground(tmp_path, 2, ("archive:alice", "x:alice"))
    for a in ("archive:alice", "x:alice"):
        _publish(home.conn, ids[0], a, 0 if a.startswith("archive") else 3)
    _live(home, q, V4)
    assert _lose_templates(q) == 2
    for a in ("archive:alice", "x:alice"):
        _publish(home.conn, ids[1], a, 6 if a.startswith("archive") else 9)
    before = cursor(q)
    doc, _, _ = build_document(home, before, 1, station="iss", versions=V4, checkpoint=False)
    with pytest.raises(MissingTemplate) as caught:
        _verify(home, q, doc)
    assert cursor(q) == before  # nothing applied
    assert "never sent" in str(caught.value)
    heal_begins(q, caught.value)
    assert versions_to_ask(q, V4) == V3 and heal_state(q).due
    assert _live(home, q, V4) == 1  # the v3 document: whole
    assert versions_to_ask(q, V4) == V4 and heal_state(q).detours == 1
    assert_converged(home.conn, q, photos=False, urls=True)
    _publish(home.conn, ids[0], "x:alice", 15)
    assert _live(home, q, V4) == 1  # version 4 again, the template in it
    assert heal_state(q).detours == 0  # a clean version-4 document: ground's record is right again
    assert q.execute("SELECT COUNT(*) FROM url_templates").fetchone()[0] >= 1
    assert_converged(home.conn, q, photos=False, urls=True)
    q.close()
    home.close()


def test_a_ground_that_keeps_naming_unknown_templates_gets_a_clear_error(tmp_path: Path) -> None:
    """Bounded: MAX_DETOURS detours, then an error naming the cause; the next sync starts with
    a detour again (receipts keep flowing in version 3), never a loop."""
    q = queue.connect(tmp_path / "q.db")
    item = new_ulid(1_790_000_000_000, b"\x01" * 10)
    t = UrlTemplateReceipt(number=99, account="x:alice", url=("https://x.com/alice/status/", KEY), remote_id=(KEY,), seq=1)  # fmt: skip
    pub = PublicationReceipt(item_id=item, account="x:alice", state="published", url="https://x.com/alice/status/5", error=None, seq=3, remote_id="5")  # fmt: skip
    doc = sign_receipts(GROUND, 1, [pub], version=4, held_templates=[t])
    for n in range(MAX_DETOURS):
        with pytest.raises(MissingTemplate) as caught:
            verify_document(q, doc, GROUND.public_key)
        heal_begins(q, caught.value)
        heal_begins(q, caught.value)  # the racing answer of the same episode counts once
        assert heal_state(q).detours == n + 1
        heal_applied(q, 3)  # the detour's version-3 document
    with pytest.raises(MissingTemplate) as caught:
        verify_document(q, doc, GROUND.public_key)
    with pytest.raises(OnboardError, match=r"template 99 \(x:alice\).*station's token.*Nothing was skipped"):
        heal_begins(q, caught.value)
    assert heal_state(q).due and versions_to_ask(q, V4) == V3
    q.close()


# --- the property -------------------------------------------------------------------------------

ACCOUNTS = ("archive:alice", "bluesky:a.test", "x:alice", "mastodon:alice@m.example")
N_POSTS = 6
_versions = st.sampled_from([V4, V4, V3, V2])
_publish_op = st.tuples(
    st.just("publish"),
    st.integers(0, N_POSTS - 1),
    st.integers(0, len(ACCOUNTS) - 1),
    st.integers(0, 40),
    st.sampled_from(["published", "published", "failed", "retracted"]),
)
_sync_op = st.tuples(st.just("sync"), st.integers(0, 1), _versions, st.sampled_from([2, 500]))
_ops = st.lists(
    st.one_of(
        _publish_op,
        _publish_op,
        _publish_op,
        _sync_op,
        _sync_op,
        st.tuples(st.just("race"), st.integers(0, 1), _versions, _versions, st.booleans(), st.booleans()),
        st.tuples(st.just("lose"), st.integers(0, 1), st.integers(0, 3)),
        st.tuples(st.just("file"), st.integers(0, 1), st.sampled_from([2, 3, 4])),
        st.tuples(st.just("backup"), st.integers(0, 1)),
        st.tuples(st.just("restore"), st.integers(0, 1)),
    ),
    max_size=25,
)


def _race(home: GroundHome, q: sqlite3.Connection, a: tuple[int, ...], b: tuple[int, ...], swap: bool, drop: bool) -> None:  # fmt: skip
    """Two requests from one cursor (a RECEIPTS and a bundle's OPEN), answered in either order;
    with ``drop`` the first answer is lost on the link."""
    since = cursor(q)
    answers = [
        build_document(home, since, 1, 3, station="iss", versions=versions_to_ask(q, v), checkpoint=False)
        for v in (a, b)
    ]
    if swap:
        answers.reverse()
    for doc, nxt, _more in answers[1:] if drop else answers:
        try:
            d = _verify(home, q, doc)
        except MissingTemplate as exc:
            heal_begins(q, exc)
            continue
        _apply(q, d, nxt)


_EXAMPLES = [
    # rows lost, then a post on that account (its template held, ground thinks)
    [("publish", 0, 1, 0, "published"), ("sync", 0, V4, 500), ("lose", 0, 0), ("publish", 1, 1, 1, "published")],
    # the second laptop: version 3 past a template, then version 4 from there
    [("publish", 0, 2, 0, "published"), ("sync", 1, V3, 500), ("sync", 0, V4, 500), ("publish", 1, 2, 1, "published"), ("sync", 1, V4, 500)],
    # a v3 RECEIPTS and a v4 OPEN racing, then rows lost: the v3 answer raised ground's floor
    # past the template, so it comes in the document (no detour)
    [("publish", 0, 0, 0, "published"), ("sync", 0, V4, 500), ("race", 0, V3, V4, True, False), ("lose", 0, 0), ("publish", 1, 0, 1, "published")],
    # a template made for a file before any laptop read version 4; laptop 1 passes it in
    # version 3 (no record yet), laptop 0 registers below it, laptop 1 then asks version 4
    [("publish", 0, 1, 0, "published"), ("file", 0, 4), ("sync", 1, V3, 500), ("sync", 0, V4, 500), ("publish", 1, 1, 1, "published")],
    # an older onboard.db restored: consistent with ground's record (no detour)
    [("sync", 0, V4, 500), ("backup", 0), ("publish", 0, 3, 0, "published"), ("sync", 0, V4, 500), ("restore", 0), ("lose", 0, 0), ("publish", 1, 3, 1, "published")],
]  # fmt: skip


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_any_interleaving_converges_after_a_sync(ops: list[tuple[Any, ...]]) -> None:
    """Whatever happened before, one exchange per laptop in version 4 (a few requests: its
    pages and at most one detour) leaves each laptop's view equal to ground's, without error.
    (A short run for CI, beside the named cases; the long one is marked slow.)"""
    _converges_after_a_sync(ops)


@pytest.mark.parametrize(
    ("ops", "requests"), list(zip(_EXAMPLES, ([2, 1], [1, 1], [1, 1], [1, 2], [1, 1]), strict=True))
)
def test_the_named_cases_converge_after_a_sync(ops: list[tuple[Any, ...]], requests: list[int]) -> None:
    """Each ends equal to ground; where ground's record was wrong (rows lost, a laptop on the
    same token past a template ground had not recorded), after one detour (2 requests)."""
    assert _converges_after_a_sync(ops) == requests


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_any_interleaving_converges_after_a_sync_long(ops: list[tuple[Any, ...]]) -> None:
    _converges_after_a_sync(ops)


def _converges_after_a_sync(ops: list[tuple[Any, ...]]) -> list[int]:
    """Run ``ops``, then one version-4 exchange per laptop; returns the requests each made."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home, q0, ids = _ground(root, N_POSTS, ACCOUNTS)
        q0.close()
        shutil.copy(root / "q.db", root / "q1.db")  # a second laptop on the same token
        laptops = [queue.connect(root / "q.db"), queue.connect(root / "q1.db")]
        backups: dict[int, sqlite3.Connection] = {}
        try:
            for op in ops:
                if op[0] == "publish":
                    _, i, a, n, state = op
                    _publish(home.conn, ids[i], ACCOUNTS[a], n * 6 + a, state)
                elif op[0] == "sync":
                    _live(home, laptops[op[1]], op[2], limit=op[3])
                elif op[0] == "race":
                    _race(home, laptops[op[1]], *op[2:])
                elif op[0] == "file":  # `ground receipts --out F`, imported: no cursor moves
                    doc, _, _ = build_document(
                        home, 0, 1, 10_000, versions=(op[2],), checkpoint=False, live=False
                    )
                    apply_document(laptops[op[1]], _verify(home, laptops[op[1]], doc))
                elif op[0] == "lose":
                    _lose_templates(laptops[op[1]], op[2])
                elif op[0] == "backup":
                    backups[op[1]] = sqlite3.connect(":memory:")
                    laptops[op[1]].backup(backups[op[1]])
                elif op[1] in backups:
                    backups[op[1]].backup(laptops[op[1]])  # restore that older onboard.db
            made = []
            for q in laptops:
                made.append(_live(home, q, V4, limit=500))
                assert made[-1] <= 1 + 2 * MAX_DETOURS
                assert_converged(home.conn, q, photos=False, urls=True)
            return made
        finally:
            for c in [*laptops, *backups.values()]:
                c.close()
            home.close()


# --- the real ground server and `onboard sync` ----------------------------------------------------


def _views(cli: Cli, onboard_home: Path) -> None:
    """Every delivery this laptop holds equals ground's publication: state, URL, platform id."""
    g = sqlite3.connect(cli.ground_home / "ground.db")
    q = sqlite3.connect(onboard_home / "onboard.db")
    try:
        mine = q.execute("SELECT item_id, target, state, url, remote_id FROM deliveries").fetchall()
        assert mine
        for item_id, target, state, url, remote in mine:
            row = g.execute(
                "SELECT state, url, remote_id FROM publications WHERE item_id = ? AND account = ?",
                (item_id, target),
            ).fetchone()
            assert row is not None, item_id
            assert (state, url, remote) == (onboard_state(row[0]), row[1], row[2]), (item_id, target)
            assert url and "/.packs/" in url  # published, its URL rebuilt
    finally:
        g.close()
        q.close()


def _older_token(token: Path, out: Path) -> Path:
    """The token file a ground of the previous release wrote: receipts versions 2 and 3 only."""
    doc = json.loads(token.read_text())
    assert "receipts=2,3,4" in doc["ground_decodes"]
    doc["ground_decodes"] = doc["ground_decodes"].replace("receipts=2,3,4", "receipts=2,3")
    out.write_text(json.dumps(doc))
    return out


async def _post_and_sync(cli: Cli, text: str) -> None:
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", text)
    result = await sync(Home(cli.onboard_home), wait_published_s=20)
    assert result.pending_items == 0


async def test_deleted_template_rows_and_a_restored_onboard_db_heal_by_themselves(
    cli: Cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = setup_station(cli, tmp_path)
    db = cli.onboard_home / "onboard.db"
    caplog.set_level(logging.INFO, logger="onboard.sync")
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        await _post_and_sync(cli, "first")
        backup = sqlite3.connect(tmp_path / "backup.db")
        with sqlite3.connect(db) as live:
            live.backup(backup)
        # 1. The laptop's template rows lost: the next post's receipt names the archive's template.
        with sqlite3.connect(db) as live:
            assert live.execute("DELETE FROM url_templates").rowcount == 1
        await _post_and_sync(cli, "second")
        _views(cli, cli.onboard_home)
        assert "asking again without templates" in caplog.text
        caplog.clear()
        await _post_and_sync(cli, "third")  # back on version 4, nothing more to heal
        assert "asking again" not in caplog.text
        assert heal_state(queue.connect(db)).detours == 0
        # 2. An older onboard.db restored over it (its later posts are gone from this laptop).
        with sqlite3.connect(db) as live:
            backup.backup(live)
        backup.close()
        with sqlite3.connect(db) as live:
            live.execute("DELETE FROM url_templates")  # and a backup made without that table's rows
        await _post_and_sync(cli, "fourth")
        _views(cli, cli.onboard_home)
    assert "published" in cli.onboard("queue").output


async def test_two_laptops_on_one_token_alternating_versions_3_and_4(cli: Cli, tmp_path: Path) -> None:
    """Laptop B is a copy of A (the same station token), linked as an onboard of the previous
    release (version 3 only), later upgraded; A and B take turns, then race each other's
    requests (a RECEIPTS and a bundle's OPEN at once). Each ends equal to ground, no error."""
    token = setup_station(cli, tmp_path)
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        await _post_and_sync(cli, "from A, first")
        b = Cli(cli.runner, tmp_path / "B", cli.ground_home)
        shutil.copytree(cli.onboard_home, b.onboard_home)
        link_to(b, url, _older_token(token, tmp_path / "T3"))
        for n in range(3):
            await _post_and_sync(b, f"from B, v3, {n}")
            await _post_and_sync(cli, f"from A, v4, {n}")
        link_to(b, url, token)  # B upgraded: version 4, its cursor past templates it never saw
        for n in range(2):
            await _post_and_sync(b, f"from B, v4, {n}")
            await _post_and_sync(cli, f"from A, v4 again, {n}")
        link_to(b, url, _older_token(token, tmp_path / "T3"))
        for n in range(3):  # both at once: B's RECEIPTS (v3) against A's OPEN (v4), then swapped
            cli.onboard("post", "--as", "alice", "--to", "archive:alice", f"race A {n}")
            b.onboard("post", "--as", "alice", "--to", "archive:alice", f"race B {n}")
            results = await asyncio.gather(
                sync(Home(cli.onboard_home), wait_published_s=20),
                sync(Home(b.onboard_home), wait_published_s=20),
            )
            assert all(r.pending_items == 0 for r in results)
            if n == 1:
                link_to(b, url, token)
        for laptop in (cli, b):
            await _post_and_sync(laptop, "last")
            _views(cli, laptop.onboard_home)


# --- onboard sync's receipts exchange -----------------------------------------------------------


def test_sync_asks_without_version_4_by_both_paths_until_an_older_document_comes(tmp_path: Path) -> None:
    """onboard/sync.py: a page naming an unknown template is not applied; a RECEIPTS request
    goes at once listing 2,3, a bundle's OPEN lists nothing (link 2's own 2,3); a racing
    OPEN answer failing alike asks nothing more; the version-3 answer ends the detour."""
    from types import SimpleNamespace

    from onboard.receipts import ReceiptsPoll
    from onboard.sync import _ReceiptsExchange
    from protocol.sender_events import ReceiptsReceived

    q = queue.connect(tmp_path / "q.db")
    item = new_ulid(1_790_000_000_000, b"\x01" * 10)
    q.execute("INSERT INTO items (id, kind, author, body, key_id, signature, created_ms, status) "
              "VALUES (?, 'post', 'alice', x'00', x'00', x'00', 0, 'received')", (item,))  # fmt: skip
    q.execute("INSERT INTO deliveries (item_id, target, state) VALUES (?, 'x:alice', 'received')", (item,))
    asked: list[tuple[int, tuple[int, ...]]] = []
    sender = SimpleNamespace(
        open_receipts_since=None,
        open_receipts_versions=(),
        request_receipts=lambda since, claims, versions: asked.append((since, versions)),
    )
    ex = _ReceiptsExchange(q, sender, ReceiptsPoll(), GROUND.public_key, V4, with_open=True)  # type: ignore[arg-type]
    ex.step(0.0)
    assert asked == [(0, V4)] and ex.pending
    t = UrlTemplateReceipt(number=9, account="x:alice", url=("https://x.com/alice/status/", KEY), remote_id=(KEY,), seq=1)  # fmt: skip
    pub = PublicationReceipt(item_id=item, account="x:alice", state="published", url="https://x.com/alice/status/5", error=None, seq=3, remote_id="5")  # fmt: skip
    unknown = sign_receipts(GROUND, 1, [pub], version=4, held_templates=[t])
    assert ex.received(ReceiptsReceived(document=unknown, next_since=7, more=False)) == 0
    assert asked[-1] == (0, V3) and ex.pending and cursor(q) == 0  # asked again, nothing applied
    ex.step(0.0)
    assert sender.open_receipts_since is None  # an exchange is under way: OPENs do not ask
    assert ex.received(ReceiptsReceived(document=unknown, next_since=7, more=False, with_open=True)) == 0
    assert len(asked) == 2 and heal_state(q).detours == 1  # the racing answer: one episode
    ex.pending = False
    ex.step(0.0)
    assert sender.open_receipts_versions == ()  # an OPEN now asks link 2's own versions
    whole = sign_receipts(GROUND, 1, [pub], version=3)
    ex.pending = True
    ex.received(ReceiptsReceived(document=whole, next_since=7, more=False))
    assert cursor(q) == 7 and not heal_state(q).due
    assert q.execute("SELECT state, url FROM deliveries").fetchone() == (
        "published",
        "https://x.com/alice/status/5",
    )
    ex.step(0.0)
    assert sender.open_receipts_versions == V4  # version 4 again, by both paths
    # A ground answering version 4 to a request without it would loop: an error names it.
    from onboard.sync import SyncError

    heal_begins(q, MissingTemplate("m", number=9, account="x:alice"))
    q.execute("UPDATE deliveries SET state = 'received'")  # something awaits receipts again
    ex = _ReceiptsExchange(q, sender, ReceiptsPoll(), GROUND.public_key, V4, with_open=True)  # type: ignore[arg-type]
    ex.step(0.0)
    assert asked[-1] == (7, V3)
    with pytest.raises(SyncError, match="left version 4 out with version 4"):
        ex.received(ReceiptsReceived(document=unknown, next_since=9, more=False))
    q.close()


async def test_a_laptop_on_a_shared_token_past_a_template_ground_never_recorded_heals(
    cli: Cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The one case ground's record cannot see, for real: a template made for a file
    (`ground receipts --version 4`) before any laptop read version 4; laptop B passes it in
    version 3 (nothing recorded yet); laptop A, on the same token, then registers below it; B,
    upgraded, gets a document naming it. B heals with one detour; both end equal to ground."""
    token = setup_station(cli, tmp_path)
    caplog.set_level(logging.INFO, logger="onboard.sync")
    older = _older_token(token, tmp_path / "T3")
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, older)
        await _post_and_sync(cli, "from A, v3")
        cli.ground("receipts", "--out", str(tmp_path / "r.bin"), "--version", "4")  # makes the template
        b = Cli(cli.runner, tmp_path / "B", cli.ground_home)
        shutil.copytree(cli.onboard_home, b.onboard_home)
        await _post_and_sync(b, "from B, v3")  # B's cursor passes the template
        link_to(cli, url, token)
        await _post_and_sync(cli, "from A, v4")  # A registers the station at its older cursor
        link_to(b, url, token)
        assert "asking again" not in caplog.text
        await _post_and_sync(b, "from B, v4")
        assert "asking again without templates" in caplog.text
        for laptop in (cli, b):
            await _post_and_sync(laptop, "last")
            _views(cli, laptop.onboard_home)
