"""The link a real-time run goes through, behind one small interface (simlink/realtime.py).

- **proxy** (the default): linkemu's TCP proxy on loopback. Rate, delay, gaps and cuts; it sees
  only the byte stream TCP has already repaired, so a profile's ``loss_percent`` is not applied.
- **packet**: linkemu's packet link (linkemu/packet.py). `ground serve` runs in one network
  namespace, `onboard sync` in another, and every IP packet between them crosses a user-space
  forwarder applying rate, delay, a bounded queue, the profile's random loss, gaps and cuts:
  the kernel's own TCP sees real loss. Needs root and /dev/net/tun.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import SimError
from .link import default_buffer_bytes
from .profile import LinkProfile
from .result import TcpCounts

NS_PREFIX = "pktbench"  # network namespaces are named <prefix>-<pid>-<n>-sta|gnd (linkemu/packet.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkCounts:
    """What crossed the emulated link so far, each way, and what it cut or dropped."""

    up_bytes: int  # station → ground
    down_bytes: int
    cuts_dark: int
    cuts_random: int
    drops: dict[str, int] = field(default_factory=dict)  # packet mode: packets dropped, by cause
    # Packet mode: station → ground IP bytes in the network (queued or on the line) when each
    # dark spell fell, loss of signal or cut, in order: what the fall threw away.
    in_network_at_falls: tuple[int, ...] = ()


def packet_mode_problem() -> str | None:
    """Why packet mode cannot run on this machine (None: it can)."""
    try:
        from linkemu.packet import PacketLinkError, check_environment
    except ImportError:
        return "packet mode needs linkemu/packet.py (PacketLink) in this checkout"
    try:
        check_environment()
    except PacketLinkError as exc:
        return f"packet mode cannot run here: {exc}; drop --packet for linkemu's TCP proxy (no packet loss)"
    return None


class ProxyRunLink:
    """linkemu's TCP proxy, started once ground listens on loopback."""

    kind = "proxy"
    ground_host = "127.0.0.1"

    def __init__(self, profile: LinkProfile, seed: int, tcp_cc: str | None = None) -> None:
        self.profile = profile
        self.seed = seed
        self.tcp_cc = tcp_cc  # packet link: the kernel's TCP congestion control (None: as the machine's)
        self._proxy: Any = None

    async def open(self) -> None:
        """Nothing to set up before ground starts: the proxy needs ground's port."""

    def ground_argv(self) -> list[str]:
        return []

    def station_argv(self) -> list[str]:
        return []

    async def ground_listens(self, port: int) -> bool:
        try:
            _, w = await asyncio.open_connection(self.ground_host, port)
        except OSError:
            return False
        w.close()
        return True

    async def connect(self, port: int) -> str:
        """Start the proxy towards ground's ``port``; the URL the station uses."""
        from linkemu.proxy import Direction, LinkProxy

        p = self.profile
        self._proxy = LinkProxy(
            self.ground_host,
            port,
            up=Direction(rate_bps=p.to_ground_bps, delay_s=p.one_way_delay_s),
            down=Direction(rate_bps=p.to_station_bps, delay_s=p.one_way_delay_s),
            seed=self.seed,
        )
        await self._proxy.start()
        return str(self._proxy.url)

    @property
    def dark(self) -> bool:
        return bool(self._proxy is not None and self._proxy.dark)

    def schedule_loss(self, windows: Iterable[Any]) -> None:
        self._proxy.schedule_loss(windows)

    def cut_all(self) -> None:
        self._proxy.cut_all()

    async def busy_connections(self) -> int | None:
        """Station connections with bytes not yet acknowledged (None: this link cannot say)."""
        return None

    def in_network_bytes(self) -> int | None:
        """Station → ground bytes in the network now (None: a TCP proxy cannot say)."""
        return None

    async def tcp_counts(self) -> tuple[TcpCounts | None, TcpCounts | None]:
        """The station's and ground's kernel TCP counters so far (None: a TCP proxy's
        loopback sockets are not the link's)."""
        return None, None

    def counts(self) -> LinkCounts:
        s = self._proxy.stats
        return LinkCounts(
            up_bytes=s.bytes_up, down_bytes=s.bytes_down, cuts_dark=s.loss_cuts, cuts_random=s.random_cuts
        )

    async def close(self) -> None:
        if self._proxy is not None:
            await self._proxy.close()
            # Let the proxy's per-connection handlers finish before asyncio.run cancels them.
            await asyncio.sleep(0.2)


