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
    python benchmarks/bench_link.py --virtual  # issue 14's matrix in virtual time (simlink), long:
        # 13 profiles x 3 variants x 6 seeds; narrow it with --profiles/--transfers/--seeds

``--virtual`` runs the simulator (its TCP model, with random segment loss a real-time proxy
cannot produce) on ``profiles/fill-rtt*-loss*.toml`` with the ``photo-backlog`` workload, the
transfer before issue 14 (``transfer-v1``) and before query streams (``transfer-shared``)
beside today's, on tuned-on and held-out seeds, and prints goodput / link rate while
posts wait next to one TCP stream's Mathis bound and the physical ceiling (docs/link.md).
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
from typing import Any

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
from simlink.transfer_driver import V1_CONFIG  # noqa: E402  (the transfer before issue 14)

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


async def run_orbitpost(
    root: Path, posts: list[PostSpec], p: Profile, config: SenderConfig, label: str
) -> Run:
    root.mkdir(parents=True, exist_ok=True)
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
            result = await sync(onboard_home, config=config, give_up_after_s=300, receipts_every_s=3600)
            elapsed = time.monotonic() - t0
            s = proxy.stats
            print(
                f"  {label}: {result.requests} requests, {result.chunk_bytes:,} chunk bytes, "
                f"{result.failures} failed requests, max chunk {result.max_chunk_bytes:,} B, "
                f"HTTP+frame overhead ≈ {(s.bytes_up - result.chunk_bytes) / max(result.requests, 1):.0f} B/request"
                if p.cuts is None
                else f"  {label}: {result.requests} requests, {result.failures} failed, {result.chunk_bytes:,} chunk bytes"
            )
            return Run(name=label, wire_up=s.bytes_up, wire_down=s.bytes_down, elapsed_s=elapsed, cuts=s.cuts)
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
        runs = [
            await run_orbitpost(Path(tmp) / "v1", posts, p, V1_CONFIG, "orbitpost v1 (4 streams)"),
            await run_orbitpost(
                Path(tmp) / "now", posts, p, SenderConfig(), "orbitpost (streams from request RTTs)"
            ),
            await run_baseline(posts, p),
        ]
    print(
        f"\n{'run':32} {'wire up B':>12} {'wire/payload':>13} {'time s':>8} {'goodput B/s':>12} {'goodput/link':>13} {'cuts':>5}"
    )
    for r in runs:
        goodput = payload / r.elapsed_s
        print(
            f"{r.name:32} {r.wire_up:>12,} {r.wire_up / payload:>13.3f} {r.elapsed_s:>8.1f} {goodput:>12,.0f} "
            f"{goodput / link_Bps:>13.3f} {r.cuts:>5}"
        )
    _, o, b = runs
    print(
        f"\norbitpost / baseline: wire bytes {o.wire_up / b.wire_up:.3f}, time {o.elapsed_s / b.elapsed_s:.3f}"
    )


MATRIX_RTTS = ("0.6", "1.4", "2.6")
MATRIX_LOSSES = ("0", "0.1", "1", "3")
TCP_IP_HEADER_BYTES = 40


def _virtual_one(args: tuple[str, str, float, int]) -> dict[str, Any]:
    """One simulator run (in a worker process): its report's figures."""
    from simlink.profile import load_profile
    from simlink.report import build_report
    from simlink.virtual import run_virtual
    from simlink.workload import load_workload

    profile_name, transfer, minutes, seed = args
    prof = load_profile(profile_name)
    r = run_virtual(
        prof,
        load_workload("photo-backlog"),
        astronauts=4,
        duration_s=minutes * 60,
        seed=seed,
        transfer=transfer,
    )
    rep = build_report(r)
    lk, by = rep["link"], rep["bytes"]
    cuts = lk["cut_events"]
    return {
        "profile": profile_name,
        "transfer": transfer,
        "goodput": lk["transfer_goodput_per_rate_while_backlogged"],
        "post_goodput": lk["goodput_per_rate_while_backlogged"],
        "cuts": cuts,
        "resent_per_cut": by["resent_by_application"] / cuts if cuts else None,
        # Station → ground bytes a cut threw away in the network (sent, not delivered).
        "in_network_per_cut": lk["cut_in_network_bytes"] / cuts if cuts else None,
        # The costliest cut; cuts that found bytes in the network (a cut of an idle link costs
        # nothing and would pull the mean down); bytes of the cuts held out of order at ground.
        "in_network_max_cut": lk["cut_in_network_max_bytes"] if cuts else None,
        "busy_cuts": lk["cuts_with_bytes_in_network"],
        "out_of_order_per_cut": lk["cut_out_of_order_bytes"] / cuts if cuts else None,
        # Thrown away by connections aborted for another reason (timeouts): not counted per cut.
        "aborted_in_network": lk["aborted_in_network_bytes"],
        "left": rep["posts"]["still_queued_onboard"],
        "seed": seed,
    }


def bounds(prof_name: str) -> tuple[float, float, float]:
    """(one TCP stream's Mathis bound / rate, physical ceiling / rate, BDP bytes) for a profile."""
    from simlink.profile import load_profile

    prof = load_profile(prof_name)
    rate_Bps = prof.to_ground_bps / 8
    rtt_s = prof.rtt_s
    p = prof.loss
    mss = prof.mss_bytes
    mathis = (mss / rtt_s * 1.22 / p**0.5) / rate_Bps if p else float("inf")
    ceiling = (1 - p) * mss / (mss + TCP_IP_HEADER_BYTES)
    return mathis, ceiling, rate_Bps * rtt_s


TRANSFERS = ("transfer-v1", "transfer-shared", "transfer")
LABELS = {"transfer-v1": "v1", "transfer-shared": "before", "transfer": "now"}


