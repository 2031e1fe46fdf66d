"""Applying ground's signed receipts to the queue (live over the link, or from a file).

Receipts carry ground's change sequence number (docs/PROTOCOL.md §9): each delivery keeps the
seq of the last receipt applied to it, and an entry with an older or equal seq changes
nothing, so documents may come twice or out of order (a file carried by hand after a live
sync) and the queue still ends equal to ground. Documents not signed by the pinned ground key
are refused before anything is read from them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol import RemoteProtocolError
from protocol.receipt_templates import parts_from_text, parts_to_text
from protocol.receipts import (
    RECEIPTS_VERSION_COMPACT,
    AccountLimitsReceipt,
    BundleReceipt,
    CommandReceipt,
    EnrolledReceipt,
    PhotoFidelity,
    PublicationReceipt,
    ReceiptDocument,
    UnknownTemplateError,
    UrlTemplateReceipt,
    verify_receipts,
)
from protocol.rules import PlatformRules, rules_for, with_limits

from . import link, logcheck, queue
from .errors import OnboardError

# Ground's publication states that mean "ground has it, not settled yet" (ground/publish.py).
_GROUND_TO_ONBOARD = {"pending": "received", "publishing": "received", "scheduled": "received"}
# Delivery states only onboard has: the item has not reached ground (as far as we know).
LOCAL_STATES = ("queued", "exported", "sending")
# Delivery states after which ground has nothing more to say (ground/publish.py's diagram).
FINAL_STATES = ("published", "failed", "rejected", "cancelled", "retracted", "retract_failed")
# Where onboard keeps its receipts cursor (a change seq, §9). The key is new with the seq
# cursor, so a laptop upgraded from the time cursor starts again at 0: receipts are idempotent.
CURSOR_KEY = "receipts_since_seq"


def onboard_state(ground_state: str) -> str:
    """The delivery state onboard shows for a publication ground has in ``ground_state``."""
    return _GROUND_TO_ONBOARD.get(ground_state, ground_state)


def awaiting_receipts(conn: sqlite3.Connection) -> int:
    """How many things ground has yet to settle for this station: deliveries sent (over the
    link or as a file) and not final, and cancels/retracts whose outcome has not come back."""
    link.ensure_schema(conn)
    marks = ", ".join("?" * len(FINAL_STATES))
    (n,) = conn.execute(
        f"SELECT COUNT(*) FROM deliveries WHERE state NOT IN ('queued', {marks})", FINAL_STATES
    ).fetchone()
    (k,) = conn.execute(
        "SELECT COUNT(*) FROM items WHERE kind IN ('cancel', 'retract') AND status IN ('sending', 'exported', "
        "'received')"
    ).fetchone()
    return int(n) + int(k)


def cursor(conn: sqlite3.Connection) -> int:
    link.ensure_schema(conn)
    return int(link.get_state(conn, CURSOR_KEY, "0") or 0)


def claims(conn: sqlite3.Connection) -> tuple[bytes, ...]:
    """sha256 of the bundle files handed off whose items still await their first receipt (§9)."""
    rows = conn.execute(
        "SELECT DISTINCT exported_sha256 FROM items WHERE status = 'exported' AND exported_sha256 IS NOT NULL "
        "ORDER BY exported_sha256 LIMIT 256"
    ).fetchall()
    return tuple(bytes(r[0]) for r in rows)


@dataclass(slots=True, kw_only=True)
class ReceiptsPoll:
    """When `onboard sync` asks ground for receipts: only while something awaits them
    (``awaiting_receipts``), every ``every_s`` while answers bring news, doubling up to
    ``max_s`` while they bring none. A quiet station sends no receipt requests at all."""

    every_s: float = 20.0
    # Five minutes: a post's fate still shows within minutes, and a day of waiting on a
    # scheduled post costs ~300 small requests instead of ~4,000.
    max_s: float = 320.0
    interval_s: float = field(default=0.0)
    next_at: float = 0.0  # 0: as soon as something awaits

    def __post_init__(self) -> None:
        self.interval_s = self.every_s

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def idle(self, now: float, recheck_s: float = 1.0) -> None:
        """Nothing awaits receipts: look again in ``recheck_s`` (the check is a local query)."""
        self.next_at = now + recheck_s

    def answered(self, now: float, changed: int) -> None:
        """A receipts exchange finished; ``changed`` deliveries moved."""
        self.interval_s = self.every_s if changed else min(self.interval_s * 2, self.max_s)
        self.next_at = now + self.interval_s

    def kick(self) -> None:
        """Ground has new posts from us: ask soon, at the base interval."""
        self.interval_s, self.next_at = self.every_s, 0.0


# Limits ground learned for an account (a Mastodon instance's own), from signed receipts:
# compose checks that account's posts against these instead of the platform defaults.
# Enrolled accounts per astronaut, likewise: `onboard post` refuses any other target.
LIMITS_SCHEMA = """
CREATE TABLE IF NOT EXISTS account_limits (
    account         TEXT PRIMARY KEY,
    max_text        INTEGER,
    max_media       INTEGER,
    max_media_bytes INTEGER,
    url_length      INTEGER,
    max_alt         INTEGER,
    media_types     TEXT,
    updated_ms      INTEGER NOT NULL      -- ground's change seq since receipts v2 (§9)
);
-- URL templates from receipts version 4 (docs/PROTOCOL.md §9.5), by ground's number: a
-- publication names its URL by one and a key; deliveries keep the URL rebuilt in full.
CREATE TABLE IF NOT EXISTS url_templates (
    number      INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    url         TEXT NOT NULL,        -- JSON parts (protocol/receipt_templates.py), 'null': none
    remote_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS enrolled_accounts (
    astronaut   TEXT PRIMARY KEY,
    accounts    TEXT NOT NULL,            -- newline-separated platform:account
    seq         INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    receipts: int
    changed: int
    # "ITEM → account: reason" for each delivery this document newly showed refused by ground.
    refused: tuple[str, ...] = ()


def ensure_schema(conn: sqlite3.Connection) -> None:
    link.ensure_schema(conn)
    conn.executescript(LIMITS_SCHEMA)


def templates(conn: sqlite3.Connection) -> dict[int, UrlTemplateReceipt]:
    """The URL templates ground sent in earlier version-4 documents, by number."""
    ensure_schema(conn)
    out = {}
    for number, account, url, remote, seq in conn.execute(
        "SELECT number, account, url, remote_id, seq FROM url_templates"
    ):
        out[number] = UrlTemplateReceipt(
            number=number,
            account=account,
            url=parts_from_text(url),
            remote_id=parts_from_text(remote),
            seq=seq,
        )
    return out


class MissingTemplate(OnboardError):
    """A version-4 document names a URL template this laptop does not hold (§9.5)."""

    def __init__(self, message: str, *, number: int, account: str) -> None:
        super().__init__(message)
        self.number, self.account = number, account


def verify_document(conn: sqlite3.Connection, data: bytes, ground_key: bytes) -> ReceiptDocument:
    """Check a receipts document's signature and decode it (URLs rebuilt from the templates
    held, version 4); keeps the log checkpoint it carries. Raises OnboardError (MissingTemplate
    when it names a template this laptop does not hold)."""
    try:
        doc = verify_receipts(data, ground_key, templates=templates(conn))
    except UnknownTemplateError as exc:
        raise MissingTemplate(
            f"receipts refused: {exc} (a file from `ground receipts --out F --version 4` carries every "
            "template it uses: make it again with this ground)",
            number=exc.number,
            account=exc.account,
        ) from exc
    except RemoteProtocolError as exc:
        raise OnboardError(f"receipts refused: {exc}") from exc
    logcheck.ensure_schema(conn)
    logcheck.keep(conn, doc.checkpoint, ground_key, int(time.time() * 1000))
    return doc


# --- version 4 heals itself (docs/PROTOCOL.md §9.5 "When ground is wrong") ----------------------

# Ground infers which URL templates a laptop holds; when it is wrong (rows lost, a restored
# onboard.db, two laptops on one station's token), a live document names one this laptop lacks.
# It is not applied (the cursor stays) and the next request leaves version 4 out: that older
# document comes whole, and ground then stops counting any template at or below its cursor as
# held. HEAL_KEY keeps "detours,due": detours begun since the last version-4 document applied,
# and 1 while the next request must leave version 4 out (kept across runs: a crash mid-heal
# resumes it).
HEAL_KEY = "receipts_v4_heal"
# Ground's own records make one detour enough; a second covers an older ground (which forgot
# the reader on a version-3 request and let one still on its way register it again). Past that
# ground keeps naming templates after being told: an error that says so, never a loop.
MAX_DETOURS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class HealState:
    detours: int = 0
    due: bool = False


def heal_state(conn: sqlite3.Connection) -> HealState:
    """Where this laptop's version-4 heal stands (HEAL_KEY)."""
    link.ensure_schema(conn)
    raw = link.get_state(conn, HEAL_KEY, "0,0").split(",")
    try:
        return HealState(detours=int(raw[0]), due=raw[1] == "1")
    except (ValueError, IndexError):
        return HealState()


def _set_heal(conn: sqlite3.Connection, st: HealState) -> None:
    with queue.transaction(conn):
        link.set_state(conn, HEAL_KEY, f"{st.detours},{int(st.due)}")


def versions_to_ask(conn: sqlite3.Connection, versions: tuple[int, ...]) -> tuple[int, ...]:
    """The receipts versions the next live request lists: ``versions``, less version 4 while a
    heal is due."""
    if RECEIPTS_VERSION_COMPACT in versions and heal_state(conn).due:
        return tuple(v for v in versions if v != RECEIPTS_VERSION_COMPACT)
    return versions


def heal_begins(conn: sqlite3.Connection, exc: MissingTemplate) -> str:
    """A live document named a template this laptop lacks and was not applied: the next
    request leaves version 4 out. Returns the log line; raises OnboardError when ground still
    names one after MAX_DETOURS detours (the next sync begins with another detour)."""
    st = heal_state(conn)
    if st.due:
        return (
            f"receipts: {exc.account}'s URL template {exc.number} is not on this laptop; already asking again"
        )
    if st.detours >= MAX_DETOURS:
        _set_heal(conn, HealState(detours=0, due=True))
        raise OnboardError(
            f"ground's receipts still name URL template {exc.number} ({exc.account}), which this laptop was "
            f"never sent, after asking {MAX_DETOURS} times for receipts without templates: ground keeps a wrong "
            "record of what this laptop holds — is another laptop syncing with this station's token (each "
            "needs its own: `ground station add`), or was ground's database restored? Nothing was skipped; "
            "`onboard sync` again asks without templates first"
        )
    _set_heal(conn, HealState(detours=st.detours + 1, due=True))
    return (
        f"receipts: {exc.account}'s URL template {exc.number} is not on this laptop; "
        "asking again without templates (receipts version 3), nothing skipped"
    )


def heal_applied(conn: sqlite3.Connection, version: int) -> None:
    """A live document of ``version`` was applied: an older one completes a detour, a
    version-4 one shows ground's record right again."""
    st = heal_state(conn)
    if version < RECEIPTS_VERSION_COMPACT and st.due:
        _set_heal(conn, HealState(detours=st.detours, due=False))
    elif version >= RECEIPTS_VERSION_COMPACT and st.detours and not st.due:
        _set_heal(conn, HealState())


def apply_document(conn: sqlite3.Connection, doc: ReceiptDocument) -> Applied:
    """Update deliveries and items from a verified document; returns how many rows changed."""
    ensure_schema(conn)
    changed = 0
    refused: list[str] = []
    now = int(time.time() * 1000)
    with queue.transaction(conn):
        for r in doc.receipts:
            if isinstance(r, PublicationReceipt):
                changed += _apply_publication(conn, r, now, refused, fidelity=doc.version >= 3)
            elif isinstance(r, AccountLimitsReceipt):
                changed += _apply_limits(conn, r)
            elif isinstance(r, EnrolledReceipt):
                changed += _apply_enrolled(conn, r)
            elif isinstance(r, CommandReceipt):
                changed += _apply_command(conn, r)
            elif isinstance(r, UrlTemplateReceipt):
                _apply_template(conn, r)  # what it names is in the publications it rebuilt
            else:
                changed += _apply_bundle(conn, r, now, refused)
    return Applied(receipts=len(doc.receipts), changed=changed, refused=tuple(refused))


def _apply_template(conn: sqlite3.Connection, r: UrlTemplateReceipt) -> None:
    """Keep a template for later documents (ground never reuses a number for other parts)."""
    conn.execute(
        "INSERT OR REPLACE INTO url_templates (number, account, url, remote_id, seq) VALUES (?, ?, ?, ?, ?)",
        (r.number, r.account, parts_to_text(r.url), parts_to_text(r.remote_id), r.seq),
    )


def remedy(item_id: str, account: str, state: str) -> str:
    """The commands that move a refused or failed delivery on (shown by `onboard queue`)."""
    if state == "rejected":
        return (
            f"to resolve: `onboard cancel {item_id}` and post again to an enrolled account, or have ground "
            f"enroll {account} and run `ground retry {item_id} --account {account}`"
        )
    if state == "failed":
        return f"to resolve: ground can `ground retry {item_id} --account {account}`, or `onboard cancel {item_id}`"
    if state == "retract_failed":
        return f"to resolve: ground can `ground retry {item_id} --account {account}` to delete it again"
    return ""


def _apply_publication(
    conn: sqlite3.Connection, r: PublicationReceipt, now: int, refused: list[str], *, fidelity: bool = False
) -> int:
    """One (post, account) as ground has it. ``fidelity``: the document is version 3, so its
    photo fidelity and read-back replace what was kept; a version-2 one says nothing of them."""
    state = onboard_state(r.state)
    row = conn.execute(
        "SELECT state, ground_seq FROM deliveries WHERE item_id = ? AND target = ?", (r.item_id, r.account)
    ).fetchone()
    if row is None:
        return 0  # a post from another laptop (a full `ground receipts` file)
    old, seen = row
    if seen is not None and r.seq == seen and fidelity:
        # The same change, told again by a version-3 document (a version-2 one came first, e.g.
        # a file): it adds the photo fidelity that one left out, and changes nothing else.
        return _apply_photos(conn, r)
    if seen is not None and r.seq <= seen:
        return 0  # this or a newer state is already here
    detail = None
    if state in ("failed", "rejected", "retract_failed"):
        detail = f"{r.error or state}; {remedy(r.item_id, r.account, state)}"
    elif r.renditions:
        # Never silently: a published rendition is named with both hashes (docs/platforms.md).
        detail = "; ".join(n.describe() for n in r.renditions)
    conn.execute(
        "UPDATE deliveries SET state = ?, url = ?, detail = ?, remote_id = ?, ground_seq = ?, updated_ms = ? "
        "WHERE item_id = ? AND target = ?",
        (state, r.url, detail, r.remote_id, r.seq, now, r.item_id, r.account),
    )
    if fidelity:
        _apply_photos(conn, r)
    else:
        # A version-2 entry moved it on and says nothing of photos: what was kept may be out of
        # date, so nothing is claimed until a version-3 entry for this change fills it in.
        conn.execute(
            "UPDATE deliveries SET photos = NULL, read_back = NULL WHERE item_id = ? AND target = ?",
            (r.item_id, r.account),
        )
    if state == "rejected" and old != "rejected":
        refused.append(f"{r.item_id} → {r.account}: {r.error or 'refused'}")
    roll_up(conn, r.item_id)
    return 1


def _apply_photos(conn: sqlite3.Connection, r: PublicationReceipt) -> int:
    """Keep what a version-3 receipt says of the photos (NULL: nothing published, or no photos)."""
    photos = json.dumps([[str(p.fidelity), p.original_sha256.hex()] for p in r.photos]) if r.photos else None
    cur = conn.execute(
        "UPDATE deliveries SET photos = ?, read_back = ? WHERE item_id = ? AND target = ? "
        "AND (photos IS NOT ? OR read_back IS NOT ?)",
        (photos, r.read_back or None, r.item_id, r.account, photos, r.read_back or None),
    )
    return cur.rowcount


# --- photo fidelity per account, as ground's receipts said (docs/PROTOCOL.md §9.4) ---------------

Photos = tuple[tuple[str, str], ...]  # per photo (fidelity, original sha256 hex)


def photo_fidelity(conn: sqlite3.Connection, item_id: str) -> dict[str, tuple[Photos, str]]:
    """Per published account of ``item_id`` that ground reported photos for: ((fidelity, sha256
    hex) per photo, ground's read-back words or ""). Empty before a version-3 receipt said anything."""
    try:
        rows = conn.execute(
            # Published only: what a version-2 receipt moved on since (a retract) keeps its old
            # photos column, which no longer describes anything the account holds.
            "SELECT target, photos, read_back FROM deliveries WHERE item_id = ? AND photos IS NOT NULL "
            "AND state = 'published' ORDER BY target",
            (item_id,),
        ).fetchall()
    except sqlite3.OperationalError:
        return {}  # a queue from before the columns (they are added on connect)
    return {t: (tuple((str(f), str(h)) for f, h in json.loads(p)), rb or "") for t, p, rb in rows}


_WORDS = {
    str(PhotoFidelity.EXACT): "kept exactly",
    str(PhotoFidelity.RE_ENCODED): "re-encoded by the platform",
    str(PhotoFidelity.RENDITION): "sent as a rendition (allowed)",
}


def account_words(photos: Photos) -> str:
    """One account's photos in words: ``photo kept exactly``, or per photo when they differ
    (``photo 1 re-encoded by the platform, photo 2 sent as a rendition (allowed)``)."""
    kinds = {f for f, _ in photos}
    if not photos:
        return ""
    if len(kinds) == 1:
        (only,) = kinds
        return f"{'photo' if len(photos) == 1 else 'photos'} {_WORDS.get(only, only)}"
    return ", ".join(f"photo {n} {_WORDS.get(f, f)}" for n, (f, _) in enumerate(photos, start=1))


def _names(accounts: Sequence[str]) -> str:
    return accounts[0] if len(accounts) == 1 else ", ".join(accounts[:-1]) + " and " + accounts[-1]


def fidelity_sentence(per_account: Mapping[str, Photos]) -> str:
    """One sentence from what ground did, e.g. ``x:alice re-encoded this photo; flickr:alice and
    bluesky:alice.test kept it exactly (sha256 3f2a…)``. "" when no account reported photos."""
    groups: dict[str, list[str]] = {}
    originals: list[str] = []
    n = 0
    for account, photos in sorted(per_account.items()):
        if not photos:
            continue
        n = max(n, len(photos))
        for _, sha in photos:
            if sha not in originals:
                originals.append(sha)
        kinds = {f for f, _ in photos}
        groups.setdefault(next(iter(kinds)) if len(kinds) == 1 else "mixed", []).append(account)
    if not groups:
        return ""
    this, it = ("this photo", "it") if n == 1 else ("these photos", "them")
    parts = []
    if str(PhotoFidelity.RE_ENCODED) in groups:
        parts.append(f"{_names(groups[str(PhotoFidelity.RE_ENCODED)])} re-encoded {this}")
    if str(PhotoFidelity.RENDITION) in groups:
        parts.append(f"{_names(groups[str(PhotoFidelity.RENDITION)])} got a rendition of {this} (as allowed)")
    for account in groups.get("mixed", []):
        parts.append(f"{account}: {account_words(per_account[account])}")
    if str(PhotoFidelity.EXACT) in groups:
        parts.append(f"{_names(groups[str(PhotoFidelity.EXACT)])} kept {it} exactly")
    known = {str(f) for f in PhotoFidelity} | {"mixed"}
    for kind, accounts in groups.items():
        if kind not in known:  # a fidelity a later ground names: shown as it says
            parts.append(f"{_names(accounts)}: {kind}")
    hashes = ", ".join(h[:16] + "…" for h in originals)
    return "; ".join(parts) + f" (sha256 {hashes})"


def _apply_limits(conn: sqlite3.Connection, r: AccountLimitsReceipt) -> int:
    """Keep the newest limits per account (an older document never overwrites a newer one)."""
    cur = conn.execute(
        "INSERT INTO account_limits (account, max_text, max_media, max_media_bytes, url_length, max_alt, "
        "media_types, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(account) DO UPDATE SET max_text = excluded.max_text, max_media = excluded.max_media, "
        "max_media_bytes = excluded.max_media_bytes, url_length = excluded.url_length, "
        "max_alt = excluded.max_alt, media_types = excluded.media_types, updated_ms = excluded.updated_ms "
        "WHERE excluded.updated_ms > account_limits.updated_ms",
        (
            r.account,
            r.max_text,
            r.max_media,
            r.max_media_bytes,
            r.url_length,
            r.max_alt,
            None if r.media_types is None else "\n".join(r.media_types),
            r.seq,
        ),
    )
    return cur.rowcount


def _apply_enrolled(conn: sqlite3.Connection, r: EnrolledReceipt) -> int:
    cur = conn.execute(
        "INSERT INTO enrolled_accounts (astronaut, accounts, seq) VALUES (?, ?, ?) "
        "ON CONFLICT(astronaut) DO UPDATE SET accounts = excluded.accounts, seq = excluded.seq "
        "WHERE excluded.seq > enrolled_accounts.seq",
        (r.astronaut, "\n".join(r.accounts), r.seq),
    )
    return cur.rowcount


def enrolled_accounts(conn: sqlite3.Connection, astronaut: str) -> tuple[str, ...] | None:
    """The accounts ground has ``astronaut`` enrolled for, as of the last receipts applied;
    None if no receipt has said yet (then compose cannot check targets and says so)."""
    try:
        row = conn.execute(
            "SELECT accounts FROM enrolled_accounts WHERE astronaut = ?", (astronaut,)
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # no receipts applied yet on this laptop
    if row is None:
        return None
    return tuple(a for a in str(row[0]).split("\n") if a)


def _apply_command(conn: sqlite3.Connection, r: CommandReceipt) -> int:
    """A cancel or retract came back: say what ground did with it, in words (§9)."""
    cur = conn.execute(
        "UPDATE items SET status = ?, detail = ? WHERE id = ? AND kind IN ('cancel', 'retract') "
        "AND (status != ? OR detail IS NOT ?)",
        (str(r.outcome), r.detail, r.command_id, str(r.outcome), r.detail),
    )
    return cur.rowcount


def known_rules(conn: sqlite3.Connection) -> dict[str, PlatformRules]:
    """Rules per ``platform:account`` from the limits ground sent (for protocol.rules.violations)."""
    try:
        rows = conn.execute(
            "SELECT account, max_text, max_media, max_media_bytes, url_length, max_alt, media_types "
            "FROM account_limits"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}  # no receipts applied yet on this laptop
    out: dict[str, PlatformRules] = {}
    for account, mt, mm, mb, ul, ma, types in rows:
        base = rules_for(account)
        if base is None:
            continue  # a platform this laptop has no rules for: nothing to refine
        out[account] = with_limits(
            base,
            max_text=base.max_text if mt is None else mt,
            max_media=base.max_media if mm is None else mm,
            max_media_bytes=base.max_media_bytes if mb is None else mb,
            url_length=base.url_length if ul is None else ul,
            max_alt=base.max_alt if ma is None else ma,
            media_types=base.media_types if types is None else frozenset(types.split("\n")),
        )
    return out


def post_status(states: set[str]) -> str:
    """A post's one-word status from its deliveries' states (onboard's, or ground's mapped by
    ``onboard_state``): the worst news first, so nothing that needs the astronaut hides."""
    if states & {"received", *LOCAL_STATES}:
        return "received"
    if "retracting" in states:
        return "retracting"
    for bad in ("retract_failed", "failed", "rejected"):
        if bad in states:
            return bad
    if "published" in states:
        return "published"  # with any cancelled/retracted ones beside it
    return "retracted" if "retracted" in states else "cancelled"


def roll_up(conn: sqlite3.Connection, item_id: str) -> None:
    """An item's own status summarises its deliveries once ground has it."""
    states = {s for (s,) in conn.execute("SELECT state FROM deliveries WHERE item_id = ?", (item_id,))}
    if not states or states <= set(LOCAL_STATES):
        return
    conn.execute("UPDATE items SET status = ? WHERE id = ? AND kind = 'post'", (post_status(states), item_id))


def _apply_bundle(conn: sqlite3.Connection, r: BundleReceipt, now: int, refused: list[str]) -> int:
    changed = 0
    if r.accepted:
        for i in r.item_ids:
            cur = conn.execute(
                "UPDATE items SET status = 'received' WHERE id = ? AND status IN ('queued', 'sending', 'exported')",
                (i,),
            )
            cur2 = conn.execute(
                "UPDATE deliveries SET state = 'received', updated_ms = ? WHERE item_id = ? "
                "AND state IN ('queued', 'sending', 'exported')",
                (now, i),
            )
            changed += cur.rowcount + cur2.rowcount
        return changed
    ids = [
        i
        for (i,) in conn.execute(
            "SELECT i.item_id FROM link_transfer_items i JOIN link_transfers t ON t.name = i.name WHERE t.sha256 = ?",
            (r.bundle_sha256,),
        )
    ]
    ids += _exported_items_with_sha(conn, r.bundle_sha256)
    for i in ids:
        reason = (
            f"ground rejected the whole bundle: [{r.code}] {r.message}; it never reached ground: "
            f"`onboard cancel {i}` clears it, then post again"
        )
        cur = conn.execute(
            "UPDATE deliveries SET state = 'rejected', detail = ?, updated_ms = ? WHERE item_id = ? "
            "AND state IN ('queued', 'sending', 'exported')",
            (reason, now, i),
        )
        cur2 = conn.execute(
            "UPDATE items SET status = 'rejected', detail = ? WHERE id = ? AND status IN ('queued', 'sending', "
            "'exported')",
            (reason, i),
        )
        if cur.rowcount or cur2.rowcount:
            refused.append(f"{i}: [{r.code}] {r.message}")
            changed += cur.rowcount + cur2.rowcount
    return changed


def _exported_items_with_sha(conn: sqlite3.Connection, sha: bytes) -> list[str]:
    """Items handed off in a bundle file whose bytes hash to ``sha`` (file hand-off rejections)."""
    out: list[str] = []
    known = [i for (i,) in conn.execute("SELECT id FROM items WHERE exported_sha256 = ?", (sha,))]
    if known:
        return known
    # Exported before onboard kept each file's hash: hash the files still on disk.
    paths = {
        p
        for (p,) in conn.execute(
            "SELECT DISTINCT exported_to FROM items WHERE status = 'exported' AND exported_sha256 IS NULL"
        )
        if p
    }
    for p in paths:
        try:
            digest = hashlib.sha256(Path(p).read_bytes()).digest()
        except OSError:
            continue
        if digest == sha:
            out += [i for (i,) in conn.execute("SELECT id FROM items WHERE exported_to = ?", (p,))]
    return out


def import_file(conn: sqlite3.Connection, path: Path, ground_key: bytes) -> Applied:
    """`onboard receipts import F`: verify a receipts file against the pinned key and apply it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnboardError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return apply_document(conn, verify_document(conn, data, ground_key))
