"""The link the station remembers between passes (issue 14, protocol/link_memory.py): a new
sync's first flights come to about one bandwidth-delay product of the last pass's link, not
sixteen chunks whatever the path; a memory that is damaged, stale or from the future is
ignored, never used, and never stops a sync.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from hypothesis import given
from hypothesis import strategies as st
from link_support import REFERENCE_EACH, link_to, running_ground, setup_station, spy_link_requests, station_db
from test_link_first_flight import _photo_opens
from test_link_memory import MIB, _fake_photo, _jpeg_header

import onboard.sync
from onboard import link, queue
from onboard.delivery import DeliveryMeter
from onboard.home import Home
from onboard.remembered import REMEMBER_EVERY_S, LinkRecorder
from onboard.sync import sized_by_memory, sync
from protocol import LocalProtocolError
from protocol.link_memory import (
    FIRST_FLIGHT_BDP,
    MAX_AGE_S,
    MAX_AHEAD_S,
    REFERENCE_RATE_BYTES_S,
    LinkMemory,
    first_flight_bytes,
    replaces,
    start_streams,
)
from protocol.transfer import SenderConfig
from simlink.profile import load_profile
from simlink.result import RunResult
from simlink.virtual import run_virtual
from simlink.workload import load_workload

NOW = 1_800_000_000.0
rates = st.floats(min_value=1.0, max_value=1e9, allow_nan=False)
rtts = st.floats(min_value=1e-4, max_value=30.0, allow_nan=False)
memories = st.builds(
    LinkMemory, rate_bytes_s=rates, base_rtt_s=rtts, measured_at=st.floats(min_value=1.0, max_value=4e9)
)


@given(memories)
def test_a_memory_reads_back_as_written(m: LinkMemory) -> None:
    assert LinkMemory.decode(m.encode()) == m


@given(st.text(max_size=200))
def test_anything_else_stored_is_refused_with_a_reason(text: str) -> None:
    try:
        LinkMemory.decode(text)
    except LocalProtocolError as exc:
        assert "link memory" in str(exc)


@pytest.mark.parametrize(
    "doc",
    [
        {"rate_bytes_s": 0, "base_rtt_s": 1.0, "measured_at": NOW},
        {"rate_bytes_s": -5.0, "base_rtt_s": 1.0, "measured_at": NOW},
        {"rate_bytes_s": 1e5, "base_rtt_s": float("nan"), "measured_at": NOW},
        {"rate_bytes_s": 1e5, "base_rtt_s": float("inf"), "measured_at": NOW},
        {"rate_bytes_s": True, "base_rtt_s": 1.0, "measured_at": NOW},
        {"rate_bytes_s": "1e5", "base_rtt_s": 1.0, "measured_at": NOW},
        {"rate_bytes_s": 1e5, "base_rtt_s": 1.0},
        {"rate_bytes_s": 1e5, "base_rtt_s": 1.0, "measured_at": NOW, "extra": 1},
        [1e5, 1.0, NOW],
    ],
)
def test_a_damaged_memory_says_what_is_wrong(doc: object) -> None:
    with pytest.raises(LocalProtocolError, match="link memory"):
        LinkMemory.decode(json.dumps(doc))


@given(memories, st.floats(min_value=-3 * MAX_AGE_S, max_value=3 * MAX_AGE_S))
def test_only_a_recent_memory_is_usable(m: LinkMemory, age: float) -> None:
    assert m.usable(m.measured_at + age) == (-MAX_AHEAD_S <= age <= MAX_AGE_S)


@given(memories, st.integers(1, 64), st.integers(1, 64 * 1024), st.integers(0, 512 * 1024))
def test_the_first_flights_hold_one_bdp_together_within_a_chunks_bounds(
    m: LinkMemory, streams: int, least: int, extra: int
) -> None:
    most = least + extra
    each = first_flight_bytes(m, streams, least, most)
    assert least <= each <= most
    total = FIRST_FLIGHT_BDP * m.bdp_bytes
    if each > least:  # not raised to the least: never more than one BDP together
        assert each * streams <= total
    if each < most:  # not held to the most: one BDP together, to a byte per stream
        assert each * streams >= total - streams


def test_the_bounds_must_make_sense() -> None:
    m = LinkMemory(rate_bytes_s=1e5, base_rtt_s=1.0, measured_at=NOW)
    for streams, least, most in ((0, 1024, 65536), (16, 0, 65536), (16, 4096, 1024)):
        with pytest.raises(LocalProtocolError, match="first flight bounds"):
            first_flight_bytes(m, streams, least, most)


def test_a_start_on_the_links_of_issue_14() -> None:
    """1.5 Mbit/s (~185 kB/s delivered at 1 % loss): 0.6 s starts with 16 streams and ~6 kB
    first flights each, 1.4 s 22 and 2.6 s 41 streams, ~10.6 kB each, where a chunk (64 KiB
    each, 1 MiB together) was 9 and 2 BDP; 6 Mbit/s starts with 86 and 159 streams, where 16
    took ~60 s to grow to what 2.6 s needs."""
    c = SenderConfig()
    for rate, rtt, streams, each in (
        (185_000.0, 0.6, 16, 6_243),
        (185_000.0, 1.4, 22, 10_595),
        (185_000.0, 2.6, 41, 10_558),
        (720_000.0, 1.4, 86, 10_548),
        (720_000.0, 2.6, 159, 10_596),
    ):
        m = LinkMemory(rate_bytes_s=rate, base_rtt_s=rtt, measured_at=NOW)
        sized = sized_by_memory(c, m)
        assert (sized.start_streams, sized.first_flight_bytes) == (streams, each)
        assert sized.initial_rate_bytes_s == rate  # chunks sized by it until one is measured
    slow = LinkMemory(rate_bytes_s=2_000.0, base_rtt_s=0.6, measured_at=NOW)
    assert sized_by_memory(c, slow).first_flight_bytes == c.min_chunk_bytes
    assert sized_by_memory(c, slow).start_streams == c.initial_streams
    fast = LinkMemory(rate_bytes_s=1e9, base_rtt_s=0.6, measured_at=NOW)
    assert sized_by_memory(c, fast).first_flight_bytes == c.initial_chunk_bytes
    assert sized_by_memory(c, fast).start_streams == c.max_window


@given(memories, st.integers(1, 100_000), st.integers(1, 64), st.integers(0, 200))
def test_start_streams_stay_within_bounds_and_grow_with_the_path(
    m: LinkMemory, share: int, least: int, extra: int
) -> None:
    most = least + extra
    n = start_streams(m, share, least, most)
    assert least <= n <= most
    longer = LinkMemory(rate_bytes_s=m.rate_bytes_s, base_rtt_s=m.base_rtt_s * 2, measured_at=m.measured_at)
    assert start_streams(longer, share, least, most) >= n


def test_start_streams_bounds_must_make_sense() -> None:
    m = LinkMemory(rate_bytes_s=1e5, base_rtt_s=1.0, measured_at=NOW)
    for share, least, most in ((0, 16, 160), (11_719, 0, 160), (11_719, 16, 8)):
        with pytest.raises(LocalProtocolError, match="start streams bounds"):
            start_streams(m, share, least, most)


def test_without_a_memory_the_config_stands_and_a_size_given_is_kept() -> None:
    m = LinkMemory(rate_bytes_s=185_000.0, base_rtt_s=0.6, measured_at=NOW)
    assert sized_by_memory(SenderConfig(), None) == SenderConfig()
    given_size = SenderConfig(first_flight_bytes=12 * 1024)
    # The first flights keep the size given; the rate chunks start from is the memory's.
    assert sized_by_memory(given_size, m) == dataclasses.replace(
        given_size, initial_rate_bytes_s=m.rate_bytes_s
    )


@given(memories, st.one_of(st.none(), memories), st.booleans(), st.floats(min_value=1.0, max_value=4e9))
def test_a_pass_that_sent_little_never_lowers_the_memory(
    new: LinkMemory, kept: LinkMemory | None, limited: bool, now: float
) -> None:
    """A measurement taken while the link was the limit replaces what is kept; one taken while
    the station sent little (a few text posts) only if it is faster, or nothing usable is kept."""
    got = replaces(new, kept, now=now, link_limited=limited)
    if limited or kept is None or not kept.usable(now):
        assert got
    else:
        assert got == (new.rate_bytes_s >= kept.rate_bytes_s)


def test_a_memory_is_recalled_while_recent_and_replaced_by_the_next(tmp_path: Path) -> None:
    conn = station_db(tmp_path)
    assert link.recall_memory(conn, NOW) is None
    first = LinkMemory(rate_bytes_s=1e5, base_rtt_s=0.7, measured_at=NOW)
    link.remember(conn, first)
    assert link.recall_memory(conn, NOW + 60) == first
    later = dataclasses.replace(first, rate_bytes_s=2e5, measured_at=NOW + 3600)
    link.remember(conn, later)
    assert link.recall_memory(conn, NOW + 3700) == later
    assert link.recall_memory(conn, NOW + 3600 + MAX_AGE_S + 1) is None  # stale
    assert link.recall_memory(conn, NOW + 3600 - MAX_AHEAD_S - 1) is None  # the clock stepped back a lot


@pytest.mark.parametrize(
    "stored", ["", "{", "null", '{"rate_bytes_s": -1, "base_rtt_s": 1, "measured_at": 1}']
)
def test_a_damaged_row_is_ignored(tmp_path: Path, stored: str) -> None:
    conn = station_db(tmp_path)
    link.set_state(conn, link.LINK_MEMORY_KEY, stored)
    assert link.recall_memory(conn, NOW) is None


# -- the real ground and `onboard sync` --------------------------------------------------


def _post_photo(cli: Cli, photo: Path, text: str) -> None:
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "x", text)


async def test_a_sync_remembers_its_link_and_the_next_start_sizes_its_first_flight_by_it(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real sync on loopback leaves a memory of what it measured (a text post's small
    request gives the base RTT, a 24 MiB photo a delivery rate); a later sync started with a remembered 0.6 s, 100 kB/s link
    sends each photo's first flight as 1/16 of ``FIRST_FLIGHT_BDP`` of its BDP."""
    token = setup_station(cli, tmp_path)
    home = Home(cli.onboard_home)
    seen = spy_link_requests(monkeypatch)
    restarts: list[float | None] = []  # the remembered rate each sync's send gate restarts from

    class _Meter(DeliveryMeter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            restarts.append(self.restart_rate)

    monkeypatch.setattr(onboard.sync, "DeliveryMeter", _Meter)
    big = tmp_path / "big.jpg"
    _fake_photo(big, _jpeg_header(sample_jpegs[0].read_bytes()), 24 * MIB)
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "a text post: a small request, timed")
    _post_photo(cli, big, "first pass")
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        assert (await sync(home, wait_published_s=20)).committed == 3
        conn = queue.connect(home.db_path)
        measured = link.recall_memory(conn, time.time())
        assert measured is not None and measured.rate_bytes_s > 0 and 0 < measured.base_rtt_s < 1.0
        first = _photo_opens(seen)
        assert len(first[0].data) == REFERENCE_EACH  # no memory yet: sized on the reference link

        remembered = LinkMemory(rate_bytes_s=100_000.0, base_rtt_s=0.6, measured_at=measured.measured_at)
        link.remember(conn, remembered)
        conn.close()
        seen.clear()
        monkeypatch.setattr(link, "remember", lambda conn, memory: None)  # keep this one for the start
        _post_photo(cli, sample_jpegs[1], "second pass")
        assert (await sync(home, wait_published_s=20)).committed == 2
    expected = math.floor(FIRST_FLIGHT_BDP * 100_000.0 * 0.6 / SenderConfig().initial_streams)
    firsts = {o.key: o for o in reversed(_photo_opens(seen))}.values()  # each photo's first OPEN
    assert firsts and all(len(o.data) == min(expected, o.size_bytes) for o in firsts)
    # and the gate restarts from that link (test_link_restart); the first sync from the reference's
    assert restarts == [REFERENCE_RATE_BYTES_S, 100_000.0]


