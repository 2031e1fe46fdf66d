"""What a cut costs by when it strikes: seconds after a photo backlog starts, or after the link
comes back from a loss of signal (issue 14: at most the bytes in the network, ≤ 1 BDP), in
virtual time (simlink drives the shipped sender, windows and ground).

    python benchmarks/bench_cut_timing.py --profiles fill-rtt1.4-loss1 --at 2 4 6 8 10 14 20 30
    python benchmarks/bench_cut_timing.py --after return --profiles fill-rtt0.6-loss1 --at 6 14 30
    python benchmarks/bench_cut_timing.py --realtime cubic --at 6 14 30   # real time, real loss (root, TUN)

A random cut (the `-cuts` profiles) mostly finds a backlog in its steady state; these runs put
one cut where every stream has just started at once, in slow start. ``--after return``: the
backlog is written at the start, the link goes dark at 2 min for 3 min (connections cut 20 s
in), and the cut strikes that long after it comes back. Each run prints one JSON line; the
table gives, per profile and time, the bytes lost in the network per cut in BDP (mean and
max over seeds) and the goodput of the run. Seeds 31–36 were new when this was written
(docs/link.md "A window per connection"). ``--realtime``: the real processes through
linkemu's packet link, where a cut is a short dark spell and its cost the IP bytes the
emulator held when it fell (docs/link.md "A cut in real time"). ``--trace SECONDS``: no cut;
the bytes in the network are read every 0.1 s for that long after the start (or the return)
and reported per span of time (mean, 90th percentile, max, in BDP): what a cut at any moment
of those spans would cost, from one run instead of one run per moment.

    python benchmarks/bench_cut_timing.py --trace 40 --realtime cubic --profiles fill-rtt0.6-loss1

``--warm SECONDS`` (virtual or real time): a station that has been on this link before. A pass of that
long comes first (another seed, from nothing), and the run's station starts with the link
memory it left (protocol/link_memory.py: its first flights sized by that pass's BDP).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simlink.profile import DarkWindow, LinkProfile, load_profile  # noqa: E402
from simlink.realtime import TRACE_S, remembered_after_pass, run_realtime  # noqa: E402
from simlink.report import build_report  # noqa: E402
from simlink.result import RunResult  # noqa: E402
from simlink.virtual import remembered_after_virtual_pass, run_virtual  # noqa: E402
from simlink.workload import load_workload  # noqa: E402

DARK_AT_S, DARK_S, CUT_AFTER_S = 120.0, 180.0, 20.0
TAIL_S = 15.0  # the run goes on this long after the cut (goodput counts it)


SPANS_S = (0.0, 2.0, 4.0, 6.0, 10.0, 14.0, 20.0, 30.0, 60.0, 120.0, 300.0, 720.0)


def with_cut(profile: LinkProfile, after: str, at_s: float, *, cut: bool = True) -> tuple[LinkProfile, float]:
    """The profile with one cut ``at_s`` after the start or the return, and the run's length
    (without ``cut``: no cut, the run ending ``at_s`` after the start or the return)."""
    tail = TAIL_S if cut else 0.0
    if after == "start":
        cuts = (at_s,) if cut else ()
        return dataclasses.replace(profile, cuts_per_hour=0.0, cuts_at_s=cuts), at_s + tail
    back = DARK_AT_S + DARK_S
    p = dataclasses.replace(
        profile,
        cuts_per_hour=0.0,
        cuts_at_s=(back + at_s,) if cut else (),
        orbit_s=92 * 60.0,
        dark=(DarkWindow(start_s=DARK_AT_S, duration_s=DARK_S),),
        cut_after_s=CUT_AFTER_S,
    )
    return p, back + at_s + tail


def one(args: tuple[str, str, float, int], tcp_cc: str | None = None, warm_s: float = 0.0) -> dict[str, Any]:
    """One run (in a worker process): the cut's cost in BDP and the run's goodput; with
    ``tcp_cc``, in real time through linkemu's packet link with that congestion control."""
    name, after, at_s, seed = args
    base = load_profile(name)
    profile, duration = with_cut(base, after, at_s)
    if tcp_cc is None:
        r = _virtual(profile, duration, seed, warm_s)
    else:
        r = _realtime(profile, duration, seed, tcp_cc, warm_s)
    bdp = base.to_ground_bps / 8 * base.rtt_s
    costs = list(r.cut_costs)
    if after == "return":
        costs = costs[1:]  # the first is the loss of signal's own cut
    cost, held = costs[-1] if costs else (0, 0)  # a cut that found no connection cost nothing
    link = build_report(r)["link"]
    return {
        "mode": _mode(r, tcp_cc, warm_s),
        "profile": name,
        "after": after,
        "at_s": at_s,
        "seed": seed,
        "bdp": round(cost / bdp, 3),
        "out_of_order_bdp": round(held / bdp, 3),
        "goodput": link["transfer_goodput_per_rate_while_backlogged"],
    }


