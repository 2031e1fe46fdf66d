"""What the page shows, as JSON: astronauts, accounts, counters, queue, link, drafts.

Counters and refusals come from protocol.rules (``text_length``, ``violations``) with the
per-account limits ground sent in signed receipts (onboard.receipts.known_rules): the very
check ``onboard post`` runs, never a JavaScript copy of it.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from photocodec import transport
from photocodec.child import encode_file
from protocol import Item, LocalProtocolError, MediaRef, Post, decode_item
from protocol import rules as platform_rules
from protocol.capabilities import Capabilities
from protocol.model import parse_target

from .. import keystore, link, link_status, receipts
from .. import renditions as onboard_renditions
from ..errors import OnboardError
from ..export import CURRENT_GROUND
from ..home import Home
from .drafts import Draft, DraftStore

# Words for each per-account state, and what the astronaut can do about a failure.
FAILED_HINT = (
    "ground keeps the post; an operator can retry it from the ground dashboard — "
    "or change the post and queue it again"
)
REJECTED_HINT = "nothing was published: change what the reason names and queue the post again"


def peer(home: Home) -> Capabilities:
    """What ground decodes (from `onboard link add`), else what this release's ground does."""
    try:
        return link.load_link(home).peer
    except OnboardError:
        return CURRENT_GROUND


def wire_size(raw: bytes, media_type: str, ground: Capabilities) -> tuple[str, int]:
    """How a photo crosses the live link (onboard.link.prepare_photo's choice): Lepton or JPEG XL
    when ground decodes it and the lossless round trip works within the encoder's memory bound
    (made in the same bounded child, photocodec/child.py), else as chosen — with the reason
    when a JPEG that could have gained does not (e.g. too large for the bound)."""
    codecs = transport.usable(ground.decodes) if media_type == "image/jpeg" else ()
    if transport.worth_encoding(raw, len(raw), codecs):
        with tempfile.TemporaryDirectory(prefix="orbitpost-wire-") as d:
            src, dst = Path(d, "in.jpg"), Path(d, "out.coded")
            src.write_bytes(raw)
            done = encode_file(src, dst, codecs=codecs)
            if done.written:
                name = transport.NAMES.get(done.codec, "coded")
                return f"{name} (lossless, rebuilt byte for byte on ground)", dst.stat().st_size
        return f"as chosen — {done.reason}", len(raw)
    return "as chosen", len(raw)


# -- the queue, read cheaply ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    item: Item
    status: str
    detail: str | None
    body_bytes: int


# A queued item's signed body never changes, so each is decoded once per process: the page
# polls every 2 s, and decoding a thousand bodies each time would cost most of a core.
_decoded: dict[str, Item] = {}
_MAX_DECODED = 100_000


def rows(conn: sqlite3.Connection) -> list[Row]:
    """Every queued item, oldest first (onboard.queue's table, bodies decoded once)."""
    out = []
    for item_id, body, status, detail in conn.execute(
        "SELECT id, body, status, detail FROM items ORDER BY id"
    ):
        it = _decoded.get(item_id)
        if it is None:
            it = decode_item(body)
            if len(_decoded) < _MAX_DECODED:
                _decoded[item_id] = it
        out.append(Row(item=it, status=status, detail=detail, body_bytes=len(body)))
    return out


# -- accounts ------------------------------------------------------------------------------


def accounts_for(
    conn: sqlite3.Connection, astronaut: str, all_rows: list[Row] | None = None
) -> tuple[list[str], bool]:
    """The accounts the picker offers ``astronaut`` and whether ground confirmed them.

    Ground's enrolment, from signed receipts, when this laptop has learned it; until then the
    accounts of the astronaut's past posts and those ground sent limits for (not confirmed).
    """
    enrolled = getattr(receipts, "enrolled_accounts", None)
    if enrolled is not None:
        try:
            got = enrolled(conn, astronaut)
        except sqlite3.Error:
            got = None
        if got is not None:
            return sorted(got), True
    seen: set[str] = set()
    for q in rows(conn) if all_rows is None else all_rows:
        if q.item.author == astronaut and isinstance(q.item, Post):
            seen.update(q.item.targets)
    seen.update(receipts.known_rules(conn))
    return sorted(seen), False


