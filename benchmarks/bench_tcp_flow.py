"""The simulator's TCP against the kernel's, flow for flow: ``--flows`` bulk TCP connections
from station to ground for ``--seconds``, on one profile's link, in virtual time (simlink/link.py,
its congestion control as the kernel's) and in real time through the packet link (Linux TCP in
two network namespaces, real loss: linkemu/packet_bulk.py). No orbitpost code runs: this checks the model of TCP that
every virtual-time figure stands on (issue 14: "the simulator models the transport that ships";
docs/link.md "The simulator's congestion control").

    python benchmarks/bench_tcp_flow.py                               # 1.4 s / 1 %, cubic, 1 flow
    python benchmarks/bench_tcp_flow.py --profiles fill-rtt2.6-loss1 --flows 1 8 --cc cubic reno
    python benchmarks/bench_tcp_flow.py --virtual-only --seeds 1 2 3  # the model alone, fast

Needs root and /dev/net/tun for real time (elsewhere: --virtual-only, or it says why and exits
2); real runs take ``--seconds`` each, ``--parallel`` of them at once (each its own namespaces).
Reported per run: goodput (bytes delivered in order to ground over the run, against the link
rate), the share of segments resent, retransmission timeouts and tail loss probes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simlink.clock import EventLoop  # noqa: E402
from simlink.link import SimConnection, SimLink  # noqa: E402
from simlink.profile import LinkProfile, load_profile  # noqa: E402
from simlink.result import TcpCounts  # noqa: E402
from simlink.virtual import tcp_counts  # noqa: E402

# The kernel's MSS on the packet link (MTU 1500, 20 + 20 bytes of headers, 12 of timestamps):
# the model runs it too, so a segment carries what the kernel's does.
KERNEL_MSS = 1448


def steady(profile: LinkProfile) -> LinkProfile:
    """The profile's rate, delay, queue and loss, with no dark spell and no cut, and the kernel's MSS."""
    return dataclasses.replace(
        profile, dark=(), orbit_s=0.0, cuts_per_hour=0.0, cuts_at_s=(), mss_bytes=KERNEL_MSS
    )


class _Bulk:
    """A source that keeps its socket's send buffer full, or a sink that counts what arrives."""

    BUFFER = 512 * 1024

    def __init__(self, source: bool = False) -> None:
        self.source = source
        self.got = 0
        self.first_at: float | None = None  # when the first byte reached the sink

    def connection_made(self, conn: SimConnection) -> None:
        if self.source:
            self._top_up(conn)

    def _top_up(self, conn: SimConnection) -> None:
        # Written a buffer at a time, as a real writer blocks on its socket: one huge write
        # would make the model copy the rest of it on every ack.
        if conn.closed:
            return
        if conn.up.end - conn.up.una < self.BUFFER:
            conn.send(True, bytes(self.BUFFER))
        conn.loop.after(0.1, self._top_up, conn)

    def data_received(self, conn: SimConnection, data: bytes) -> None:
        if self.first_at is None:
            self.first_at = conn.loop.now
        self.got += len(data)

    def connection_lost(self, conn: SimConnection, reason: str) -> None:
        pass


def run_virtual_flows(profile: LinkProfile, flows: int, seconds: float, seed: int, cc: str) -> dict[str, Any]:
    """``flows`` bulk connections for ``seconds`` of virtual time: what ground received, and TCP's events."""
    p = steady(profile)
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=seconds + 60, seed=seed, tcp_cc=cc)
    sinks = [_Bulk() for _ in range(flows)]
    for sink in sinks:
        link.connect(_Bulk(source=True), sink)
    # As the real sink counts: for ``seconds`` from the first byte to reach ground.
    loop.run_until(10 * p.rtt_s)
    starts = [s.first_at for s in sinks if s.first_at is not None]
    loop.run_until(min(starts, default=0.0) + seconds)
    return _row(
        p, "virtual", cc, flows, seed, seconds, sum(s.got for s in sinks), tcp_counts(link.to_ground.stats)
    )


