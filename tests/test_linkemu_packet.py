"""The packet emulator (linkemu/packet.py): real kernel TCP and UDP between two namespaces, real loss.

Sockets live in small Python programs started with ``ip netns exec`` (one per side); each test
moves little data at small rates and bounds every wait, so a loaded machine slows it, never
hangs it. Without root, /dev/net/tun or `ip netns` the tests skip with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from linkemu.errors import PacketLinkError
from linkemu.packet import PacketLink, WayConfig, check_environment, remove_stale_namespaces
from linkemu.proxy import LossWindow

PREFIX = "pktlinktest"
WAIT_S = 30.0  # bound on any one program; the tests take a few seconds

# Ground side of a TCP transfer: accept one connection, hash what arrives, answer with the hash.
TCP_SINK = r"""
import hashlib, socket, sys
s = socket.socket(); s.bind((sys.argv[1], 9000)); s.listen(); print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while d := c.recv(65536):
    h.update(d); n += len(d)
c.sendall(h.hexdigest().encode()); c.close()
"""
# Station side: send N seeded random bytes, read the ground's hash, report it with TCP_INFO.
TCP_SOURCE = r"""
import json, random, socket, struct, sys
data = random.Random(int(sys.argv[3])).randbytes(int(sys.argv[2]))
s = socket.create_connection((sys.argv[1], 9000), timeout=60)
s.sendall(data); s.shutdown(socket.SHUT_WR)
digest = b""
while d := s.recv(100):
    digest += d
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
# struct tcp_info: tcpi_total_retrans is the u32 at byte 100
cc = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\0")[0].decode()
print(json.dumps({"digest": digest.decode(), "retrans": struct.unpack_from("I", info, 100)[0], "cc": cc}))
"""
TCP_ECHO = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 9000)); s.listen(); print("ready", flush=True)
c, _ = s.accept()
while d := c.recv(100):
    c.sendall(d)
"""
TCP_PING = r"""
import json, socket, sys, time
t0 = time.monotonic(); s = socket.create_connection((sys.argv[1], 9000), timeout=20)
t1 = time.monotonic(); s.sendall(b"ping"); got = s.recv(100); t2 = time.monotonic()
print(json.dumps({"connect_s": t1 - t0, "echo_s": t2 - t1, "got": got.decode()}))
"""
UDP_COUNT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 9001)); print("ready", flush=True)
seen = set(); s.settimeout(10)
try:
    while True:
        seen.add(s.recv(100)); s.settimeout(1.5)
except TimeoutError:
    pass
print(len(seen))
"""
UDP_SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b"%08d" % i, (sys.argv[1], 9001)); time.sleep(0.002)
"""


@contextlib.asynccontextmanager
async def packet_link(
    up: WayConfig, down: WayConfig | None = None, seed: int = 0, congestion_control: str = "reno"
) -> AsyncIterator[PacketLink]:
    try:
        check_environment()
        cc = congestion_control
        link = PacketLink(up=up, down=down or up, seed=seed, prefix=PREFIX, congestion_control=cc)
    except PacketLinkError as exc:
        pytest.skip(str(exc))
    try:
        await link.start()
    except PacketLinkError as exc:
        pytest.skip(f"cannot set up the packet link here: {exc}")
    try:
        yield link
    finally:
        await link.close()


async def spawn(link: PacketLink, ns: str, program: str, *args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *link.netns_argv(ns), sys.executable, "-c", program, *map(str, args),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def ready(p: asyncio.subprocess.Process) -> None:
    assert p.stdout is not None
    assert await asyncio.wait_for(p.stdout.readline(), WAIT_S) == b"ready\n"


async def output(p: asyncio.subprocess.Process) -> str:
    try:
        out, _ = await asyncio.wait_for(p.communicate(), WAIT_S)
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    assert p.returncode == 0
    return out.decode()


def within_binomial(k: int, n: int, p: float) -> bool:
    """k successes of n trials at p, allowing 6 σ (a false alarm about once in 10⁹ runs)."""
    return abs(k - n * p) <= 6 * math.sqrt(n * p * (1 - p)) + 1


def our_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX + "-")]


