"""What a run (virtual or real time) hands to the report: plain values, no live objects."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class PostOutcome:
    author: str
    queued_s: float
    payload_bytes: int
    photos: int
    received_s: float | None
    published_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """The state at ``t_s``: posts waiting onboard, received but unpublished, published;
    bytes sent to ground during the sample interval that ended at ``t_s``."""

    t_s: float
    waiting: int
    awaiting_publication: int
    published: int
    to_ground_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpCounts:
    """One side's TCP senders over a run, as Linux counts them (the namespace's
    /proc/net/snmp and netstat) or as the simulator's model does. SYN retries are left out of
    ``resent_segments`` and ``timeouts``; real time's ``segments`` include SYNs and pure acks."""

    segments: int
    resent_segments: int
    timeouts: int  # retransmission timeouts with data outstanding
    loss_probes: int  # tail loss probes sent

    @property
    def resent_share(self) -> float:
        """Resent segments per segment sent."""
        return self.resent_segments / self.segments if self.segments else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    mode: str  # "virtual" or "realtime"
    profile: dict[str, object]
    workload: dict[str, object]
    astronauts: int
    seed: int
    duration_s: float
    transfer: str
    posts: tuple[PostOutcome, ...]
    refused_onboard: int
    rejected: int
    wire_to_ground_bytes: int  # application bytes carried by TCP (what a proxy counts)
    wire_to_station_bytes: int
    tcp_retransmitted_bytes: int | None  # virtual time only
    ip_bytes: int | None  # virtual time and packet link: headers, acks, handshakes, retransmissions
    app_resent_bytes: int | None  # chunk bytes handed to the link again (virtual time only)
    requests: int
    cuts_dark: int
    cuts_random: int
    dark_windows: tuple[tuple[float, float], ...]
    up_s: float
    backlogged_up_s: float  # link up and something waiting to be sent
    sample_s: float
    samples: tuple[Sample, ...]
    notes: tuple[str, ...] = field(default=())
    # HTTP request/response bytes by request kind (virtual time with the transfer machines).
    traffic_by_kind: dict[str, dict[str, int]] | None = None
    # (bundle bytes, HTTP request bytes, HTTP response bytes) of each bundle OPEN ground
    # answered with 200, in order: what one text post costs on the link (issue 14).
    bundle_opens: tuple[tuple[int, int, int], ...] = ()
    # Upload bytes ground has stored (committed transfers whole, the rest as acked): the link's
    # goodput even when a backlog is not cleared by the end (posts count only once whole).
    transfer_acked_bytes: int | None = None
    cut_events: int = 0  # cuts of the link that dropped at least one connection
    cut_in_network_bytes: int = 0  # station → ground bytes sent but not delivered when cut
    # Per cut that dropped a connection: (bytes in the network, of them held out of order at ground).
    cut_costs: tuple[tuple[int, int], ...] = ()
    # Bytes in the network of connections aborted for another reason (a request's timeout).
    aborted_in_network_bytes: int = 0
    syns: int = 0  # SYNs the station sent (virtual time)
    syns_dark: int = 0  # of them, into a dark link (the connection race's cost, docs/link.md)
    # Real time through linkemu's packet link: IP packets its emulator dropped, by cause.
    link_drops: dict[str, int] | None = None
    # ... and the station's connections with bytes not yet acknowledged, mean over the samples.
    busy_connections_mean: float | None = None
    # (seconds since the start, station → ground bytes in the network) every TRACE_S: what a
    # cut at that moment would cost (the packet link, and virtual time).
    in_network_trace: tuple[tuple[float, int], ...] = ()
    # The link the station remembered when it stopped (protocol/link_memory.py's encoding),
    # what a next start would size its first flights and its gate's restart by.
    link_memory: str | None = None
    # The station's and ground's TCP senders (virtual time: the model's; real time: the
    # kernel's, through the packet link only).
    tcp_station: TcpCounts | None = None
    tcp_ground: TcpCounts | None = None
