"""Real loss for real kernel TCP and UDP: two network namespaces joined by a user-space link.

    [netns <prefix>-…-sta: tunA  station_addr] ◄─fd─► PacketLink ◄─fd─► [netns <prefix>-…-gnd: tunB  ground_addr]

Each namespace holds one TUN device (IFF_TUN|IFF_NO_PI, MTU 1500) whose file descriptor this
process opened before moving the device into the namespace, so one asyncio loop owns both
ends: every IP packet the station's kernel sends is read here, put through a
:class:`~linkemu.packet_schedule.LinkSchedule` (rate, delay, bounded drop-tail queue,
Bernoulli loss, the dark) and written into the ground's TUN when it is due, and back. The
kernels' own TCP (CUBIC, SACK, RACK/TLP, RTO) therefore meets real loss, unlike behind
linkemu/proxy.py, which only sees bytes TCP has already repaired.

Programs run inside the namespaces: ``subprocess.run([*link.netns_argv(link.ground_ns), "python3",
"server.py"])``; they reach each other at ``station_addr`` / ``ground_addr``.

Differences from LinkProxy (same names where the meaning carries over, so a caller can use either):
- The dark drops packets (both ways, and all in the network when it falls); it does not cut
  connections. They live or die by TCP's own timers: a short dark costs a retransmission
  timeout, a long one (minutes) makes the kernel give up. ``LossWindow.cut_after_s`` is
  therefore ignored, and ``stats.loss_cuts`` counts dark spells, not connections.
- ``cut_all()`` is a short dark spell (``cut_dark_s``), not an RST; ``stats.random_cuts``
  counts spells.
- ``stats.bytes_up`` / ``bytes_down`` count whole IP packets that crossed (headers, acks and
  retransmissions included), not stream bytes.

Needs root, /dev/net/tun and iproute2's ``ip netns``; otherwise :class:`PacketLinkError` says
which is missing. Namespaces are named ``<prefix>-<pid>-<n>-sta|gnd``; ``close()`` deletes
them (also after an exception), and :func:`remove_stale_namespaces` those of dead processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import itertools
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import PacketLinkError
from .packet_schedule import MTU_BYTES, LinkSchedule, WayConfig, WayCounters, WaySchedule
from .proxy import LossWindow

__all__ = [
    "DarkFall",
    "LossWindow",
    "PacketLink",
    "PacketLinkError",
    "PacketStats",
    "WayConfig",
    "check_environment",
    "remove_stale_namespaces",
]

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
READS_PER_WAKEUP = 64  # bounded, so one busy direction cannot starve the other's timers
IP_TIMEOUT_S = 10.0  # an `ip` command that takes longer is stuck, not slow
# Per-instance /30s from 10.64.0.0/10: each pair lives in its own namespaces so they could all
# share one, but distinct addresses make a capture or a log line say which link it came from.
ADDRESS_POOL = ipaddress.ip_network("10.64.0.0/10")
_instances = itertools.count()
UNLIMITED = WayConfig()  # no rate limit, no delay, no loss


@dataclass(frozen=True, slots=True)
class DarkFall:
    """One dark spell's fall: when (the loop's clock), why, and the IP bytes it threw away
    each way (queued at the bottleneck or on the line): what was in the network."""

    at: float
    cause: str  # "loss" (start_loss) or "cut" (cut_all)
    up_bytes: int
    down_bytes: int


@dataclass(slots=True)
class PacketStats:
    """Counters of a PacketLink: per direction (``up`` = station → ground) and dark spells."""

    up: WayCounters
    down: WayCounters
    loss_cuts: int = 0  # loss-of-signal spells begun (start_loss, schedule_loss)
    random_cuts: int = 0  # cut_all() spells begun
    falls: list[DarkFall] = field(default_factory=list)  # every spell begun, in order

    @property
    def bytes_up(self) -> int:
        """IP bytes that crossed station → ground ("bytes on the wire")."""
        return self.up.delivered_bytes

    @property
    def bytes_down(self) -> int:
        """IP bytes that crossed ground → station."""
        return self.down.delivered_bytes

    @property
    def cuts(self) -> int:
        return self.random_cuts + self.loss_cuts


def congestion_controls(which: str = "available") -> list[str]:
    """TCP congestion controls this kernel has (``available``) or lets namespaces default to
    (``allowed``); empty if it does not say."""
    try:
        with open(f"/proc/sys/net/ipv4/tcp_{which}_congestion_control") as f:
            return f.read().split()
    except OSError:
        return []


def check_environment() -> None:
    """Raise PacketLinkError saying why the packet link cannot run here (tests skip with it)."""
    if os.geteuid() != 0:
        raise PacketLinkError("the packet link needs root (network namespaces and TUN devices)")
    if not os.path.exists(TUN_DEVICE):
        raise PacketLinkError(f"the packet link needs {TUN_DEVICE} (the tun kernel module)")
    if shutil.which("ip") is None:
        raise PacketLinkError("the packet link needs iproute2's `ip` on PATH")


def _ip(*args: str) -> str:
    try:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PacketLinkError(f"`ip {' '.join(args)}` failed: {exc}") from exc
    if r.returncode != 0:
        raise PacketLinkError(f"`ip {' '.join(args)}` failed: {r.stderr.strip() or r.returncode}")
    return r.stdout


def _namespaces() -> list[str]:
    # `ip netns list` prints "name" or "name (id: 3)"
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces(prefix: str) -> list[str]:
    """Delete ``<prefix>-<pid>-…`` namespaces whose pid is dead; returns the names deleted."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-\d+-(?:sta|gnd)$")
    gone = []
    for ns in _namespaces():
        m = pattern.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(PacketLinkError):  # raced with another cleaner
                _ip("netns", "del", ns)
                gone.append(ns)
    return gone