def test_the_recorder_writes_every_30_s_and_never_lowers_the_memory_from_a_pass_sending_little(
    tmp_path: Path,
) -> None:
    """onboard/remembered.py, on a real SQLite file: what a sync notes is written every
    ``REMEMBER_EVERY_S`` (and when it stops); a slower link replaces the memory only when it
    was measured with the link the limit, a faster one always."""
    conn = station_db(tmp_path)
    kept = LinkMemory(rate_bytes_s=2e5, base_rtt_s=0.6, measured_at=NOW)
    link.remember(conn, kept)
    rec = LinkRecorder(conn, NOW + 10, 100.0)
    assert rec.kept == kept
    rec.note(1e3, 0.6, wall_now=NOW + 20, link_limited=False)  # a few text posts
    rec.note(None, 0.6, wall_now=NOW + 21, link_limited=True)  # no rate measured
    rec.flush(101.0, force=True)  # nothing noted: nothing written
    assert link.recall_memory(conn, NOW + 30) == kept
    rec.note(1e5, 0.7, wall_now=NOW + 40, link_limited=True)  # a backlog moving: the link is slower
    rec.flush(100.0 + REMEMBER_EVERY_S - 1)
    assert link.recall_memory(conn, NOW + 50) == kept  # not yet: within REMEMBER_EVERY_S of the start
    rec.flush(100.0 + REMEMBER_EVERY_S)
    slower = LinkMemory(rate_bytes_s=1e5, base_rtt_s=0.7, measured_at=NOW + 40)
    assert link.recall_memory(conn, NOW + 50) == slower == rec.kept
    rec.note(3e5, 0.7, wall_now=NOW + 60, link_limited=False)  # faster, even sending little
    rec.flush(0.0, force=True)
    faster = LinkMemory(rate_bytes_s=3e5, base_rtt_s=0.7, measured_at=NOW + 60)
    assert link.recall_memory(conn, NOW + 70) == faster


