"""The station's side of the live link: its configuration and what it has to move.

``onboard link add`` pins the ground URL, the station token and ground's receipt key in
``<home>/link.json`` (mode 0600). Planning turns queued items into transfers (docs §8.1):

- every photo is one BLOB transfer named by its sha256 — shared by several posts, it
  crosses once; one ground already holds is never sent;
- text-only items and commands go together in one small bundle (priority 0, first);
- each photo post gets its own items-only bundle that waits for its photos, so text never
  waits behind a photo.

Bundles are written to ``<home>/outbox`` before anything is sent, so a resumed sync sends
the very same bytes (the same sha256, hence the same upload on ground). A spool file stays
exactly as long as it may be sent again: once ground has answered its transfer for good
(committed, or rejected with a reason) it is deleted (``record_done``, and ``prune_outbox``
for what a crash left behind). docs/faults.md lists what stays on the laptop.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from durable.files import BlobStore, fsync_dir, write_atomic
from protocol import LocalProtocolError, Post, RemoteProtocolError, build_bundle, parse_public_key
from protocol.capabilities import Capabilities
from protocol.ids import new_ulid
from protocol.link_memory import LinkMemory
from protocol.transfer import TransferSpec
from protocol.transfer_wire import TransferKey, TransferKind

from . import queue
from .errors import OnboardError
from .home import Home

LINK_FILE = "link.json"
TOKEN_FILE_FORMAT = "orbitpost-station-token/1"
# Text items per bundle: keeps one bundle (one upload) small on a 10 kbit/s link.
MAX_TEXT_BUNDLE_ITEMS = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS link_transfers (
    name        TEXT PRIMARY KEY,         -- 'blob:<sha256 hex>' or 'bundle:<sha256 hex>'
    kind        TEXT NOT NULL,
    sha256      BLOB NOT NULL,
    size_bytes  INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    path        TEXT,                     -- bundle spool file; blobs are read from the blob store
    bundle_id   TEXT,
    state       TEXT NOT NULL DEFAULT 'sending',   -- sending | committed | rejected
    acked_bytes INTEGER NOT NULL DEFAULT 0,
    code        TEXT,
    message     TEXT,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS link_transfer_items (
    name    TEXT NOT NULL REFERENCES link_transfers(name),
    item_id TEXT NOT NULL,
    PRIMARY KEY (name, item_id)
);
CREATE TABLE IF NOT EXISTS link_state (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
"""


