"""Real time with real packet loss: `simulate.py --realtime --packet` (simlink/realtime.py through
linkemu's packet link: ground and station in two network namespaces, kernel TCP, lost packets)."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from test_receipts_converge import assert_converged

from ground.platforms.archive import archived_posts
from simlink.errors import SimError
from simlink.profile import load_profile
from simlink.realtime_link import packet_mode_problem
from simlink.report import build_report
from simlink.virtual import run_virtual, transfer_available
from simlink.workload import load_workload

PROBLEM = packet_mode_problem() or (None if transfer_available() else "needs ground serve / onboard sync")
needs_packet_link = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


@needs_packet_link
def test_realtime_packet_run_at_2_percent_loss(tmp_path: Path) -> None:
    """40 s of iss-ku rates and delay with 2 % of packets lost each way, no gaps or cuts, the
    burst workload's backlog (12 posts, half with a photo): every post published exactly once,
    receipts converge, the emulator really dropped packets, and the IP bytes that crossed are
    within a loose bound of virtual time's (kernel CUBIC and timestamps against the model)."""
    from simlink.realtime import run_realtime

    prof = dataclasses.replace(load_profile("iss-ku"), loss=0.02, dark=(), orbit_s=0.0, cuts_per_hour=0.0)
    wl = dataclasses.replace(load_workload("burst"), posts_per_astronaut_per_hour=0.0)
    kw = dict(astronauts=4, duration_s=40.0, seed=3)
    work = tmp_path / "rt"
    real_result = run_realtime(prof, wl, workdir=work, packet=True, **kw)  # type: ignore[arg-type]
    real = build_report(real_result)
    virt = build_report(run_virtual(prof, wl, **kw))  # type: ignore[arg-type]

    assert real["posts"]["queued"] == virt["posts"]["queued"] == 12
    assert real["posts"]["published"] == 12, real["posts"]
    with contextlib.closing(sqlite3.connect(work / "onboard" / "onboard.db")) as q:
        queued = {r[0] for r in q.execute("SELECT id FROM items")}
        with contextlib.closing(sqlite3.connect(work / "ground" / "ground.db")) as g:
            # The run's station token names no ground capabilities (simlink/realtime.py _setup):
            # receipts without the photo fidelity of version 3, so states and statuses only.
            assert_converged(g, q, photos=False)
    held = Counter(p.post_id for p in archived_posts(work / "ground" / "archive"))
    assert set(held) == queued and set(held.values()) == {1}  # each post once, on its one account

    run_trace = real_result.in_network_trace
    trace = run_trace
    assert len(trace) >= 300 and all(n >= 0 for _, n in trace) and max(n for _, n in trace) > 0
    assert [t for t, _ in run_trace] == sorted(t for t, _ in run_trace)  # every 0.1 s, in order
    drops = real["link"]["packets_dropped_by_emulator"]
    assert drops["loss_up"] > 0 and drops["loss_down"] > 0, drops
    rb, vb = real["bytes"], virt["bytes"]
    print(
        f"\nIP bytes: real {rb['ip_total']:,}, virtual {vb['ip_total']:,} ({vb['ip_total'] / rb['ip_total'] - 1:+.1%}); "
        f"payload {rb['payload']:,}; dropped {drops}; busy connections {real['link']['busy_connections_mean']}"
    )
    assert rb["payload"] == vb["payload"]
    assert rb["ip_total"] > rb["payload"]
    assert vb["ip_total"] == pytest.approx(rb["ip_total"], rel=0.25)
    # Each side's kernel TCP counters, read from its namespace (bench_tcp_model.py compares them).
    # Ground sends few data segments here (answers; ~400 segments, most of them acks, which are
    # never resent): at 2 % loss a run in which none of its data was lost is likely enough
    # (one was seen), so only the station's side, with thousands, must show resends.
    station, ground = real_result.tcp_station, real_result.tcp_ground
    assert station is not None and station.segments > 0 and station.resent_segments > 0, station
    assert ground is not None and ground.segments > 0, ground
    assert real["link"]["tcp_station"]["resent_share"] > 0


def test_packet_mode_refuses_clearly_where_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not root (or no TUN): one sentence saying why and what to do, before anything is created."""
    import simlink.realtime as rt

    monkeypatch.setattr(rt, "packet_mode_problem", lambda: "packet mode cannot run here: not root")
    with pytest.raises(SimError, match="not root"):
        rt.run_realtime(
            load_profile("iss-ku"),
            load_workload("burst"),
            astronauts=1,
            duration_s=5,
            seed=1,
            workdir=tmp_path / "w",
            packet=True,
        )
    assert not (tmp_path / "w").exists()


def test_busy_connections_are_read_from_ss_send_queue() -> None:
    """`ss -Htn state established` lines (with or without the State column): Send-Q > 0 = busy."""
    from simlink.realtime_link import _send_queue

    assert _send_queue("0      1448   10.64.0.1:40000   10.64.0.2:8470") == 1448
    assert _send_queue("ESTAB 0 0 10.64.0.1:40000 10.64.0.2:8470") == 0
    assert _send_queue("ESTAB 12 3000 10.64.0.1:40000 10.64.0.2:8470") == 3000
    assert _send_queue("") == 0


def test_a_real_time_cut_costs_what_the_emulator_threw_away_when_it_fell() -> None:
    """Each dark spell's station → ground bytes in the network at its fall become the run's
    cut costs, in order, as virtual time reports them (bench_cut_timing.py --realtime)."""
    from linkemu.packet import DarkFall, PacketStats
    from linkemu.packet_schedule import WayCounters
    from simlink.realtime_link import _packet_counts

    stats = PacketStats(up=WayCounters(), down=WayCounters(), loss_cuts=1, random_cuts=2)
    stats.falls += [
        DarkFall(1.0, "cut", 52_000, 900),
        DarkFall(5.0, "loss", 0, 0),
        DarkFall(9.0, "cut", 7, 1),
    ]
    counts = _packet_counts(stats)
    assert counts.in_network_at_falls == (52_000, 0, 7)
    assert (counts.cuts_dark, counts.cuts_random) == (1, 2)


def test_the_trace_reads_what_a_cut_then_would_cost() -> None:
    """Virtual time's trace (``trace_s``, bench_cut_timing.py --trace) reads the bytes a cut
    would throw away of the network, as the packet emulator counts them: at each cut it
    equals the cut's cost less what waited out of order at ground; one reading per step."""
    import simlink.link as simlink_link

    prof = dataclasses.replace(load_profile("fill-rtt1.4-loss1"), cuts_per_hour=0.0, cuts_at_s=(6.0, 11.0))
    seen: list[int] = []
    cut_all = simlink_link.SimLink._cut_all

    def spy(self: simlink_link.SimLink, reason: str) -> None:
        seen.append(self.in_network_bytes())
        cut_all(self, reason)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simlink_link.SimLink, "_cut_all", spy)
        r = run_virtual(
            prof, load_workload("photo-backlog"), astronauts=4, duration_s=20.0, seed=5, trace_s=0.1
        )
    assert len(seen) == 2 and seen == [n - ooo for n, ooo in r.cut_costs]
    assert max(seen) > 0
    assert len(r.in_network_trace) == 200 and r.in_network_trace[0][0] == 0.0  # 0, 0.1, ... 19.9 s
    assert all(n >= 0 for _, n in r.in_network_trace) and max(n for _, n in r.in_network_trace) > 0
