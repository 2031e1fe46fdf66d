"""The link an operator tells a station to expect (`onboard link expect`; issue 14): a start
with nothing measured of its own (a station's first sync, or one after a week without any) is
sized by it as by a memory, so its first flights fill what the link holds, not what the
reference link it would otherwise assume holds (protocol/link_memory.py ``reference_link``:
0.4 of a 1.4 s path's BDP, 1.35 of a 1 Mbit/s, 0.6 s one's). Anything the station measures
itself takes its place.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
from conftest import Cli
from hypothesis import given
from hypothesis import strategies as st
from link_support import link_to, running_ground, setup_station, spy_link_requests, station_db
from test_link_first_flight import _photo_opens
from test_link_remembered import _first_seconds_max_bdp

from onboard import link, queue
from onboard.home import Home
from onboard.remembered import LinkRecorder
from onboard.sync import sync
from protocol.link_memory import FIRST_FLIGHT_BDP, MAX_AGE_S, LinkMemory, reference_link, start_link
from protocol.transfer import SenderConfig
from simlink.profile import load_profile
from simlink.virtual import run_virtual
from simlink.workload import load_workload

NOW = 1_800_000_000.0
links = st.builds(
    LinkMemory,
    rate_bytes_s=st.floats(min_value=1.0, max_value=1e9),
    base_rtt_s=st.floats(min_value=1e-3, max_value=60.0),
    measured_at=st.floats(min_value=1.0, max_value=4e9),
)


@given(st.none() | links, st.none() | links, st.floats(min_value=1.0, max_value=4e9))
def test_a_start_takes_the_usable_memory_else_the_expected_link_at_any_age(
    measured: LinkMemory | None, expected: LinkMemory | None, now: float
) -> None:
    got = start_link(measured, expected, now)
    if measured is not None and measured.usable(now):
        assert got == measured
    elif expected is None:
        assert got is None
    else:  # the expected link never ages: it reads as measured now
        assert got is not None and got.usable(now)
        assert (got.rate_bytes_s, got.base_rtt_s, got.measured_at) == (
            expected.rate_bytes_s,
            expected.base_rtt_s,
            now,
        )


def test_the_recorder_starts_on_the_expected_link_until_the_station_measures_its_own(
    tmp_path: Path,
) -> None:
    conn = station_db(tmp_path)
    expected = LinkMemory(rate_bytes_s=125_000.0, base_rtt_s=0.8, measured_at=NOW - 10 * MAX_AGE_S)
    link.expect_link(conn, expected)
    first = LinkRecorder(conn, NOW, 0.0)
    assert first.kept is None  # nothing measured: the expected link sizes the start
    assert (first.start.rate_bytes_s, first.start.base_rtt_s, first.guessed) == (125_000.0, 0.8, False)
    # What a pass measures is kept whatever it reads (the expected link is no memory to beat).
    first.note(90_000.0, 0.65, wall_now=NOW + 60, link_limited=False)
    first.flush(0.0, force=True)
    second = LinkRecorder(conn, NOW + 120, 0.0)
    assert second.kept is not None and second.start == second.kept and not second.guessed
    assert second.kept.rate_bytes_s == 90_000.0
    link.expect_link(conn, None)
    assert link.expected_link(conn) is None


@pytest.mark.parametrize("stored", ["{", "null", '{"rate_bytes_s": 0, "base_rtt_s": 1, "measured_at": 1}'])
def test_a_damaged_expected_link_is_ignored(tmp_path: Path, stored: str) -> None:
    conn = station_db(tmp_path)
    link.set_state(conn, link.LINK_EXPECTED_KEY, stored)
    assert link.expected_link(conn) is None
    rec = LinkRecorder(conn, NOW, 0.0)
    assert rec.start == reference_link(NOW) and rec.guessed  # as if nothing were stored


def test_onboard_link_expect_sets_shows_and_clears_it(cli: Cli) -> None:
    cli.onboard("init")
    assert (
        "assumes the reference link, 1500 kbit/s, round trip 600 ms" in cli.onboard("link", "expect").output
    )
    out = cli.onboard("link", "expect", "--rate-kbit", "1500", "--rtt-ms", "600").output
    assert "1500 kbit/s, round trip 600 ms" in out and "112.5 kB" in out
    conn = queue.connect(Home(cli.onboard_home).db_path)
    got = link.expected_link(conn)
    assert got is not None and (got.rate_bytes_s, got.base_rtt_s) == (187_500.0, 0.6)
    assert "no link expected" in cli.onboard("link", "expect", "--clear").output
    assert link.expected_link(conn) is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--rate-kbit", "1500"), "give both"),
        (("--rtt-ms", "600"), "give both"),
        (("--rate-kbit", "0", "--rtt-ms", "600"), "--rate-kbit must be from 0.3"),
        (("--rate-kbit", "nan", "--rtt-ms", "600"), "--rate-kbit must be from"),
        (("--rate-kbit", "1500", "--rtt-ms", "120000"), "--rtt-ms must be from 1 to 60,000"),
        (("--clear", "--rate-kbit", "1500", "--rtt-ms", "600"), "give --clear alone"),
        (("--rate-kbit", "fast", "--rtt-ms", "600"), "'--rate-kbit': Input should be a valid number"),
    ],
)
def test_bad_input_says_what_is_wrong_and_changes_nothing(cli: Cli, args: tuple[str, ...], says: str) -> None:
    cli.onboard("init")
    cli.onboard("link", "expect", "--rate-kbit", "500", "--rtt-ms", "2600")
    r = cli.onboard("link", "expect", *args, ok=False)
    assert r.exit_code == 2 and says in r.output, r.output
    assert "500 kbit/s, round trip 2600 ms" in cli.onboard("link", "expect").output


async def test_a_real_first_sync_sizes_its_first_flights_by_the_link_it_was_told(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real `onboard sync` against the real ground on loopback, nothing measured before:
    told a 0.6 s, 800 kbit/s link, each photo's first OPEN carries 1/16 of ``FIRST_FLIGHT_BDP``
    of its BDP (without it, a whole chunk: tests/test_link_remembered.py); the link it then
    measures is kept as its memory, and the expected link stays set for a later week-old start."""
    token = setup_station(cli, tmp_path)
    cli.onboard("link", "expect", "--rate-kbit", "800", "--rtt-ms", "600")
    seen = spy_link_requests(monkeypatch)
    cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(sample_jpegs[1]), "--alt", "x", "p"
    )
    home = Home(cli.onboard_home)
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        assert (await sync(home, wait_published_s=20)).committed == 2
    each = math.floor(FIRST_FLIGHT_BDP * 100_000.0 * 0.6 / SenderConfig().initial_streams)
    firsts = {o.key: o for o in reversed(_photo_opens(seen))}.values()  # each photo's first OPEN
    assert firsts and all(o.data is not None and len(o.data) == min(each, o.size_bytes) for o in firsts)
    conn = queue.connect(home.db_path)
    measured = link.recall_memory(conn, time.time())
    assert measured is not None and measured.base_rtt_s < 0.6  # loopback's, not the one told
    assert link.expected_link(conn) is not None


def test_in_the_simulator_a_first_start_on_the_expected_link_fills_one_bdp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1.4 s / 1 %, a station's first start: with the link expected (the profile's nominal
    rate and round trip, as an operator would give them) its first flights fill ~0.9 of the
    path's BDP and no more; without it they hold the reference link's (0.6 s), ~0.4 here,
    until the first answers (its rate is this link's: the gate then lets out as much)."""
    profile = dataclasses.replace(load_profile("fill-rtt1.4-loss1"), cuts_per_hour=0.0)
    bdp = profile.to_ground_bps / 8 * profile.rtt_s
    wl = load_workload("photo-backlog")
    new = run_virtual(profile, wl, astronauts=2, duration_s=4, seed=6, trace_s=0.1)
    nominal = LinkMemory(rate_bytes_s=profile.to_ground_bps / 8, base_rtt_s=profile.rtt_s, measured_at=NOW)
    monkeypatch.setattr(link, "expected_link", lambda conn: nominal)
    told = run_virtual(profile, wl, astronauts=2, duration_s=4, seed=6, trace_s=0.1)
    assert 0.8 <= _first_seconds_max_bdp(told, bdp, 4.0) <= 1.05
    assert _first_seconds_max_bdp(new, bdp, 2.5) < 0.6
