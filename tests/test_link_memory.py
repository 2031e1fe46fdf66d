"""Onboard memory stays flat however much media is queued: photos stream from disk.

The real `onboard sync` runs as a child process against a real `ground serve` on loopback;
its peak resident set (/proc/<pid>/status VmHWM, sampled while it runs) must stay far below
the bytes it sent, and must not grow from a two-photo queue to one of hundreds of MiB.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import Cli
from link_support import free_port, link_to, setup_station

MIB = 1024 * 1024


def _fake_photo(path: Path, header: bytes, size_bytes: int) -> None:
    """A real JPEG header followed by random bulk: a valid upload, not a decodable image."""
    with path.open("wb") as f:
        f.write(header)
        left = size_bytes - len(header)
        while left > 0:
            n = min(left, 4 * MIB)
            f.write(os.urandom(n))
            left -= n


def _jpeg_header(jpeg: bytes) -> bytes:
    """Everything before the first scan (SOS marker): the photo's real header segments."""
    sos = jpeg.index(b"\xff\xda")
    return jpeg[:sos]


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert server.poll() is None, "ground serve exited early"
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("ground serve did not come up within 20 s")


def _queue(cli: Cli, tmp_path: Path, header: bytes, photos: int, photo_bytes: int, first: int = 0) -> int:
    src = tmp_path / "photo.jpg"
    for i in range(first, first + photos):
        _fake_photo(src, header, photo_bytes)  # each one different: no sharing across posts
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(src), f"photo {i}")
    src.unlink()
    return photos * photo_bytes


class _Peak:
    """The highest VmHWM seen for one process, sampled every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.kib = pid, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            v = _vm_hwm_kib(self.pid)
            if v is not None:
                self.kib = max(self.kib, v)
            time.sleep(0.05)

    def stop(self) -> int:
        self._done.set()
        self._thread.join(5)
        return self.kib


def _sync_child(cli: Cli, env: dict[str, str], timeout_s: float) -> int:
    """Run `onboard sync` in a child until done; its peak resident set in KiB (VmHWM).

    Not wait4's ru_maxrss: a child started by vfork/exec inherits the parent's mark there.
    """
    child = subprocess.Popen(
        cli.onboard_argv("sync"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = _Peak(child.pid)
    try:
        _, err = child.communicate(timeout=timeout_s)  # bounded: a stuck sync fails the test
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise
    finally:
        kib = peak.stop()
    assert child.returncode == 0, f"onboard sync exited {child.returncode}: {err.decode()[-2000:]}"
    return kib


def _run(
    cli: Cli,
    tmp_path: Path,
    sample_jpegs: list[Path],
    env: dict[str, str],
    *,
    photos: int,
    photo_bytes: int,
    timeout_s: float,
) -> tuple[int, int, int, int]:
    """Sync 2 photos, then ``photos`` more; (queued bytes, small peak, large peak, ground peak) in KiB."""
    token = setup_station(cli, tmp_path)
    header = _jpeg_header(sample_jpegs[0].read_bytes())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        cli.ground_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ground_peak = _Peak(server.pid)
    try:
        _wait_healthy(url, server)
        link_to(cli, url, token)
        _queue(cli, tmp_path, header, 2, photo_bytes)
        small = _sync_child(cli, env, timeout_s)
        queued = _queue(cli, tmp_path, header, photos, photo_bytes, first=2)
        large = _sync_child(cli, env, timeout_s)
    finally:
        ground_kib = ground_peak.stop()
        server.terminate()
        server.wait(20)
    return queued, small, large, ground_kib


def _check(
    cli: Cli, queued: int, small_kib: int, large_kib: int, ground_kib: int, photo_bytes: int, photos: int
) -> None:
    q = cli.onboard("queue").output
    assert "queued" not in q and "sending" not in q and "failed" not in q
    assert len(list((cli.ground_home / "blobs").rglob("*"))) >= photos  # every photo is on ground
    print(
        f"\nonboard sync of 2 photos: peak RSS {small_kib / 1024:.1f} MiB; of {photos} more "
        f"({queued / MIB:.0f} MiB): {large_kib / 1024:.1f} MiB, queued/peak {queued / (large_kib * 1024):.1f}x; "
        f"ground serve peak {ground_kib / 1024:.1f} MiB ({photo_bytes / MIB:.0f} MiB photos)"
    )
    assert large_kib * 1024 < RSS_BOUND_BYTES
    # Flat: sending many times more adds (nearly) nothing over sending two photos.
    assert large_kib - small_kib < 16 * 1024
    # Ground verifies each photo whole at commit (sha256 over at most 64 MiB): its peak is
    # a few photos over its own base, not the queue.
    assert ground_kib * 1024 < 160 * MIB + 4 * photo_bytes


# The Python interpreter with aiohttp, rich, Pillow and the JPEG XL codec is ~65 MiB; the
# queue's size must add nothing to that.
RSS_BOUND_BYTES = 100 * MIB


def test_onboard_memory_stays_flat_while_sending_many_photos(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path], subprocess_env: dict[str, str]
) -> None:
    n, size = 20, 8 * MIB  # 160 MiB queued, 1.6 × the bound; the gigabyte run (-m slow) is the long form
    queued, small, large, ground = _run(
        cli, tmp_path, sample_jpegs, subprocess_env, photos=n, photo_bytes=size, timeout_s=240
    )
    _check(cli, queued, small, large, ground, size, n)


@pytest.mark.slow
def test_onboard_memory_stays_flat_with_a_gigabyte_queued(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path], subprocess_env: dict[str, str]
) -> None:
    n, size = 64, 16 * MIB
    queued, small, large, ground = _run(
        cli, tmp_path, sample_jpegs, subprocess_env, photos=n, photo_bytes=size, timeout_s=900
    )
    assert queued >= 10 * RSS_BOUND_BYTES
    _check(cli, queued, small, large, ground, size, n)
