"""Onboard keeps one copy of each photo (issue 18): coded (Lepton or JPEG XL) forms only a few photos ahead.

Eight distinct real JPEGs are queued and synced over the live link to a real ground. While the
sync runs, the JPEG XL forms in the outbox (second copies of photos, each deleted once ground
commits it) are counted every few milliseconds: never more than ``link.PREPARE_AHEAD``.
Afterwards the laptop holds each original once (the astronaut's photo, in the blob store) and
no JPEG XL copy; every photo is published byte-identical.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from conftest import Cli
from link_support import archive_posts, link_to, running_ground, setup_station
from PIL import Image

from onboard import link
from onboard.home import Home
from onboard.sync import sync
from photocodec import jxl
from protocol.transfer import SenderConfig

PHOTOS = 8
FAST = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)


def _distinct_jpegs(sample: Path, folder: Path, n: int) -> list[Path]:
    """``n`` different real photos: the sample re-saved at different qualities and crops."""
    out = []
    with Image.open(sample) as im:
        rgb = im.convert("RGB")
        for i in range(n):
            buf = io.BytesIO()
            rgb.crop((i, 0, rgb.width, rgb.height - i)).save(buf, format="JPEG", quality=80 + i)
            path = folder / f"photo-{i}.jpg"
            path.write_bytes(buf.getvalue())
            out.append(path)
    return out


class _MostCopies:
    """The largest number of JPEG XL forms seen in the outbox, sampled until stopped."""

    def __init__(self, outbox: Path) -> None:
        self.outbox, self.most = outbox, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.most = max(self.most, sum(1 for f in self.outbox.iterdir() if f.suffix == ".cblob"))
            except OSError:
                pass

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.most


def _bytes_under(root: Path, suffix: str = "") -> int:
    return sum(p.stat().st_size for p in root.rglob(f"*{suffix}") if p.is_file())


@pytest.mark.skipif(not jxl.backends(), reason="no JPEG XL codec on this machine")
async def test_onboard_keeps_one_copy_of_each_photo(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path]
) -> None:
    token = setup_station(cli, tmp_path)
    photos = _distinct_jpegs(sample_jpegs[0], tmp_path, PHOTOS)
    for i, p in enumerate(photos):
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(p), f"photo {i}")
    originals = sum(p.stat().st_size for p in photos)
    outbox = cli.onboard_home / "outbox"
    outbox.mkdir(mode=0o700, exist_ok=True)
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        watch = _MostCopies(outbox)
        try:
            await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=60, wait_published_s=60)
        finally:
            most = watch.stop()
    assert 1 <= most <= link.PREPARE_AHEAD, f"{most} coded copies on the laptop at once"
    assert not list(outbox.glob("*.cblob")), "a coded copy outlived its transfer"
    # The astronaut's originals, once each: the blob store holds exactly the queued photos.
    assert _bytes_under(cli.onboard_home / "blobs") == originals
    published = {d.media[0].read_bytes() for d in archive_posts(cli.ground_home)}
    assert published == {p.read_bytes() for p in photos}