async def test_tcp_transfer_arrives_whole_at_3_percent_loss() -> None:
    size, loss = 200_000, 0.03
    way = WayConfig(rate_bps=2_000_000, delay_s=0.02, loss=loss)
    async with packet_link(way, seed=7) as link:
        sink = await spawn(link, link.ground_ns, TCP_SINK, link.ground_addr)
        await ready(sink)
        source = await spawn(link, link.station_ns, TCP_SOURCE, link.ground_addr, size, 1)
        report = json.loads(await output(source))
        await output(sink)
        s = link.stats
    assert report["digest"] == hashlib.sha256(random.Random(1).randbytes(size)).hexdigest()
    assert report["retrans"] > 0, "the kernel's TCP saw the loss and retransmitted"
    assert report["cc"] == "reno", "loss-based, not this host's BBR"
    sent = s.up.sent_packets + s.down.sent_packets
    lost = s.up.loss_packets + s.down.loss_packets
    assert sent > size / 1500 and within_binomial(lost, sent, loss)
    assert s.bytes_up > size  # IP packets: payload plus headers and retransmissions
    assert s.up.dark_packets == s.down.dark_packets == 0
    assert link.write_errors == 0


async def test_round_trip_is_twice_the_delay() -> None:
    delay = 0.2
    async with packet_link(WayConfig(rate_bps=1_000_000, delay_s=delay)) as link:
        echo = await spawn(link, link.ground_ns, TCP_ECHO, link.ground_addr)
        await ready(echo)
        ping = json.loads(await output(await spawn(link, link.station_ns, TCP_PING, link.ground_addr)))
        await output(echo)
    assert ping["got"] == "ping"
    for rtt in (ping["connect_s"], ping["echo_s"]):
        assert 2 * delay <= rtt < 2 * delay + 1.0


async def test_dark_drops_everything_and_tcp_survives_a_short_one() -> None:
    size = 300_000  # 2.4 s at 1 Mbit/s: the dark falls mid-transfer
    async with packet_link(WayConfig(rate_bps=1_000_000, delay_s=0.02)) as link:
        sink = await spawn(link, link.ground_ns, TCP_SINK, link.ground_addr)
        await ready(sink)
        source = await spawn(link, link.station_ns, TCP_SOURCE, link.ground_addr, size, 2)
        for _ in range(200):  # ≤ 10 s for the transfer to get going
            if link.stats.bytes_up > 50_000:
                break
            await asyncio.sleep(0.05)
        assert link.stats.bytes_up > 50_000
        link.start_loss()
        assert link.dark
        crossed = (link.stats.up.delivered_packets, link.stats.down.delivered_packets)
        await asyncio.sleep(1.0)
        assert (link.stats.up.delivered_packets, link.stats.down.delivered_packets) == crossed
        link.end_loss()
        report = json.loads(await output(source))
        await output(sink)
        s = link.stats
    assert report["digest"] == hashlib.sha256(random.Random(2).randbytes(size)).hexdigest()
    assert s.up.dark_packets + s.down.dark_packets > 0
    assert s.loss_cuts == 1 and report["retrans"] > 0
    # The fall threw away what the emulator held mid-transfer: the spell's cost, counted once.
    [fall] = s.falls
    assert fall.cause == "loss" and 0 < fall.up_bytes <= s.up.dark_bytes