def astronauts(home: Home, unlocked: str | None, selected: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in keystore.list_names(home):
        try:
            protected = keystore.is_protected(home, name)
            fp = keystore.fingerprint_of(keystore.public_key(home, name))
        except OnboardError as exc:
            out.append({"name": name, "error": str(exc)})
            continue
        out.append(
            {
                "name": name,
                "protected": protected,
                "unlocked": (not protected) or unlocked == name,
                "selected": selected == name,
                "fingerprint": fp,
            }
        )
    return out


# -- counters ------------------------------------------------------------------------------


def _fidelity(rules: platform_rules.PlatformRules) -> str:
    """What the platform does to photo bytes (protocol.rules.media_fidelity), in words."""
    if platform_rules.media_fidelity(rules.platform) is platform_rules.MediaFidelity.EXACT:
        return "photos kept byte for byte"
    return f"photos re-encoded by {rules.title}"


def _limits(rules: platform_rules.PlatformRules) -> dict[str, Any]:
    return {
        "max_text": rules.max_text,
        "unit": rules.text_count.value,
        "max_media": rules.max_media,
        "max_media_bytes": rules.max_media_bytes,
        "media_types": None
        if rules.media_types is None
        else sorted(t.removeprefix("image/").upper() for t in rules.media_types),
        "max_alt": rules.max_alt,
    }


def check(conn: sqlite3.Connection, store: DraftStore, d: Draft) -> dict[str, Any]:
    """Per-target counters and every reason the draft cannot be queued as it stands."""
    known = receipts.known_rules(conn)
    media = []
    problems: list[str] = []
    warnings: list[str] = []
    for i, p in enumerate(d.photos, start=1):
        meta = store.meta(p.sha)
        if meta is None:
            problems.append(f"photo {i} is no longer on this laptop: remove it and add it again")
            continue
        media.append(
            MediaRef(
                sha256=bytes.fromhex(p.sha),
                size_bytes=int(meta["size_bytes"]),
                media_type=str(meta["media_type"]),
                alt=p.alt,
            )
        )
        if not p.alt.strip():
            warnings.append(
                f"photo {i} has no alt text: people who cannot see it will not know what it shows"
            )
    post = Post(
        id="0" * 26, author=d.author or "x", created_ms=0, text=d.text, media=tuple(media), targets=()
    )
    sizes = _photo_sizes(store, d)
    consents = tuple(t for t in d.renditions if t in d.targets)
    cured_all: list[platform_rules.Violation] = []
    enrolled, confirmed = accounts_for(conn, d.author) if d.author else ([], False)
    targets = []
    for t in d.targets:
        if confirmed and t not in enrolled:
            msg = f"ground has not enrolled {t} for {d.author}: it would be refused (ask ground to enroll it)"
            targets.append({"target": t, "ok": False, "problems": [msg]})
            continue
        try:
            parse_target(t)
        except LocalProtocolError as exc:  # the page shows it beside the account
            targets.append({"target": t, "ok": False, "problems": [str(exc)]})
            continue
        rules = platform_rules.rules_for(t, known)
        if rules is None:
            targets.append({"target": t, "ok": True, "title": t.split(":", 1)[0], "problems": []})
            continue
        bad, cured = _target_problems(post, t, rules, sizes, t in consents)
        cured_all.extend(cured)
        entry: dict[str, Any] = {
            "target": t,
            "title": rules.title,
            "ok": not bad,
            "problems": bad,
            "count": platform_rules.text_length(d.text, rules),
            "limits": _limits(rules),
            "learned": t in known,
        }
        entry["photo_fidelity"] = _fidelity(rules)
        entry["rendition_allowed"] = t in consents
        targets.append(entry)
    valid = [str(t["target"]) for t in targets if "title" in t]
    if d.photos and valid:
        said = platform_rules.fidelity_summary(valid, len(d.photos))
        if said:
            warnings.append(said)
        planned = onboard_renditions.plan_text(
            replace(post, targets=tuple(valid), renditions=tuple(t for t in consents if t in valid)),
            cured_all,
            sizes,
            known,
        )
        if planned:
            warnings.append(planned)
    if not d.text and not d.photos:
        problems.append("nothing to post yet: write some text or add a photo")
    if not d.targets:
        problems.append("choose at least one account")
    if d.publish_at:
        try:
            at_ms = parse_publish_at(d.publish_at)
            if at_ms < time.time() * 1000:
                warnings.append("the publish time is in the past: it will be published as soon as it arrives")
        except OnboardError as exc:
            problems.append(str(exc))
    ok = not problems and all(t["ok"] for t in targets)
    return {"ok": ok, "targets": targets, "problems": problems, "warnings": warnings}


def _photo_sizes(store: DraftStore, d: Draft) -> list[tuple[int, int] | None]:
    """Each staged photo's displayed size, from its first MiB (headers, EXIF): enough for the
    pixel limits, cheap on every autosave."""
    heads = []
    for p in d.photos:
        try:
            with store.photo_path(p.sha).open("rb") as f:
                heads.append(f.read(1024 * 1024))
        except OSError:
            heads.append(b"")
    return onboard_renditions.photo_sizes(heads)


def _target_problems(
    post: Post,
    target: str,
    rules: platform_rules.PlatformRules,
    sizes: list[tuple[int, int] | None],
    consent: bool,
) -> tuple[list[str], list[platform_rules.Violation]]:
    """(what refuses the draft for ``target``, what a rendition there will cure): the checks of
    ``onboard post``, pixel limits included, split by the page's rendition box for the account."""
    one = replace(post, targets=(target,), renditions=(target,) if consent else ())
    found = platform_rules.check_target_photos(one, target, rules, sizes)
    refusals, cured = platform_rules.split_renditions(one, found)
    unreadable = [v for v in cured if not onboard_renditions.readable(v.photo, sizes)]
    bad = []
    for v in refusals + unreadable:
        if v.renditionable and not onboard_renditions.readable(v.photo, sizes):
            hint = f" — ground cannot make a rendition of photo {v.photo} (its pixels cannot be read here): convert it to JPEG"
        elif v.renditionable:
            hint = f" — tick “allow a rendition” for {target} to let ground make a JPEG within {rules.title}'s limits"
        else:
            hint = ""
        bad.append(v.message + hint)
    return bad, [v for v in cured if v not in unreadable]


def parse_publish_at(value: str) -> int:
    """'YYYY-MM-DDTHH:MM' (the page's UTC field) in ms since the epoch."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise OnboardError(f"publish time {value!r} is not a date and time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


# -- queue and history ---------------------------------------------------------------------


def _state_word(state: str, pct: float | None) -> str:
    if state == "sending":
        return f"sending {int((pct or 0) * 100)} %"
    if state == "received":
        return "received by ground"
    return state


def queue_view(conn: sqlite3.Connection, all_rows: list[Row] | None = None) -> list[dict[str, Any]]:
    """Every item, newest first, with per-account states as the page words them."""
    progress = link.progress_by_item(conn)
    items = rows(conn) if all_rows is None else all_rows
    deliveries: dict[str, list[tuple[str, str, str | None, str | None]]] = {}
    for item_id, target, state, url, detail in conn.execute(
        "SELECT item_id, target, state, url, detail FROM deliveries ORDER BY item_id, target"
    ):
        deliveries.setdefault(item_id, []).append((target, state, url, detail))
    commands: dict[str, list[dict[str, str]]] = {}
    for q in items:
        if not isinstance(q.item, Post):
            commands.setdefault(q.item.target_id, []).append(
                {"id": q.item.id, "kind": q.item.kind.name.lower(), "status": q.status}
            )
    out = []
    for q in reversed(items):
        it = q.item
        if not isinstance(it, Post):
            continue
        accounts = []
        # How faithfully ground says each photo went out, per account (receipts v3, §9.4).
        fidelity = receipts.photo_fidelity(conn, it.id) if it.media else {}
        for target, state, url, detail in deliveries.get(it.id, []):
            a: dict[str, Any] = {
                "target": target,
                "state": state,
                "label": _state_word(state, progress.get(it.id)),
            }
            if url and url.startswith(("https://", "http://")):
                a["url"] = url
            elif url:
                a["where"] = url
            if detail:
                a["reason"] = detail
            if state == "failed":
                a["hint"] = REJECTED_HINT if detail and "rejected" in detail else FAILED_HINT
            if state == "published" and target in fidelity:
                photos, read_back = fidelity[target]
                a["fidelity"] = receipts.account_words(photos)
                a["photos"] = [{"fidelity": f, "original_sha256": h} for f, h in photos]
                if read_back:
                    a["read_back"] = read_back
            accounts.append(a)
        out.append(
            {
                "id": it.id,
                "author": it.author,
                "text": it.text,
                "photos": [
                    {"alt": m.alt, "size_bytes": m.size_bytes, "type": m.media_type} for m in it.media
                ],
                "publish_at_ms": it.publish_at_ms,
                "created_ms": it.created_ms,
                "status": q.status,
                "detail": q.detail,
                "accounts": accounts,
                "fidelity": receipts.fidelity_sentence({t: p for t, (p, _) in fidelity.items()}),
                "commands": commands.get(it.id, []),
            }
        )
    return out


def link_view(home: Home, conn: sqlite3.Connection, all_rows: list[Row] | None = None) -> dict[str, Any]:
    """Up or down, last contact, bytes waiting and how long they need at the measured rate."""
    st = link_status.read(conn)
    try:
        cfg: Any = link.load_link(home)
    except OnboardError:
        cfg = None
    waiting = _bytes_waiting(conn, rows(conn) if all_rows is None else all_rows)
    eta = waiting / st.rate_bps if st.rate_bps and waiting else None
    return {
        "configured": cfg is not None,
        "ground": cfg.ground_url if cfg is not None else None,
        "up": st.up,
        "reason": st.reason,
        "last_contact_ms": st.last_contact_ms,
        "rate_bps": st.rate_bps,
        "seen_ms": st.updated_ms,
        "bytes_waiting": waiting,
        "eta_s": eta,
    }


def _bytes_waiting(conn: sqlite3.Connection, all_rows: list[Row]) -> int:
    """Bytes still to cross: queued items (bodies, and each photo once unless already on its
    way) plus what ground has not acknowledged of transfers under way. Photos count as chosen:
    an upper bound, JPEG XL usually saves a fifth."""
    link.ensure_schema(conn)
    sending = {
        bytes(s): size - acked
        for s, size, acked in conn.execute(
            "SELECT sha256, size_bytes, acked_bytes FROM link_transfers WHERE state = 'sending'"
        )
    }
    total = sum(max(0, v) for v in sending.values())
    photos: dict[bytes, int] = {}
    for q in all_rows:
        if q.status != "queued":
            continue
        total += q.body_bytes
        if isinstance(q.item, Post):
            for m in q.item.media:
                if m.sha256 not in sending:
                    photos[m.sha256] = m.size_bytes
    return int(total + sum(photos.values()))


def drafts_view(store: DraftStore) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "author": d.author,
            "text": d.text[:200],
            "photos": len(d.photos),
            "updated_ms": d.updated_ms,
        }
        for d in store.all()
        if d.text or d.photos or d.targets
    ]
