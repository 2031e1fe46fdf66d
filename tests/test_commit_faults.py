"""A commit that fails for ground's own reasons is retried, never wedged (issue 19 §1–2).

The live link's commit (verify, store blobs, one accept transaction, drop the staged file,
record the upload) is made to fail at every step in turn — the k-th database statement
raising "database or disk is full" or "database is locked", a blob or staged-file write
raising ENOSPC — and a real lock held by another connection. Each time the station hears
``503 storage`` (retryable), never a 500; then, without restarting ground, either its next
request or the retry timer alone commits the bundle, exactly once, with every publication.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from publish_support import make_home, make_post, new_id

from durable.files import BlobStore
from ground.server import LINK_KEY, LinkService, create_app
from ground.stations import add_station
from protocol import SigningKey, build_bundle, sign_item
from protocol.transfer_wire import (
    Open,
    ReceiptsRequest,
    Status,
    TransferKey,
    TransferKind,
    UploadState,
    decode_response,
    encode_request,
)

ACCOUNTS = ("archive:alice", "archive:backup")
POSTS = 3


class FailingConn:
    """A sqlite3 connection whose ``fail_at``-th execute raises ``error`` (once)."""

    def __init__(self, conn: sqlite3.Connection, fail_at: int | None, error: Exception) -> None:
        self._conn, self.fail_at, self.error, self.calls = conn, fail_at, error, 0

    def execute(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return self._conn.execute(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _bundle(key: SigningKey) -> bytes:
    items, blobs = [], []
    for i in range(POSTS):
        photos = [(f"photo bytes {i} ".encode() * 100, "image/png", f"alt {i}")] if i == 0 else []
        post, b = make_post(f"post {i} through a failing disk", ACCOUNTS, photos=photos)
        items.append(sign_item(key, post))
        blobs += b
    return build_bundle(bundle_id=new_id(), created_ms=1, items=items, blobs=blobs)


class Station:
    def __init__(self, client: TestClient, token: str, data: bytes) -> None:
        self.client, self.token, self.data = client, token, data
        self.key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
        self.seq = 0

    async def send(self, frame: bytes) -> tuple[int, Any]:
        self.seq += 1
        r = await self.client.post("/v1/link", data=frame, headers={"Authorization": f"Bearer {self.token}"})
        body = await r.read()
        if r.status == 200:
            return 200, decode_response(body)
        return r.status, json.loads(body)

    async def open(self, with_data: bool) -> tuple[int, Any]:
        self.seq += 1
        return await self.send(
            encode_request(
                Open(
                    seq=self.seq,
                    key=self.key,
                    size_bytes=len(self.data),
                    owner="alice",
                    data=self.data if with_data else b"",
                )
            )
        )


@pytest.fixture
async def ground(tmp_path: Path, alice_key: SigningKey) -> AsyncIterator[tuple[Any, Station]]:
    home = make_home(tmp_path / "G", alice_key, ACCOUNTS)
    token = add_station(home.conn, "iss", 1)
    app = create_app(home)
    async with TestClient(TestServer(app)) as client:
        yield app[LINK_KEY], Station(client, token, _bundle(alice_key))
    app[LINK_KEY].close()
    home.close()


def _accepted(service: LinkService) -> tuple[int, int, int]:
    conn = service.home.conn
    return (
        conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0],
        conn.execute("SELECT COUNT(*) FROM items").fetchone()[0],
        conn.execute("SELECT COUNT(*) FROM publications").fetchone()[0],
    )


def _statements_in_a_clean_commit(tmp_path: Path, alice_key: SigningKey) -> int:
    """How many statements the worker connection runs for one commit (the steps to fail)."""
    from ground.uploads import UploadStore

    home = make_home(tmp_path / "count", alice_key, ACCOUNTS)
    store = UploadStore(home)
    counter = FailingConn(store.worker.conn, None, RuntimeError())
    store.worker._conn = counter  # type: ignore[assignment]
    data = _bundle(alice_key)
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
    store.write("iss", key, 0, data)
    state, code, msg = store.commit("iss", key, len(data), 1)
    assert state is UploadState.COMMITTED, (code, msg)
    store.close()
    home.close()
    return counter.calls


FULL = sqlite3.OperationalError("database or disk is full")
LOCKED = sqlite3.OperationalError("database is locked")


async def _expect_storage_then_recover(
    service: LinkService,
    station: Station,
    break_it: Callable[[], None],
    heal: Callable[[], None],
    *,
    by_timer: bool,
) -> None:
    break_it()
    status, body = await station.open(with_data=True)
    assert status == 503 and body["error"] == "storage" and body["retryable"], (status, body)
    assert _accepted(service) == (0, 0, 0)
    # Receipts and other requests are still answered while the fault lasts.
    status, _ = await station.send(encode_request(ReceiptsRequest(seq=99, since=0)))
    assert status in (200, 503)
    heal()
    if by_timer:
        await service.retry_commits(time.time())
    status, st = await station.open(with_data=False)
    assert status == 200 and isinstance(st, Status) and st.state is UploadState.COMMITTED, (status, st)
    assert _accepted(service) == (1, POSTS, POSTS * len(ACCOUNTS))
    assert list((service.home.root / "uploads").rglob("*.part")) == []


@pytest.mark.parametrize("error", [FULL, LOCKED], ids=["disk-full", "locked"])
async def test_a_database_failure_at_every_step_of_a_commit_is_retried(
    tmp_path: Path, alice_key: SigningKey, error: Exception
) -> None:
    steps = _statements_in_a_clean_commit(tmp_path, alice_key)
    assert steps >= 5
    for k in range(1, steps + 1):
        home = make_home(tmp_path / f"G{k}", alice_key, ACCOUNTS)
        token = add_station(home.conn, "iss", 1)
        app = create_app(home)
        service = app[LINK_KEY]
        async with TestClient(TestServer(app)) as client:
            station = Station(client, token, _bundle(alice_key))
            failing = FailingConn(service.store.worker.conn, k, error)
            worker = service.store.worker
            break_it = functools.partial(setattr, worker, "_conn", failing)
            heal = functools.partial(setattr, worker, "_conn", failing._conn)
            await _expect_storage_then_recover(service, station, break_it, heal, by_timer=k % 2 == 0)
        service.close()
        home.close()


@pytest.mark.parametrize("where", ["blob", "staged-read", "staged-unlink", "upload-record"])
async def test_a_disk_failure_in_a_commit_is_retried(
    ground: tuple[LinkService, Station], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    service, station = ground
    enospc = OSError(errno.ENOSPC, "No space left on device")
    broken = {"on": False}

    def failing(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if broken["on"]:
                raise enospc
            return real(*args, **kwargs)

        return call

    if where == "blob":
        monkeypatch.setattr(BlobStore, "put", failing(BlobStore.put))
        # Ingest writes a bundle's photos as one durable group (issue 18).
        monkeypatch.setattr(BlobStore, "put_in", failing(BlobStore.put_in))
    elif where == "staged-read":
        monkeypatch.setattr(Path, "read_bytes", failing(Path.read_bytes))
    elif where == "staged-unlink":
        monkeypatch.setattr(Path, "unlink", failing(Path.unlink))
    else:
        monkeypatch.setattr(service.store, "persist", failing(service.store.persist))

    def break_it() -> None:
        broken["on"] = True

    def heal() -> None:
        broken["on"] = False

    if where in ("staged-unlink", "upload-record"):
        # These fail after the bundle was accepted: the station still hears 503 (or its
        # status); a retry must find it accepted, not accept it twice.
        break_it()
        status, _ = await station.open(with_data=True)
        assert status in (200, 503)
        heal()
        status, st = await station.open(with_data=False)
        assert status == 200 and st.state is UploadState.COMMITTED, (status, st)
        assert _accepted(service) == (1, POSTS, POSTS * len(ACCOUNTS))
        return
    await _expect_storage_then_recover(service, station, break_it, heal, by_timer=where == "blob")


async def test_a_real_write_lock_held_by_another_process_is_waited_out(
    ground: tuple[LinkService, Station],
) -> None:
    service, station = ground
    other = sqlite3.connect(service.home.db_path, isolation_level=None)
    # Short waits for the test (ground's default is 30 s).
    service.store.worker.conn.execute("PRAGMA busy_timeout = 200")
    service.home.conn.execute("PRAGMA busy_timeout = 200")

    def break_it() -> None:
        other.execute("BEGIN IMMEDIATE")  # e.g. an operator's CLI holding the write lock

    def heal() -> None:
        other.execute("COMMIT")

    await _expect_storage_then_recover(service, station, break_it, heal, by_timer=True)
    other.close()
