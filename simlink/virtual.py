"""The virtual-time run: real onboard and ground code over the simulated link, on a virtual clock."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .bundle_driver import BundlePostDriver
from .clock import EventLoop
from .errors import SimError
from .link import SimLink, WayStats
from .memory import WARM_SEED, get_memory, set_memory
from .profile import LinkProfile
from .result import PostOutcome, RunResult, Sample, TcpCounts
from .system import EPOCH_MS, Ground, Station, Tracker
from .workload import NAMES, Workload, accounts_for, load_workload, plan_posts

SAMPLE_S = 60.0
NOTES = (
    "virtual time: TCP is modelled (Linux's CUBIC with HyStart, SACK/RACK loss recovery, tail loss probes, slow start after idle); "
    "CPU time on either side is not (ground verifies and stores instantly on the virtual clock)",
)
BACKLOG_SAMPLE_S = 1.0
# `ground serve` runs its publisher every second, and at once when a bundle commits over the
# link (ground/server.py bundle_committed): new posts are published without waiting the tick.
PUBLISH_WAKE_S = 0.0

Progress = Callable[[float, int, int], None]  # (virtual seconds done, posts queued so far, posts published)


def _scratch_dir() -> str | None:
    # RAM-backed when available: the run fsyncs like the real thing, and tmpfs makes that cheap.
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


def transfer_available() -> bool:
    """Is the resumable transfer (protocol/transfer.py and its drivers) in this checkout?"""
    return importlib.util.find_spec("protocol.transfer") is not None and (
        importlib.util.find_spec("ground.server") is not None
    )


class _OsWithEntropy:
    """``os`` as seen by one module, with ``urandom`` drawn from the run's seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def urandom(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@contextmanager
def virtual_wall_clock(loop: EventLoop, seed: int) -> Iterator[None]:
    """Give the real code the virtual clock where it reads the wall clock itself.

    onboard/link.py stamps bundles with ``_now_ms()`` and ``os.urandom`` ids, and ground/server.py
    stamps receipt documents with ``_now_ms()``. Sizes would not change, but transfer order (by
    time, then by sha256) would, so a seed would no longer fix the report. Restored on exit.
    """
    patches: list[tuple[Any, str, Any]] = []
    now_ms = lambda: EPOCH_MS + round(loop.now * 1000)  # noqa: E731
    if transfer_available():
        import ground.server
        import onboard.link

        patches += [
            (onboard.link, "_now_ms", now_ms),
            (onboard.link, "os", _OsWithEntropy(random.Random(f"bundle-ids-{seed}"))),
            (ground.server, "_now_ms", now_ms),
        ]
    saved = [(m, name, getattr(m, name)) for m, name, _ in patches]
    try:
        for m, name, value in patches:
            setattr(m, name, value)
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


def profile_summary(p: LinkProfile) -> dict[str, object]:
    d = asdict(p)
    d["dark"] = [[w.start_s, w.duration_s] for w in p.dark]
    return d


def workload_summary(w: Workload) -> dict[str, object]:
    return {
        "name": w.name,
        "description": w.description,
        "posts_per_astronaut_per_hour": w.posts_per_astronaut_per_hour,
        "backlog_posts_per_astronaut": w.backlog_posts_per_astronaut,
        "photo_post_fraction": w.photo_post_fraction,
        "accounts_per_post": w.accounts_per_post,
        "photos": [p.name for p in w.photos],
    }


TRANSFERS = ("transfer", "transfer-v1", "transfer-shared", "bundle-post")


def _check_transfer(transfer: str) -> str:
    """The transfer to run ("auto" resolved); SimError for one this tree cannot run."""
    if transfer == "auto":
        transfer = "transfer" if transfer_available() else "bundle-post"
    if transfer in ("transfer", "transfer-v1") and not transfer_available():
        raise SimError(f"--transfer {transfer} needs protocol/transfer.py and ground/server.py (issue #3)")
    if transfer not in TRANSFERS:
        raise SimError(
            f"--transfer must be auto, transfer, transfer-v1, transfer-shared or bundle-post, not {transfer!r}"
        )
    return transfer