# -- the simulator keeps it as sync does ------------------------------------------------


def _first_seconds_max_bdp(r: RunResult, bdp: float, until_s: float = 2.0) -> float:
    return max(n / bdp for t, n in r.in_network_trace if t < until_s)


def test_the_simulator_remembers_the_link_and_starts_from_it() -> None:
    """A virtual run leaves the link it measured (onboard/remembered.py, as sync does), and a
    run started with it sizes its first flights by it: at 0.6 s the first 2 s then hold under
    ~1 BDP (0.9 BDP of first flights, plus headers). A first start holds that too here, where
    the reference link it assumes is this one (tests/test_link_reference.py)."""
    profile = dataclasses.replace(load_profile("fill-rtt0.6-loss1"), cuts_per_hour=0.0)
    bdp = profile.to_ground_bps / 8 * profile.rtt_s
    wl = load_workload("photo-backlog")
    warm = run_virtual(profile, wl, astronauts=2, duration_s=40, seed=5)
    assert warm.link_memory is not None
    m = LinkMemory.decode(warm.link_memory)
    assert 0.9 * profile.to_ground_bps / 8 < m.rate_bytes_s <= profile.to_ground_bps / 8
    assert profile.rtt_s <= m.base_rtt_s < 1.1 * profile.rtt_s
    warmed = run_virtual(
        profile, wl, astronauts=2, duration_s=6, seed=6, trace_s=0.1, remembered=warm.link_memory
    )
    new = run_virtual(profile, wl, astronauts=2, duration_s=6, seed=6, trace_s=0.1)
    assert _first_seconds_max_bdp(warmed, bdp) <= 1.05
    assert _first_seconds_max_bdp(new, bdp) <= 1.05