def traced(
    args: tuple[str, str, float, int], tcp_cc: str | None = None, warm_s: float = 0.0
) -> dict[str, Any]:
    """One run without a cut (in a worker process): the bytes in the network per span of time
    after the start or the return, in BDP: [mean, 90th percentile, max] (``SPANS_S``)."""
    name, after, span_s, seed = args
    base = load_profile(name)
    profile, duration = with_cut(base, after, span_s, cut=False)
    if tcp_cc is None:
        r = _virtual(profile, duration, seed, warm_s, trace_s=TRACE_S)
    else:
        r = _realtime(profile, duration, seed, tcp_cc, warm_s)
    bdp = base.to_ground_bps / 8 * base.rtt_s
    since = 0.0 if after == "start" else DARK_AT_S + DARK_S
    return {
        "mode": _mode(r, tcp_cc, warm_s),
        "profile": name,
        "after": after,
        "seed": seed,
        "remembered": r.link_memory,
        "spans": spans([(t - since, n / bdp) for t, n in r.in_network_trace if t >= since], span_s),
        "goodput": build_report(r)["link"]["transfer_goodput_per_rate_while_backlogged"],
    }


def spans(trace: list[tuple[float, float]], until_s: float) -> dict[str, list[float]]:
    """``trace`` (seconds, BDP) cut into ``SPANS_S`` up to ``until_s``: "a-b s" → [mean, p90, max]."""
    out: dict[str, list[float]] = {}
    edges = [e for e in SPANS_S if e < until_s] + [until_s]
    for lo, hi in itertools.pairwise(edges):
        xs = sorted(v for t, v in trace if lo <= t < hi)
        if xs:
            p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
            out[f"{lo:g}-{hi:g} s"] = [round(sum(xs) / len(xs), 3), round(p90, 3), round(xs[-1], 3)]
    return out


