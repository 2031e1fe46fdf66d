"""Text waits for an earlier text bundle still crossing, then leaves as one bundle (onboard/link.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import Cli

from onboard import link, queue
from onboard.export import CURRENT_GROUND
from onboard.home import Home
from protocol.transfer_wire import TransferKey, TransferKind


def _post(cli: Cli, text: str, *extra: str) -> str:
    return str(cli.onboard("post", "--as", "alice", "--to", "archive:alice", *extra, text).output.split()[1])


def _bundles(conn) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return conn.execute(
        "SELECT t.name, COUNT(ti.item_id) FROM link_transfers t JOIN link_transfer_items ti ON ti.name = t.name "
        "WHERE t.kind = 'bundle' GROUP BY t.name ORDER BY t.created_ms, t.rowid"
    ).fetchall()


def _done(conn, name: str) -> None:  # type: ignore[no-untyped-def]
    sha = bytes.fromhex(name.split(":", 1)[1])
    link.record_done(conn, TransferKey(kind=TransferKind.BUNDLE, sha256=sha), True, "", "")


def test_text_waits_for_the_text_bundle_in_flight_then_leaves_together(enrolled: Cli) -> None:
    cli = enrolled
    home = Home(cli.onboard_home)
    conn = queue.connect(home.db_path)
    _post(cli, "first")
    link.plan(home, conn, CURRENT_GROUND)
    ((first, n),) = _bundles(conn)
    assert n == 1
    for k in range(3):
        _post(cli, f"written while the first crosses {k}")
        link.plan(home, conn, CURRENT_GROUND)
    assert len(_bundles(conn)) == 1, "held while the first text bundle is in flight"
    assert len(queue.items(conn, status="queued")) == 3
    _done(conn, first)
    link.plan(home, conn, CURRENT_GROUND)
    assert [n for _, n in _bundles(conn)] == [1, 3]
    assert not queue.items(conn, status="queued")


def test_a_photo_bundle_in_flight_never_holds_text(enrolled: Cli, photo: Path) -> None:
    cli = enrolled
    home = Home(cli.onboard_home)
    conn = queue.connect(home.db_path)
    _post(cli, "a photo", "--photo", str(photo), "--alt", "x")
    link.plan(home, conn, CURRENT_GROUND)
    _post(cli, "text after the photo")
    link.plan(home, conn, CURRENT_GROUND)
    assert [n for _, n in _bundles(conn)] == [1, 1]
    assert not queue.items(conn, status="queued")


def test_a_text_bundle_stuck_for_long_stops_holding(enrolled: Cli) -> None:
    cli = enrolled
    home = Home(cli.onboard_home)
    conn = queue.connect(home.db_path)
    _post(cli, "first")
    link.plan(home, conn, CURRENT_GROUND)
    ((first, _),) = _bundles(conn)
    stale = link.TEXT_HOLD_MAX_MS + 60_000
    conn.execute("UPDATE link_transfers SET created_ms = created_ms - ? WHERE name = ?", (stale, first))
    _post(cli, "second")
    link.plan(home, conn, CURRENT_GROUND)
    assert [n for _, n in _bundles(conn)] == [1, 1], "a bundle planned over 30 min ago holds nothing"
