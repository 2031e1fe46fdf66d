"""What stays on disk, and who may read it.

- onboard's outbox keeps a spool file only while ground may still need it (issue 19): after
  a sync everything ground committed or rejected is gone, and a crash's leftovers are swept;
- every file either side writes — databases with their -wal/-shm, bundles, photos, keys,
  tokens, credentials, the archive — is private to its owner whatever the umask (issue 16 §11).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli
from link_support import archive_posts, link_to, running_ground, setup_station, until

from onboard import link
from onboard.home import Home
from onboard.sync import sync
from protocol.transfer import SenderConfig

FAST = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: every mode below must come from the code, not the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _readable_by_others(root: Path) -> list[str]:
    bad = []
    for p in root.rglob("*"):
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            bad.append(f"{p.relative_to(root)} {oct(mode)}")
    return bad


async def test_outbox_is_emptied_of_what_ground_settled_and_nothing_is_world_readable(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path], open_umask: None
) -> None:
    token = setup_station(cli, tmp_path)
    for i, photo in enumerate(sample_jpegs):
        cli.onboard(
            "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "p", f"{i}"
        )
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "text only")
    outbox = cli.onboard_home / "outbox"
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        result = await sync(Home(cli.onboard_home), config=FAST, wait_published_s=20)
        assert result.rejected == 0
        assert await until(lambda: len(archive_posts(cli.ground_home)) == len(sample_jpegs) + 1, 20)
        # While ground runs: its database, WAL and shared memory exist, all private.
        for name in ("ground.db", "ground.db-wal", "ground.db-shm"):
            assert stat.S_IMODE((cli.ground_home / name).stat().st_mode) == 0o600, name
    leftovers = [p.name for p in outbox.iterdir() if p.suffix in (".opb", ".cblob")]
    assert leftovers == [], leftovers
    assert _readable_by_others(cli.onboard_home) == []
    assert _readable_by_others(cli.ground_home) == []


def test_prune_keeps_what_may_be_resent_and_drops_crash_leftovers(cli: Cli, tmp_path: Path) -> None:
    setup_station(cli, tmp_path)
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "still to send")
    home = Home(cli.onboard_home)
    conn = sqlite3.connect(home.db_path, isolation_level=None)
    link.plan(home, conn)
    outbox = home.root / "outbox"
    (pending,) = list(outbox.glob("*.opb"))
    orphan = outbox / ("ab" * 32 + ".opb")  # written by plan() just before a crash
    orphan.write_bytes(b"x")
    stale = outbox / ".x.opb.123.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 2 * link.STALE_TMP_S
    os.utime(stale, (old, old))
    fresh = outbox / ".y.opb.124.tmp"  # maybe being written right now
    fresh.write_bytes(b"half")
    assert link.prune_outbox(home, conn) == 2
    assert pending.exists() and fresh.exists() and not orphan.exists() and not stale.exists()
    # Once ground has answered the transfer for good, its file goes.
    (name,) = conn.execute("SELECT name FROM link_transfers WHERE kind = 'bundle'").fetchone()
    from protocol.transfer_wire import TransferKey, TransferKind

    key = TransferKey(kind=TransferKind.BUNDLE, sha256=bytes.fromhex(name.split(":")[1]))
    link.record_done(conn, key, True, "", "")
    assert not pending.exists()
    conn.close()