def trace_table(rows: list[dict[str, Any]]) -> str:
    """Per profile and span: bytes in the network in BDP, mean / p90 over seeds' figures, max."""
    out = [
        "| time | profile | after | span | seeds | in the network, BDP: mean | p90 | max | goodput |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["profile"], r["after"]), []).append(r)
    for (mode, name, after), rs in sorted(groups.items()):
        gp = [r["goodput"] for r in rs if r["goodput"] is not None]
        for span in rs[0]["spans"]:
            xs = [r["spans"][span] for r in rs if span in r["spans"]]
            mean = sum(x[0] for x in xs) / len(xs)
            p90 = sum(x[1] for x in xs) / len(xs)
            out.append(
                f"| {mode} | {name} | {after} | {span} | {len(xs)} | {mean:.2f} | {p90:.2f} "
                f"| {max(x[2] for x in xs):.2f} | {sum(gp) / len(gp) if gp else float('nan'):.3f} |"
            )
    return "\n".join(out)


def _virtual(
    profile: LinkProfile, duration_s: float, seed: int, warm_s: float, trace_s: float | None = None
) -> RunResult:
    """The simulator; with ``warm_s``, a station that has been on this link before
    (``remembered_after_virtual_pass``)."""
    remembered = remembered_after_virtual_pass(profile, warm_s, seed) if warm_s > 0 else None
    wl = load_workload("photo-backlog")
    return run_virtual(
        profile, wl, astronauts=4, duration_s=duration_s, seed=seed, trace_s=trace_s, remembered=remembered
    )


def _realtime(
    profile: LinkProfile, duration_s: float, seed: int, tcp_cc: str, warm_s: float = 0.0
) -> RunResult:
    """The real processes through the packet link: a cut is a short dark spell there
    (linkemu/packet.py), and its cost is what the emulator held when it fell. With
    ``warm_s``, a station that has been on this link before (simlink's ``remembered_after_pass``)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        remembered = None
        if warm_s > 0:
            remembered = remembered_after_pass(profile, warm_s, seed, Path(tmp) / "warm", tcp_cc)
        return run_realtime(
            profile,
            load_workload("photo-backlog"),
            astronauts=4,
            duration_s=duration_s,
            seed=seed,
            workdir=Path(tmp) / "run",
            packet=True,
            tcp_cc=tcp_cc,
            remembered=remembered,
        )


def _mode(r: RunResult, tcp_cc: str | None, warm_s: float) -> str:
    """The table's mode: virtual, real time with its congestion control, warmed or not."""
    warmed = f", remembering a {warm_s:g} s pass" if warm_s > 0 else ""
    return (r.mode if tcp_cc is None else f"realtime {tcp_cc}") + warmed


def table(rows: list[dict[str, Any]]) -> str:
    """Per profile and time: lost per cut in BDP (mean, max over seeds) and goodput (mean)."""
    out = [
        "| time | profile | after | cut at | seeds | lost per cut, BDP: mean | max | goodput |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("mode", "virtual"), r["profile"], r["after"], r["at_s"]), []).append(r)
    for (mode, name, after, at_s), rs in sorted(groups.items()):
        costs = [r["bdp"] for r in rs]
        gp = [r["goodput"] for r in rs if r["goodput"] is not None]
        out.append(
            f"| {mode} | {name} | {after} | {at_s:g} s | {len(rs)} | {sum(costs) / len(costs):.2f} | {max(costs):.2f} "
            f"| {sum(gp) / len(gp) if gp else float('nan'):.3f} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["fill-rtt1.4-loss1"])
    ap.add_argument("--after", choices=["start", "return"], default="start")
    ap.add_argument("--at", nargs="+", type=float, default=[2, 4, 6, 8, 10, 14, 20, 30], help="seconds")
    ap.add_argument("--seeds", nargs="+", type=int, default=[31, 32, 33])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--realtime",
        metavar="TCP_CC",
        help="real time with real loss through linkemu's packet link (root, TUN), kernel TCP "
        "congestion control TCP_CC (cubic, bbr, reno); runs one at a time",
    )
    ap.add_argument(
        "--trace",
        metavar="SECONDS",
        type=float,
        help="no cut: read the bytes in the network for SECONDS after the start or the return",
    )
    ap.add_argument(
        "--warm",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="before each run, a pass of SECONDS on the same link (another seed); "
        "the run's station starts remembering it (protocol/link_memory.py)",
    )
    a = ap.parse_args()
    if a.trace is not None:
        runs = [(p, a.after, a.trace, s) for p in a.profiles for s in a.seeds]
        run, show = traced, trace_table
    else:
        runs = [(p, a.after, t, s) for p in a.profiles for t in a.at for s in a.seeds]
        run, show = one, table
    rows = []
    # Real time wants the CPU to itself: one run at a time.
    with ProcessPoolExecutor(1 if a.realtime else a.jobs) as ex:
        for row in ex.map(functools.partial(run, tcp_cc=a.realtime, warm_s=a.warm), runs):
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(show(rows))


if __name__ == "__main__":
    main()
