"""Issue 14: a text post written during a loss of signal is published within 2 RTT of the
link's return (virtual time: the simulator drives the shipped sender, planner and ground).

Why it holds: while the link is down every new connection races (a SYN each 0.4 RTT, as
onboard/sync.py's connector does), so one leaves within 0.4 RTT of the return; the text
bundle rides inside its OPEN (again after a probe into the dark); and posts written in the dark
are not held behind a bundle stuck there, each racing for the return. Handshake (1 RTT) plus
the request's way up (0.5 RTT) leave 0.5 RTT for the race, serialisation and ground.
"""

from __future__ import annotations

import dataclasses

import pytest

from simlink.profile import load_profile
from simlink.virtual import run_virtual, transfer_available
from simlink.workload import load_workload

pytestmark = pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")


def _after_return_rtts(profile_name: str, hours: float, seed: int, **change: float) -> list[float]:
    """For each text post queued inside a dark window: (published − window end) / RTT."""
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
                assert p.published_s is not None, "a post written in the dark was never published"
                out.append((p.published_s - end) / prof.rtt_s)
    return sorted(out)


def test_text_written_in_the_dark_is_published_within_2_rtt_of_the_return() -> None:
    """iss-ku (0.6 s RTT, 0.5 % loss), three hours: every post written in its gaps."""
    lat = _after_return_rtts("iss-ku", 3.0, 7)
    print(f"\nafter the link's return, in RTTs: {[round(x, 2) for x in lat]}")
    assert len(lat) >= 4
    assert max(lat) <= 2.0


@pytest.mark.slow
def test_on_the_lunar_link_too() -> None:
    """lunar (2.6 s RTT, a 45-minute gap every 2 h), loss left out: random loss costs a lost
    SYN or segment its retransmission, which no scheduling removes. A probe gives up after
    ``down_probe_timeout_s`` (300 s) and starts again at once: a return in its last RTT costs
    that post up to half an RTT more (~1 % of probes on this path)."""
    lat = _after_return_rtts("lunar", 6.0, 7, loss=0.0)
    print(f"\nafter the link's return, in RTTs: {[round(x, 2) for x in lat]}")
    assert len(lat) >= 10
    assert sum(x <= 2.0 for x in lat) >= 0.9 * len(lat)
    assert max(lat) <= 2.5


@pytest.mark.slow
def test_with_random_loss_the_late_posts_are_the_ones_physics_makes_late() -> None:
    """lunar with its 1 % loss, a held-out seed (docs/link.md states the bound): a lost SYN or
    SYN-ACK costs the next raced attempt (0.4 RTT), a lost request segment TCP's RTO (≥ 3 s,
    1.14 RTT here), and a probe whose 300 s deadline falls just after the return starts again.
    Most posts still make 2 RTT; none takes longer than one of each of those."""
    lat = _after_return_rtts("lunar", 12.0, 11)
    print(f"\nafter the link's return, in RTTs: {[round(x, 2) for x in lat]}")
    assert len(lat) >= 30
    assert sum(x <= 2.0 for x in lat) >= 0.9 * len(lat)
    assert max(lat) <= 1.5 + 0.4 + 0.4 + 3.0 / 2.64 + 0.1  # ≈ 3.5 RTT


async def test_sync_races_connection_attempts_to_ground() -> None:
    """onboard sync's connector: with a race set, ground's one address is tried as many times
    as asked, the attempts staggered by ``race_every_s`` (aiohttp's Happy Eyeballs race), each
    attempt's socket giving up after one SYN retry; and a request still gets through."""
    import socket

    import aiohttp
    from aiohttp import web

    from onboard.sync import RACE_SYN_RETRIES, _racing_socket, _WatchedConnector

    sock = _racing_socket((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 0)))
    with sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT) == RACE_SYN_RETRIES

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    connector = _WatchedConnector(socket_factory=_racing_socket)
    connector.race_every_s, connector.race_attempts = 0.3, 5
    hosts = [{"hostname": "127.0.0.1", "host": "127.0.0.1", "port": port, "family": socket.AF_INET}]
    try:
        infos = connector._convert_hosts_to_addr_infos(hosts)  # type: ignore[arg-type]
        assert [i[-1] for i in infos] == [("127.0.0.1", port)] * 5
        assert connector._happy_eyeballs_delay == 0.3
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"http://127.0.0.1:{port}/") as r:
                assert await r.text() == "ok"
    finally:
        await runner.cleanup()