def virtual_matrix(
    minutes: float,
    seeds: list[int],
    held_out: list[int],
    jobs: int,
    profiles: list[str],
    transfers: list[str],
) -> None:
    """Run every (profile, transfer, seed) in worker processes, printing each run as one JSON
    line as it ends (a long matrix keeps what it did), then the table."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    work = [(pr, tr, minutes, sd) for sd in [*seeds, *held_out] for pr in profiles for tr in transfers]
    got: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        for fut in as_completed([ex.submit(_virtual_one, w) for w in work]):
            r = fut.result()
            got.append(r)
            print(json.dumps(r), flush=True)
    print_table(got, minutes, seeds, held_out, profiles, transfers)


def print_table(
    runs: list[dict[str, Any]],
    minutes: float,
    seeds: list[int],
    held_out: list[int],
    profiles: list[str],
    transfers: list[str],
) -> None:
    """The docs/link.md table: goodput / link rate while posts wait, per transfer and seed
    (tuned-on seeds, then held-out ones), next to the Mathis bound and the ceiling."""
    from simlink.profile import load_profile
    from simlink.workload import load_workload

    got = {(r["profile"], r["transfer"], r["seed"]): r for r in runs}

    def cell(pr: str, tr: str, sds: list[int]) -> str:
        vals = [got.get((pr, tr, sd)) for sd in sds]
        return " / ".join("–" if v is None else f"{v['goodput'] or 0:.3f}" for v in vals)

    print(
        f"virtual time, photo-backlog workload ({load_workload('photo-backlog').description}), 4 astronauts, "
        f"{minutes:g} min; goodput / link rate while posts wait; seeds {', '.join(map(str, seeds))}"
        + (f" | held out {', '.join(map(str, held_out))}" if held_out else "")
        + "\n"
    )
    cols = [f"{LABELS.get(tr, tr)} {'/'.join(map(str, seeds))}" for tr in transfers]
    cols += [f"{LABELS.get(tr, tr)} held out {'/'.join(map(str, held_out))}" for tr in transfers if held_out]
    print("| profile | RTT | loss | 1 TCP stream (Mathis) | ceiling | " + " | ".join(cols) + " |")
    print("|---|---|---|---|---|" + "---|" * len(cols))
    for pr in profiles:
        prof = load_profile(pr)
        mathis, ceiling, _ = bounds(pr)
        cells = [cell(pr, tr, seeds) for tr in transfers]
        cells += [cell(pr, tr, held_out) for tr in transfers if held_out]
        print(
            f"| {prof.name} | {prof.rtt_s:g} s | {prof.loss * 100:g} % | {min(mathis, 9.99):.2f} | {ceiling:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    cut_rows = [
        r
        for r in runs
        if r["resent_per_cut"] is not None and r["transfer"] in transfers and r["profile"] in profiles
    ]
    if cut_rows:
        print(
            "\nper cut, in BDP: chunk bytes handed to TCP again; station → ground bytes lost in the network"
            " (mean per cut; per cut that found bytes in it, and the costliest)"
        )
        for r in sorted(cut_rows, key=lambda r: (r["profile"], r["transfer"], r["seed"])):
            bdp = bounds(r["profile"])[2]
            extra = ""
            if r.get("in_network_max_cut") is not None:  # JSON lines of older runs lack these
                busy = r["busy_cuts"]
                per_busy = (r["in_network_per_cut"] or 0) * r["cuts"] / busy / bdp if busy else 0.0
                extra = (
                    f" ({busy} cuts with bytes in it: mean {per_busy:.2f}, max {r['in_network_max_cut'] / bdp:.2f};"
                    f" out of order at ground {r['out_of_order_per_cut'] / bdp:.2f} per cut)"
                )
            print(
                f"- {r['profile']} {LABELS.get(r['transfer'], r['transfer'])} seed {r['seed']}: {r['cuts']} cuts, "
                f"resent {r['resent_per_cut'] / bdp:.2f}, in the network {(r['in_network_per_cut'] or 0) / bdp:.2f}"
                f"{extra} (BDP {bdp / 1000:,.0f} kB)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--long", action="store_true", help="slower link, cuts and a loss of signal (several minutes)"
    )
    ap.add_argument("--virtual", action="store_true", help="issue 14's loss × RTT matrix in virtual time")
    ap.add_argument("--minutes", type=float, default=14.0, help="virtual minutes per run (--virtual)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[7, 8, 9], help="seeds tuned on (--virtual)")
    ap.add_argument(
        "--held-out", type=int, nargs="*", default=[11, 12, 13], help="seeds never tuned on (--virtual)"
    )
    ap.add_argument("--jobs", type=int, default=2, help="simulator runs at once (--virtual)")
    ap.add_argument("--profiles", nargs="*", help="profiles to run (--virtual; default: the matrix)")
    ap.add_argument(
        "--transfers",
        nargs="*",
        default=list(TRANSFERS),
        choices=TRANSFERS,
        help="variants side by side (--virtual)",
    )
    ap.add_argument("--table", type=Path, help="print the table from a file of the JSON lines a run printed")
    args = ap.parse_args()
    names = args.profiles or [
        *(f"fill-rtt{r}-loss{p}" for r in MATRIX_RTTS for p in MATRIX_LOSSES),
        "fill-rtt1.4-loss1-cuts",
    ]
    if args.table:
        runs = [json.loads(line) for line in args.table.read_text().splitlines() if line.startswith("{")]
        print_table(runs, args.minutes, args.seeds, args.held_out, names, args.transfers)
        return
    if args.virtual:
        virtual_matrix(args.minutes, args.seeds, args.held_out, args.jobs, names, args.transfers)
        return
    asyncio.run(main_async(LONG if args.long else QUICK))


if __name__ == "__main__":
    main()