def _open_tun() -> tuple[int, str]:
    """A new TUN device in this namespace: (fd, name the kernel gave it)."""
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise PacketLinkError(f"cannot open {TUN_DEVICE}: {exc}") from exc
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"", IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise PacketLinkError(f"cannot create a TUN device: {exc}") from exc
    return fd, ifr[:IFNAMSIZ].split(b"\0", 1)[0].decode()


class PacketLink:
    """Two namespaces and the emulated link between them; ``async with PacketLink(...) as link``.

    ``up`` is station → ground, ``down`` ground → station; ``seed`` picks the random losses
    (one stream per direction); ``prefix`` names the namespaces (use your test's or tool's
    name, so parallel users never collide); ``cut_dark_s`` is how long cut_all() darkens it.
    ``congestion_control``: the TCP congestion control of every connection between the two
    sides (set on each side's route to the other, ``congctl``, and as the namespace's default
    where the host allows it). None: this host's default, BBR on this machine, which does not
    back off on random loss. Default ``reno`` (loss-based, with SACK and RACK); ``cubic`` is
    what a station's Linux kernel runs and what simlink's model runs by default (its ``reno``
    compares with this one).
    """

    def __init__(
        self,
        *,
        up: WayConfig = UNLIMITED,
        down: WayConfig = UNLIMITED,
        seed: int = 0,
        prefix: str = "pktlink",
        cut_dark_s: float = 0.5,
        congestion_control: str | None = "reno",
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]{1,16}", prefix):
            raise PacketLinkError(f"prefix must be 1–16 letters, digits or _, not {prefix!r}")
        if not cut_dark_s > 0:
            raise PacketLinkError(f"cut_dark_s must be > 0 seconds, not {cut_dark_s!r}")
        self.schedule = LinkSchedule(up, down, seed)
        self.stats = PacketStats(up=self.schedule.up.counters, down=self.schedule.down.counters)
        self.prefix = prefix
        self.cut_dark_s = cut_dark_s
        available = congestion_controls("available")
        if congestion_control is not None and available and congestion_control not in available:
            raise PacketLinkError(
                f"TCP congestion control {congestion_control!r} is not available in this kernel "
                f"(available: {', '.join(available)})"
            )
        self.congestion_control = congestion_control
        n = next(_instances)
        pid = os.getpid()
        self.station_ns = f"{prefix}-{pid}-{n}-sta"
        self.ground_ns = f"{prefix}-{pid}-{n}-gnd"
        block = (pid * 31 + n) % (ADDRESS_POOL.num_addresses // 4)
        base = ADDRESS_POOL.network_address + 4 * block
        self.station_addr = str(base + 1)
        self.ground_addr = str(base + 2)
        self.station_dev = self.ground_dev = ""
        self._fds: dict[str, int] = {}  # "sta"/"gnd" -> TUN fd
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._created: list[str] = []  # namespaces to delete on close
        self._dark_for: set[object] = set()  # why it is dark: "loss" and/or cut_all tokens
        self._scheduled: list[asyncio.Task[None]] = []
        self._cut_timers: list[asyncio.TimerHandle] = []
        self.write_errors = 0  # packets the receiving kernel refused (should stay 0)

    # -- lifecycle -------------------------------------------------------------------

    def netns_argv(self, ns: str) -> list[str]:
        """The argv prefix that runs a command inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns]

    async def start(self) -> PacketLink:
        """Create the namespaces and TUN devices and start forwarding; raises PacketLinkError."""
        check_environment()
        self._loop = asyncio.get_running_loop()
        try:
            remove_stale_namespaces(self.prefix)
            for ns, side, addr, peer in (
                (self.station_ns, "sta", self.station_addr, self.ground_addr),
                (self.ground_ns, "gnd", self.ground_addr, self.station_addr),
            ):
                _ip("netns", "add", ns)
                self._created.append(ns)
                fd, dev = _open_tun()
                self._fds[side] = fd
                _ip("link", "set", "dev", dev, "netns", ns)
                # No IPv6 link-local address: no neighbour discovery or MLD chatter on the link.
                _ip("-n", ns, "link", "set", "dev", dev, "addrgenmode", "none")
                _ip("-n", ns, "addr", "add", addr, "peer", peer, "dev", dev)
                _ip("-n", ns, "link", "set", "dev", dev, "mtu", str(MTU_BYTES), "up")
                _ip("-n", ns, "link", "set", "dev", "lo", "up")
                if self.congestion_control is not None:
                    self._set_congestion_control(ns, dev, addr, peer)
                if side == "sta":
                    self.station_dev = dev
                else:
                    self.ground_dev = dev
        except BaseException:
            with contextlib.suppress(PacketLinkError):  # the error that stopped set-up says more
                self._teardown()
            raise
        self._loop.add_reader(self._fds["sta"], self._on_readable, "up")
        self._loop.add_reader(self._fds["gnd"], self._on_readable, "down")
        return self

    async def close(self) -> None:
        """Stop forwarding and delete the namespaces (their devices go with them)."""
        self._teardown()

    async def __aenter__(self) -> PacketLink:
        return await self.start()

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        try:
            self._teardown()
        except PacketLinkError:
            if exc_type is None:
                raise  # else the exception already in flight says more; stale ones get swept later

    def _teardown(self) -> None:
        for t in self._scheduled:
            t.cancel()
        self._scheduled.clear()
        for h in [*self._timers.values(), *self._cut_timers]:
            h.cancel()
        self._timers.clear()
        self._cut_timers.clear()
        for fd in self._fds.values():
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        self._fds.clear()
        failed = []
        while self._created:
            ns = self._created.pop()
            try:
                _ip("netns", "del", ns)
            except PacketLinkError as exc:
                failed.append(str(exc))
        if failed:
            raise PacketLinkError("; ".join(failed))

    def _set_congestion_control(self, ns: str, dev: str, addr: str, peer: str) -> None:
        """Make ``congestion_control`` what every connection between the two sides uses."""
        cc = self.congestion_control
        assert cc is not None
        # The route to the other side names it (congctl), which every connection of the link
        # takes; a route may name any available algorithm, while a namespace may default only
        # to what the host allows (net.ipv4.tcp_allowed_congestion_control).
        _ip("-n", ns, "route", "replace", f"{peer}/32", "dev", dev, "src", addr, "congctl", cc)
        if cc in congestion_controls("allowed"):
            # and the namespace's default too, so `sysctl net.ipv4.tcp_congestion_control` inside
            # says what runs (per namespace since Linux 4.15)
            _ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}")

    # -- forwarding ------------------------------------------------------------------

    def _way(self, way: str) -> tuple[WaySchedule, int, int]:
        if way == "up":
            return self.schedule.up, self._fds["sta"], self._fds["gnd"]
        return self.schedule.down, self._fds["gnd"], self._fds["sta"]

    def _on_readable(self, way: str) -> None:
        assert self._loop is not None
        sched, fd_in, _ = self._way(way)
        now = self._loop.time()
        for _ in range(READS_PER_WAKEUP):
            try:
                packet = os.read(fd_in, 65536)
            except (BlockingIOError, InterruptedError):
                break
            sched.offer(packet, now)
        self._arm(way)

    def _arm(self, way: str) -> None:
        """Keep one timer per direction, at the next packet's due time."""
        assert self._loop is not None
        sched = self._way(way)[0]
        at = sched.next_due_time()
        h = self._timers.get(way)
        if h is not None and (at is None or h.when() != at):
            h.cancel()
            del self._timers[way]
            h = None
        if at is not None and h is None:
            self._timers[way] = self._loop.call_at(at, self._deliver, way)

    def _deliver(self, way: str, now: float | None = None) -> None:
        assert self._loop is not None
        self._timers.pop(way, None)
        sched, _, fd_out = self._way(way)
        for packet in sched.due(self._loop.time() if now is None else now):
            try:
                os.write(fd_out, packet)
            except OSError:
                self.write_errors += 1
        self._arm(way)

    # -- the dark --------------------------------------------------------------------

    @property
    def dark(self) -> bool:
        return bool(self._dark_for)

    def _darken(self, why: object) -> bool:
        """Add a reason for the dark; True if that made the link go dark."""
        was_dark = self.dark
        self._dark_for.add(why)
        if was_dark:
            return False
        now = self._loop.time() if self._loop is not None else 0.0
        if self._fds:  # what was due before the dark fell still arrives
            for way in ("up", "down"):
                self._deliver(way, now)
        up, down = self.schedule.set_dark(True, now)
        self.stats.falls.append(DarkFall(now, "loss" if why == "loss" else "cut", up, down))
        if self._fds:
            for way in ("up", "down"):
                self._arm(way)
        return True

    def _lighten(self, why: object) -> None:
        self._dark_for.discard(why)
        if not self._dark_for:
            self.schedule.set_dark(False, self._loop.time() if self._loop else 0.0)

    def in_network_up(self) -> int:
        """Station → ground IP bytes in the network now: what a cut now would cost."""
        now = self._loop.time() if self._loop is not None else 0.0
        return self.schedule.up.in_network_bytes(now)

    def start_loss(self) -> None:
        """The station leaves coverage: every packet, both ways, is dropped until end_loss()."""
        self.stats.loss_cuts += self._darken("loss")

    def end_loss(self) -> None:
        """Coverage is back; connections that lived through the dark carry on if TCP let them."""
        self._lighten("loss")

    def schedule_loss(self, windows: Iterable[LossWindow]) -> None:
        """Script loss-of-signal windows relative to now (``cut_after_s`` is ignored: see above)."""
        for w in windows:
            self._scheduled.append(asyncio.ensure_future(self._run_window(w)))

    async def _run_window(self, w: LossWindow) -> None:
        await asyncio.sleep(w.start_s)
        self.start_loss()
        try:
            await asyncio.sleep(w.duration_s)
        finally:
            self.end_loss()

    def cut_all(self) -> None:
        """A short dark spell (``cut_dark_s``): packets in the network and sent during it are
        lost. It sends no RST: connections survive it or not by TCP's own timers."""
        assert self._loop is not None, "start() the link first"
        token = object()
        self.stats.random_cuts += self._darken(token)
        self._cut_timers.append(self._loop.call_later(self.cut_dark_s, self._lighten, token))


async def _amain(args: argparse.Namespace) -> int:
    rate = args.rate_kbps * 1000 if args.rate_kbps else None
    way = WayConfig(rate_bps=rate, delay_s=args.delay_ms / 1000, loss=args.loss_percent / 100)
    cc = None if args.congestion_control == "host" else args.congestion_control
    async with PacketLink(
        up=way, down=way, seed=args.seed, prefix=args.prefix, congestion_control=cc
    ) as link:
        print(
            f"linkemu.packet: station {link.station_ns} {link.station_addr}, "
            f"ground {link.ground_ns} {link.ground_addr}",
            file=sys.stderr,
            flush=True,
        )
        env = {**os.environ, "STATION_ADDR": link.station_addr, "GROUND_ADDR": link.ground_addr}
        procs = []
        if args.ground:
            procs.append(
                await asyncio.create_subprocess_exec(
                    *link.netns_argv(link.ground_ns), "sh", "-c", args.ground, env=env
                )
            )
            await asyncio.sleep(0.3)  # let a server bind before the station's command runs
        station = await asyncio.create_subprocess_exec(
            *link.netns_argv(link.station_ns), *args.command, env=env
        )
        rc = await station.wait()
        for p in procs:
            # What the station sent last is still crossing: give the ground a few RTTs to finish.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.wait(), 1.0 + 4 * args.delay_ms / 1000)
            if p.returncode is None:
                p.terminate()
            await p.wait()
        s = link.stats
        print(
            f"linkemu.packet: up {s.bytes_up:,} B in {s.up.delivered_packets} packets "
            f"(lost {s.up.loss_packets}, queue full {s.up.queue_full_packets}); "
            f"down {s.bytes_down:,} B in {s.down.delivered_packets} packets "
            f"(lost {s.down.loss_packets}, queue full {s.down.queue_full_packets})",
            file=sys.stderr,
        )
        return rc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m linkemu.packet",
        description="Run COMMAND in a station namespace joined to a ground namespace by an emulated "
        "lossy link. The commands see $STATION_ADDR and $GROUND_ADDR.",
    )
    p.add_argument("--rate-kbps", type=float, default=0, help="each way; 0 = unlimited")
    p.add_argument("--delay-ms", type=float, default=0, help="one-way delay")
    p.add_argument("--loss-percent", type=float, default=0, help="chance each packet is lost, each way")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default="pktlink", help="namespace name prefix")
    p.add_argument(
        "--congestion-control", default="reno", help="TCP's on the link: reno, cubic, bbr … or host"
    )
    p.add_argument("--ground", help="shell command run in the ground namespace first (e.g. a server)")
    p.add_argument("command", nargs="+", help="command run in the station namespace (after --)")
    args = p.parse_args(argv)
    try:
        rc = asyncio.run(_amain(args))
    except PacketLinkError as exc:
        print(f"linkemu.packet: {exc}", file=sys.stderr)
        rc = 2
    sys.exit(rc)


if __name__ == "__main__":
    main()