class _Publisher:
    """Wakes ground's publisher once after anything arrives (PUBLISH_WAKE_S later), not per post."""

    def __init__(self, loop: EventLoop, ground: Ground) -> None:
        self.loop, self.ground = loop, ground
        self.timer: object | None = None

    def schedule(self) -> None:
        if self.timer is None:
            self.timer = self.loop.after(PUBLISH_WAKE_S, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.ground.publish(self.loop.now)


class _Sampler:
    """The report's per-minute samples and the count of seconds posts waited on an up link."""

    def __init__(
        self,
        loop: EventLoop,
        link: SimLink,
        tracker: Tracker,
        duration_s: float,
        trace_s: float | None = None,
    ) -> None:
        self.loop, self.link, self.tracker, self.duration_s = loop, link, tracker, duration_s
        self.samples: list[Sample] = []
        self.backlogged = 0
        self.trace: list[tuple[float, int]] = []
        self.trace_s = trace_s
        loop.at(SAMPLE_S, self._sample)
        loop.at(BACKLOG_SAMPLE_S / 2, self._sample_backlog)
        if trace_s is not None:
            loop.at(0.0, self._trace)

    def _sample(self) -> None:
        waiting, awaiting, done = self.tracker.counts()
        minute = int(self.loop.now // 60) - 1
        self.samples.append(
            Sample(
                t_s=self.loop.now,
                waiting=waiting,
                awaiting_publication=awaiting,
                published=done,
                to_ground_bytes=self.link.to_ground.stats.per_minute.get(minute, 0),
            )
        )
        if self.loop.now + SAMPLE_S <= self.duration_s:
            self.loop.after(SAMPLE_S, self._sample)

    def _trace(self) -> None:
        self.trace.append((round(self.loop.now, 3), self.link.in_network_bytes()))
        if self.trace_s is not None and self.loop.now + self.trace_s <= self.duration_s + 1e-9:
            self.loop.after(self.trace_s, self._trace)

    def _sample_backlog(self) -> None:
        if not self.link.is_dark(self.loop.now) and self.tracker.counts()[0] > 0:
            self.backlogged += 1
        if self.loop.now + BACKLOG_SAMPLE_S < self.duration_s:
            self.loop.after(BACKLOG_SAMPLE_S, self._sample_backlog)


def _make_driver(
    transfer: str,
    loop: EventLoop,
    link: SimLink,
    station: Station,
    ground: Ground,
    tracker: Tracker,
    publisher: _Publisher,
    tmp: Path,
) -> Any:
    """The station's sender for ``transfer``, driving the real protocol code over ``link``."""
    if transfer == "bundle-post":
        return BundlePostDriver(loop, link, station, ground, tracker, publisher.schedule)
    from .transfer_driver import TransferDriver

    return TransferDriver(
        loop,
        link,
        station,
        ground,
        tracker,
        publisher.schedule,
        tmp,
        v1=transfer == "transfer-v1",
        shared=transfer == "transfer-shared",
    )


def _run_clock(loop: EventLoop, tracker: Tracker, duration_s: float, progress: Progress | None) -> None:
    # In steps of 10 virtual minutes, so a long run can report progress.
    t = 0.0
    while t < duration_s:
        t = min(duration_s, t + 600.0)
        loop.run_until(t)
        if progress:
            _, _, done = tracker.counts()
            progress(t, len(tracker.posts), done)


def run_virtual(
    profile: LinkProfile,
    workload: Workload,
    *,
    astronauts: int,
    duration_s: float,
    seed: int,
    orbit_offset_s: float = 0.0,
    transfer: str = "auto",
    progress: Progress | None = None,
    trace_s: float | None = None,
    remembered: str | None = None,
    tcp_cc: str | None = None,
) -> RunResult:
    """Simulate ``duration_s`` of the whole system; same arguments, same result. With
    ``trace_s``, the bytes in the network are read that often (``in_network_trace``);
    ``remembered``: the link memory a station left on an earlier pass (``run_realtime``'s);
    ``tcp_cc``: the modelled TCP's congestion control (None: simlink.link's, cubic)."""
    plan = plan_posts(workload, astronauts, duration_s, seed)
    names = list(NAMES[:astronauts])
    loop = EventLoop()
    link = SimLink(
        loop, profile, duration_s=duration_s, seed=seed, orbit_offset_s=orbit_offset_s, tcp_cc=tcp_cc
    )
    tracker = Tracker()
    transfer = _check_transfer(transfer)
    with (
        tempfile.TemporaryDirectory(prefix="orbitpost-sim-", dir=_scratch_dir()) as tmp,
        virtual_wall_clock(loop, seed),
    ):
        station = Station(Path(tmp) / "onboard", names, seed, tracker)
        if remembered is not None:
            set_memory(station.home, remembered)
        ground = Ground(
            Path(tmp) / "ground",
            station,
            {n: accounts_for(n, workload.accounts_per_post) for n in names},
            tracker,
        )
        publisher = _Publisher(loop, ground)
        driver = _make_driver(transfer, loop, link, station, ground, tracker, publisher, Path(tmp))

        def on_post(p: object) -> None:
            station.post(p, loop.now)  # type: ignore[arg-type]
            driver.kick()

        for p in plan:
            loop.at(p.at_s, on_post, p)
        sampler = _Sampler(loop, link, tracker, duration_s, trace_s)
        _run_clock(loop, tracker, duration_s, progress)
        driver.finish()
        memory = get_memory(station.home)
        station.close()
        ground.close()
    result = _result(profile, workload, astronauts, seed, duration_s, link, tracker, driver, sampler)
    return dataclasses.replace(result, link_memory=memory)


def _result(
    profile: LinkProfile,
    workload: Workload,
    astronauts: int,
    seed: int,
    duration_s: float,
    link: SimLink,
    tracker: Tracker,
    driver: Any,
    sampler: _Sampler,
) -> RunResult:
    """What the run measured, as the report reads it."""
    dark = tuple((s, min(e, duration_s)) for s, e in link.dark if s < duration_s)
    dark_s = sum(e - s for s, e in dark)
    outcomes = tuple(
        PostOutcome(
            author=r.author,
            queued_s=r.queued_s,
            payload_bytes=r.payload_bytes,
            photos=r.photos,
            received_s=r.received_s,
            published_s=r.published_s,
        )
        for r in sorted(tracker.posts.values(), key=lambda r: (r.queued_s, r.post_id))
    )
    up, down = link.to_ground.stats, link.to_station.stats
    return RunResult(
        mode="virtual",
        profile=profile_summary(profile),
        workload=workload_summary(workload),
        astronauts=astronauts,
        seed=seed,
        duration_s=duration_s,
        transfer=f"{driver.name}: {driver.description}",
        posts=outcomes,
        refused_onboard=len(tracker.refused),
        rejected=len(tracker.rejected),
        wire_to_ground_bytes=up.stream_bytes,
        wire_to_station_bytes=down.stream_bytes,
        tcp_retransmitted_bytes=up.retransmitted_bytes + down.retransmitted_bytes,
        ip_bytes=up.ip_bytes + down.ip_bytes,
        app_resent_bytes=driver.stats()["app_resent_bytes"],
        requests=driver.stats()["requests"],
        transfer_acked_bytes=driver.stats().get("acked_bytes"),
        cut_events=link.cut_events,
        cut_in_network_bytes=link.cut_in_network_bytes,
        cut_costs=tuple(link.cut_costs),
        aborted_in_network_bytes=link.aborted_in_network_bytes,
        syns=link.syns,
        syns_dark=link.syns_dark,
        tcp_station=tcp_counts(up),
        tcp_ground=tcp_counts(down),
        cuts_dark=link.cuts_dark,
        cuts_random=link.cuts_random,
        dark_windows=dark,
        up_s=duration_s - dark_s,
        backlogged_up_s=sampler.backlogged * BACKLOG_SAMPLE_S,
        sample_s=SAMPLE_S,
        samples=tuple(sampler.samples),
        traffic_by_kind=getattr(driver, "traffic", None),
        bundle_opens=tuple(getattr(driver, "bundle_opens", ())),
        notes=NOTES,
        in_network_trace=tuple(sampler.trace),
    )


def remembered_after_virtual_pass(profile: LinkProfile, warm_s: float, seed: int) -> str:
    """The link memory a station leaves after a virtual pass of ``warm_s`` on ``profile`` (no
    dark spell, no cut; seed ``seed`` + ``WARM_SEED``), for ``run_virtual``'s ``remembered``
    (``remembered_after_pass`` in real time)."""
    steady = dataclasses.replace(profile, cuts_per_hour=0.0, cuts_at_s=(), dark=())
    r = run_virtual(
        steady, load_workload("photo-backlog"), astronauts=4, duration_s=warm_s, seed=seed + WARM_SEED
    )
    if r.link_memory is None:
        raise SimError(f"the warm-up pass of {warm_s:g} s on {profile.name} measured no link to remember")
    return r.link_memory


def tcp_counts(way: WayStats) -> TcpCounts:
    """The model's TCP events on one way (its acks are not counted as segments)."""
    return TcpCounts(
        segments=way.segments,
        resent_segments=way.resent_segments,
        timeouts=way.timeouts,
        loss_probes=way.loss_probes,
    )
