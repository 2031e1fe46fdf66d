"""The publishing engine: each (post, account) published once, whatever fails in between.

Everything that moves a publication between states lives in this module. States, in the
``publications`` table (one row per post and target account)::

    pending ──claim──▶ publishing ──ok──▶ published ──retract──▶ retracting ──▶ retracted
       ▲  │                │  │                                     │
       │  └─cancel─▶ cancelled │                                     └─permanent─▶ retract_failed
       │                   │  └─permanent error / too many tries──▶ failed ─(ground retry)─▶ pending
       └──retryable, not ambiguous (429, refused connection): back off─┘
                           └─ambiguous (timeout, 5xx): stays publishing, backs off, looks up first

    (ingest) rejected ──ground retry, once the account is enrolled──▶ pending
                 └──cancel──▶ cancelled

'rejected' is a (post, account) ground refused at ingest (an account its author is not
enrolled for, docs/PROTOCOL.md §16); the post's other accounts go on. Every change of state,
url or error is stamped in the change log by a trigger (ground/changes.py), so receipts
report each one exactly (§9).

'publishing' is committed *before* the platform is called, so after a crash or an ambiguous
error we ask the platform (``lookup``; for idempotent APIs, the same request again) before
any second attempt — never a blind repost. Partial success is normal: each account moves
on its own, and a retry touches only the accounts it names.

Backoff: exponential with jitter (base·2^(n-1), capped, ×[0.5, 1)), never shorter than the
platform's Retry-After; a 429 holds back every queued post for that account too.
Schedules: nothing is published before ``publish_at_ms``. Cancel and Retract items (signed
by the post's author) are applied here, before each pass.

Only one publisher works on a ground home at a time (an advisory file lock, released by
the OS if the process dies), so `ground ingest` and `ground serve` never race.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import sqlite3
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import aiohttp

from protocol import Post
from protocol.model import parse_target
from protocol.rules import PlatformRules, media_fidelity, rules_for

from . import account_limits, changes, db, decoded, renditions
from .db import audit, transaction
from .errors import GroundError, PublishError, QuotaWait
from .home import GroundHome
from .ingest import refusal
from .platforms import Platform, PublishRequest

log = logging.getLogger(__name__)


class PubState(StrEnum):
    PENDING = "pending"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRACTING = "retracting"
    RETRACTED = "retracted"
    RETRACT_FAILED = "retract_failed"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long to wait between tries and when to hand a publication to an operator."""

    base_s: float = 30.0
    cap_s: float = 3600.0
    # 8 tries span roughly 1.5 h with the defaults: a long platform outage, not a bad post.
    max_attempts: int = 8

    def delay_s(self, attempts: int, retry_after_s: float | None, rand: float) -> float:
        """Wait before try ``attempts + 1``; ``rand`` in [0, 1) gives the jitter."""
        exp = min(self.cap_s, self.base_s * 2.0 ** max(0, attempts - 1))
        jittered = exp * (0.5 + rand / 2)
        return max(jittered, retry_after_s or 0.0)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishOutcome:
    item_id: str
    account: str
    state: str
    url: str | None = None
    error: str | None = None
    next_attempt_ms: int | None = None
    # The platform asked this account to wait (Retry-After): hold its other posts too.
    hold_account: bool = False


def default_platforms(home: GroundHome, only: Collection[str] | None = None) -> dict[str, Platform]:
    """Every adapter this ground has (ground/platforms registry), or those named in ``only``,
    wired to the home's files."""
    from .platforms import build_platforms

    return build_platforms(home.root, home.archive_dir, only)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """The ``commands`` table (cancel/retract outcomes) lives with the change log that stamps it."""
    changes.ensure_schema(conn)


