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
    python benchmarks/bench_link.py --realtime-matrix --minutes 3 --seeds 11   # real loss (root, TUN)
        # ~8 min per profile: fill-rtt{0.6,1.4}-loss{0,1,3} unless --profiles

``--virtual`` runs the simulator (its TCP model, with random segment loss a real-time proxy
cannot produce) on ``profiles/fill-rtt*-loss*.toml`` with the ``photo-backlog`` workload, the
transfer before issue 14 (``transfer-v1``) and before query streams (``transfer-shared``)
beside today's, on tuned-on and held-out seeds, and prints goodput / link rate while
posts wait next to one TCP stream's Mathis bound and the physical ceiling (docs/link.md).

``--realtime-matrix`` runs real time with real packet loss: for each profile and seed, today's
transfer (`simulate.py --realtime --packet`'s run, photo-backlog) and the baseline
(benchmarks/baseline_post.py, one JSON POST at a time) each through linkemu's packet link for
``--minutes`` of wall time, then the simulator on the same profile, workload and seed; it
prints goodput / link rate while posts wait beside the Mathis bound (Linux's 1448-byte
segments) times the busy streams measured, the ceiling, the drops and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
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


def _virtual_one(args: tuple[str, str, float, int, str, float, str | None]) -> dict[str, Any]:
    """One simulator run (in a worker process): its report's figures. With a warm-up, the
    station starts remembering a pass of that many seconds on the same link (another seed);
    the last item is the modelled TCP's congestion control (None: the model's default, cubic)."""
    from simlink.link import CONGESTION_CONTROL
    from simlink.profile import load_profile
    from simlink.report import build_report
    from simlink.virtual import remembered_after_virtual_pass, run_virtual
    from simlink.workload import load_workload

    profile_name, transfer, minutes, seed, workload, warm_s, tcp_cc = args
    prof = load_profile(profile_name)
    r = run_virtual(
        prof,
        load_workload(workload),
        astronauts=4,
        duration_s=minutes * 60,
        seed=seed,
        transfer=transfer,
        remembered=remembered_after_virtual_pass(prof, warm_s, seed) if warm_s > 0 else None,
        tcp_cc=tcp_cc,
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
        "workload": workload,
        "warm_s": warm_s,
        "tcp_cc": tcp_cc or CONGESTION_CONTROL,
    }


def _modelled(tcp_cc: str | None) -> str | None:
    """The model's congestion control beside a real run's: the same where simlink models it."""
    from simlink.congestion import MODELLED

    return tcp_cc if tcp_cc in MODELLED else None


def bounds(
    prof_name: str, mss: int | None = None, header: int = TCP_IP_HEADER_BYTES
) -> tuple[float, float, float]:
    """(one TCP stream's Mathis bound / rate, physical ceiling / rate, BDP bytes) for a profile
    (``mss``/``header``: the segment's payload and headers, default the profile's MSS + 40)."""
    from simlink.profile import load_profile

    prof = load_profile(prof_name)
    rate_Bps = prof.to_ground_bps / 8
    rtt_s = prof.rtt_s
    p = prof.loss
    mss = mss or prof.mss_bytes
    mathis = (mss / rtt_s * 1.22 / p**0.5) / rate_Bps if p else float("inf")
    ceiling = (1 - p) * mss / (mss + header)
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
    workload: str = "photo-backlog",
    warm_s: float = 0.0,
    tcp_cc: str | None = None,
) -> None:
    """Run every (profile, transfer, seed) in worker processes, printing each run as one JSON
    line as it ends (a long matrix keeps what it did), then the table."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    work = [
        (pr, tr, minutes, sd, workload, warm_s, tcp_cc)
        for sd in [*seeds, *held_out]
        for pr in profiles
        for tr in transfers
    ]
    got: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        for fut in as_completed([ex.submit(_virtual_one, w) for w in work]):
            r = fut.result()
            got.append(r)
            print(json.dumps(r), flush=True)
    print_table(got, minutes, seeds, held_out, profiles, transfers, workload)


def print_table(
    runs: list[dict[str, Any]],
    minutes: float,
    seeds: list[int],
    held_out: list[int],
    profiles: list[str],
    transfers: list[str],
    workload: str = "photo-backlog",
) -> None:
    """The docs/link.md table: goodput / link rate while posts wait, per transfer and seed
    (tuned-on seeds, then held-out ones), next to the Mathis bound and the ceiling."""
    from simlink.profile import load_profile
    from simlink.workload import load_workload

    got = {(r["profile"], r["transfer"], r["seed"]): r for r in runs}
    warm = max((r.get("warm_s") or 0.0 for r in runs), default=0.0)

    def cell(pr: str, tr: str, sds: list[int]) -> str:
        vals = [got.get((pr, tr, sd)) for sd in sds]
        return " / ".join("–" if v is None else f"{v['goodput'] or 0:.3f}" for v in vals)

    print(
        f"virtual time, {workload} workload ({load_workload(workload).description}), 4 astronauts, "
        f"{minutes:g} min; goodput / link rate while posts wait; seeds {', '.join(map(str, seeds))}"
        + (f" | held out {', '.join(map(str, held_out))}" if held_out else "")
        + (f"; the station remembering a {warm:g} s pass on the same link" if warm else "")
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


REALTIME_RTTS = ("0.6", "1.4")
REALTIME_LOSSES = ("0", "1", "3")
# Linux over the packet link's 1500-byte MTU: 1448 payload bytes per full segment (TCP
# timestamps take 12 of the 1460), 52 bytes of IP and TCP headers.
KERNEL_MSS_BYTES = 1448
KERNEL_HEADER_BYTES = 52
BASELINE_PORT = 8480
BASELINE = Path(__file__).resolve().parent / "baseline_post.py"


async def _baseline_packet(
    prof_name: str, duration_s: float, seed: int, root: Path, tcp_cc: str | None
) -> dict[str, Any]:
    """The baseline (benchmarks/baseline_post.py) through the packet link for ``duration_s``:
    payload bytes it got across (whole posts, and the read share of the one under way)."""
    from simlink.profile import load_profile
    from simlink.realtime import SAMPLE_S, _env
    from simlink.realtime_link import open_link

    root.mkdir(parents=True, exist_ok=True)
    link = open_link(load_profile(prof_name), seed, packet=True, tcp_cc=tcp_cc)
    counts_file, env = root / "baseline-counts.json", _env()
    await link.open()
    procs: list[asyncio.subprocess.Process] = []
    try:
        with (root / "baseline-serve.log").open("wb") as log:
            serve_args = [
                "serve",
                "--host",
                link.ground_host,
                "--port",
                str(BASELINE_PORT),
                "--counts",
                str(counts_file),
            ]
            procs.append(await asyncio.create_subprocess_exec(
                *link.ground_argv(), sys.executable, str(BASELINE), *serve_args, stdout=log, stderr=log, env=env
            ))  # fmt: skip
        for _ in range(150):  # ≤ 30 s
            if await link.ground_listens(BASELINE_PORT):
                break
            await asyncio.sleep(0.2)
        url = f"http://{link.ground_host}:{BASELINE_PORT}/post"
        send_args = ["send", "--url", url, "--seed", str(seed), "--minutes", str(duration_s / 60)]
        with (root / "baseline-send.log").open("wb") as log:
            procs.append(await asyncio.create_subprocess_exec(
                *link.station_argv(), sys.executable, str(BASELINE), *send_args, stdout=log, stderr=log, env=env
            ))  # fmt: skip
        t0, busy = time.monotonic(), []
        while (left := t0 + duration_s - time.monotonic()) > 0:
            await asyncio.sleep(min(SAMPLE_S, left))
            busy.append(await link.busy_connections() or 0)
        procs[0].send_signal(signal.SIGTERM)  # serve writes its counts, then is killed below
        for _ in range(100):  # ≤ 10 s
            if counts_file.exists():
                break
            await asyncio.sleep(0.1)
        c = link.counts()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await link.close()
    got = json.loads(counts_file.read_text())
    payload = got["payload_done"] + got["payload_partial"]
    return {
        "goodput": payload / duration_s / (load_profile(prof_name).to_ground_bps / 8),
        "posts": got["posts_done"],
        "busy": sum(busy) / len(busy) if busy else None,
        "drops": c.drops,
    }


def _realtime_cell(
    prof_name: str,
    minutes: float,
    seed: int,
    root: Path,
    tcp_cc: str | None,
    parts: list[str],
    warm_s: float = 0.0,
    workload: str = "photo-backlog",
) -> dict[str, Any]:
    """One profile and seed: today's transfer and the baseline through the packet link, then
    the simulator on the same profile, workload and seed. With ``warm_s``, the station has
    been on this link before: it starts remembering a pass of that long (another seed)."""
    import os

    from simlink.profile import load_profile
    from simlink.realtime import remembered_after_pass, run_realtime
    from simlink.report import build_report
    from simlink.workload import load_workload

    remembered = None
    if warm_s > 0:
        remembered = remembered_after_pass(
            load_profile(prof_name), warm_s, seed, root / f"{prof_name}-{seed}-warm", tcp_cc
        )
    load = os.getloadavg()[0]
    r = run_realtime(
        load_profile(prof_name),
        load_workload(workload),
        astronauts=4,
        duration_s=minutes * 60,
        seed=seed,
        workdir=root / f"{prof_name}-{seed}",
        packet=True,
        tcp_cc=tcp_cc,
        remembered=remembered,
    )
    rep = build_report(r)
    base = (
        asyncio.run(
            _baseline_packet(prof_name, minutes * 60, seed, root / f"{prof_name}-{seed}-baseline", tcp_cc)
        )
        if "baseline" in parts
        else {"goodput": None}
    )
    virt = (
        _virtual_one((prof_name, "transfer", minutes, seed, workload, warm_s, _modelled(tcp_cc)))
        if "virtual" in parts
        else {"goodput": None}
    )
    return {
        "profile": prof_name,
        "seed": seed,
        "minutes": minutes,
        "workload": workload,
        "tcp_cc": tcp_cc or Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip(),
        "goodput": rep["link"]["transfer_goodput_per_rate_while_backlogged"],
        "post_goodput": rep["link"]["goodput_per_rate_while_backlogged"],
        "busy": rep["link"]["busy_connections_mean"],
        "drops": rep["link"]["packets_dropped_by_emulator"],
        "published": rep["posts"]["published"],
        "baseline": base,
        "virtual": virt["goodput"],
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "remembered": remembered,
    }


def realtime_matrix(
    minutes: float,
    seeds: list[int],
    profiles: list[str],
    tcp_cc: str | None,
    parts: list[str],
    warm_s: float = 0.0,
    workload: str = "photo-backlog",
) -> None:
    """Every (profile, seed) in real time through the packet link, one after another (real
    time wants the CPU to itself), printing each as one JSON line as it ends, then the table."""
    from simlink.errors import SimError
    from simlink.realtime_link import packet_mode_problem

    if problem := packet_mode_problem():
        raise SimError(problem)
    rows = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for seed in seeds:
            for pr in profiles:
                row = _realtime_cell(pr, minutes, seed, Path(tmp), tcp_cc, parts, warm_s, workload)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print_realtime_table(rows)


def _fig(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def print_realtime_table(rows: list[dict[str, Any]]) -> None:
    """The docs/link.md table of real time with real loss: goodput / link rate while posts
    wait, real (today's transfer, the baseline) beside virtual, with the bounds."""
    from simlink.profile import load_profile

    print(
        "\nreal time through linkemu's packet link (kernel TCP, real packet loss), "
        f"{rows[0].get('workload', 'photo-backlog') if rows else 'photo-backlog'} workload, "
        "4 astronauts; goodput / link rate while posts wait\n"
    )
    print(
        "| profile | RTT | loss | TCP | seed | min | Mathis, 1 stream | ceiling | baseline (1 POST at a time) "
        "| **now, real** | busy streams | Mathis × busy | now, virtual | dropped up: loss / queue | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        prof = load_profile(r["profile"])
        mathis, ceiling, _ = bounds(r["profile"], KERNEL_MSS_BYTES, KERNEL_HEADER_BYTES)
        busy = r["busy"] or 0.0
        d = r["drops"] or {}
        one, many = (f"{mathis:.2f}", f"{mathis * busy:.2f}") if prof.loss else ("–", "–")
        print(
            f"| {prof.name} | {prof.rtt_s:g} s | {prof.loss * 100:g} % | {r.get('tcp_cc', '?')} | {r['seed']} | {r['minutes']:g} "
            f"| {one} | {ceiling:.3f} | {_fig(r['baseline']['goodput'])} "
            f"| **{_fig(r['goodput'])}** | {busy:.1f} | {many} | {_fig(r['virtual'])} "
            f"| {d.get('loss_up', 0):,} / {d.get('queue_full_up', 0):,} | {r['load_before']:.1f}–{r['load_after']:.1f} |"
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
    ap.add_argument(
        "--workload",
        default="photo-backlog",
        help="workload name or file (--virtual, --realtime-matrix; large-photos: a few ~6 MB camera frames)",
    )
    ap.add_argument("--profiles", nargs="*", help="profiles to run (--virtual; default: the matrix)")
    ap.add_argument(
        "--transfers",
        nargs="*",
        default=list(TRANSFERS),
        choices=TRANSFERS,
        help="variants side by side (--virtual)",
    )
    ap.add_argument("--table", type=Path, help="print the table from a file of the JSON lines a run printed")
    ap.add_argument(
        "--realtime-matrix",
        action="store_true",
        help="real time with real loss through linkemu's packet link (root, TUN); --minutes per run (default 2), "
        "--profiles, --seeds (default 11)",
    )
    ap.add_argument(
        "--tcp-cc",
        help="--realtime-matrix: the namespaces' TCP congestion control (cubic, bbr; default: the machine's), "
        "and the model's beside it where it has one; --virtual: the model's (cubic, reno; default cubic)",
    )
    ap.add_argument(
        "--parts",
        nargs="*",
        default=["baseline", "virtual"],
        choices=["baseline", "virtual"],
        help="--realtime-matrix: what runs beside today's transfer per profile (default both)",
    )
    ap.add_argument(
        "--warm",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="--virtual, --realtime-matrix: before each run, a pass of SECONDS on the same link (another "
        "seed); the run's station starts remembering it (protocol/link_memory.py)",
    )
    args = ap.parse_args()
    if args.realtime_matrix:
        rt_names = args.profiles or [f"fill-rtt{r}-loss{p}" for r in REALTIME_RTTS for p in REALTIME_LOSSES]
        minutes = args.minutes if "--minutes" in sys.argv else 2.0
        seeds = args.seeds if "--seeds" in sys.argv else [11]
        if args.table:
            print_realtime_table(
                [json.loads(x) for x in args.table.read_text().splitlines() if x.startswith("{")]
            )
        else:
            realtime_matrix(minutes, seeds, rt_names, args.tcp_cc, args.parts, args.warm, args.workload)
        return
    names = args.profiles or [
        *(f"fill-rtt{r}-loss{p}" for r in MATRIX_RTTS for p in MATRIX_LOSSES),
        "fill-rtt1.4-loss1-cuts",
    ]
    if args.table:
        runs = [json.loads(line) for line in args.table.read_text().splitlines() if line.startswith("{")]
        print_table(runs, args.minutes, args.seeds, args.held_out, names, args.transfers, args.workload)
        return
    if args.virtual:
        virtual_matrix(
            args.minutes,
            args.seeds,
            args.held_out,
            args.jobs,
            names,
            args.transfers,
            args.workload,
            args.warm,
            args.tcp_cc,
        )
        return
    asyncio.run(main_async(LONG if args.long else QUICK))


if __name__ == "__main__":
    main()
