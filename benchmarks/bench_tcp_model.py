"""The simulator's TCP against the kernel's: one run of the same profile, workload and seed in
virtual time (simlink/link.py's model) and in real time through the packet link (Linux TCP in
two network namespaces, real loss), with each side's TCP counters read from the namespaces'
/proc/net/snmp and netstat at the end (issue 14: "the simulator models the transport that
ships"; docs/link.md "The simulator's TCP timers").

    python benchmarks/bench_tcp_model.py                          # 2.6 s / 1 %, seed 11, 3 min
    python benchmarks/bench_tcp_model.py --profiles fill-rtt1.4-loss1 --seeds 12 13 --cc reno
    python benchmarks/bench_tcp_model.py --warm 120   # a station that remembers a pass first

Needs root and /dev/net/tun (the packet link); elsewhere it says why and exits 2. Real time
takes the run's minutes. Counted: segments sent (real time also counts SYNs and pure acks),
the share resent, retransmission timeouts with data outstanding and tail loss probes (SYN
retries left out of both), and the goodput of each run. Real runs vary from run to run: read
the orders of magnitude, not the last digit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simlink.profile import load_profile  # noqa: E402
from simlink.realtime_link import packet_mode_problem  # noqa: E402
from simlink.report import build_report  # noqa: E402
from simlink.result import RunResult, TcpCounts  # noqa: E402
from simlink.virtual import remembered_after_virtual_pass, run_virtual  # noqa: E402
from simlink.workload import load_workload  # noqa: E402


def run_pair(
    profile: str, seed: int, minutes: float, workload: str, cc: str, warm_s: float = 0.0
) -> dict[str, RunResult]:
    """The same run in virtual and in real time (the packet link, kernel congestion control
    ``cc``); with ``warm_s``, each starts remembering a pass of that long in its own time."""
    from simlink.realtime import remembered_after_pass, run_realtime

    prof, wl = load_profile(profile), load_workload(workload)
    kw: dict[str, Any] = dict(astronauts=4, duration_s=minutes * 60, seed=seed)
    mem = remembered_after_virtual_pass(prof, warm_s, seed) if warm_s > 0 else None
    virtual = run_virtual(prof, wl, transfer="transfer", remembered=mem, tcp_cc=cc, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        mem = remembered_after_pass(prof, warm_s, seed, Path(tmp) / "warm", cc) if warm_s > 0 else None
        real = run_realtime(prof, wl, workdir=Path(tmp) / "run", packet=True, tcp_cc=cc, remembered=mem, **kw)
    return {"virtual": virtual, f"real ({cc})": real}


def _row(profile: str, seed: int, how: str, side: str, c: TcpCounts | None, goodput: object) -> str:
    if c is None:
        return f"| {profile} | {seed} | {how} | {side} | – | – | – | – | {goodput} |"
    return (
        f"| {profile} | {seed} | {how} | {side} | {c.segments:,} | {c.resent_share:.2%} "
        f"| {c.timeouts:,} | {c.loss_probes:,} | {goodput} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["fill-rtt2.6-loss1"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[11])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--workload", default="large-photos")
    ap.add_argument(
        "--cc", default="cubic", help="the congestion control, the kernel's and the model's (cubic or reno)"
    )
    ap.add_argument("--warm", type=float, default=0.0, help="seconds of a pass the station remembers first")
    args = ap.parse_args(argv)
    problem = packet_mode_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    rows = [
        "| profile | seed | run | side | segments | resent | timeouts | loss probes | goodput |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for profile in args.profiles:
        for seed in args.seeds:
            for how, r in run_pair(profile, seed, args.minutes, args.workload, args.cc, args.warm).items():
                rep = build_report(r)
                goodput = rep["link"]["transfer_goodput_per_rate_while_backlogged"]
                print(
                    json.dumps({"profile": profile, "seed": seed, "run": how, "link": rep["link"]}),
                    flush=True,
                )
                rows.append(_row(profile, seed, how, "station", r.tcp_station, goodput))
                rows.append(_row(profile, seed, how, "ground", r.tcp_ground, ""))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