# Without ground's capability token, only what every ground decodes: as-is and zstd.
BASELINE_DECODES = "codecs=0,1"


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    ground_url: str
    station: str
    token: str
    ground_key: bytes  # ground's receipt public key, pinned
    ground_decodes: str = BASELINE_DECODES  # capability token (docs §5.3)
    # SHA-256 (hex) of ground's TLS certificate, pinned from the token file ('' : none).
    tls_sha256: str = ""

    def ssl(self) -> aiohttp.Fingerprint | bool:
        """What the HTTP client checks ground's certificate with: the pin, else the system's CAs."""
        if self.tls_sha256 and self.ground_url.startswith("https:"):
            return aiohttp.Fingerprint(bytes.fromhex(self.tls_sha256))
        return True

    @property
    def peer(self) -> Capabilities:
        try:
            return Capabilities.from_token(self.ground_decodes)
        except RemoteProtocolError:
            return Capabilities.from_token(BASELINE_DECODES)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_link(home: Home, ground_url: str, token_file: Path) -> LinkConfig:
    """Check and store the link settings; refuses a token file that is not ground's."""
    parts = urlsplit(ground_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OnboardError(f"--ground {ground_url!r} must be an http(s) URL like http://127.0.0.1:8470")
    try:
        doc = json.loads(token_file.read_text())
    except OSError as exc:
        raise OnboardError(f"cannot read token file {token_file}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise OnboardError(f"{token_file} is not a station token file (from `ground station add`)") from exc
    if not isinstance(doc, dict) or doc.get("format") != TOKEN_FILE_FORMAT:
        raise OnboardError(f"{token_file} is not a station token file (from `ground station add`)")
    try:
        key = parse_public_key(str(doc["ground_receipt_key"]))
        station, token = str(doc["station"]), str(doc["token"])
    except (KeyError, LocalProtocolError) as exc:
        raise OnboardError(f"{token_file} is incomplete or damaged: {exc}") from exc
    decodes = str(doc.get("ground_decodes", BASELINE_DECODES))
    try:
        Capabilities.from_token(decodes)
    except RemoteProtocolError as exc:
        raise OnboardError(f"{token_file} has a damaged ground_decodes entry: {exc}") from exc
    pin = str(doc.get("ground_tls_sha256", "")).lower()
    if pin and (len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin)):
        raise OnboardError(f"{token_file} has a damaged ground_tls_sha256 entry")
    if pin and parts.scheme == "http" and not _loopback(parts.hostname):
        raise OnboardError(
            f"ground serves TLS (its token file pins a certificate): use --ground https://{parts.netloc}"
        )
    cfg = LinkConfig(
        ground_url=ground_url.rstrip("/"),
        station=station,
        token=token,
        ground_key=key,
        ground_decodes=decodes,
        tls_sha256=pin,
    )
    home.ensure()
    data = json.dumps(
        {
            "ground": cfg.ground_url,
            "station": station,
            "token": token,
            "ground_receipt_key": str(doc["ground_receipt_key"]),
            "ground_decodes": decodes,
            "ground_tls_sha256": pin,
        },
        indent=2,
    ).encode()
    write_atomic(home.root / LINK_FILE, data, 0o600)
    return cfg


def load_link(home: Home) -> LinkConfig:
    path = home.root / LINK_FILE
    if not path.exists():
        raise OnboardError(
            "no link to ground configured: run `onboard link add --ground URL --token-file T` first"
        )
    try:
        doc = json.loads(path.read_text())
        return LinkConfig(
            ground_url=doc["ground"],
            station=doc["station"],
            token=doc["token"],
            ground_key=parse_public_key(doc["ground_receipt_key"]),
            ground_decodes=str(doc.get("ground_decodes", BASELINE_DECODES)),
            tls_sha256=str(doc.get("ground_tls_sha256", "")),
        )
    except (OSError, ValueError, KeyError, LocalProtocolError) as exc:
        raise OnboardError(f"{path} is damaged ({exc}); run `onboard link add` again") from exc


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def get_state(conn: sqlite3.Connection, k: str, default: str) -> str:
    row = conn.execute("SELECT v FROM link_state WHERE k = ?", (k,)).fetchone()
    return str(row[0]) if row else default


def set_state(conn: sqlite3.Connection, k: str, v: str) -> None:
    conn.execute(
        "INSERT INTO link_state (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", (k, v)
    )


LINK_MEMORY_KEY = "link_memory"


def _stored_link(conn: sqlite3.Connection, key: str) -> LinkMemory | None:
    """The link kept under ``key``, if stored and readable (a damaged row reads as none)."""
    text = get_state(conn, key, "")
    if not text:
        return None
    try:
        return LinkMemory.decode(text)
    except LocalProtocolError:
        return None


def recall_memory(conn: sqlite3.Connection, now: float) -> LinkMemory | None:
    """The link as the last pass measured it, if stored, readable and recent at Unix ``now``
    (a damaged or stale memory is ignored: a start then sizes itself as with none)."""
    memory = _stored_link(conn, LINK_MEMORY_KEY)
    return memory if memory is not None and memory.usable(now) else None


def remember(conn: sqlite3.Connection, memory: LinkMemory) -> None:
    """Keep ``memory`` for the next start (one row, replaced)."""
    set_state(conn, LINK_MEMORY_KEY, memory.encode())


LINK_EXPECTED_KEY = "link_expected"


def expected_link(conn: sqlite3.Connection) -> LinkMemory | None:
    """The link an operator said to expect (``onboard link expect``), if set and readable; its
    ``measured_at`` is when it was set (it never ages: protocol/link_memory.py ``start_link``)."""
    return _stored_link(conn, LINK_EXPECTED_KEY)


def expect_link(conn: sqlite3.Connection, expected: LinkMemory | None) -> None:
    """Set the link a start without a memory of its own is sized by (None: forget it)."""
    with conn:
        if expected is None:
            conn.execute("DELETE FROM link_state WHERE k = ?", (LINK_EXPECTED_KEY,))
        else:
            set_state(conn, LINK_EXPECTED_KEY, expected.encode())


# -- planning ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    spec: TransferSpec
    source: Callable[[int, int], bytes]


def _file_source(path: Path) -> Callable[[int, int], bytes]:
    """Read ``length`` bytes at ``offset`` straight from disk: memory stays flat however much is queued."""

    def read(offset: int, length: int) -> bytes:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(length)

    return read


def _outbox(home: Home) -> Path:
    p = home.root / "outbox"
    p.mkdir(mode=0o700, exist_ok=True)
    return p


def _blob_transfer(
    home: Home, conn: sqlite3.Connection, sha: bytes, media_type: str, peer: Capabilities
) -> tuple[str, str, int, str | None]:
    """(name, kind, size, spool path) for one photo: reuse a planned one, else choose its form.

    A JPEG travels as Lepton or JPEG XL when ground decodes it and the rebuild here was
    byte-exact (docs §10); otherwise the original bytes are read straight from the blob store.
    """
    row = conn.execute(
        "SELECT name, kind, size_bytes, path FROM link_transfers WHERE sha256 = ? AND kind IN ('blob', 'coded_blob')",
        (sha,),
    ).fetchone()
    if row is not None:
        return row[0], row[1], row[2], row[3]
    store = BlobStore(home.blobs_dir)
    if _codable(media_type, peer):
        coded, plain = _prepared_paths(home, sha)
        if not coded.exists() and not plain.exists():
            prepare_photo(home, sha, peer)
        if coded.exists():
            return f"coded_blob:{sha.hex()}", "coded_blob", coded.stat().st_size, str(coded)
    return f"blob:{sha.hex()}", "blob", store.path(sha).stat().st_size, None


def _codable(media_type: str, peer: Capabilities) -> bool:
    from photocodec.transport import usable

    return media_type == "image/jpeg" and bool(usable(peer.decodes))


def _prepared_paths(home: Home, sha: bytes) -> tuple[Path, Path]:
    """Where a photo's coded form goes, and the marker saying it has none (travels as-is)."""
    out = _outbox(home)
    return out / f"{sha.hex()}.cblob", out / f"{sha.hex()}.plain"


def prepare_photo(home: Home, sha: bytes, peer: Capabilities | None = None) -> str | None:
    """Transcode one JPEG to its Lepton or JPEG XL upload form for ``peer`` (default: the
    linked ground's token), or mark it as-is; touches files only, so a driver can run it in
    a thread while the link keeps moving text.

    Returns None when the photo gets a coded form (or is simply not a JPEG that can gain),
    else why a JPEG that could have gained travels as-is (too large for the encoder's memory
    bound, ...): the astronaut is told (docs/scale.md). The reason is also kept in its marker.
    """
    from photocodec import jxl, transport
    from photocodec.child import encode_file

    if peer is None:
        try:
            peer = load_link(home).peer
        except OnboardError:
            peer = None
    # No link yet: what a ground of this release decodes (onboard.export.CURRENT_GROUND).
    codecs = transport.usable(peer.decodes) if peer is not None else transport.usable(lambda _c: True)
    store = BlobStore(home.blobs_dir)
    coded_path, plain_path = _prepared_paths(home, sha)
    with store.path(sha).open("rb") as f:
        head = f.read(jxl.HEAD_BYTES)
        size = os.fstat(f.fileno()).st_size
    # Judge the photo by its header first: one that cannot gain travels as-is and is never
    # read whole here (the sender streams it from disk, chunk by chunk).
    if not transport.worth_encoding(head, size, codecs):
        write_atomic(plain_path, b"")
        return None
    # Checked in pieces and transcoded in a bounded child process (photocodec/child.py),
    # which writes the upload form (CODED_BLOB header included) itself: this process never
    # holds the photo, its coded form, nor the codec's memory (issue 18).
    store.check(sha)
    tmp = coded_path.with_name(f"{coded_path.name}.{os.getpid()}.tmp")
    done = encode_file(store.path(sha), tmp, codecs=codecs, framed=True)
    if done.written:
        os.replace(tmp, coded_path)
        fsync_dir(coded_path.parent)
        return None
    write_atomic(plain_path, done.reason.encode())
    return done.reason


def as_is_reason(home: Home, sha: bytes) -> str:
    """Why a prepared photo travels as-is ("" if it simply cannot gain, or has a coded form)."""
    _, plain = _prepared_paths(home, sha)
    try:
        return plain.read_text("utf-8", "replace")
    except OSError:
        return ""


# Coded (Lepton or JPEG XL) forms are made this many photos ahead of the sender, not for the whole queue: each
# is a second copy of its photo on the laptop until ground has it (then it is deleted), so a
# gigabyte queued costs its originals plus a few photos, not 1.77× (issue 18, docs/scale.md).
PREPARE_AHEAD = 3


def prepared_waiting(home: Home) -> int:
    """Coded forms on disk now (made, not yet committed by ground)."""
    return sum(1 for f in _outbox(home).iterdir() if f.suffix == ".cblob")


def photos_to_prepare(home: Home, conn: sqlite3.Connection, peer: Capabilities) -> list[bytes]:
    """JPEGs of queued posts that still need their transport form worked out."""
    out: list[bytes] = []
    # Asked once, not per photo: whether a codec is installed looks at the disk.
    if not _codable("image/jpeg", peer):
        return out
    for q in queue.items(conn, status="queued"):
        if isinstance(q.item, Post):
            for m in q.item.media:
                if m.media_type == "image/jpeg" and m.sha256 not in out:
                    coded, plain = _prepared_paths(home, m.sha256)
                    known = conn.execute(
                        "SELECT 1 FROM link_transfers WHERE sha256 = ?", (m.sha256,)
                    ).fetchone()
                    if not known and not coded.exists() and not plain.exists():
                        out.append(m.sha256)
    return out


def plan(
    home: Home,
    conn: sqlite3.Connection,
    peer: Capabilities | None = None,
    *,
    defer: frozenset[bytes] = frozenset(),
    hold_text: bool = True,
) -> None:
    """Turn every queued item into transfers (durably), and mark those items 'sending'.

    ``peer`` is what ground decodes (the link's capability token): it picks the items codec
    (the shipped text dictionary) and whether photos travel as Lepton or JPEG XL.

    Text posts wait while an earlier text bundle is still on its way (Nagle's rule): posts
    written during a loss of signal, or while a bundle crosses, then leave together as one
    bundle, which shares one signature per astronaut and one compression context (§14) —
    on held-out tweets 0.44 × their UTF-8 in a bundle of 200 against ~3 × alone (docs/performance.md). The cost is
    at most one bundle's transfer time of extra latency for the waiting posts. While the link
    is down (``hold_text`` False, sync's sender says so) text is not held: a bundle stuck in the
    dark would cost the posts behind it a round trip after the link returns (issue 14: a post
    written during a loss of signal is published within 2 RTT of its return).
    """
    from .export import batch_items, items_encoding

    peer = peer or Capabilities.from_token(BASELINE_DECODES)
    items_codec, encode_items = items_encoding(peer)
    ensure_schema(conn)
    pending = queue.items(conn, status="queued")
    if not pending:
        return
    store = BlobStore(home.blobs_dir)
    now = _now_ms()
    text = (
        []
        if hold_text and text_in_flight(conn, now)
        else [q for q in pending if not (isinstance(q.item, Post) and q.item.media)]
    )
    # A photo post whose JPEG is still being transcoded (``defer``) waits for the next pass;
    # text never waits for it.
    photo_posts = [
        q
        for q in pending
        if isinstance(q.item, Post) and q.item.media and not any(m.sha256 in defer for m in q.item.media)
    ]
    batches: list[list[queue.QueuedItem]] = [
        text[i : i + MAX_TEXT_BUNDLE_ITEMS] for i in range(0, len(text), MAX_TEXT_BUNDLE_ITEMS)
    ]
    batches += [[q] for q in photo_posts]
    for batch in batches:
        bundle_id = new_ulid(now, os.urandom(10))
        data = build_bundle(
            bundle_id=bundle_id,
            created_ms=now,
            items=batch_items(home, batch, peer),
            items_codec=items_codec,
            encode_items=encode_items,
        )
        blob_rows = []
        for q in batch:
            if isinstance(q.item, Post):
                for m in q.item.media:
                    if not store.has(m.sha256):
                        raise OnboardError(
                            f"photo {m.sha256.hex()[:12]} of post {q.item.id} is missing from {store.root}"
                        )
                    blob_rows.append((q.item, m, _blob_transfer(home, conn, m.sha256, m.media_type, peer)))
        sha = hashlib.sha256(data).digest()
        path = _outbox(home) / f"{sha.hex()}.opb"
        write_atomic(path, data)  # durable before it is named in the database
        owner = batch[0].item.author
        with queue.transaction(conn):
            for item, m, (bname, bkind, bsize, bpath) in blob_rows:
                conn.execute(
                    "INSERT OR IGNORE INTO link_transfers (name, kind, sha256, size_bytes, owner, path, created_ms, "
                    "updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (bname, bkind, m.sha256, bsize, item.author, bpath, now, now),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO link_transfer_items (name, item_id) VALUES (?, ?)",
                    (bname, item.id),
                )
            name = f"bundle:{sha.hex()}"
            conn.execute(
                "INSERT OR IGNORE INTO link_transfers (name, kind, sha256, size_bytes, owner, path, bundle_id, "
                "created_ms, updated_ms) VALUES (?, 'bundle', ?, ?, ?, ?, ?, ?, ?)",
                (name, sha, len(data), owner, str(path), bundle_id, now, now),
            )
            for q in batch:
                conn.execute(
                    "INSERT OR IGNORE INTO link_transfer_items (name, item_id) VALUES (?, ?)",
                    (name, q.item.id),
                )
                conn.execute(
                    "UPDATE items SET status = 'sending', bundle_id = ? WHERE id = ? AND status = 'queued'",
                    (bundle_id, q.item.id),
                )
                conn.execute(
                    "UPDATE deliveries SET state = 'sending', updated_ms = ? WHERE item_id = ? AND state = 'queued'",
                    (now, q.item.id),
                )


# Text waits for an earlier text bundle planned at most this long ago: a bundle that cannot
# finish (ground down for hours, a bug) must not hold every later post with it.
TEXT_HOLD_MAX_MS = 30 * 60 * 1000


def text_in_flight(conn: sqlite3.Connection, now_ms: int) -> bool:
    """Whether a bundle of text posts only (no photos to wait for), planned within the last
    TEXT_HOLD_MAX_MS, is still being sent."""
    row = conn.execute(
        "SELECT 1 FROM link_transfers t WHERE t.kind = 'bundle' AND t.state = 'sending' AND t.created_ms > ? "
        "AND NOT EXISTS (SELECT 1 FROM link_transfer_items ti JOIN item_media m ON m.item_id = ti.item_id "
        "WHERE ti.name = t.name) LIMIT 1",
        (now_ms - TEXT_HOLD_MAX_MS,),
    ).fetchone()
    return row is not None


def active_transfers(home: Home, conn: sqlite3.Connection) -> list[Planned]:
    """Every transfer still to move, with its dependencies, ready to add to the sender."""
    ensure_schema(conn)
    store = BlobStore(home.blobs_dir)
    out: list[Planned] = []
    rows = conn.execute(
        "SELECT name, kind, sha256, size_bytes, owner, path FROM link_transfers WHERE state = 'sending' "
        "ORDER BY created_ms, name"
    ).fetchall()
    for name, kind, sha, size, owner, path in rows:
        if kind in ("blob", "coded_blob"):
            coded = kind == "coded_blob"
            key = TransferKey(kind=TransferKind.CODED_BLOB if coded else TransferKind.BLOB, sha256=sha)
            out.append(
                Planned(
                    spec=TransferSpec(key=key, size_bytes=size, owner=owner, priority=1),
                    source=_file_source(Path(path) if coded else store.path(sha)),
                )
            )
            continue
        deps = tuple(
            TransferKey(
                kind=TransferKind.CODED_BLOB if bkind == "coded_blob" else TransferKind.BLOB, sha256=bsha
            )
            for (bsha, bkind) in conn.execute(
                "SELECT DISTINCT b.sha256, b.kind FROM link_transfer_items i JOIN link_transfer_items bi ON bi.item_id = i.item_id "
                "JOIN link_transfers b ON b.name = bi.name AND b.kind IN ('blob', 'coded_blob') AND b.state = 'sending' "
                "WHERE i.name = ?",
                (name,),
            )
        )
        key = TransferKey(kind=TransferKind.BUNDLE, sha256=sha)
        out.append(
            Planned(
                spec=TransferSpec(key=key, size_bytes=size, owner=owner, priority=0, depends_on=deps),
                source=_file_source(Path(path)),
            )
        )
    return out


def record_progress(conn: sqlite3.Connection, key: TransferKey, acked_bytes: int) -> None:
    conn.execute(
        "UPDATE link_transfers SET acked_bytes = MAX(acked_bytes, ?), updated_ms = ? WHERE name = ?",
        (acked_bytes, _now_ms(), key.name),
    )


def record_done(conn: sqlite3.Connection, key: TransferKey, committed: bool, code: str, message: str) -> None:
    """A transfer finished: committed (ground has it, verified) or rejected with ground's reason."""
    now = _now_ms()
    with queue.transaction(conn):
        conn.execute(
            "UPDATE link_transfers SET state = ?, code = ?, message = ?, updated_ms = ?, "
            "acked_bytes = CASE WHEN ? THEN size_bytes ELSE acked_bytes END WHERE name = ?",
            (
                "committed" if committed else "rejected",
                code or None,
                message or None,
                now,
                committed,
                key.name,
            ),
        )
        ids = [
            i for (i,) in conn.execute("SELECT item_id FROM link_transfer_items WHERE name = ?", (key.name,))
        ]
        if key.kind is TransferKind.BUNDLE and committed:
            for i in ids:
                conn.execute("UPDATE items SET status = 'received' WHERE id = ? AND status = 'sending'", (i,))
                conn.execute(
                    "UPDATE deliveries SET state = 'received', updated_ms = ? WHERE item_id = ? AND state = 'sending'",
                    (now, i),
                )
        elif not committed:
            what = "bundle" if key.kind is TransferKind.BUNDLE else "photo"
            reason = f"ground rejected the {what}: [{code}] {message}"
            for i in ids:
                conn.execute("UPDATE items SET status = 'failed', detail = ? WHERE id = ?", (reason, i))
                conn.execute(
                    "UPDATE deliveries SET state = 'failed', detail = ?, updated_ms = ? WHERE item_id = ? "
                    "AND state IN ('queued', 'sending', 'exported')",
                    (reason, now, i),
                )
    _drop_spool(conn, key)  # after the commit: a crash before it keeps the file, prune_outbox drops it


def _drop_spool(conn: sqlite3.Connection, key: TransferKey) -> None:
    """Delete a finished transfer's spool file: ground answered it for good, it is never resent."""
    row = conn.execute("SELECT path FROM link_transfers WHERE name = ?", (key.name,)).fetchone()
    if row is not None and row[0]:
        Path(row[0]).unlink(missing_ok=True)


# A write_atomic temporary this old belongs to a process that died mid-write.
STALE_TMP_S = 3600.0


def prune_outbox(home: Home, conn: sqlite3.Connection) -> int:
    """Delete outbox files no transfer will read again; returns how many.

    Kept: every file of a transfer still 'sending', and the prepared form (or as-is marker)
    of any photo not yet settled by ground. Deleted: bundles and photo forms of transfers
    ground committed or rejected (a crash between ``record_done``'s commit and its delete
    leaves them), bundle files a crash left unnamed in the database, stale temporaries.
    """
    ensure_schema(conn)
    out = _outbox(home)
    # By file name: the stored path may spell the home differently (relative, a symlink).
    sending = {
        Path(p).name for (p,) in conn.execute("SELECT path FROM link_transfers WHERE state = 'sending'") if p
    }
    settled = {
        bytes(sha).hex()
        for (sha,) in conn.execute(
            "SELECT sha256 FROM link_transfers WHERE kind IN ('blob', 'coded_blob') AND state != 'sending' "
            "AND sha256 NOT IN (SELECT sha256 FROM link_transfers WHERE state = 'sending')"
        )
    }
    removed = 0
    now = time.time()
    for f in out.iterdir():
        if f.name.endswith(".tmp"):
            drop = now - f.stat().st_mtime > STALE_TMP_S
        elif f.suffix == ".opb":
            # plan() writes the file just before naming it; prune runs before plan in sync.
            drop = f.name not in sending
        elif f.suffix in (".cblob", ".plain"):
            drop = f.stem in settled and f.name not in sending
        else:
            drop = False
        if drop:
            f.unlink(missing_ok=True)
            removed += 1
    return removed


def progress_by_item(conn: sqlite3.Connection) -> dict[str, float]:
    """For each item being sent, the fraction of its bytes (bundle and photos) ground holds."""
    ensure_schema(conn)
    out: dict[str, float] = {}
    for item_id, acked, size in conn.execute(
        "SELECT i.item_id, SUM(t.acked_bytes), SUM(t.size_bytes) FROM link_transfer_items i "
        "JOIN link_transfers t ON t.name = i.name GROUP BY i.item_id"
    ):
        out[item_id] = (acked or 0) / size if size else 0.0
    return out