class PacketRunLink(ProxyRunLink):
    """linkemu's packet link: two namespaces, every IP packet through the emulator."""

    kind = "packet"

    async def open(self) -> None:
        """Create the namespaces and start forwarding (ground starts inside one of them)."""
        problem = packet_mode_problem()
        if problem:
            raise SimError(problem)
        self._proxy = _packet_link(self.profile, self.seed, self.tcp_cc)
        await self._proxy.__aenter__()
        self.ground_host = str(self._proxy.ground_addr)
        # linkemu sets the congestion control asked for on each side's route to the other;
        # None keeps the machine's default (Linux: cubic; this project's test host: bbr, which
        # does not back off on random loss). Say which ran.
        if not self.tcp_cc:
            ns = self._proxy.station_ns
            self.tcp_cc = await self._run(ns, "sysctl", "-n", "net.ipv4.tcp_congestion_control")

    async def _run(self, ns: str, *argv: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._proxy.netns_argv(ns), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode:
            await self.close()
            raise SimError(f"`{' '.join(argv)}` in {ns} failed: {err.decode().strip()}")
        return out.decode().strip()

    def ground_argv(self) -> list[str]:
        return list(self._proxy.netns_argv(self._proxy.ground_ns))

    def station_argv(self) -> list[str]:
        return list(self._proxy.netns_argv(self._proxy.station_ns))

    async def ground_listens(self, port: int) -> bool:
        # Asked inside ground's namespace, so the probe does not cross (nor count on) the link.
        proc = await asyncio.create_subprocess_exec(
            *self.ground_argv(), "ss", "-Hltn", f"sport = :{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return bool(out.strip())

    async def connect(self, port: int) -> str:
        return f"http://{self.ground_host}:{port}"

    async def busy_connections(self) -> int | None:
        """Station connections to ground with a non-empty send queue (ss's Send-Q): the
        parallel streams actually carrying data, as the Mathis bound counts them."""
        proc = await asyncio.create_subprocess_exec(
            *self.station_argv(), "ss", "-Htn", "state", "established", "dst", self.ground_host,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return sum(1 for line in out.decode().splitlines() if _send_queue(line) > 0)

    def counts(self) -> LinkCounts:
        return _packet_counts(self._proxy.stats)

    def in_network_bytes(self) -> int | None:
        return int(self._proxy.in_network_up())

    async def tcp_counts(self) -> tuple[TcpCounts | None, TcpCounts | None]:
        """Each namespace's /proc/net/snmp and netstat: its own TCP, and nothing else's."""
        out: list[TcpCounts | None] = []
        for ns in (self._proxy.station_ns, self._proxy.ground_ns):
            proc = await asyncio.create_subprocess_exec(
                *self._proxy.netns_argv(ns), "cat", "/proc/net/snmp", "/proc/net/netstat",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            text, _ = await proc.communicate()
            out.append(kernel_tcp_counts(text.decode()) if proc.returncode == 0 else None)
        return out[0], out[1]

    async def close(self) -> None:
        if self._proxy is not None:
            await self._proxy.__aexit__(None, None, None)


def _packet_link(profile: LinkProfile, seed: int, tcp_cc: str | None) -> Any:
    """A PacketLink configured from the profile: rate, delay, random loss (both ways, as
    virtual time draws it) and the bottleneck queue (``buffer_kb``, or virtual time's default)."""
    from linkemu.packet import PacketLink
    from linkemu.packet_schedule import WayConfig

    def way(rate_bps: float) -> Any:
        p = profile
        queue = p.buffer_bytes or default_buffer_bytes(rate_bps, p.one_way_delay_s, p.mss_bytes)
        return WayConfig(rate_bps=rate_bps, delay_s=p.one_way_delay_s, loss=p.loss, queue_bytes=queue)

    return PacketLink(
        up=way(profile.to_ground_bps),
        down=way(profile.to_station_bps),
        seed=seed,
        prefix=NS_PREFIX,
        congestion_control=tcp_cc,  # None: the machine's default
    )


def _packet_counts(s: Any) -> LinkCounts:
    drops = {}
    for name, way in (("up", s.up), ("down", s.down)):
        for cause in ("loss", "queue_full", "dark"):
            drops[f"{cause}_{name}"] = int(getattr(way, f"{cause}_packets"))
    return LinkCounts(
        up_bytes=s.bytes_up,
        down_bytes=s.bytes_down,
        cuts_dark=s.loss_cuts,
        cuts_random=s.random_cuts,
        drops=drops,
        in_network_at_falls=tuple(f.up_bytes for f in s.falls),
    )


def kernel_tcp_counts(proc_text: str) -> TcpCounts:
    """TcpCounts from /proc/net/snmp and /proc/net/netstat (each a header line of names and a
    line of values per group): SYN and SYN-ACK retries (``TCPSynRetrans``) are taken out of the
    retransmissions and the timeouts, which count them too."""
    values: dict[str, int] = {}
    lines = proc_text.splitlines()
    for names, nums in zip(lines[::2], lines[1::2], strict=False):
        group, _, keys = names.partition(":")
        num_group, _, counts = nums.partition(":")
        if num_group != group:
            raise SimError(f"unexpected /proc/net line pair: {names[:40]!r} / {nums[:40]!r}")
        for k, v in zip(keys.split(), counts.split(), strict=True):
            values[f"{group}.{k}"] = int(v)
    if "Tcp.OutSegs" not in values or "Tcp.RetransSegs" not in values:
        raise SimError("/proc/net/snmp gave no Tcp OutSegs and RetransSegs")
    syn = values.get("TcpExt.TCPSynRetrans", 0)
    return TcpCounts(
        segments=values["Tcp.OutSegs"],
        resent_segments=max(0, values["Tcp.RetransSegs"] - syn),
        timeouts=max(0, values.get("TcpExt.TCPTimeouts", 0) - syn),
        loss_probes=values.get("TcpExt.TCPLossProbes", 0),
    )


def _send_queue(ss_line: str) -> int:
    """Send-Q of one line of ``ss -Htn state established``: Recv-Q, Send-Q, local, peer."""
    cols = ss_line.split()
    if cols and not cols[0].isdigit():  # some ss versions keep the State column
        cols = cols[1:]
    return int(cols[1]) if len(cols) >= 2 and cols[1].isdigit() else 0


def open_link(profile: LinkProfile, seed: int, *, packet: bool, tcp_cc: str | None = None) -> ProxyRunLink:
    """The link for a run: the packet link if asked for (``tcp_cc``: its namespaces' TCP
    congestion control, e.g. cubic or bbr; None keeps the machine's), else the TCP proxy."""
    if tcp_cc and not packet:
        raise SimError("a TCP congestion control can be chosen on the packet link only (--packet)")
    return PacketRunLink(profile, seed, tcp_cc) if packet else ProxyRunLink(profile, seed)