async def run_real_flows(
    profile: LinkProfile, flows: int, seconds: float, seed: int, cc: str
) -> dict[str, Any]:
    """The same in real time: linkemu.packet_bulk's sink in ground's namespace, its source in the station's."""
    from linkemu.packet_bulk import measure
    from simlink.realtime_link import kernel_tcp_counts

    p = steady(profile)
    args = argparse.Namespace(
        rate_kbps=p.to_ground_bps / 1000, down_rate_kbps=p.to_station_bps / 1000,
        delay_ms=p.one_way_delay_s * 1000, loss_percent=p.loss * 100, streams=flows,
        seconds=seconds, warmup_s=0.0, congestion_control=cc, seed=seed, prefix="tcpflow",
    )  # fmt: skip
    got = await measure(args)
    counts = kernel_tcp_counts(str(got["station_tcp"]))
    return _row(p, "real", cc, flows, seed, seconds, int(got["received_bytes"]), counts)  # type: ignore[call-overload]


def _row(
    p: LinkProfile, how: str, cc: str, flows: int, seed: int, seconds: float, got: int, c: TcpCounts
) -> dict[str, Any]:
    """One run's figures: bytes ground received in ``seconds``, their share of the link rate,
    and the station's TCP events."""
    return {
        "profile": p.name, "run": how, "cc": cc, "flows": flows, "seed": seed, "seconds": seconds,
        "bytes": got, "goodput": round(got * 8 / seconds / p.to_ground_bps, 4),
        "segments": c.segments, "resent": round(c.resent_share, 4),
        "timeouts": c.timeouts, "loss_probes": c.loss_probes,
    }  # fmt: skip


async def _real_all(
    jobs: list[tuple[LinkProfile, int, int, str]], seconds: float, parallel: int
) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(parallel)

    async def one(job: tuple[LinkProfile, int, int, str]) -> dict[str, Any]:
        async with gate:
            r = await run_real_flows(job[0], job[1], seconds, job[2], job[3])
            print(json.dumps(r), flush=True)
            return r

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def table(rows: list[dict[str, Any]]) -> str:
    """Mean (and range) over seeds of each profile × flows × congestion control × run."""
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["profile"], r["flows"], r["cc"], r["run"]), []).append(r)
    out = [
        "| profile | flows | cc | run | seeds | goodput mean (min–max) | resent | timeouts | loss probes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (prof, flows, cc, how), rs in sorted(groups.items()):
        g = [r["goodput"] for r in rs]
        out.append(
            f"| {prof} | {flows} | {cc} | {how} | {len(rs)} | {statistics.mean(g):.3f} ({min(g):.3f}–{max(g):.3f}) "
            f"| {statistics.mean(r['resent'] for r in rs):.2%} | {statistics.mean(r['timeouts'] for r in rs):.1f} "
            f"| {statistics.mean(r['loss_probes'] for r in rs):.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["fill-rtt1.4-loss1"])
    ap.add_argument("--flows", nargs="+", type=int, default=[1])
    ap.add_argument("--cc", nargs="+", default=["cubic"], help="congestion controls: cubic, reno")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--parallel", type=int, default=4, help="real-time runs at once")
    ap.add_argument("--virtual-only", action="store_true")
    args = ap.parse_args(argv)
    jobs = [
        (load_profile(n), f, s, cc)
        for n in args.profiles
        for f in args.flows
        for cc in args.cc
        for s in args.seeds
    ]
    rows = []
    for prof, flows, seed, cc in jobs:
        r = run_virtual_flows(prof, flows, args.seconds, seed, cc)
        print(json.dumps(r), flush=True)
        rows.append(r)
    if not args.virtual_only:
        from simlink.realtime_link import packet_mode_problem

        problem = packet_mode_problem()
        if problem:
            print(problem, file=sys.stderr)
            return 2
        rows += asyncio.run(_real_all(jobs, args.seconds, args.parallel))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
