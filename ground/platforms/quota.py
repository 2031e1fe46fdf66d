"""Rate limits and publishing quotas: a post that would exceed one waits, and says why.

Two sources of knowledge, both kept per account in one small JSON file (so a restart does not
forget that an account spent its day):

- what the platform said in its headers: X sends ``x-rate-limit-limit/-remaining/-reset`` on
  every answer (a Unix time in seconds; https://docs.x.com/fundamentals/rate-limits) and, on
  ``POST /2/tweets``, ``x-user-limit-24hour-*`` / ``x-app-limit-24hour-*`` for the daily caps;
  Meta sends ``X-App-Usage`` / ``X-Business-Use-Case-Usage`` as JSON percentages with
  ``estimated_time_to_regain_access`` in minutes
  (https://developers.facebook.com/docs/graph-api/overview/rate-limiting/);
- a documented daily cap with no header, counted here in a rolling 24 h window: LinkedIn
  (150 member posts a day), Instagram (100 API-published posts per 24 h), Threads (250).

``check`` raises :class:`~ground.errors.QuotaWait` *before* anything is sent when a window is
spent and its reset is in the future; the engine keeps the post queued until then without
counting an attempt, and shows the message ("waiting for X's 24-hour post limit: 0 of 100
left, resets at 14:05 UTC").
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durable.files import write_atomic

from ..errors import QuotaWait

DAY_S = 86_400.0
# Rolling-window entries kept per account; more than any documented daily cap.
MAX_EVENTS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """One limit as the platform reported it: ``remaining`` calls until ``reset_at_s`` (Unix s)."""

    name: str
    remaining: int
    reset_at_s: float
    limit: int | None = None


def x_windows(headers: dict[str, str], what: str) -> list[Window]:
    """X's rate-limit headers on one answer (names are case-insensitive)."""
    low = {k.lower(): v for k, v in headers.items()}
    out = []
    for prefix, name in (
        ("x-rate-limit", f"{what} rate limit (15 min)"),
        ("x-user-limit-24hour", "24-hour post limit for this user"),
        ("x-app-limit-24hour", "24-hour post limit for this app"),
    ):
        remaining, reset = low.get(f"{prefix}-remaining"), low.get(f"{prefix}-reset")
        if (
            remaining is None
            or reset is None
            or not remaining.strip().isdigit()
            or not reset.strip().isdigit()
        ):
            continue
        limit = low.get(f"{prefix}-limit", "")
        out.append(
            Window(
                name=name,
                remaining=int(remaining),
                reset_at_s=float(reset),
                limit=int(limit) if limit.strip().isdigit() else None,
            )
        )
    return out


def meta_usage_wait_s(headers: dict[str, str]) -> float | None:
    """Seconds Meta says to wait (``estimated_time_to_regain_access``, minutes), if any usage is at 100 %."""
    low = {k.lower(): v for k, v in headers.items()}
    wait: float | None = None
    for key in ("x-app-usage", "x-business-use-case-usage", "x-ad-account-usage"):
        raw = low.get(key)
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        for entry in _usage_entries(data):
            minutes = entry.get("estimated_time_to_regain_access")
            full = any(
                isinstance(entry.get(k), int | float) and entry[k] >= 100
                for k in ("call_count", "total_cputime", "total_time")
            )
            if isinstance(minutes, int | float) and minutes > 0:
                wait = max(wait or 0.0, minutes * 60.0)
            elif full:
                wait = max(wait or 0.0, 60.0)
    return wait


def _usage_entries(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and any(isinstance(v, list) for v in data.values()):
        return [e for v in data.values() if isinstance(v, list) for e in v if isinstance(e, dict)]
    return [data] if isinstance(data, dict) else []


class QuotaBook:
    """What each account has left, per limit, and its recent posts; persisted in ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._windows: dict[str, dict[str, dict[str, Any]]] = {}
        self._events: dict[str, list[float]] = {}
        if path is not None:
            try:
                data = json.loads(path.read_bytes())
                self._windows = dict(data.get("windows", {}))
                self._events = {k: [float(t) for t in v] for k, v in data.get("events", {}).items()}
            except (OSError, ValueError, AttributeError):
                pass  # no file yet, or unreadable: we learn again from the next answers

    def _save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"windows": self._windows, "events": self._events}).encode())

    def learn(self, account: str, windows: list[Window]) -> None:
        """Remember what the platform just said about ``account``'s limits."""
        if not windows:
            return
        with self._lock:
            book = self._windows.setdefault(account, {})
            for w in windows:
                book[w.name] = {"remaining": w.remaining, "reset_at_s": w.reset_at_s, "limit": w.limit}
            self._save()

    def hold(self, account: str, name: str, until_s: float) -> None:
        """The platform said "no more until ``until_s``" (a 429 with a reset time)."""
        self.learn(account, [Window(name=name, remaining=0, reset_at_s=until_s)])

    def record_post(self, account: str, now_s: float) -> None:
        """One post published for ``account`` (for the rolling daily caps)."""
        with self._lock:
            events = [t for t in self._events.get(account, []) if t > now_s - DAY_S]
            events.append(now_s)
            self._events[account] = events[-MAX_EVENTS:]
            self._save()

    def check(
        self, account: str, title: str, now_s: float | None = None, *, daily_cap: int | None = None
    ) -> None:
        """Raise QuotaWait if ``account`` has no call or post left in a window that has not reset.

        ``daily_cap``: the platform's documented posts per rolling 24 h, counted here.
        """
        now_s = time.time() if now_s is None else now_s
        waits: list[tuple[float, str]] = []
        with self._lock:
            for name, w in self._windows.get(account, {}).items():
                if int(w.get("remaining", 1)) <= 0 and float(w.get("reset_at_s", 0)) > now_s:
                    limit = w.get("limit")
                    of = f" of {limit}" if limit else ""
                    waits.append((float(w["reset_at_s"]), f"{title}'s {name}: 0{of} left"))
            if daily_cap is not None:
                recent = sorted(t for t in self._events.get(account, []) if t > now_s - DAY_S)
                if len(recent) >= daily_cap:
                    # The window frees a slot when the oldest counted post is 24 h old.
                    frees = recent[len(recent) - daily_cap] + DAY_S
                    waits.append((frees, f"{title}'s limit of {daily_cap} posts per 24 h: all used"))
        if waits:
            until, why = max(waits)
            at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
            raise QuotaWait(f"waiting for {why}; resets at {at}", retry_after_s=max(1.0, until - now_s))
