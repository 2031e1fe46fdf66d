"""Live-link benchmark: orbitpost's resumable transfer vs one plain JSON POST per post.

Both runs go through the same throttled, delayed loopback link (linkemu) in the same process
and carry the same posts (text posts and real photos, one photo shared by two posts):

- **orbitpost**: `ground serve` + `onboard sync` (signed bundles, photos as blobs, window of
  requests, resume after cuts);
- **baseline**: one HTTP POST per post, JSON with the photos base64-encoded, retried whole
  after a cut (what a naive client does).

Printed per run: bytes on the wire (station → ground) / payload, and goodput / link rate,
where payload = the bytes the astronauts wrote (text + each distinct photo once) and goodput
= payload / elapsed time.

    python benchmarks/bench_link.py            # ~1 minute: 1 Mbit/s, 300 ms one way, no cuts
    python benchmarks/bench_link.py --long     # 256 kbit/s, 600 ms, random cuts, a loss of signal
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ground import enroll as ground_enroll  # noqa: E402
from ground.home import GroundHome  # noqa: E402
from ground.jxl import capabilities as ground_capabilities  # noqa: E402
from ground.receipts import ground_key_line  # noqa: E402
from ground.server import serve  # noqa: E402
from ground.stations import add_station, write_token_file  # noqa: E402
from linkemu import Direction, LinkProxy, LossWindow  # noqa: E402
from onboard import keystore, queue  # noqa: E402
from onboard.compose import PhotoInput, compose_post  # noqa: E402
from onboard.home import Home  # noqa: E402
from onboard.link import add_link  # noqa: E402
from onboard.sync import sync  # noqa: E402
from protocol.transfer import SenderConfig  # noqa: E402

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    rate_bps: float
    delay_s: float
    cuts: tuple[int, int] | None
    max_cuts: int
    loss: tuple[LossWindow, ...]
    photos: tuple[str, ...]
    texts: int


QUICK = Profile(
    rate_bps=1_000_000,
    delay_s=0.3,
    cuts=None,
    max_cuts=0,
    loss=(),
    photos=("rocket.jpg", "retina.jpg"),
    texts=20,
)
LONG = Profile(
    rate_bps=256_000,
    delay_s=0.6,
    cuts=(40_000, 120_000),
    max_cuts=20,
    loss=(LossWindow(start_s=10, duration_s=8),),
    photos=("rocket.jpg", "retina.jpg", "hubble_deep_field.jpg"),
    texts=40,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostSpec:
    author: str
    text: str
    photos: tuple[Path, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    name: str
    wire_up: int
    wire_down: int
    elapsed_s: float
    cuts: int


def workload(p: Profile) -> list[PostSpec]:
    photos = [SKIMAGE_DATA / n for n in p.photos]
    posts = [
        PostSpec(
            author="alice" if i % 2 else "bob",
            text=f"Text post {i} from orbit 🌍 " + "x" * (i * 7),
            photos=(),
        )
        for i in range(p.texts)
    ]
    posts.append(PostSpec(author="alice", text="Launch seen from above", photos=(photos[0],)))
    posts.append(PostSpec(author="bob", text="Same launch, my account", photos=(photos[0],)))
    for ph in photos[1:]:
        posts.append(PostSpec(author="alice", text=f"Photo {ph.stem}", photos=(ph,)))
    return posts


def payload_bytes(posts: list[PostSpec]) -> int:
    text = sum(len(p.text.encode()) for p in posts)
    photos = {ph for p in posts for ph in p.photos}
    return text + sum(ph.stat().st_size for ph in photos)


def _proxy(port: int, p: Profile, seed: int) -> LinkProxy:
    d = Direction(rate_bps=p.rate_bps, delay_s=p.delay_s)
    return LinkProxy(
        "127.0.0.1", port, up=d, down=d, cut_every_bytes=p.cuts, max_cuts=p.max_cuts or None, seed=seed
    )


async def run_orbitpost(root: Path, posts: list[PostSpec], p: Profile) -> Run:
    onboard_home, ground = Home(root / "A").ensure(), GroundHome(root / "G")
    conn = queue.connect(onboard_home.db_path)
    now_ms = int(time.time() * 1000)
    for name in ("alice", "bob"):
        key = keystore.new_key(onboard_home, name)
        ground_enroll.enroll(ground.conn, name, keystore.public_line(key), [f"archive:{name}"], now_ms)
    token = add_station(ground.conn, "iss", now_ms)
    write_token_file(
        root / "T",
        station="iss",
        token=token,
        ground_key_line=ground_key_line(ground),
        ground_decodes=ground_capabilities().to_token(),
    )
    for post in posts:
        compose_post(
            onboard_home,
            conn,
            author=post.author,
            text=post.text,
            targets=[f"archive:{post.author}"],
            photos=[PhotoInput(path=ph, alt="photo") for ph in post.photos],
        )
    conn.close()
    port = _free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.ensure_future(serve(ground, "127.0.0.1", port, stop=stop, ready=ready))
    await ready.wait()
    try:
        async with _proxy(port, p, seed=1) as proxy:
            add_link(onboard_home, proxy.url, root / "T")
            proxy.schedule_loss(p.loss)
            t0 = time.monotonic()
            result = await sync(
                onboard_home, config=SenderConfig(), give_up_after_s=300, receipts_every_s=3600
            )
            elapsed = time.monotonic() - t0
            s = proxy.stats
            print(
                f"  orbitpost: {result.requests} requests, {result.chunk_bytes:,} chunk bytes, "
                f"{result.failures} failed requests, max chunk {result.max_chunk_bytes:,} B, "
                f"HTTP+frame overhead ≈ {(s.bytes_up - result.chunk_bytes) / max(result.requests, 1):.0f} B/request"
                if p.cuts is None
                else f"  orbitpost: {result.requests} requests, {result.failures} failed, {result.chunk_bytes:,} chunk bytes"
            )
            return Run(
                name="orbitpost", wire_up=s.bytes_up, wire_down=s.bytes_down, elapsed_s=elapsed, cuts=s.cuts
            )
    finally:
        stop.set()
        await server
        ground.close()


async def run_baseline(posts: list[PostSpec], p: Profile) -> Run:
    received: dict[str, int] = {}

    async def accept(request: web.Request) -> web.Response:
        try:
            doc = await request.json()
        except ConnectionError:  # cut mid-body: the client will retry the whole post
            return web.json_response({"ok": False}, status=400)
        received[doc["id"]] = len(doc["text"]) + sum(
            len(base64.b64decode(ph["data"])) for ph in doc["photos"]
        )
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/post", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with _proxy(port, p, seed=1) as proxy, aiohttp.ClientSession() as session:
            proxy.schedule_loss(p.loss)
            t0 = time.monotonic()
            for i, post in enumerate(posts):
                body = json.dumps(
                    {
                        "id": str(i),
                        "author": post.author,
                        "text": post.text,
                        "targets": [f"archive:{post.author}"],
                        "photos": [
                            {"alt": "photo", "data": base64.b64encode(ph.read_bytes()).decode()}
                            for ph in post.photos
                        ],
                    }
                ).encode()
                for _attempt in range(1000):  # bounded: the link always comes back in this benchmark
                    try:
                        async with session.post(
                            f"{proxy.url}/post",
                            data=body,
                            headers={"Content-Type": "application/json"},
                            timeout=aiohttp.ClientTimeout(total=600),
                        ) as r:
                            if r.status == 200:
                                break
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        await asyncio.sleep(0.5)
            elapsed = time.monotonic() - t0
            assert len(received) == len(posts)
            s = proxy.stats
            return Run(
                name="baseline (JSON POST per post)",
                wire_up=s.bytes_up,
                wire_down=s.bytes_down,
                elapsed_s=elapsed,
                cuts=s.cuts,
            )
    finally:
        await runner.cleanup()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main_async(p: Profile) -> None:
    posts = workload(p)
    payload = payload_bytes(posts)
    link_Bps = p.rate_bps / 8
    print(
        f"link: {p.rate_bps / 1000:.0f} kbit/s each way, {p.delay_s * 1000:.0f} ms one way"
        + (f", random cuts every {p.cuts[0]:,}-{p.cuts[1]:,} B (max {p.max_cuts})" if p.cuts else "")
        + (f", {len(p.loss)} loss-of-signal window(s)" if p.loss else "")
    )
    print(
        f"workload: {len(posts)} posts ({p.texts} text-only, {len(posts) - p.texts} with a photo, one photo "
        f"shared by two posts); payload {payload:,} B"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = [await run_orbitpost(Path(tmp), posts, p), await run_baseline(posts, p)]
    print(
        f"\n{'run':32} {'wire up B':>12} {'wire/payload':>13} {'time s':>8} {'goodput B/s':>12} {'goodput/link':>13} {'cuts':>5}"
    )
    for r in runs:
        goodput = payload / r.elapsed_s
        print(
            f"{r.name:32} {r.wire_up:>12,} {r.wire_up / payload:>13.3f} {r.elapsed_s:>8.1f} {goodput:>12,.0f} "
            f"{goodput / link_Bps:>13.3f} {r.cuts:>5}"
        )
    o, b = runs
    print(
        f"\norbitpost / baseline: wire bytes {o.wire_up / b.wire_up:.3f}, time {o.elapsed_s / b.elapsed_s:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--long", action="store_true", help="slower link, cuts and a loss of signal (several minutes)"
    )
    args = ap.parse_args()
    asyncio.run(main_async(LONG if args.long else QUICK))


if __name__ == "__main__":
    main()
