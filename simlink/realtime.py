"""The real-time run: the real `ground serve` and `onboard sync --watch` processes, talking
through linkemu's proxy configured from the same profile, fed the same planned posts.

Setup uses the project's library calls (keys, enrolment, station token, `onboard link add`);
the two long-running sides are separate processes started with this interpreter, so what is
measured is the shipped code over loopback TCP. The proxy honours rate, delay, dark windows
(stall, then cut ``cut_after_s`` in) and the same random-cut times as virtual time; it cannot
drop packets inside TCP, so ``loss_percent`` is not applied here (see profiles/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .profile import LinkProfile
from .result import PostOutcome, RunResult, Sample
from .virtual import Progress, profile_summary, transfer_available, workload_summary
from .workload import NAMES, Workload, accounts_for, plan_posts

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 5.0
STATION = "iss"


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
) -> RunResult:
    """Run the real processes for ``duration_s`` of wall time and measure them."""
    if not transfer_available():
        raise SimError("real-time mode needs `ground serve` and `onboard sync` (issue #3) in this checkout")
    return asyncio.run(
        _run(profile, workload, astronauts, duration_s, seed, workdir, orbit_offset_s, progress)
    )


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
    write_token_file(token, station=STATION, token=tok, ground_key_line=ground_key_line(gh))
    gh.close()
    return a, g, token


def _compose(a: Path, author: str, text: str, targets: list[str], photos: list[Any]) -> Any:
    """`onboard post`, as a library call in its own thread (and its own SQLite connection)."""
    from onboard import queue
    from onboard.compose import compose_post
    from onboard.home import Home

    with contextlib.closing(queue.connect(a / "onboard.db")) as conn:
        return compose_post(Home(a), conn, author=author, text=text, targets=targets, photos=photos)


async def _wait_port(port: int, proc: asyncio.subprocess.Process, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RunError(f"`ground serve` exited with {proc.returncode}; see {log}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
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
    proxy: Any
    ground_db: Path


async def _sample_until(
    w: _Watched,
    ids: dict[str, tuple[str, float, int, int]],
    posting: asyncio.Future[None],
    dark: list[tuple[float, float]],
    t0: float,
    duration_s: float,
    progress: Progress | None,
) -> tuple[list[Sample], float]:
    """Sample ground's database and the proxy every SAMPLE_S until ``duration_s``: (samples,
    seconds posts waited on an up link); RunError as soon as a process exits or posting fails."""
    samples: list[Sample] = []
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
        up_bytes = w.proxy.stats.bytes_up
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
            return samples, backlogged
        next_t = min(duration_s, next_t + SAMPLE_S)


def _outcomes(
    ids: dict[str, tuple[str, float, int, int]],
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


async def _run(
    profile: LinkProfile,
    wl: Workload,
    astronauts: int,
    duration_s: float,
    seed: int,
    workdir: Path,
    orbit_offset_s: float,
    progress: Progress | None,
) -> RunResult:
    from linkemu.proxy import Direction, LinkProxy, LossWindow
    from onboard.compose import PhotoInput
    from onboard.home import Home
    from onboard.link import add_link

    names = list(NAMES[:astronauts])
    plan = plan_posts(wl, astronauts, duration_s, seed)
    workdir = workdir.resolve()  # the children run with cwd=workdir: hand them absolute paths
    a, g, token = _setup(workdir, names, wl)
    photos_dir = workdir / "photos"
    photos_dir.mkdir()
    port = _free_port()
    env = _env()
    glog, slog = workdir / "ground.log", workdir / "sync.log"
    with glog.open("wb") as out:  # the child keeps its own copy of the descriptor
        ground = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ground", "--home", str(g), "serve", "--host", "127.0.0.1", "--port", str(port),
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=str(workdir),
        )  # fmt: skip
    sync: asyncio.subprocess.Process | None = None
    proxy = LinkProxy(
        "127.0.0.1",
        port,
        up=Direction(rate_bps=profile.to_ground_bps, delay_s=profile.one_way_delay_s),
        down=Direction(rate_bps=profile.to_station_bps, delay_s=profile.one_way_delay_s),
        seed=seed,
    )
    try:
        await _wait_port(port, ground, glog)
        await proxy.start()
        add_link(Home(a), proxy.url, token)
        with slog.open("wb") as out:
            sync = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "onboard", "--home", str(a), "sync", "--watch",
                stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=str(workdir),
            )  # fmt: skip
        t0 = time.monotonic()
        wall0 = time.time()
        dark = profile.dark_windows(duration_s, orbit_offset_s)
        proxy.schedule_loss(
            LossWindow(start_s=s, duration_s=e - s, cut_after_s=profile.cut_after_s) for s, e in dark
        )

        async def random_cuts() -> None:
            for t in random_cut_times(profile, duration_s, seed):
                await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
                if not proxy.dark:
                    proxy.cut_all()

        cutter = asyncio.ensure_future(random_cuts())
        ids: dict[str, tuple[str, float, int, int]] = {}  # id -> (author, queued_s, payload, photos)

        async def poster() -> None:
            for i, p in enumerate(plan):
                await asyncio.sleep(max(0.0, t0 + p.at_s - time.monotonic()))
                files = []
                for k, ph in enumerate(p.photos):
                    f = photos_dir / f"{i}-{k}{'.jpg' if ph.media_type == 'image/jpeg' else '.png'}"
                    f.write_bytes(ph.data)
                    files.append(PhotoInput(path=f, alt=ph.alt))
                post = await asyncio.to_thread(_compose, a, p.author, p.text, list(p.targets), files)
                ids[post.id] = (p.author, time.monotonic() - t0, p.payload_bytes, len(p.photos))

        posting = asyncio.ensure_future(poster())
        assert sync is not None
        samples, backlogged = await _sample_until(
            _Watched(ground, glog, sync, slog, proxy, g / "ground.db"),
            ids,
            posting,
            dark,
            t0,
            duration_s,
            progress,
        )
        posting.cancel()
        cutter.cancel()
        stats = proxy.stats
        wire_up, wire_down = stats.bytes_up, stats.bytes_down
    finally:
        if sync is not None:
            await _stop(sync, signal.SIGINT)
        await _stop(ground, signal.SIGTERM)
        await proxy.close()
        # Let the proxy's per-connection handlers finish before asyncio.run cancels them.
        await asyncio.sleep(0.2)

    posts = _outcomes(ids, _ground_state(g / "ground.db"), wall0)
    requests = _link_requests(g / "ground.db")
    dark_s = sum(e - s for s, e in dark)
    return RunResult(
        mode="realtime",
        profile=profile_summary(profile),
        workload=workload_summary(wl),
        astronauts=astronauts,
        seed=seed,
        duration_s=duration_s,
        transfer="transfer: `onboard sync --watch` and `ground serve` processes through linkemu's proxy",
        posts=tuple(posts),
        refused_onboard=0,
        rejected=0,
        wire_to_ground_bytes=wire_up,
        wire_to_station_bytes=wire_down,
        tcp_retransmitted_bytes=None,
        ip_bytes=None,
        app_resent_bytes=None,
        requests=requests,
        cuts_dark=stats.loss_cuts,
        cuts_random=stats.random_cuts,
        dark_windows=tuple(dark),
        up_s=duration_s - dark_s,
        backlogged_up_s=backlogged,
        sample_s=SAMPLE_S,
        samples=tuple(samples),
        notes=(
            f"loss_percent={profile.loss * 100:g} % is not applied in real time: a userspace proxy cannot drop "
            "packets inside TCP; run the same profile in virtual time to see its cost",
        ),
    )
