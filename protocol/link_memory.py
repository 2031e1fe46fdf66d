"""What the station remembers of its link between passes, and the first flight sized from it.

A new sync has measured nothing when its first requests leave: each OPEN carries its
upload's first chunk (link version 3), sixteen at once, before any round trip. Sized as a
chunk (64 KiB) that first flight was ~9 bandwidth-delay products on a 0.6 s, 1.5 Mbit/s
link and held the link's queue at 2-2.5 BDP for the start's first seconds in real time
(docs/link.md "The first flight and the gate's total"); a fixed 12 KiB idled a 2.6 s link.
The link of the last pass (its delivery rate and base RTT, kept onboard) says how much the
network holds, so the first flight together comes to about one BDP of that link.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

from .errors import LocalProtocolError

# A memory older than this is not trusted (another relay, another rate): a week covers a
# station that syncs every orbit or once a day.
MAX_AGE_S = 7 * 86400.0
# A memory dated this far ahead of the clock is not trusted either (the clock stepped back
# after it was written, or it was written by a machine with a wrong clock).
MAX_AHEAD_S = 86400.0
# What the first flights of a start carry together, in BDPs of the remembered link: a cut
# then costs at most what the network held (issue 14), and the link is full from the first
# round trip on, not idle behind a first flight far smaller than the path. Not 1.0: the
# remembered rate counts TCP payload, and the wire adds IP and TCP headers (~4 % at a
# 1500-byte MTU) and each OPEN's own (~300 bytes): at 1.0, 0-2 s into a 0.6 s start the
# packet emulator held up to 1.13 BDP (real time, seeds 32/33; docs/link.md).
FIRST_FLIGHT_BDP = 0.9
# The link a station that neither remembers nor was told its link starts on (``reference_link``):
# iss-ku's, 1.5 Mbit/s and a 0.6 s round trip, the shortest path issue 14 names at its rate and
# so the least BDP among its links (112.5 kB). With nothing assumed, the 16 first flights were
# the connections' initial TCP windows, ~232 kB whatever the path, and the chunks' rest
# followed before any rate held them: 2.0-3.2 BDP in the network for a 0.6 s start's first 4 s
# (docs/link.md "A start that knows nothing"). Only a guess: a queue on the link ends it
# (protocol/send_gate.py ``SendGate.link_queued``).
REFERENCE_RATE_BYTES_S = 1_500_000 / 8
REFERENCE_RTT_S = 0.6


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkMemory:
    """The link as the station last measured it: bytes per second delivered (the delivery
    rate filter's), the least round trip of a small request, and when (Unix seconds)."""

    rate_bytes_s: float
    base_rtt_s: float
    measured_at: float

    def __post_init__(self) -> None:
        for name in ("rate_bytes_s", "base_rtt_s", "measured_at"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise LocalProtocolError(f"link memory: {name} must be a positive finite number, not {v!r}")

    @property
    def bdp_bytes(self) -> float:
        """The bandwidth-delay product of the remembered link."""
        return self.rate_bytes_s * self.base_rtt_s

    def usable(self, now: float) -> bool:
        """Recent enough (and not from the future) to size a start by, at Unix time ``now``."""
        age = now - self.measured_at
        return -MAX_AHEAD_S <= age <= MAX_AGE_S

    def encode(self) -> str:
        """The memory as stored (a JSON object)."""
        return json.dumps(
            {
                "rate_bytes_s": self.rate_bytes_s,
                "base_rtt_s": self.base_rtt_s,
                "measured_at": self.measured_at,
            },
            sort_keys=True,
        )

    @classmethod
    def decode(cls, text: str) -> LinkMemory:
        """The memory ``encode`` wrote; LocalProtocolError on anything else."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise LocalProtocolError(f"link memory is not JSON ({exc})") from exc
        if not isinstance(doc, dict) or set(doc) != {"rate_bytes_s", "base_rtt_s", "measured_at"}:
            raise LocalProtocolError(
                f"link memory must hold rate_bytes_s, base_rtt_s and measured_at, not {text[:80]!r}"
            )
        return cls(**doc)


def start_link(measured: LinkMemory | None, expected: LinkMemory | None, now: float) -> LinkMemory | None:
    """The link a start is sized by: the last pass's if ``usable`` at Unix ``now``, else the link
    an operator said to expect (``onboard link expect``: it never ages, and any pass's own
    measurement replaces it), else None (the start then assumes ``reference_link``)."""
    if measured is not None and measured.usable(now):
        return measured
    if expected is None:
        return None
    return replace(expected, measured_at=now)


def reference_link(now: float) -> LinkMemory:
    """The link a start assumes when ``start_link`` has none (``REFERENCE_RATE_BYTES_S``,
    ``REFERENCE_RTT_S``), dated ``now``."""
    return LinkMemory(rate_bytes_s=REFERENCE_RATE_BYTES_S, base_rtt_s=REFERENCE_RTT_S, measured_at=now)


def first_flight_bytes(memory: LinkMemory, streams: int, least: int, most: int) -> int:
    """Each first flight's bytes when ``streams`` leave at once: together ``FIRST_FLIGHT_BDP``
    of the remembered link, within ``least``..``most`` (a chunk's bounds)."""
    if streams < 1 or least < 1 or most < least:
        raise LocalProtocolError(f"first flight bounds: streams={streams}, least={least}, most={most}")
    each = FIRST_FLIGHT_BDP * memory.bdp_bytes / streams
    return int(min(most, max(least, each)))


def start_streams(memory: LinkMemory, share_bytes: int, least: int, most: int) -> int:
    """Streams a start opens with on the remembered link: as many as leave each ``share_bytes``
    of its bandwidth-delay product (the share the stream rule's caps give a faster link,
    TransferSender._stream_caps), within ``least``..``most``. From 16 the count grows by half
    every 2 round trips: at 6 Mbit/s and 2.6 s it took ~60 s to reach the ~130 streams the
    path needs at 1 % loss (docs/link.md "A remembered link starts with its streams")."""
    if share_bytes < 1 or least < 1 or most < least:
        raise LocalProtocolError(f"start streams bounds: share={share_bytes}, least={least}, most={most}")
    return int(min(most, max(least, memory.bdp_bytes // share_bytes)))


def replaces(new: LinkMemory, kept: LinkMemory | None, *, now: float, link_limited: bool) -> bool:
    """Does ``new`` replace the memory ``kept`` (at Unix ``now``)? Always when the link was the
    limit (``link_limited``: a backlog moving, past its start) or nothing usable is kept;
    otherwise only if faster: a pass that sent a few text posts measured what it sent, not
    what the link carries, and would have the next start's first flights sized by it."""
    if link_limited or kept is None or not kept.usable(now):
        return True
    return new.rate_bytes_s >= kept.rate_bytes_s
