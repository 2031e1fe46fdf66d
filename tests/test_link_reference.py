"""A station that neither remembers nor was told its link (its first sync, or one after a week
without any) assumes the reference link, iss-ku's 1.5 Mbit/s and 0.6 s round trip
(protocol/link_memory.py ``reference_link``): its first flights and the send gate's restart are
sized by it, until the link shows a queue of its own. Issue 14: a cut costs what the network
held, at most a BDP, on the links the issue names; assuming nothing, 16 initial TCP windows and
the chunks behind them held 2.0-3.2 BDP in the network through a 0.6 s start's first 4 s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from link_support import station_db
from test_link_remembered import _first_seconds_max_bdp

from onboard import link
from onboard.delivery import DeliveryMeter
from onboard.remembered import LinkRecorder
from protocol.link_memory import MAX_AGE_S, REFERENCE_RATE_BYTES_S, LinkMemory, reference_link
from protocol.send_gate import SendGate
from protocol.window_clamp import DeliveryRate, restart_budget_bytes
from simlink.profile import LinkProfile, load_profile
from simlink.result import RunResult
from simlink.virtual import run_virtual
from simlink.workload import load_workload

NOW = 1_800_000_000.0


def test_the_recorder_guesses_the_reference_link_only_when_nothing_else_is_known(tmp_path: Path) -> None:
    """On a real SQLite file: nothing stored, or a memory older than a week, is a guess; a
    usable memory or an expected link is not."""
    conn = station_db(tmp_path)
    nothing = LinkRecorder(conn, NOW, 0.0)
    assert nothing.start == reference_link(NOW) and nothing.guessed
    link.remember(conn, LinkMemory(rate_bytes_s=50_000.0, base_rtt_s=1.2, measured_at=NOW - 2 * MAX_AGE_S))
    stale = LinkRecorder(conn, NOW, 0.0)
    assert stale.start == reference_link(NOW) and stale.guessed
    fresh = LinkMemory(rate_bytes_s=50_000.0, base_rtt_s=1.2, measured_at=NOW - 60)
    link.remember(conn, fresh)
    remembered = LinkRecorder(conn, NOW, 0.0)
    assert remembered.start == fresh and not remembered.guessed
    told = LinkMemory(rate_bytes_s=20_000.0, base_rtt_s=2.0, measured_at=NOW)
    link.expect_link(conn, told)
    link.remember(conn, dataclasses.replace(fresh, measured_at=NOW - 2 * MAX_AGE_S))
    expected = LinkRecorder(conn, NOW, 0.0)
    assert expected.start == told and not expected.guessed


rates = st.floats(min_value=100.0, max_value=1e8)
rtts = st.floats(min_value=0.01, max_value=10.0)


@given(rates, rtts, st.booleans())
def test_a_guessed_rate_floors_the_restart_only_until_the_link_queues(
    rate: float, rtt: float, guessed: bool
) -> None:
    """A remembered or expected rate stays the gate's restart whatever the link shows; the
    reference link's, only guessed, is forgotten at the first queue (the rate measured is then
    the link's), as if nothing had been known."""
    gate = SendGate(DeliveryRate(), remembered_rate=rate, guessed=guessed)
    assert gate.restart_budget(rtt) == restart_budget_bytes(rate, rtt)
    gate.link_queued()
    gate.link_queued()  # a second queue changes nothing more
    if guessed:
        assert gate.restart_rate is None and gate.restart_budget(rtt) is None
    else:
        assert gate.restart_rate == rate and gate.restart_budget(rtt) == restart_budget_bytes(rate, rtt)


def test_the_stations_meter_forgets_the_guess_when_the_sender_sees_a_queue() -> None:
    """onboard/delivery.py: ``window`` with ``queued`` (TransferSender.queue_now) ends the
    guess; a start (``queue`` alone) does not."""
    meter = DeliveryMeter(remembered_rate=REFERENCE_RATE_BYTES_S, guessed=True, read=lambda s: None)
    meter.window(0.0, 0.6, queue=True, queued=False)
    assert meter.restart_rate == REFERENCE_RATE_BYTES_S
    meter.window(1.0, 0.6, queue=True, queued=True)
    assert meter.restart_rate is None
    kept = DeliveryMeter(remembered_rate=50_000.0, read=lambda s: None)
    kept.window(1.0, 0.6, queue=True, queued=True)
    assert kept.restart_rate == 50_000.0


def _first_start(profile: LinkProfile, seed: int, duration_s: float) -> RunResult:
    return run_virtual(
        profile, load_workload("photo-backlog"), astronauts=2, duration_s=duration_s, seed=seed, trace_s=0.1
    )


@pytest.mark.parametrize("seed", [6, 7])
def test_a_first_start_on_the_reference_path_holds_a_bdp_from_its_first_flights_on(seed: int) -> None:
    """0.6 s / 1 % at 1.5 Mbit/s (the reference link), a station's first start, told nothing:
    the network never holds over ~1 BDP through its first 8 s (0.9 BDP of first flights plus
    headers), where it held 2.0-3.2 BDP through the first 4 s assuming nothing."""
    profile = dataclasses.replace(load_profile("fill-rtt0.6-loss1"), cuts_per_hour=0.0)
    bdp = profile.to_ground_bps / 8 * profile.rtt_s
    assert _first_seconds_max_bdp(_first_start(profile, seed, 8.0), bdp, 8.0) <= 1.05


def _late_max_bdp(r: RunResult, bdp: float, since_s: float) -> float:
    return max(n / bdp for t, n in r.in_network_trace if t >= since_s)


def test_on_a_slower_link_the_guess_ends_with_the_first_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """256 kbit/s, 1.4 s (a sixth of the reference's rate): the first queue ends the guess, and
    the gate follows the rate measured. Kept, the reference's restart held ~4 BDP in the
    network 20-30 s into the start."""
    profile = dataclasses.replace(
        load_profile("fill-rtt1.4-loss1"),
        to_ground_bps=256_000.0,
        to_station_bps=128_000.0,
        cuts_per_hour=0.0,
    )
    bdp = profile.to_ground_bps / 8 * profile.rtt_s
    ended = _late_max_bdp(_first_start(profile, 6, 30.0), bdp, 22.0)
    monkeypatch.setattr(SendGate, "link_queued", lambda self: None)
    kept = _late_max_bdp(_first_start(profile, 6, 30.0), bdp, 22.0)
    assert ended <= 2.0 < 3.0 <= kept
