"""Several stations on one ground: each hears receipts only for what it uploaded itself."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import aiohttp
from conftest import Cli
from link_support import link_to, running_ground

from ground.home import GroundHome
from ground.receipts import collect
from onboard.home import Home
from onboard.sync import sync
from protocol import parse_public_key
from protocol.receipts import BundleReceipt, PublicationReceipt, Receipt, verify_receipts
from protocol.transfer import SenderConfig
from protocol.transfer_wire import ReceiptsBatch, ReceiptsRequest, decode_response, encode_request

FAST = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)


def _two_stations(cli: Cli, tmp_path: Path) -> tuple[Cli, Path, Path]:
    """alice on station iss (cli's onboard home), bob on station css (a second home)."""
    other = replace(cli, onboard_home=tmp_path / "B")
    for c, name in ((cli, "alice"), (other, "bob")):
        c.onboard("keys", "new", name)
        line = c.onboard("keys", "show", name).output.strip()
        cli.ground("enroll", name, "--key", line, "--account", f"archive:{name}")
    t_iss, t_css = tmp_path / "T-iss", tmp_path / "T-css"
    cli.ground("station", "add", "iss", "--token-out", str(t_iss))
    cli.ground("station", "add", "css", "--token-out", str(t_css))
    return other, t_iss, t_css


def _item_ids(receipts: list[Receipt]) -> set[str]:
    out: set[str] = set()
    for r in receipts:
        if isinstance(r, PublicationReceipt):
            out.add(r.item_id)
        elif isinstance(r, BundleReceipt):
            out.update(r.item_ids)
    return out


def _queued_ids(c: Cli) -> set[str]:
    import sqlite3

    conn = sqlite3.connect(c.onboard_home / "onboard.db")
    try:
        return {i for (i,) in conn.execute("SELECT id FROM items")}
    finally:
        conn.close()


async def test_each_station_receives_only_its_own_receipts(cli: Cli, tmp_path: Path) -> None:
    other, t_iss, t_css = _two_stations(cli, tmp_path)
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "from the ISS")
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "second from the ISS")
    other.onboard("post", "--as", "bob", "--to", "archive:bob", "from the other station")
    alice_ids, bob_ids = _queued_ids(cli), _queued_ids(other)
    assert len(alice_ids) == 2 and len(bob_ids) == 1

    async with running_ground(cli.ground_home, publish_interval_s=0.05) as url:
        link_to(cli, url, t_iss)
        link_to(other, url, t_css)
        r1 = await sync(Home(cli.onboard_home), config=FAST, wait_published_s=20)
        r2 = await sync(Home(other.onboard_home), config=FAST, wait_published_s=20)
        assert r1.pending_items == 0 and r2.pending_items == 0
        assert "published" in cli.onboard("queue").output
        assert "published" in other.onboard("queue").output

        # What the wire carries: each station's receipts document names only its own posts.
        seen: dict[str, set[str]] = {}
        ground_key = parse_public_key(json.loads(t_iss.read_text())["ground_receipt_key"])
        async with aiohttp.ClientSession() as s:
            for station, tfile in (("iss", t_iss), ("css", t_css)):
                token = json.loads(tfile.read_text())["token"]
                async with s.post(
                    url + "/v1/link",
                    data=encode_request(ReceiptsRequest(seq=1, since=0)),
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    assert resp.status == 200
                    frame = decode_response(await resp.read())
                assert isinstance(frame, ReceiptsBatch)
                doc = verify_receipts(frame.document, ground_key)
                seen[station] = _item_ids(list(doc.receipts))
    assert seen["iss"] == alice_ids
    assert seen["css"] == bob_ids

    gh = GroundHome(cli.ground_home)
    try:
        assert _item_ids(collect(gh.conn, 0, station="iss")[0]) == alice_ids
        assert _item_ids(collect(gh.conn, 0, station="css")[0]) == bob_ids
        assert _item_ids(collect(gh.conn, 0, station="nobody")[0]) == set()
        assert _item_ids(collect(gh.conn, 0)[0]) == alice_ids | bob_ids  # the file hand-off: all
    finally:
        gh.close()

    # File hand-off: all by default, or one station's with --station.
    every, iss_only = tmp_path / "all.bin", tmp_path / "iss.bin"
    cli.ground("receipts", "--out", str(every))
    cli.ground("receipts", "--out", str(iss_only), "--station", "iss")
    assert _item_ids(list(verify_receipts(every.read_bytes(), ground_key).receipts)) == alice_ids | bob_ids
    assert _item_ids(list(verify_receipts(iss_only.read_bytes(), ground_key).receipts)) == alice_ids
    assert "applied" in cli.onboard("receipts", "import", str(iss_only)).output
    bad = cli.ground("receipts", "--out", str(tmp_path / "x.bin"), "--station", "mir", ok=False)
    assert bad.exit_code != 0 and "no station 'mir'" in str(bad.exception)
    assert not (tmp_path / "x.bin").exists()