def test_a_start_on_a_fast_long_link_it_remembers_keeps_the_link_full() -> None:
    """6 Mbit/s, 2.6 s (BDP 1.95 MB), remembered: past the first flights the start keeps its
    streams, its windows' share of the link and its chunks' rate, so 6-16 s in the network
    holds ~0.58 BDP mean where it held ~0.25 (the windows at 8 KiB each, the count cut to 83
    by an interval that delivered nothing, 13 kB chunks sized by 4 kB/s: docs/link.md "A
    start on a fast, long link")."""
    profile = dataclasses.replace(
        load_profile("fill-rtt2.6-loss0"), to_ground_bps=6e6, to_station_bps=2e6, cuts_per_hour=0.0
    )
    bdp = profile.to_ground_bps / 8 * profile.rtt_s
    wl = load_workload("photo-backlog")
    warm = run_virtual(profile, wl, astronauts=4, duration_s=60, seed=5)
    r = run_virtual(
        profile, wl, astronauts=4, duration_s=16, seed=6, trace_s=0.1, remembered=warm.link_memory
    )
    held = [n / bdp for t, n in r.in_network_trace if 6.0 <= t < 16.0]
    assert sum(held) / len(held) > 0.45
    assert max(held) <= 1.05  # still within the bound a cut may cost
