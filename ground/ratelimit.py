"""Per-address limit on failed station authentications at ``POST /v1/link``.

A client address that presents ``max_failures`` bad tokens within ``window_s`` is refused
(HTTP 429 with Retry-After) for ``block_s``. Tokens are 256-bit, so this is not what keeps
them secret: it keeps a misbehaving or hostile client from turning every request into a
security-event row and a database commit. Time is passed in (``now``, monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What to do with one request from an address that is (or just became) blocked."""

    retry_after_s: float  # > 0: refuse, and tell the client to wait this long
    log: bool  # record this refusal as a security event (1st, 2nd, 4th, 8th, ... of a block)
    refused: int  # refusals so far in this block


@dataclass(slots=True)
class _Entry:
    failures: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    refused: int = 0


@dataclass(slots=True)
class AuthFailureLimiter:
    """Counts bad-token failures per client address; memory is bounded by ``max_addresses``."""

    # 10 bad tokens a minute is far beyond a station fumbling its token file once.
    max_failures: int = 10
    window_s: float = 60.0
    block_s: float = 60.0
    # Oldest addresses are forgotten past this many (a spoofed-source flood cannot grow it).
    max_addresses: int = 10_000
    _by_addr: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)

    def blocked(self, addr: str, now: float) -> Verdict | None:
        """A Verdict if ``addr`` is blocked at ``now`` (counts it as one refusal), else None."""
        e = self._by_addr.get(addr)
        if e is None or now >= e.blocked_until:
            return None
        e.refused += 1
        return Verdict(
            retry_after_s=e.blocked_until - now, log=e.refused & (e.refused - 1) == 0, refused=e.refused
        )

    def failed(self, addr: str, now: float) -> bool:
        """Record one bad token from ``addr``; True if this failure starts a block."""
        e = self._by_addr.pop(addr, None) or _Entry()
        self._by_addr[addr] = e  # most recently seen last
        while len(self._by_addr) > self.max_addresses:
            self._by_addr.popitem(last=False)
        e.failures = [t for t in e.failures if now - t < self.window_s]
        e.failures.append(now)
        if len(e.failures) >= self.max_failures:
            e.failures.clear()
            e.blocked_until, e.refused = now + self.block_s, 0
            return True
        return False
