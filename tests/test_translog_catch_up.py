"""The transparency log follows the receipts' change sequence (ground/translog.py catch_up,
docs/PROTOCOL.md §9.1): a burst of posts accepted and published while catch-up runs in another
thread reaches the log exactly once, and after a restart catch-up resumes from its stored cursor."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import aiohttp
import pytest
from harden_support import Probe, ground
from publish_support import T0, ingest, make_home, make_post

from ground import translog
from ground.db import transaction
from ground.home import GroundHome
from protocol import SigningKey

BURST = 5_000
PER_BUNDLE = 500


def _facts(home: GroundHome) -> list[tuple[int, str]]:
    return [(int(i), str(f)) for i, f in home.conn.execute("SELECT idx, fact FROM tlog_leaves ORDER BY idx")]


def test_a_burst_of_5000_posts_reaches_the_log_exactly_once(tmp_path: Path, alice_key: SigningKey) -> None:
    home = make_home(tmp_path / "G", alice_key, ["archive:alice"])
    stop = threading.Event()
    passes: list[int] = []

    def follow() -> None:  # ground serve's loop, without the 2 s pause
        worker = GroundHome(home.root)
        try:
            while not stop.is_set():
                passes.append(translog.catch_up(worker, T0))
        finally:
            worker.close()

    t = threading.Thread(target=follow)
    t.start()
    ids: list[str] = []
    try:
        for b in range(BURST // PER_BUNDLE):
            posts = [make_post(f"burst {b}.{n}", ["archive:alice"])[0] for n in range(PER_BUNDLE)]
            ingest(home, alice_key, posts, now_ms=T0 + b)
            ids += [p.id for p in posts]
            # Publish the previous bundle's posts meanwhile: their outcomes change under the follower.
            with transaction(home.conn):
                home.conn.execute(
                    "UPDATE publications SET state = 'published', url = 'file:///a/' || item_id, "
                    "published_ms = ? WHERE state = 'pending' AND item_id IN (SELECT value FROM json_each(?))",
                    (T0, json.dumps(ids[:-PER_BUNDLE])),
                )
        with transaction(home.conn):
            home.conn.execute(
                "UPDATE publications SET state = 'published', url = 'file:///a/' || item_id, published_ms = ? "
                "WHERE state = 'pending'",
                (T0,),
            )
    finally:
        stop.set()
        t.join()
    translog.catch_up(home, T0)
    facts = _facts(home)
    assert [i for i, _ in facts] == list(range(1, len(facts) + 1))  # no gap, nothing twice
    names = [f for _, f in facts]
    assert len(names) == len(set(names))
    where = {f: i for i, f in facts}
    items = {f for f in names if f.startswith("item:")}
    pubs = {f for f in names if f.startswith("pub:")}
    assert items == {f"item:{i}" for i in ids}
    assert pubs == {f"pub:{i}:archive:alice:published" for i in ids}
    assert all(where[f"item:{i}"] < where[f"pub:{i}:archive:alice:published"] for i in ids)
    assert len(passes) > 1 and sum(passes) <= len(facts)  # the follower really ran meanwhile
    cp = translog.latest(home)
    assert cp is not None and cp.split("\n")[1] == str(len(facts))
    assert translog.cursor(home.conn) == home.conn.execute("SELECT MAX(seq) FROM changes").fetchone()[0]
    home.close()


def test_catch_up_after_a_restart_resumes_from_the_stored_cursor(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    home = make_home(tmp_path / "G", alice_key, ["archive:alice"])
    first = [make_post(f"before {n}", ["archive:alice"])[0] for n in range(3)]
    ingest(home, alice_key, first)
    translog.catch_up(home, T0)
    at = translog.cursor(home.conn)
    assert at == home.conn.execute("SELECT MAX(seq) FROM changes").fetchone()[0] > 0
    size = len(_facts(home))
    home.close()

    home = GroundHome(tmp_path / "G")  # ground restarted
    assert translog.cursor(home.conn) == at
    # A fact whose change is numbered at or below the cursor is not read again: catch-up does
    # not rescan what it has followed. (Ground never stamps such a row; this one is forged.)
    with transaction(home.conn):
        home.conn.execute("INSERT INTO accounts (astronaut, account) VALUES ('alice', 'archive:hidden')")
        home.conn.execute("UPDATE changes SET seq = 0 WHERE kind = 'enrolled' AND k1 = 'alice'")
    later = [make_post(f"after {n}", ["archive:alice"])[0] for n in range(2)]
    ingest(home, alice_key, later, now_ms=T0 + 1)
    assert translog.catch_up(home, T0 + 1) == 2
    new = [f for _, f in _facts(home)[size:]]
    assert new == [f"item:{p.id}" for p in later]
    assert translog.cursor(home.conn) > at
    assert translog.catch_up(home, T0 + 2) == 0
    home.close()


async def test_ground_serve_logs_a_backlog_without_holding_its_event_loop(
    tmp_path: Path, alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ground serve`'s passes run in a worker thread, never on the event loop: the first one,
    over 5,000 unlogged posts, while health checks keep being answered."""
    home = make_home(tmp_path / "G", alice_key, ["archive:alice"])
    for b in range(BURST // PER_BUNDLE):
        ingest(home, alice_key, [make_post(f"{b}.{n}", ["archive:alice"])[0] for n in range(PER_BUNDLE)])
    # Paused: the publisher leaves them alone, so what the probe measures is the log's pass.
    home.conn.execute("UPDATE accounts SET paused = 1")
    home.close()
    threads: set[int] = set()
    real = translog.catch_up

    def recording(home: GroundHome, now_ms: int) -> int:
        threads.add(threading.get_ident())
        return real(home, now_ms)

    monkeypatch.setattr(translog, "catch_up", recording)
    async with ground(tmp_path / "G") as (url, _edge):
        probe = Probe(url)
        task = asyncio.ensure_future(probe.run())
        size = 0
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                async with s.get(url + "/log/checkpoint") as r:
                    if r.status == 200:
                        size = int((await r.json())["checkpoint"].split("\n")[1])
                if size >= BURST:
                    break
                await asyncio.sleep(0.1)
        probe.stop()
        await task
    assert size >= BURST  # keys, the account and the 5,000 posts
    assert threads and threading.get_ident() not in threads  # never the event loop's thread
    assert probe.failures == 0 and probe.worst < 1.5, (probe.n, probe.failures, probe.worst)