@contextmanager
def publisher_lock(home: GroundHome) -> Iterator[bool]:
    """Yield True if this process may publish now (no other publisher holds the home)."""
    home.root.mkdir(parents=True, exist_ok=True)
    # Beside the database it guards, like SQLite's own -wal and -shm files.
    fd = os.open(home.root / "ground.db-publisher.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def build_request(home: GroundHome, conn: sqlite3.Connection, item_id: str, account: str) -> PublishRequest:
    body, sig, statement, key_id, batch_proof = conn.execute(
        f"SELECT body, signature, {db.ITEM_STATEMENT}, key_id, batch_proof FROM items i WHERE id = ?",
        (item_id,),
    ).fetchone()
    post = decoded.item(body)
    assert isinstance(post, Post)
    _, acct = parse_target(account)
    media = tuple((m, home.blobs.get(m.sha256)) for m in post.media)
    return PublishRequest(
        post=post,
        account=acct,
        media=media,
        signer_fingerprint=key_id.hex(),
        signature=sig,
        body=body,
        statement=statement or b"",
        inclusion=None if batch_proof is None else decoded.inclusion(bytes(batch_proof)),
    )


# --- commands: cancel and retract ------------------------------------------------------------


def apply_commands(conn: sqlite3.Connection, now_ms: int) -> list[str]:
    """Apply every cancel/retract not yet applied; returns one line per command settled."""
    ensure_schema(conn)
    out = []
    rows = conn.execute(
        "SELECT i.id, i.kind, i.author, i.target_id FROM items i LEFT JOIN commands c ON c.item_id = i.id "
        "WHERE i.kind IN ('cancel', 'retract') AND c.item_id IS NULL ORDER BY i.id"
    ).fetchall()
    for cmd_id, kind, author, target_id in rows:
        line = _apply_command(conn, now_ms, cmd_id, kind, author, target_id)
        if line:
            out.append(line)
    return out


def _apply_command(
    conn: sqlite3.Connection, now_ms: int, cmd_id: str, kind: str, author: str, target_id: str
) -> str | None:
    with transaction(conn):
        target = conn.execute("SELECT author, kind FROM items WHERE id = ?", (target_id,)).fetchone()
        if target is None:
            return None  # the post has not arrived yet; try again on the next pass
        if target[0] != author or target[1] != "post":
            detail = f"{kind} {cmd_id} by {author} refused: {target_id} is not a post by {author}"
            conn.execute(
                "INSERT INTO commands (item_id, state, detail, applied_ms) VALUES (?, 'refused', ?, ?)",
                (cmd_id, detail, now_ms),
            )
            audit(conn, now_ms, "publisher", "security", detail)
            return detail
        cancelled = conn.execute(
            "UPDATE publications SET state = 'cancelled', next_attempt_ms = NULL, updated_ms = ? "
            "WHERE item_id = ? AND state IN ('pending', 'failed', 'rejected') RETURNING account",
            (now_ms, target_id),
        ).fetchall()
        if kind == "retract":
            in_flight = conn.execute(
                "SELECT count(*) FROM publications WHERE item_id = ? AND state = 'publishing'", (target_id,)
            ).fetchone()[0]
            if in_flight:
                # Finish (or reconcile) the publication first, then delete it.
                if cancelled:
                    audit(conn, now_ms, "publisher", "cancelled", f"{target_id}: {_accounts(cancelled)}")
                return None
            retracting = conn.execute(
                "UPDATE publications SET state = 'retracting', next_attempt_ms = NULL, attempts = 0, "
                "updated_ms = ? WHERE item_id = ? AND state = 'published' RETURNING account",
                (now_ms, target_id),
            ).fetchall()
            detail = f"retract {target_id}: deleting from {_accounts(retracting)}; cancelled {_accounts(cancelled)}"
        else:
            late = conn.execute(
                "SELECT account, state FROM publications WHERE item_id = ? AND state NOT IN ('cancelled')",
                (target_id,),
            ).fetchall()
            detail = f"cancel {target_id}: cancelled {_accounts(cancelled)}"
            if late:
                detail += "; too late for " + ", ".join(f"{a} ({s}; retract it instead)" for a, s in late)
        conn.execute(
            "INSERT INTO commands (item_id, state, detail, applied_ms) VALUES (?, 'done', ?, ?)",
            (cmd_id, detail, now_ms),
        )
        audit(conn, now_ms, "publisher", kind, detail)
        return detail


def _accounts(rows: list[Any]) -> str:
    return ", ".join(r[0] for r in rows) or "none"


# --- operator actions ----------------------------------------------------------------------------


def retry(
    conn: sqlite3.Connection,
    item_id: str,
    now_ms: int,
    account: str | None = None,
    *,
    actor: str = "operator",
) -> list[str]:
    """Put failed publications of ``item_id`` (one account, or all) back in the queue.

    ``actor`` names who asked, for the audit log (the dashboard passes ``operator:NAME``).
    """
    item_id = item_id.strip().upper()
    where = "item_id = ?" + (" AND account = ?" if account else "")
    args: tuple[Any, ...] = (item_id, account) if account else (item_id,)
    with transaction(conn):
        rows = conn.execute(f"SELECT account, state FROM publications WHERE {where}", args).fetchall()
        if not rows:
            raise GroundError(
                f"no publication of {item_id}"
                + (f" to {account}" if account else "")
                + " (see `ground posts`)"
            )
        author = conn.execute("SELECT author FROM items WHERE id = ?", (item_id,)).fetchone()[0]
        still = [a for a, s in rows if s == "rejected" and refusal(conn, author, a)]
        if still and account:
            raise GroundError(f"{item_id} → {account} stays rejected: {refusal(conn, author, account)}")
        failed = [a for a, s in rows if s in ("failed", "retract_failed", "rejected") and a not in still]
        if not failed:
            states = ", ".join(f"{a}: {s}" for a, s in rows)
            raise GroundError(f"nothing to retry for {item_id}: {states}")
        publish_at = conn.execute("SELECT publish_at_ms FROM items WHERE id = ?", (item_id,)).fetchone()[0]
        for a in failed:
            conn.execute(
                "UPDATE publications SET state = CASE state WHEN 'retract_failed' THEN 'retracting' ELSE 'pending' "
                "END, attempts = 0, next_attempt_ms = ?, updated_ms = ? WHERE item_id = ? AND account = ?",
                (publish_at, now_ms, item_id, a),
            )
        audit(conn, now_ms, actor, "retry", f"{item_id} → {', '.join(failed)}")
    return failed


def retry_now(conn: sqlite3.Connection, item_id: str, account: str, now_ms: int, *, actor: str) -> str:
    """Make a publication that is waiting out a backoff due now; returns its state.

    Only the wait is cut: the row keeps its state, so an ambiguous failure (still
    'publishing') is looked up on the platform before any second attempt, and a post
    scheduled for later still waits for its ``publish_at``.
    """
    item_id = item_id.strip().upper()
    with transaction(conn):
        row = conn.execute(
            "SELECT state, attempts, next_attempt_ms FROM publications WHERE item_id = ? AND account = ?",
            (item_id, account),
        ).fetchone()
        if row is None:
            raise GroundError(f"no publication of {item_id} to {account} (see `ground posts`)")
        state, attempts, next_ms = row
        waiting = state in ("pending", "publishing", "retracting") and attempts > 0
        if not waiting or next_ms is None or next_ms <= now_ms:
            raise GroundError(
                f"{item_id} → {account} is not waiting for a retry (state {state}"
                + (", already due" if next_ms is not None and next_ms <= now_ms and waiting else "")
                + ")"
            )
        conn.execute(
            "UPDATE publications SET next_attempt_ms = ? WHERE item_id = ? AND account = ?",
            (now_ms, item_id, account),
        )
        audit(conn, now_ms, actor, "retry-now", f"{item_id} → {account} ({state}; was due at {next_ms})")
    return str(state)


# --- the publishing pass --------------------------------------------------------------------------


async def publish_due(
    home: GroundHome,
    now_ms: int,
    platforms: dict[str, Platform] | None = None,
    session: Any = None,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    rng: random.Random | None = None,
) -> list[PublishOutcome]:
    """Apply commands, then publish (or retract) everything due at ``now_ms``; returns what happened.

    Returns [] without doing anything if another process is publishing from this home.
    """
    with publisher_lock(home) as mine:
        if not mine:
            return []
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await _pass(home, now_ms, platforms, own, policy, rng or random.Random())
        return await _pass(home, now_ms, platforms, session, policy, rng or random.Random())


async def _pass(
    home: GroundHome,
    now_ms: int,
    platforms: dict[str, Platform] | None,
    session: Any,
    policy: RetryPolicy,
    rng: random.Random,
) -> list[PublishOutcome]:
    conn = home.conn
    apply_commands(conn, now_ms)
    rows = conn.execute(
        "SELECT p.item_id, p.account, p.state, p.attempts, p.updated_ms, p.remote_id FROM publications p "
        "JOIN items i ON i.id = p.item_id "
        "WHERE p.state IN ('pending', 'publishing', 'retracting') "
        "AND (p.next_attempt_ms IS NULL OR p.next_attempt_ms <= ?) "
        "AND (i.publish_at_ms IS NULL OR i.publish_at_ms <= ? OR p.state = 'retracting') "
        # An operator paused this account or its whole platform (dashboard): leave it alone.
        "AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.astronaut = i.author AND a.account = p.account "
        "AND a.paused = 1) "
        "AND NOT EXISTS (SELECT 1 FROM platform_pauses pp WHERE p.account LIKE pp.platform || ':%') "
        "ORDER BY COALESCE(p.next_attempt_ms, i.publish_at_ms, 0), p.item_id, p.account",
        (now_ms, now_ms),
    ).fetchall()
    if platforms is not None:
        return await _publish_rows(home, rows, platforms, session, now_ms, policy, rng)
    # Only the adapters this pass needs: importing all of them (HTTP clients, OAuth,
    # pydantic) took ~0.8 s, longer than archiving a 1,000-post hand-off.
    own = default_platforms(home, {account.partition(":")[0].lower() for _, account, *_ in rows})
    try:
        return await _publish_rows(home, rows, own, session, now_ms, policy, rng)
    finally:
        for platform in own.values():  # e.g. the archive's index database
            close = getattr(platform, "close", None)
            if callable(close):
                close()


async def _publish_rows(
    home: GroundHome,
    rows: list[Any],
    platforms: dict[str, Platform],
    session: Any,
    now_ms: int,
    policy: RetryPolicy,
    rng: random.Random,
) -> list[PublishOutcome]:
    conn = home.conn
    # Platforms that take posts in groups (the archive) pay durability per group (issue 18).
    from .publish_batch import publish_in_batches  # builds on this module

    out, rows = await publish_in_batches(home, rows, platforms, session, now_ms)
    held: dict[str, int] = {}  # account → rate-limited until (ms), within this pass
    for item_id, account, state, attempts, updated_ms, remote_id in rows:
        if held.get(account, 0) > now_ms:
            continue
        job = _Job(home, conn, item_id, account, state, attempts, updated_ms, now_ms, policy, rng)
        if state == PubState.RETRACTING:
            outcome = await job.retract(platforms, session, remote_id)
        else:
            outcome = await job.publish(platforms, session)
        if outcome.hold_account and outcome.next_attempt_ms:
            held[account] = outcome.next_attempt_ms
        out.append(outcome)
    if any(o.state in ("published", "retracted") for o in out):
        apply_commands(conn, now_ms)  # a retract waiting on an in-flight publication can proceed now
    return out


@dataclass
class _Job:
    home: GroundHome
    conn: sqlite3.Connection
    item_id: str
    account: str
    state: str
    attempts: int
    updated_ms: int
    now_ms: int
    policy: RetryPolicy
    rng: random.Random

    async def publish(self, platforms: dict[str, Platform], session: Any) -> PublishOutcome:
        platform_name, _ = parse_target(self.account)
        platform = platforms.get(platform_name)
        if platform is None:
            return self._failed(f"no adapter for platform {platform_name!r} on this ground", retryable=True)
        try:
            req = build_request(self.home, self.conn, self.item_id, self.account)
        except (OSError, KeyError, ValueError) as exc:
            return self._failed(f"cannot load the post or its media: {exc}", retryable=False)
        was_publishing = self.state == PubState.PUBLISHING
        req = replace(req, ambiguous_since_ms=self.updated_ms if was_publishing else None, now_ms=self.now_ms)
        window = getattr(platform, "idempotency_window_s", None)
        if was_publishing and window is not None and self.now_ms - self.updated_ms > window * 1000:
            return self._failed(
                f"an earlier attempt may have been published and {platform_name} no longer remembers it "
                f"(idempotency window {window:.0f} s); check the account, then `ground retry {self.item_id} "
                f"--account {self.account}` if it is not there",
                retryable=False,
            )
        try:
            self._claim(keep_started=was_publishing)
            # The account's limits, and the renditions the signed post allows for it (made and
            # stored here, then handed to the adapter in place of those photos).
            prepared = await renditions.prepare(
                self.home.blobs, req, self.account, await self._rules(platform, session)
            )
            problems, req = list(prepared.problems), prepared.request
            # A row left 'publishing' (crash, timeout) may already be out there: ask first.
            result = await platform.lookup(req, session) if was_publishing else None
            if result is None:
                if problems:
                    return self._failed("; ".join(problems), retryable=False)
                result = await platform.publish(req, session)
        except PublishError as exc:
            return self._error(exc, was_publishing)
        except Exception as exc:  # an adapter bug must not stop the loop, nor repost blindly
            log.exception("adapter %s crashed publishing %s", platform_name, self.item_id)
            return self._error(
                PublishError(
                    f"internal error in {platform_name} adapter: {exc!r}", retryable=True, ambiguous=True
                ),
                True,
            )
        fidelity = result.fidelity or str(media_fidelity(platform_name))
        note = result.fidelity_note
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE publications SET state = 'published', url = ?, remote_id = ?, last_error = NULL, "
                "retryable = NULL, next_attempt_ms = NULL, updated_ms = ?, published_ms = ?, "
                "fidelity = ?, fidelity_note = ?, renditions = ? WHERE item_id = ? AND account = ?",
                (
                    result.url,
                    result.remote_id,
                    self.now_ms,
                    self.now_ms,
                    fidelity if req.media else None,
                    note or None,
                    renditions.to_json(prepared.records),
                    self.item_id,
                    self.account,
                ),
            )
            photos = f"; photos {fidelity}" + (f" ({note})" if note else "") if req.media else ""
            photos += "".join(f"; {r.summary()}" for r in prepared.records)
            audit(
                self.conn,
                self.now_ms,
                "publisher",
                "published",
                f"{self.item_id} → {self.account}: {result.url}{photos}",
            )
        return PublishOutcome(item_id=self.item_id, account=self.account, state="published", url=result.url)

    async def _rules(self, platform: Platform, session: Any) -> PlatformRules | None:
        """The account's rules for the re-check before publishing: limits learned from the
        platform (recorded for stations), else the platform's defaults."""
        learned = None
        fetch = getattr(platform, "rules", None)
        if fetch is not None:
            learned = await fetch(self.account, session)
            if learned is not None:
                # Stations learn these with the next receipts (onboard then checks the same).
                account_limits.record(self.conn, self.account, learned, self.now_ms)
        return learned or rules_for(self.account)

    def _claim(self, *, keep_started: bool) -> None:
        # Committed before the platform call: after a crash this row says "ask first".
        # updated_ms keeps the first attempt's start while ambiguous (idempotency window).
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE publications SET state = 'publishing', attempts = attempts + 1, "
                "updated_ms = CASE WHEN ? THEN updated_ms ELSE ? END WHERE item_id = ? AND account = ?",
                (int(keep_started), self.now_ms, self.item_id, self.account),
            )
        self.attempts += 1

    def _error(self, exc: PublishError, claimed_before: bool) -> PublishOutcome:
        if isinstance(exc, QuotaWait):
            return self._wait_for_quota(exc, claimed_before)
        if not exc.retryable:
            return self._failed(str(exc), retryable=False)
        if self.attempts >= self.policy.max_attempts:
            return self._failed(f"gave up after {self.attempts} attempts: {exc}", retryable=True)
        delay_ms = int(1000 * self.policy.delay_s(self.attempts, exc.retry_after_s, self.rng.random()))
        when = self.now_ms + max(1, delay_ms)
        # Ambiguous: it may be out there, so the row stays 'publishing' and the next try looks
        # it up first. Otherwise nothing reached the platform: back to 'pending'.
        new_state = PubState.PUBLISHING if (exc.ambiguous or claimed_before) else PubState.PENDING
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE publications SET state = ?, last_error = ?, retryable = 1, next_attempt_ms = ? "
                "WHERE item_id = ? AND account = ?",
                (str(new_state), str(exc), when, self.item_id, self.account),
            )
            if exc.retry_after_s is not None:
                # The platform asked this account to slow down: hold its whole queue.
                self.conn.execute(
                    "UPDATE publications SET next_attempt_ms = max(COALESCE(next_attempt_ms, 0), ?) "
                    "WHERE account = ? AND state IN ('pending', 'publishing')",
                    (when, self.account),
                )
            audit(
                self.conn,
                self.now_ms,
                "publisher",
                "retry_scheduled",
                f"{self.item_id} → {self.account}: {exc}; next try in {delay_ms / 1000:.1f} s",
            )
        return PublishOutcome(
            item_id=self.item_id,
            account=self.account,
            state=str(new_state),
            error=str(exc),
            next_attempt_ms=when,
            hold_account=exc.retry_after_s is not None,
        )

    def _wait_for_quota(self, exc: QuotaWait, claimed_before: bool) -> PublishOutcome:
        """Nothing was sent: keep the post queued until the quota resets, not counted as a try."""
        when = self.now_ms + max(1, int(1000 * (exc.retry_after_s or 1.0)))
        new_state = PubState.PUBLISHING if claimed_before else PubState.PENDING
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE publications SET state = ?, last_error = ?, retryable = 1, next_attempt_ms = ?, "
                "attempts = max(0, attempts - 1) WHERE item_id = ? AND account = ?",
                (str(new_state), str(exc), when, self.item_id, self.account),
            )
            # The whole account waits: its other posts would meet the same quota.
            self.conn.execute(
                "UPDATE publications SET next_attempt_ms = max(COALESCE(next_attempt_ms, 0), ?) "
                "WHERE account = ? AND state IN ('pending', 'publishing')",
                (when, self.account),
            )
            audit(
                self.conn, self.now_ms, "publisher", "quota_wait", f"{self.item_id} → {self.account}: {exc}"
            )
        self.attempts = max(0, self.attempts - 1)
        return PublishOutcome(
            item_id=self.item_id,
            account=self.account,
            state=str(new_state),
            error=str(exc),
            next_attempt_ms=when,
            hold_account=True,
        )

    def _failed(self, reason: str, *, retryable: bool, state: PubState = PubState.FAILED) -> PublishOutcome:
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE publications SET state = ?, last_error = ?, retryable = ?, next_attempt_ms = NULL, "
                "updated_ms = ? WHERE item_id = ? AND account = ?",
                (str(state), reason, int(retryable), self.now_ms, self.item_id, self.account),
            )
            audit(
                self.conn, self.now_ms, "publisher", str(state), f"{self.item_id} → {self.account}: {reason}"
            )
        return PublishOutcome(item_id=self.item_id, account=self.account, state=str(state), error=reason)

    async def retract(
        self, platforms: dict[str, Platform], session: Any, remote_id: str | None
    ) -> PublishOutcome:
        platform_name, acct = parse_target(self.account)
        platform = platforms.get(platform_name)
        try:
            if platform is None:
                raise PublishError(
                    f"no adapter for platform {platform_name!r} on this ground", retryable=False
                )
            with transaction(self.conn):
                self.conn.execute(
                    "UPDATE publications SET attempts = attempts + 1 WHERE item_id = ? AND account = ?",
                    (self.item_id, self.account),
                )
            self.attempts += 1
            await platform.delete(acct, remote_id or self.item_id, session)
        except PublishError as exc:
            if exc.retryable and self.attempts < self.policy.max_attempts:
                when = self.now_ms + int(
                    1000 * self.policy.delay_s(self.attempts, exc.retry_after_s, self.rng.random())
                )
                with transaction(self.conn):
                    self.conn.execute(
                        "UPDATE publications SET last_error = ?, next_attempt_ms = ? WHERE item_id = ? AND account = ?",
                        (str(exc), when, self.item_id, self.account),
                    )
                return PublishOutcome(
                    item_id=self.item_id,
                    account=self.account,
                    state="retracting",
                    error=str(exc),
                    next_attempt_ms=when,
                )
            return self._failed(
                f"retract failed: {exc}", retryable=exc.retryable, state=PubState.RETRACT_FAILED
            )
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE publications SET state = 'retracted', last_error = NULL, next_attempt_ms = NULL, "
                "updated_ms = ? WHERE item_id = ? AND account = ?",
                (self.now_ms, self.item_id, self.account),
            )
            audit(self.conn, self.now_ms, "publisher", "retracted", f"{self.item_id} → {self.account}")
        return PublishOutcome(item_id=self.item_id, account=self.account, state="retracted")


