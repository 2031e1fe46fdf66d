"""Bombs inside real signed bundles, sent over the live link to a real `ground serve` process
(issue 16 §6–8 and "go further"): each is refused with its documented code, ground's peak
memory stays bounded and other requests (GET /v1/health) keep being answered meanwhile.

- a msgpack list bomb: the items section unpacks to 16 M empty arrays (a few KiB zstd-compressed);
- nested arrays within the declared shape but past the value budget the header allows;
- many large blobs: nine 64 MiB photos of zeros, ~20 KiB compressed, signed by an enrolled key;
- a zstd frame with no declared size that inflates to 1 GiB inside a 64 MiB blob.

Before the fixes the first took ground ~1 GiB and froze it 7.6 s; the third was accepted at
2 GiB of memory with a 21 s freeze.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from publish_support import make_home, new_id

from ground.stations import add_station
from protocol import BlobPayload, MediaRef, Post, SigningKey, build_bundle, sign_item
from protocol.bundle import CompactItems
from protocol.canonical import pack
from protocol.codecs import Codec
from protocol.transfer_wire import Open, Status, TransferKey, TransferKind, decode_response, encode_request

MiB = 1024 * 1024
# Ground's resident-memory high-water mark may grow this much over its idle size, whatever it is sent.
MAX_GROWTH_BYTES = 256 * MiB
# What any other request may wait meanwhile (2 shared cores: generous; the freeze was 7-21 s).
MAX_HEALTH_WAIT_S = 3.0


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class Ground:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        from link_support import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ground", "--home", str(home), "serve", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("ground did not start")

    def health_wait_s(self) -> float:
        t = time.monotonic()
        with urllib.request.urlopen(self.url + "/v1/health", timeout=60) as r:
            r.read()
        return time.monotonic() - t

    def send_bundle(self, token: str, data: bytes) -> Status:
        key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
        frame = encode_request(Open(seq=1, key=key, size_bytes=len(data), owner="alice", data=data))
        req = urllib.request.Request(
            self.url + "/v1/link", data=frame, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            st = decode_response(r.read())
        assert isinstance(st, Status), st
        return st


@pytest.fixture
def ground(
    tmp_path: Path, alice_key: SigningKey, subprocess_env: dict[str, str]
) -> Iterator[tuple[Ground, str]]:
    home = make_home(tmp_path / "G", alice_key, ["archive:alice"])
    token = add_station(home.conn, "iss", 1)
    home.close()
    g = Ground(tmp_path / "G", subprocess_env)
    try:
        yield g, token
    finally:
        g.proc.terminate()
        g.proc.wait(timeout=15)


def _list_bomb() -> bytes:
    raw = b"\xdd" + (16_000_000).to_bytes(4, "big") + b"\x90" * 16_000_000
    return build_bundle(bundle_id=new_id(), created_ms=1, items=CompactItems(raw=raw, count=1))


def _nested_bomb() -> bytes:
    # The 14 fields format 2 wants, every array within the length bound for one item (64),
    # but 60 target lists of 60 targets: far past the values one declared item may hold.
    raw = pack([0, [], [["x"] * 60] * 60, b"\0", b"\0", b"", b"", b"", "", [], [], [], b"", []])
    return build_bundle(bundle_id=new_id(), created_ms=1, items=CompactItems(raw=raw, count=1))


def _many_large_blobs(key: SigningKey) -> bytes:
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=True, write_checksum=True)
    size = 64 * MiB
    blobs = []
    for i in range(9):  # 9 × 64 MiB: 576 MiB decoded, past the 512 MiB a bundle may decode to
        raw = bytes([i]) * size
        stored = cctx.compress(raw)
        # BlobPayload.raw is only measured when packing: a stand-in of the declared size.
        blobs.append(
            BlobPayload(
                sha256=hashlib.sha256(raw).digest(), raw=_Sized(size), codec=Codec.ZSTD, stored=stored
            )
        )
    media = tuple(
        MediaRef(sha256=b.sha256, size_bytes=size, media_type="image/png", alt=str(i))
        for i, b in enumerate(blobs)
    )
    post = Post(
        id=new_id(), author="alice", created_ms=1, text="nine", media=media, targets=("archive:alice",)
    )
    return build_bundle(bundle_id=new_id(), created_ms=1, items=[sign_item(key, post)], blobs=blobs)


class _Sized(bytes):
    """Bytes that report a length without holding it (only len() is asked of them)."""

    def __new__(cls, n: int) -> _Sized:
        obj = super().__new__(cls, b"")
        obj._n = n  # type: ignore[attr-defined]
        return obj

    def __len__(self) -> int:
        return self._n  # type: ignore[attr-defined,no-any-return]


def _undeclared_gigabyte(key: SigningKey) -> bytes:
    size = 64 * MiB
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    chunk = b"\0" * (16 * MiB)
    frame = b"".join(cobj.compress(chunk) for _ in range(64)) + cobj.flush()  # 1 GiB of zeros
    sha = hashlib.sha256(b"\0" * size).digest()
    post = Post(
        id=new_id(),
        author="alice",
        created_ms=1,
        text="inflates to a GiB",
        media=(MediaRef(sha256=sha, size_bytes=size, media_type="image/png", alt="zeros"),),
        targets=("archive:alice",),
    )
    blob = BlobPayload(sha256=sha, raw=_Sized(size), codec=Codec.ZSTD, stored=frame)  # type: ignore[arg-type]
    return build_bundle(bundle_id=new_id(), created_ms=1, items=[sign_item(key, post)], blobs=[blob])


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda _k: _list_bomb(), "malformed"),
        (lambda _k: _nested_bomb(), "limit_exceeded"),
        (_many_large_blobs, "limit_exceeded"),
        (_undeclared_gigabyte, "decompression_bomb"),
    ],
    ids=["msgpack-16M-arrays", "msgpack-nested", "nine-64MiB-blobs", "zstd-1GiB-undeclared"],
)
def test_bomb_is_refused_with_bounded_memory_and_no_freeze(
    ground: tuple[Ground, str], alice_key: SigningKey, make: object, code: str
) -> None:
    g, token = ground
    data = make(alice_key)  # type: ignore[operator]
    assert len(data) < 1024 * 1024  # a small bundle asking for a lot
    before = _vm_hwm(g.proc.pid)
    waits: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            waits.append(g.health_wait_s())
            time.sleep(0.02)

    t = threading.Thread(target=probe)
    t.start()
    try:
        st = g.send_bundle(token, data)
    finally:
        done.set()
        t.join()
    assert st.code == code, (st.code, st.message)
    assert json.dumps(st.message)  # a message a person can read
    assert _vm_hwm(g.proc.pid) - before < MAX_GROWTH_BYTES
    assert max(waits) < MAX_HEALTH_WAIT_S, waits
