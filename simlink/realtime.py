"""The real-time run: the real `ground serve` and `onboard sync --watch` processes, talking
through an emulated link configured from the same profile, fed the same planned posts.

Setup uses the project's library calls (keys, enrolment, station token, `onboard link add`);
the two long-running sides are separate processes started with this interpreter, so what is
measured is the shipped code over real TCP. Two links (simlink/realtime_link.py):

- linkemu's TCP proxy on loopback (the default): rate, delay, dark windows (stall, then cut
  ``cut_after_s`` in) and the same random-cut times as virtual time; it cannot drop packets
  inside TCP, so ``loss_percent`` is not applied (see profiles/README.md);
- with ``packet=True``, linkemu's packet link: ground and the station in two network
  namespaces, every IP packet through the emulator, which also applies ``loss_percent`` and
  the bottleneck queue (``buffer_kb``). Needs root and /dev/net/tun.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunError, SimError
from .link import random_cut_times
from .memory import WARM_SEED, get_memory, set_memory
from .profile import LinkProfile
from .realtime_link import LinkCounts, ProxyRunLink, open_link, packet_mode_problem
from .result import PostOutcome, RunResult, Sample
from .virtual import Progress, profile_summary, transfer_available, workload_summary
from .workload import NAMES, PlannedPost, Workload, accounts_for, load_workload, plan_posts

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 5.0
TRACE_S = 0.1  # the packet link's bytes in the network are read this often (in_network_trace)
STATION = "iss"
_Queued = tuple[str, float, int, int]  # a post's (author, queued_s, payload bytes, photos)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("ORBITPOST_HOME", None)
    return env


def run_realtime(
    profile: LinkProfile,
    workload: Workload,
    *,
    astronauts: int,
    duration_s: float,
    seed: int,
    workdir: Path,
    orbit_offset_s: float = 0.0,
    progress: Progress | None = None,
    packet: bool = False,
    tcp_cc: str | None = None,
    remembered: str | None = None,
    sync_options: tuple[str, ...] = (),
) -> RunResult:
    """Run the real processes for ``duration_s`` of wall time and measure them; ``packet``:
    through linkemu's packet link (real packet loss) instead of its TCP proxy; ``remembered``:
    the link memory a station left on an earlier pass (a RunResult's ``link_memory``), kept
    onboard before sync starts (without it the station starts as new, remembering nothing);
    ``sync_options``: more options for `onboard sync --watch` (e.g. ``--heartbeat 0``)."""
    if not transfer_available():
        raise SimError("real-time mode needs `ground serve` and `onboard sync` (issue #3) in this checkout")
    if packet and (problem := packet_mode_problem()):
        raise SimError(problem)
    link = open_link(profile, seed, packet=packet, tcp_cc=tcp_cc)
    return asyncio.run(
        _run(
            profile,
            workload,
            astronauts,
            duration_s,
            seed,
            workdir,
            orbit_offset_s,
            progress,
            link,
            remembered,
            sync_options,
        )
    )


def remembered_after_pass(
    profile: LinkProfile, warm_s: float, seed: int, workdir: Path, tcp_cc: str | None
) -> str:
    """The link memory a station leaves after a pass of ``warm_s`` on ``profile`` (no dark
    spell, no cut; seed ``seed`` + ``WARM_SEED``, starting from nothing), for ``run_realtime``'s
    ``remembered``: a run of a station that has been on this link before."""
    steady = dataclasses.replace(profile, cuts_per_hour=0.0, cuts_at_s=(), dark=())
    r = run_realtime(
        steady,
        load_workload("photo-backlog"),
        astronauts=4,
        duration_s=warm_s,
        seed=seed + WARM_SEED,
        workdir=workdir,
        packet=True,
        tcp_cc=tcp_cc,
    )
    if r.link_memory is None:
        raise SimError(f"the warm-up pass of {warm_s:g} s on {profile.name} measured no link to remember")
    return r.link_memory


def _setup(workdir: Path, names: list[str], wl: Workload) -> tuple[Path, Path, Path]:
    from ground.enroll import enroll
    from ground.home import GroundHome
    from ground.receipts import ground_key_line
    from ground.stations import add_station, write_token_file
    from onboard import keystore
    from onboard.home import Home

    if workdir.exists():
        shutil.rmtree(workdir)
    a, g, token = workdir / "onboard", workdir / "ground", workdir / "station.token"
    home = Home(a).ensure()
    gh = GroundHome(g)
    now_ms = int(time.time() * 1000)
    for n in names:
        key = keystore.new_key(home, n)
        enroll(gh.conn, n, keystore.public_line(key), list(accounts_for(n, wl.accounts_per_post)), now_ms)
    tok = add_station(gh.conn, STATION, now_ms)
    # The token the simulator's ground gives (before, none: the real processes spoke link
    # version 1 and receipts version 2 only, while virtual time ran what ships).
    from ground.window import link_versions

    from .transfer_driver import simulated_ground_decodes

    decodes = simulated_ground_decodes(link=link_versions()).to_token()
    write_token_file(
        token, station=STATION, token=tok, ground_key_line=ground_key_line(gh), ground_decodes=decodes
    )
    gh.close()
    return a, g, token


def _compose(a: Path, author: str, text: str, targets: list[str], photos: list[Any]) -> Any:
    """`onboard post`, as a library call in its own thread (and its own SQLite connection)."""
    from onboard import queue
    from onboard.compose import compose_post
    from onboard.home import Home

    with contextlib.closing(queue.connect(a / "onboard.db")) as conn:
        return compose_post(Home(a), conn, author=author, text=text, targets=targets, photos=photos)


async def _wait_port(
    link: ProxyRunLink, port: int, proc: asyncio.subprocess.Process, log: Path, timeout_s: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RunError(f"`ground serve` exited with {proc.returncode}; see {log}")
        if await link.ground_listens(port):
            return
        await asyncio.sleep(0.2)
    raise RunError(f"`ground serve` did not listen on port {port} within {timeout_s:.0f} s; see {log}")


async def _stop(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _ground_state(db: Path) -> dict[str, tuple[int | None, int, int, int | None]]:
    """item id -> (received_ms, accounts, accounts published, last published_ms)."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT i.id, i.received_ms, COUNT(p.account), SUM(p.state = 'published'), MAX(p.published_ms) "
            "FROM items i LEFT JOIN publications p ON p.item_id = i.id GROUP BY i.id"
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {r[0]: (r[1], r[2] or 0, r[3] or 0, r[4]) for r in rows}


@dataclass(frozen=True)
class _Watched:
    """The run's processes and proxy, as the sampling loop watches them."""

    ground: asyncio.subprocess.Process
    ground_log: Path
    sync: asyncio.subprocess.Process
    sync_log: Path
    link: ProxyRunLink
    ground_db: Path


async def _sample_until(
    w: _Watched,
    ids: dict[str, _Queued],
    posting: asyncio.Future[None],
    dark: list[tuple[float, float]],
    t0: float,
    duration_s: float,
    progress: Progress | None,
) -> tuple[list[Sample], float, list[int]]:
    """Sample ground's database and the link every SAMPLE_S until ``duration_s``: (samples,
    seconds posts waited on an up link, busy connections at each sample where the link can
    say); RunError as soon as a process exits or posting fails."""
    samples: list[Sample] = []
    busy: list[int] = []
    backlogged = 0.0
    last_up = 0
    next_t = SAMPLE_S
    while True:
        await asyncio.sleep(max(0.0, t0 + next_t - time.monotonic()))
        if posting.done() and posting.exception():
            raise RunError(f"posting failed: {posting.exception()}")
        for proc, name, log in (
            (w.ground, "ground serve", w.ground_log),
            (w.sync, "onboard sync", w.sync_log),
        ):
            if proc.returncode is not None:
                raise RunError(f"`{name}` exited with {proc.returncode} during the run; see {log}")
        state = await asyncio.to_thread(_ground_state, w.ground_db)
        waiting = sum(1 for i in ids if i not in state)
        published = sum(1 for i in ids if i in state and state[i][1] and state[i][2] == state[i][1])
        up_bytes = w.link.counts().up_bytes
        if (n := await w.link.busy_connections()) is not None:
            busy.append(n)
        samples.append(
            Sample(
                t_s=next_t,
                waiting=waiting,
                awaiting_publication=len(ids) - waiting - published,
                published=published,
                to_ground_bytes=up_bytes - last_up,
            )
        )
        last_up = up_bytes
        if waiting and not any(s <= next_t - SAMPLE_S / 2 < e for s, e in dark):
            backlogged += SAMPLE_S
        if progress:
            progress(next_t, len(ids), published)
        if next_t >= duration_s:
            return samples, backlogged, busy
        next_t = min(duration_s, next_t + SAMPLE_S)


async def _trace_in_network(
    link: ProxyRunLink, t0: float, duration_s: float, out: list[tuple[float, int]]
) -> None:
    """Append (seconds since ``t0``, station → ground bytes in the network) every TRACE_S until
    ``duration_s``; nothing on a link that cannot say (the TCP proxy)."""
    for i in range(int(duration_s / TRACE_S) + 1):
        await asyncio.sleep(max(0.0, t0 + i * TRACE_S - time.monotonic()))
        n = link.in_network_bytes()
        if n is None:
            return
        out.append((round(time.monotonic() - t0, 3), n))


def _outcomes(
    ids: dict[str, _Queued],
    state: dict[str, tuple[int | None, int, int, int | None]],
    wall0: float,
) -> list[PostOutcome]:
    """Each post's times on ground (seconds from the run's start), in the order they were queued."""
    posts = []
    for pid, (author, queued_s, payload, n_photos) in sorted(ids.items(), key=lambda kv: (kv[1][1], kv[0])):
        st = state.get(pid)
        received = None if st is None or st[0] is None else st[0] / 1000 - wall0
        pub = None
        if st is not None and st[1] and st[2] == st[1] and st[3] is not None:
            pub = st[3] / 1000 - wall0
        posts.append(
            PostOutcome(
                author=author,
                queued_s=round(queued_s, 3),
                payload_bytes=payload,
                photos=n_photos,
                received_s=received,
                published_s=pub,
            )
        )
    return posts


def _link_requests(db: Path) -> int:
    """Link requests ground counted over the run (0 where its database cannot say)."""
    with contextlib.closing(sqlite3.connect(db)) as gc, contextlib.suppress(sqlite3.Error):
        return int(gc.execute("SELECT COALESCE(SUM(requests), 0) FROM link_contacts").fetchone()[0])
    return 0


def _stored_upload_bytes(db: Path) -> int | None:
    """Upload bytes ground has stored (whole uploads and the received ranges of the rest):
    the link's goodput even while a backlog is not cleared, as virtual time's acked bytes."""
    with contextlib.closing(sqlite3.connect(db)) as gc, contextlib.suppress(sqlite3.Error):
        return int(gc.execute("SELECT COALESCE(SUM(received_bytes), 0) FROM transfers").fetchone()[0])
    return None


async def _compose_planned(a: Path, photos_dir: Path, i: int, p: PlannedPost) -> str:
    """Write the planned post's photos to files and queue it onboard; its id."""
    from onboard.compose import PhotoInput

    files = []
    for k, ph in enumerate(p.photos):
        f = photos_dir / f"{i}-{k}{'.jpg' if ph.media_type == 'image/jpeg' else '.png'}"
        f.write_bytes(ph.data)
        files.append(PhotoInput(path=f, alt=ph.alt))
    post = await asyncio.to_thread(_compose, a, p.author, p.text, list(p.targets), files)
    return str(post.id)


async def _post_later(
    a: Path, photos_dir: Path, plan: list[PlannedPost], first: int, ids: dict[str, _Queued], t0: float
) -> None:
    """Queue each planned post at its time in the run."""
    for i, p in enumerate(plan, start=first):
        await asyncio.sleep(max(0.0, t0 + p.at_s - time.monotonic()))
        pid = await _compose_planned(a, photos_dir, i, p)
        ids[pid] = (p.author, time.monotonic() - t0, p.payload_bytes, len(p.photos))


async def _random_cuts(
    link: ProxyRunLink, profile: LinkProfile, duration_s: float, seed: int, t0: float
) -> None:
    """Cut every connection at virtual time's random-cut times (not while dark)."""
    for t in random_cut_times(profile, duration_s, seed):
        await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
        if not link.dark:
            link.cut_all()


async def _start(
    prefix: list[str], args: list[str], log: Path, env: dict[str, str], cwd: Path
) -> asyncio.subprocess.Process:
    """One of the run's processes (``prefix``: the namespace to run it in), output to ``log``."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            *args,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=str(cwd),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Measured:
    """What the run measured, for its RunResult."""

    ids: dict[str, _Queued]
    samples: list[Sample]
    backlogged: float
    counts: LinkCounts
    dark: list[tuple[float, float]]
    wall0: float
    busy_mean: float | None  # station connections with unacknowledged bytes, mean over samples
    stored: int | None  # upload bytes ground had stored at the run's end
    trace: tuple[tuple[float, int], ...] = ()  # _trace_in_network's readings


async def _run(
    profile: LinkProfile,
    wl: Workload,
    astronauts: int,
    duration_s: float,
    seed: int,
    workdir: Path,
    orbit_offset_s: float,
    progress: Progress | None,
    link: ProxyRunLink,
    remembered: str | None = None,
    sync_options: tuple[str, ...] = (),
) -> RunResult:
    from linkemu.proxy import LossWindow
    from onboard.home import Home
    from onboard.link import add_link

    plan = plan_posts(wl, astronauts, duration_s, seed)
    workdir = workdir.resolve()  # the children run with cwd=workdir: hand them absolute paths
    a, g, token = _setup(workdir, list(NAMES[:astronauts]), wl)
    photos_dir = workdir / "photos"
    photos_dir.mkdir()
    # Posts queued at the start are onboard before sync starts, as in virtual time (and
    # composing them does not compete with the link's forwarder for the CPU mid-run).
    ids: dict[str, _Queued] = {}
    backlog = [p for p in plan if p.at_s <= 0]
    for i, p in enumerate(backlog):
        ids[await _compose_planned(a, photos_dir, i, p)] = (p.author, 0.0, p.payload_bytes, len(p.photos))
    port, env = _free_port(), _env()
    glog, slog = workdir / "ground.log", workdir / "sync.log"
    ground: asyncio.subprocess.Process | None = None
    sync: asyncio.subprocess.Process | None = None
    await link.open()
    try:
        serve = ["serve", "--host", link.ground_host, "--port", str(port)]
        ground = await _start(
            link.ground_argv(), ["-m", "ground", "--home", str(g), *serve], glog, env, workdir
        )
        await _wait_port(link, port, ground, glog)
        add_link(Home(a), await link.connect(port), token)
        if remembered is not None:
            set_memory(Home(a), remembered)
        sync_args = ["-m", "onboard", "--home", str(a), "sync", "--watch", *sync_options]
        sync = await _start(link.station_argv(), sync_args, slog, env, workdir)
        t0, wall0 = time.monotonic(), time.time()
        dark = profile.dark_windows(duration_s, orbit_offset_s)
        link.schedule_loss(
            LossWindow(start_s=s, duration_s=e - s, cut_after_s=profile.cut_after_s) for s, e in dark
        )
        cutter = asyncio.ensure_future(_random_cuts(link, profile, duration_s, seed, t0))
        posting = asyncio.ensure_future(
            _post_later(a, photos_dir, plan[len(backlog) :], len(backlog), ids, t0)
        )
        trace: list[tuple[float, int]] = []
        tracer = asyncio.ensure_future(_trace_in_network(link, t0, duration_s, trace))
        watched = _Watched(ground, glog, sync, slog, link, g / "ground.db")
        samples, backlogged, busy = await _sample_until(watched, ids, posting, dark, t0, duration_s, progress)
        posting.cancel()
        cutter.cancel()
        tracer.cancel()
        # What ground stored by the run's end: the processes keep moving data while they stop.
        stored = await asyncio.to_thread(_stored_upload_bytes, g / "ground.db")
        measured = _Measured(
            ids=ids,
            samples=samples,
            backlogged=backlogged,
            counts=link.counts(),
            dark=dark,
            wall0=wall0,
            busy_mean=sum(busy) / len(busy) if busy else None,
            stored=stored,
            trace=tuple(trace),
        )
    finally:
        if sync is not None:
            await _stop(sync, signal.SIGINT)
        if ground is not None:
            await _stop(ground, signal.SIGTERM)
        tcp_station, tcp_ground = await link.tcp_counts()
        await link.close()
    result = _result(profile, wl, astronauts, duration_s, seed, link, g / "ground.db", measured)
    return dataclasses.replace(
        result, link_memory=get_memory(Home(a)), tcp_station=tcp_station, tcp_ground=tcp_ground
    )


def _notes(profile: LinkProfile, link: ProxyRunLink, counts: LinkCounts) -> tuple[str, ...]:
    if link.kind == "proxy":
        return (
            f"loss_percent={profile.loss * 100:g} % is not applied by linkemu's proxy: a userspace proxy cannot "
            "drop packets inside TCP; run with --packet (root, TUN) or in virtual time to see its cost",
        )
    drops = ", ".join(f"{n:,} {cause}" for cause, n in sorted(counts.drops.items()) if n) or "none"
    return (
        f"loss_percent={profile.loss * 100:g} % applied to every IP packet by linkemu's packet link "
        f"(kernel TCP, congestion control {link.tcp_cc}, both ways); packets dropped: {drops}",
        "bytes on the wire are whole IP packets here (headers, acks, retransmissions; MTU 1500), not "
        "the HTTP bytes linkemu's proxy counts; gaps drop packets and leave cutting to TCP's timers",
    )


def _result(
    profile: LinkProfile,
    wl: Workload,
    astronauts: int,
    duration_s: float,
    seed: int,
    link: ProxyRunLink,
    db: Path,
    m: _Measured,
) -> RunResult:
    kind = link.kind
    dark_s = sum(e - s for s, e in m.dark)
    return RunResult(
        mode="realtime",
        profile=profile_summary(profile),
        workload=workload_summary(wl),
        astronauts=astronauts,
        seed=seed,
        duration_s=duration_s,
        transfer=f"transfer: `onboard sync --watch` and `ground serve` processes through linkemu's {kind} link",
        posts=tuple(_outcomes(m.ids, _ground_state(db), m.wall0)),
        refused_onboard=0,
        rejected=0,
        wire_to_ground_bytes=m.counts.up_bytes,
        wire_to_station_bytes=m.counts.down_bytes,
        tcp_retransmitted_bytes=None,
        # The packet link counts whole IP packets (headers, acks, retransmissions): virtual time's ip_bytes.
        ip_bytes=m.counts.up_bytes + m.counts.down_bytes if kind == "packet" else None,
        app_resent_bytes=None,
        requests=_link_requests(db),
        cuts_dark=m.counts.cuts_dark,
        cuts_random=m.counts.cuts_random,
        dark_windows=tuple(m.dark),
        up_s=duration_s - dark_s,
        backlogged_up_s=m.backlogged,
        sample_s=SAMPLE_S,
        samples=tuple(m.samples),
        notes=_notes(profile, link, m.counts),
        transfer_acked_bytes=m.stored,
        link_drops=dict(m.counts.drops) if kind == "packet" else None,
        busy_connections_mean=m.busy_mean,
        # Packet mode: a fall throws away what the emulator held (TCP's out-of-order queue at
        # ground outlives a short spell, so none of it is counted as held).
        cut_events=len(m.counts.in_network_at_falls),
        cut_in_network_bytes=sum(m.counts.in_network_at_falls),
        cut_costs=tuple((n, 0) for n in m.counts.in_network_at_falls),
        in_network_trace=m.trace,
    )