async def test_udp_datagrams_are_lost_at_the_set_rate() -> None:
    n, loss = 400, 0.1
    async with packet_link(WayConfig(rate_bps=2_000_000, delay_s=0.01, loss=loss), seed=11) as link:
        counter = await spawn(link, link.ground_ns, UDP_COUNT, link.ground_addr)
        await ready(counter)
        await output(await spawn(link, link.station_ns, UDP_SEND, link.ground_addr, n))
        received = int(await output(counter))
        s = link.stats
    assert s.up.loss_packets == n - received, "every datagram the emulator dropped, and no other, is missing"
    assert within_binomial(n - received, n, loss)


async def test_scheduled_windows_and_cuts_darken_the_link_for_a_while() -> None:
    async with packet_link(WayConfig(delay_s=0.01)) as link:
        link.schedule_loss([LossWindow(start_s=0.0, duration_s=0.3)])
        await asyncio.sleep(0.1)
        assert link.dark and link.stats.loss_cuts == 1
        await asyncio.sleep(0.5)
        assert not link.dark
        link.cut_all()
        link.cut_all()  # already dark: one spell
        assert link.dark and link.stats.random_cuts == 1
        await asyncio.sleep(0.8)
        assert not link.dark
        assert [(f.cause, f.up_bytes, f.down_bytes) for f in link.stats.falls] == [
            ("loss", 0, 0),
            ("cut", 0, 0),
        ]


async def test_namespaces_are_gone_after_exit_even_after_an_exception() -> None:
    async with packet_link(WayConfig()) as link:
        names = {link.station_ns, link.ground_ns}
        assert names <= set(our_namespaces())
    assert not names & set(our_namespaces())
    with pytest.raises(RuntimeError, match="inside"):
        async with PacketLink(prefix=PREFIX) as link:
            names = {link.station_ns, link.ground_ns}
            raise RuntimeError("inside the block")
    assert not names & set(our_namespaces())


def test_stale_namespaces_of_dead_processes_are_removed() -> None:
    try:
        check_environment()
    except PacketLinkError as exc:
        pytest.skip(str(exc))
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is now free (reuse within this test is vanishingly unlikely)
    name = f"{PREFIX}-{dead.pid}-0-sta"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns add failed: {exc.stderr!r}")
    assert remove_stale_namespaces(PREFIX) == [name]
    assert name not in our_namespaces()


@pytest.mark.parametrize("prefix", ["", "has-dash", "x" * 17, "a b"])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(PacketLinkError, match="prefix"):
        PacketLink(prefix=prefix)


def test_cli_runs_a_command_across_the_link() -> None:
    try:
        check_environment()
    except PacketLinkError as exc:
        pytest.skip(str(exc))
    ground = 'python3 -c \'import os, socket; s = socket.socket(); s.bind((os.environ["GROUND_ADDR"], 9000)); s.listen(); c, _ = s.accept(); print("ground got", c.recv(100).decode())\''
    station = (
        "import os, socket; socket.create_connection((os.environ['GROUND_ADDR'], 9000)).sendall(b'hello')"
    )
    r = subprocess.run(
        [sys.executable, "-m", "linkemu.packet", "--delay-ms", "50", "--loss-percent", "0", "--prefix", PREFIX,
         "--ground", ground, "--", sys.executable, "-c", station],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "ground got hello" in r.stdout
    assert "linkemu.packet: up " in r.stderr


def test_an_unknown_congestion_control_is_refused() -> None:
    with pytest.raises(PacketLinkError, match="not available"):
        PacketLink(congestion_control="no-such-cc")


async def test_connections_use_the_congestion_control_asked_for() -> None:
    # cubic: a namespace may not default to it on this host (not in tcp_allowed_congestion_control),
    # so it comes from the route each side takes to the other.
    async with packet_link(WayConfig(delay_s=0.01), congestion_control="cubic") as link:
        sink = await spawn(link, link.ground_ns, TCP_SINK, link.ground_addr)
        await ready(sink)
        report = json.loads(
            await output(await spawn(link, link.station_ns, TCP_SOURCE, link.ground_addr, 1000, 3))
        )
        await output(sink)
    assert report["cc"] == "cubic"
