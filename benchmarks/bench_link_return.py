"""After a loss of signal: how soon a text post written in the dark is published once the link
returns (issue 14: within 2 RTT), in virtual time (simlink drives the shipped sender, race and
ground), and what the connection race costs in SYNs sent into the dark.

    python benchmarks/bench_link_return.py --profiles lunar iss-ku degraded --seeds 7 8 9
    python benchmarks/bench_link_return.py --profiles lunar --seeds 11 12 13 --hours 12
    python benchmarks/bench_link_return.py --before 0.3 1.3 3.8   # one post, believed up
    python benchmarks/bench_link_return.py --before 2 3.8 6.5 --dark 10 --first 610 --cut-after 1e6 \
        --off hedge_kept_posts=0   # a short dark nothing noticed: the kept connection's copy
    python benchmarks/bench_link_return.py --short-darks --off hedge_kept_posts=0   # all of them
    python benchmarks/bench_link_return.py --before 3.8 --profiles iss-ku --realtime   # root

Each run prints one JSON line (profile, seed, the posts' times in RTTs, SYNs); the table at the
end pools the seeds of each profile: posts, median, 90th percentile, above 2 RTT, max. Tune on
seeds 7–9; report 11–13 (held out) separately (docs/link.md "After a loss of signal").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simlink.profile import load_profile  # noqa: E402
from simlink.result import RunResult  # noqa: E402
from simlink.virtual import run_virtual  # noqa: E402
from simlink.workload import load_workload  # noqa: E402


def run_dark_posts(
    profile_name: str, hours: float, seed: int, **change: float
) -> tuple[list[float], RunResult, float]:
    """Text posts only (3 an hour per astronaut, 4 astronauts), no random cuts: for each post
    queued inside a dark window, (published − window end) / RTT, sorted; the run; the RTT."""
    prof = dataclasses.replace(load_profile(profile_name), cuts_per_hour=0.0, **change)  # type: ignore[arg-type]
    wl = dataclasses.replace(
        load_workload("burst"),
        photo_post_fraction=0.0,
        backlog_posts_per_astronaut=0,
        posts_per_astronaut_per_hour=3,
    )
    r = run_virtual(prof, wl, astronauts=4, duration_s=hours * 3600, seed=seed)
    out = []
    for p in r.posts:
        for start, end in r.dark_windows:
            if start <= p.queued_s < end:
                if p.published_s is None:
                    raise AssertionError(
                        f"a post written in the dark at {p.queued_s:.0f} s was never published"
                    )
                out.append((p.published_s - end) / prof.rtt_s)
    return sorted(out), r, prof.rtt_s


def post_before_return(
    profile_name: str,
    before_s: float,
    *,
    cut_after_s: float | None = None,
    dark_s: float | None = None,
    first_s: float = 600.0,
    **changes: float | None,
) -> float:
    """A post written ``before_s`` before the first dark window's end while the sender believes
    the link up (one post 10 minutes before the window taught it the round trip), no random
    loss or cuts: (published − window end) / RTT. ``cut_after_s``: when the dark drops the
    connections (None: the profile's; 1e6: never, as a real link). ``dark_s``: the first window
    lasts this long instead (a short dropout the heartbeat may not notice). ``first_s``: how
    long before the window the first post is written (the heartbeats' phase). ``changes``:
    SenderConfig fields, e.g. ``heartbeat_s=None`` (docs/link.md "A dark with nothing in flight")."""
    import simlink.transfer_driver as td
    import simlink.virtual as virtual
    from protocol.transfer import SenderConfig
    from simlink.workload import PlannedPost, accounts_for

    prof = dataclasses.replace(load_profile(profile_name), loss=0.0, cuts_per_hour=0.0)
    if cut_after_s is not None:
        prof = dataclasses.replace(prof, cut_after_s=cut_after_s)
    if dark_s is not None:
        first = prof.dark[0]
        prof = dataclasses.replace(prof, dark=(dataclasses.replace(first, duration_s=dark_s), *prof.dark[1:]))
    start, end = prof.dark_windows(20000.0)[0]
    wl = dataclasses.replace(load_workload("burst"), photo_post_fraction=0.0, backlog_posts_per_astronaut=0)
    plan = [
        PlannedPost(at_s=t, author="alice", text=f"post at {t}", photos=(), targets=accounts_for("alice", 1))
        for t in (max(1.0, start - first_s), end - before_s)
    ]
    saved = virtual.plan_posts, td.SenderConfig
    try:
        virtual.plan_posts = lambda *a: plan  # type: ignore[assignment]
        if changes:
            td.SenderConfig = lambda **kw: SenderConfig(**changes, **kw)  # type: ignore[assignment,misc,arg-type]
        r = run_virtual(prof, wl, astronauts=1, duration_s=end + 120.0, seed=7)
    finally:
        virtual.plan_posts, td.SenderConfig = saved
    (p,) = [p for p in r.posts if p.queued_s > start]
    assert p.published_s is not None
    return (p.published_s - end) / prof.rtt_s


def post_before_return_realtime(
    profile_name: str,
    before_s: float,
    *,
    heartbeat: bool = True,
    dark_s: float | None = None,
    first_at_s: float = 60.0,
) -> float:
    """``post_before_return`` with the real `ground serve` and `onboard sync --watch` through
    linkemu's packet link (root, TUN), whose dark drops packets and closes nothing: the run
    starts 6 minutes before the first dark window (a post at ``first_at_s`` teaches the round
    trip and sets the heartbeats' phase) and ends a minute after it, so it lasts the window +
    7 min. ``heartbeat=False``: `sync --heartbeat 0`. ``dark_s``: the window lasts this long."""
    import tempfile

    import simlink.realtime as realtime
    from simlink.workload import PlannedPost, accounts_for

    prof = dataclasses.replace(load_profile(profile_name), loss=0.0, cuts_per_hour=0.0)
    if dark_s is not None:
        window = prof.dark[0]
        prof = dataclasses.replace(
            prof, dark=(dataclasses.replace(window, duration_s=dark_s), *prof.dark[1:])
        )
    first, _ = prof.dark_windows(prof.orbit_s or 1e9)[0]
    offset = first - 360.0
    start, end = prof.dark_windows(first + 7200.0, offset)[0]
    wl = dataclasses.replace(load_workload("burst"), photo_post_fraction=0.0, backlog_posts_per_astronaut=0)
    plan = [
        PlannedPost(
            at_s=t, author="alice", text=f"post at {t:.1f}", photos=(), targets=accounts_for("alice", 1)
        )
        for t in (first_at_s, end - before_s)
    ]
    saved = realtime.plan_posts
    try:
        realtime.plan_posts = lambda *a: plan  # type: ignore[assignment]
        with tempfile.TemporaryDirectory() as d:
            r = realtime.run_realtime(
                prof,
                wl,
                astronauts=1,
                duration_s=end + 60.0,
                seed=7,
                workdir=Path(d),
                orbit_offset_s=offset,
                packet=True,
                sync_options=() if heartbeat else ("--heartbeat", "0"),
            )
    finally:
        realtime.plan_posts = saved
    (p,) = [p for p in r.posts if p.queued_s > start]
    if p.published_s is None:
        raise AssertionError(f"the post written {before_s:g} s before the return was never published")
    return (p.published_s - end) / prof.rtt_s


SHORT_DARKS_S = (10.0, 20.0, 30.0, 45.0, 58.0)
SHORT_PHASES_S = (5.0, 10.0, 30.0)  # the first post this much more than 600 s before the dark
SHORT_BEFORE_S = tuple(round(0.1 * k, 1) for k in range(1, 20)) + tuple(2.0 + 0.5 * k for k in range(37))


def short_darks(profile_name: str, cut_after_s: float | None, **changes: float | None) -> dict[str, Any]:
    """Darks shorter than the heartbeat's minute (``SHORT_DARKS_S``), each at three heartbeat
    phases, and a post written 0.1-20 s before the end of each while the link is believed up:
    how many were published more than 2 RTT after the return, and the latest (with its dark,
    phase and seconds before the end)."""
    times = [
        (
            post_before_return(
                profile_name, x, cut_after_s=cut_after_s, dark_s=d, first_s=600.0 + ph, **changes
            ),
            d,
            ph,
            x,
        )
        for d in SHORT_DARKS_S
        for ph in SHORT_PHASES_S
        for x in SHORT_BEFORE_S
        if x < d
    ]
    worst = max(times)
    return {
        "posts": len(times),
        "above_2": sum(t > 2.0 for t, *_ in times),
        "max": round(worst[0], 2),
        "max_at": {"dark_s": worst[1], "phase_s": worst[2], "before_s": worst[3]},
    }


def summary(lat: list[float]) -> dict[str, float | int]:
    """Posts, median, 90th percentile, above 2 RTT, max (RTTs)."""
    if not lat:
        return {"posts": 0}
    s = sorted(lat)
    return {
        "posts": len(s),
        "median": round(statistics.median(s), 2),
        "p90": round(s[min(len(s) - 1, int(0.9 * len(s)))], 2),
        "above_2": sum(x > 2.0 for x in s),
        "max": round(s[-1], 2),
    }


def _patch_sender(changes: dict[str, str]) -> None:
    """The simulated station's SenderConfig with ``changes`` (numbers) as its defaults."""
    import simlink.transfer_driver as td
    from protocol.transfer import SenderConfig

    def config(**kw: Any) -> SenderConfig:
        numbers: dict[str, Any] = {k: None if v == "none" else float(v) for k, v in changes.items()}
        return SenderConfig(**numbers, **kw)

    setattr(td, "SenderConfig", config)  # noqa: B010 (the driver builds its config by this name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["lunar", "iss-ku", "degraded"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    ap.add_argument("--hours", type=float, default=12.0)
    ap.add_argument(
        "--sender",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="SenderConfig fields to change for the simulated station (tuning), e.g. race_down_rtts=0.3 "
        "(none: None, e.g. heartbeat_s=none)",
    )
    ap.add_argument(
        "--before",
        nargs="+",
        type=float,
        metavar="S",
        help="instead: a post written S s before a return while the link is believed up, "
        "the heartbeat off → on (RTT after the return)",
    )
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="--before: the real processes through linkemu's packet link (root, TUN; the dark closes "
        "nothing; each run lasts the profile's first dark window + 7 min)",
    )
    ap.add_argument(
        "--off",
        nargs="*",
        default=["heartbeat_s=none"],
        metavar="FIELD=VALUE",
        help="--before: the SenderConfig fields of the 'off' column (default: heartbeat_s=none; "
        "e.g. hedge_kept_posts=0 for the kept connection's copy)",
    )
    ap.add_argument(
        "--dark",
        type=float,
        metavar="S",
        help="--before: the first dark window lasts S s (a short dark the heartbeat may not see)",
    )
    ap.add_argument(
        "--first",
        type=float,
        default=600.0,
        metavar="S",
        help="--before: the first post is written S s before the window (the heartbeats' phase)",
    )
    ap.add_argument(
        "--short-darks",
        action="store_true",
        help="instead: darks of 10-58 s, three heartbeat phases, a post 0.1-20 s before each end "
        "(the dark cutting nothing, then the profile's cut); --off's column, then this tree's",
    )
    ap.add_argument(
        "--now-only",
        action="store_true",
        help="--before --realtime: only this tree's figure (run the same script from an older tree "
        "for the one before), with --dark and --first-at",
    )
    ap.add_argument(
        "--first-at",
        type=float,
        default=60.0,
        metavar="S",
        help="--before --realtime --now-only: the first post at S s into the run (the heartbeats' phase)",
    )
    ap.add_argument(
        "--cut-after",
        type=float,
        metavar="S",
        help="--before: the dark drops the connections S s in (default: the profile's; 1e6: never)",
    )
    args = ap.parse_args(argv)
    if args.short_darks:
        off = {k: None if v == "none" else float(v) for k, v in (kv.split("=", 1) for kv in args.off)}
        for name in args.profiles:
            for cut in (1e6, None):
                row = {"profile": name, "cut_after_s": cut}
                print(json.dumps({**row, "off": args.off, **short_darks(name, cut, **off)}), flush=True)
                print(json.dumps({**row, **short_darks(name, cut)}), flush=True)
        return 0
    if args.before:
        for name in args.profiles:
            cut = args.cut_after
            if args.realtime and args.now_only:
                kw: dict[str, Any] = {"dark_s": args.dark, "first_at_s": args.first_at}
                cells = [f"{x:g} s: {post_before_return_realtime(name, x, **kw):.2f}" for x in args.before]
            elif args.realtime:
                cells = [
                    f"{x:g} s: {post_before_return_realtime(name, x, heartbeat=False):.2f} → "
                    f"{post_before_return_realtime(name, x):.2f}"
                    for x in args.before
                ]
            else:
                off = {k: None if v == "none" else float(v) for k, v in (kv.split("=", 1) for kv in args.off)}
                where = {"cut_after_s": cut, "dark_s": args.dark, "first_s": args.first}
                cells = [
                    f"{x:g} s: {post_before_return(name, x, **where, **off):.2f} → "
                    f"{post_before_return(name, x, **where):.2f}"
                    for x in args.before
                ]
            print(f"{name}: " + " | ".join(cells), flush=True)
        return 0
    if args.sender:
        _patch_sender(dict(kv.split("=", 1) for kv in args.sender))
    pooled: dict[str, list[float]] = {}
    syns: dict[str, list[int]] = {}
    cost: dict[str, list[int]] = {}  # dark windows, copies, copy bytes up, down
    for name in args.profiles:
        for seed in args.seeds:
            t0 = time.monotonic()
            lat, r, rtt = run_dark_posts(name, args.hours, seed)
            dark_s = sum(e - s for s, e in r.dark_windows)
            line = {
                "profile": name,
                "seed": seed,
                "hours": args.hours,
                "rtt_s": rtt,
                **summary(lat),
                "syns": r.syns,
                "syns_dark": r.syns_dark,
                "syns_dark_per_min": round(r.syns_dark / max(dark_s / 60, 1e-9), 1),
                # What hedging cost (docs/link.md): copies that crossed, their bytes, and the
                # run's bytes each way (app bytes on TCP; IP bytes with headers and handshakes).
                "dark_windows": len(r.dark_windows),
                "hedge": (r.traffic_by_kind or {}).get("hedge", {}),
                "wire_up": r.wire_to_ground_bytes,
                "wire_down": r.wire_to_station_bytes,
                "ip_bytes": r.ip_bytes,
                "rtts": [round(x, 3) for x in lat],
                "wall_s": round(time.monotonic() - t0, 1),
            }
            print(json.dumps(line), flush=True)
            pooled.setdefault(name, []).extend(lat)
            syns.setdefault(name, []).append(r.syns_dark)
            h = line["hedge"]
            assert isinstance(h, dict)
            add = [
                len(r.dark_windows),
                h.get("requests", 0),
                h.get("request_bytes", 0),
                h.get("response_bytes", 0),
            ]
            cost[name] = [a + b for a, b in zip(cost.get(name, [0, 0, 0, 0]), add, strict=True)]
    seeds = ", ".join(map(str, args.seeds))
    print(
        f"\n| profile (seeds {seeds}) | posts | median | 90th pct | above 2 RTT | max | SYNs into the dark "
        "| copies sent | copy bytes up / down per dark window |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, lat in pooled.items():
        s = summary(lat)
        windows, copies, up, down = cost[name]
        print(
            f"| `{name}` | {s['posts']} | {s.get('median')} | {s.get('p90')} | {s.get('above_2')} | "
            f"{s.get('max')} | {sum(syns[name])} | {copies} | {up / max(windows, 1):.0f} / "
            f"{down / max(windows, 1):.0f} B |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