def remaining(home: GroundHome, now_ms: int) -> int:
    """Publications still to act on that are due by ``now_ms`` (0 means the queue is drained)."""
    row = home.conn.execute(
        "SELECT count(*) FROM publications p JOIN items i ON i.id = p.item_id "
        "WHERE p.state IN ('pending', 'publishing', 'retracting') "
        "AND (i.publish_at_ms IS NULL OR i.publish_at_ms <= ? OR p.state = 'retracting')",
        (now_ms,),
    ).fetchone()
    return int(row[0])


async def _sleep(stop: asyncio.Event, wake: asyncio.Event | None, interval_s: float) -> None:
    """Until ``stop`` or ``wake`` is set, or ``interval_s`` passes; clears ``wake``."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if wake is not None:
        wake.clear()


def log_outcomes(outcomes: list[PublishOutcome]) -> None:
    """One log line per publication that moved (ground/logs.py: event ``publication``)."""
    from . import logs

    for o in outcomes:
        detail = o.url if o.state == "published" else o.error
        logs.event(
            "publication",
            f"{o.state} {o.item_id} → {o.account}" + (f": {detail}" if detail else ""),
            level=logging.INFO if o.state in ("published", "retracted") else logging.WARNING,
            post_id=o.item_id,
            account=o.account,
            state=o.state,
            url=o.url,
            error=o.error,
        )


async def run_forever(
    home: GroundHome,
    stop: asyncio.Event,
    *,
    interval_s: float = 1.0,
    platforms: dict[str, Platform] | None = None,
    session: Any = None,
    wake: asyncio.Event | None = None,
) -> None:
    """Publish due posts until ``stop`` is set; what `ground serve` runs beside the HTTP server.

    A pass runs every ``interval_s`` (retries, scheduled posts) and at once when ``wake`` is
    set (a bundle just committed over the link), so a fresh post does not wait for the tick.
    """
    own = None
    if session is None:
        own = session = aiohttp.ClientSession()
    try:
        platforms = platforms if platforms is not None else default_platforms(home)
        while not stop.is_set():
            try:
                log_outcomes(await publish_due(home, int(time.time() * 1000), platforms, session))
            except Exception:  # a publisher that dies quietly is worse than one that logs and goes on
                log.exception("publishing pass failed; trying again in %.1f s", interval_s)
            await _sleep(stop, wake, interval_s)
    finally:
        if own is not None:
            await own.close()
