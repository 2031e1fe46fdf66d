"""The ground side of the live link: ``TransferReceiver`` (sans-IO), its config and events.

What it decides: whether a request is valid (sizes, offsets, the station's staging quota),
what each upload's staging record holds (``UploadRecord``: its durable ranges), which bytes
still need writing, when an upload is whole and goes to commit, and when an abandoned
partial upload expires. Frames are in protocol/transfer_wire.py; the station side is
protocol/transfer_sender.py (docs/PROTOCOL.md §8).

Receiver (ground side), one per ground, shared by every station::

    r = TransferReceiver(ReceiverConfig(), have=lambda key: ..., uploads=restored_records)
    rid = r.receive(request_bytes, now, station="iss")
    while (ev := r.next_event()):         # WriteChunk → store, fsync, r.chunk_stored(rid, now)
        ...                               # CommitUpload → verify, r.commit_done(rid, now, ...)
                                          # ReceiptsWanted → r.receipts_ready(rid, ...)
                                          #   (also after an OPEN that asked, link version 2)
                                          # UploadChanged → persist the record (before replying)
    r.response_for(rid)                   # the response bytes, once ready

Durability rule: ground acknowledges a range only after the driver said it is stored
(``chunk_stored``), so a STATUS never claims a byte a crash could lose (fsync before ack).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import RemoteProtocolError
from .rangeset import RangeSet
from .transfer_wire import (
    CODED_HEADER,
    MAX_RANGES,
    OPEN_RECEIPTS_VERSIONS,
    Chunk,
    ErrorFrame,
    LinkErrorCode,
    Open,
    ReceiptsBatch,
    ReceiptsCursor,
    ReceiptsRequest,
    Status,
    TransferKey,
    TransferKind,
    UploadState,
    decode_request,
    encode_response,
)

OLD_CURSOR_MESSAGE = (
    "this onboard asks for receipts by time, which can skip a change (docs/PROTOCOL.md §9); "
    "upgrade onboard, or carry receipts by hand: `ground receipts --out F` then `onboard receipts import F`"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverConfig:
    # Largest chunk ground accepts: twice the sender's maximum, so config skew is harmless.
    max_chunk_bytes: int = 1024 * 1024
    # Blobs: one photo (limits.max_blob_bytes); bundles on the link carry items, not photos.
    max_blob_bytes: int = 64 * 1024**2
    max_bundle_bytes: int = 64 * 1024**2
    # Per-station staging quota: unfinished uploads may not hold more than this on ground.
    station_quota_bytes: int = 2 * 1024**3
    # A partial upload untouched this long is dropped (its station will have re-planned).
    upload_ttl_s: float = 7 * 24 * 3600.0
    # Receipts per document.
    max_receipts: int = 500


@dataclass(slots=True, kw_only=True)
class UploadRecord:
    """What ground knows of one station's upload; persisted by the driver on UploadChanged."""

    station: str
    key: TransferKey
    size_bytes: int
    owner: str
    ranges: RangeSet
    state: UploadState = UploadState.RECEIVING
    code: str = ""
    message: str = ""
    created: float = 0.0
    updated: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteChunk:
    """Store ``data`` at ``offset`` of the upload and make it durable, then call chunk_stored."""

    rid: int
    station: str
    key: TransferKey
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitUpload:
    """Every byte is stored: verify and accept it, then call commit_done."""

    rid: int
    station: str
    key: TransferKey
    size_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptsWanted:
    rid: int
    station: str
    since: int  # a change seq (§9)
    limit: int
    claims: tuple[bytes, ...] = ()  # sha256 of bundles the station handed off as files
    # The receipts versions the station reads (§9.3); empty: version 2 only.
    versions: tuple[int, ...] = ()
    # Set when these receipts ride in the STATUS answering an OPEN of this upload (it is
    # COMMITTED or REJECTED): the driver may first let ground publish it (a bounded wait),
    # so the answer says where the post went. If they cannot be built, call store_failed:
    # the STATUS then goes without them.
    key: TransferKey | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadChanged:
    """Persist this record (it is a snapshot) before sending the pending responses."""

    record: UploadRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadExpired:
    """Drop the staged bytes and the record of an abandoned upload."""

    station: str
    key: TransferKey


@dataclass(frozen=True, slots=True, kw_only=True)
class BadRequest:
    """A request was refused (for the driver's log and the dashboard's security events)."""

    rid: int
    station: str
    code: str
    message: str


ReceiverEvent = WriteChunk | CommitUpload | ReceiptsWanted | UploadChanged | UploadExpired | BadRequest


@dataclass(slots=True)
class _Pending:
    rid: int
    station: str
    seq: int
    key: TransferKey | None
    writes: list[tuple[int, int]]
    receipts_since: int | None = None  # the OPEN asked for receipts with its answer
    held: Status | None = None  # that answer, waiting for its receipts
    # The receipts versions that OPEN listed (§9.3); (): link version 2's own, OPEN_RECEIPTS_VERSIONS.
    receipts_versions: tuple[int, ...] = ()


class TransferReceiver:
    """Validates requests, keeps each upload's durable ranges and decides when to commit."""

    def __init__(
        self,
        config: ReceiverConfig | None = None,
        *,
        have: Callable[[TransferKey], bool] = lambda _k: False,
        quota_for: Callable[[str], int | None] = lambda _s: None,
        uploads: Iterable[UploadRecord] = (),
    ) -> None:
        self.config = config or ReceiverConfig()
        self._have = have
        self._quota_for = quota_for  # a station's own quota, or None for the config default
        self._uploads: dict[tuple[str, TransferKey], UploadRecord] = {(u.station, u.key): u for u in uploads}
        self._events: deque[ReceiverEvent] = deque()
        self._pending: dict[int, _Pending] = {}
        self._ready: dict[int, bytes] = {}
        self._committing: set[tuple[str, TransferKey]] = set()
        self._next_rid = 1

    def upload(self, station: str, key: TransferKey) -> UploadRecord | None:
        return self._uploads.get((station, key))

    # -- requests ----------------------------------------------------------------------

    def receive(self, data: bytes, now: float, *, station: str) -> int:
        """Take one request frame from ``station``; returns its rid. Never raises on bad bytes."""
        rid = self._next_rid
        self._next_rid += 1
        try:
            req = decode_request(data)
        except RemoteProtocolError as exc:
            self._error(rid, station, 0, LinkErrorCode.BAD_FRAME, f"bad request frame: {exc}", False)
            return rid
        if isinstance(req, ReceiptsRequest):
            self._pending[rid] = _Pending(rid=rid, station=station, seq=req.seq, key=None, writes=[])
            if req.cursor is ReceiptsCursor.TIME:
                # A time cursor can skip changes (§9): refuse it plainly rather than answer wrongly.
                self._error(rid, station, req.seq, LinkErrorCode.BAD_FRAME, OLD_CURSOR_MESSAGE, False)
                return rid
            self._events.append(
                ReceiptsWanted(
                    rid=rid,
                    station=station,
                    since=req.since,
                    limit=self.config.max_receipts,
                    claims=req.claims,
                    versions=req.versions,
                )
            )
            return rid
        if isinstance(req, Open):
            self._open(rid, station, req, now)
        else:
            self._chunk(rid, station, req, now)
        return rid

    def _max_size(self, key: TransferKey) -> int:
        c = self.config
        if key.kind is TransferKind.BLOB:
            return c.max_blob_bytes
        if key.kind is TransferKind.CODED_BLOB:
            return c.max_blob_bytes + CODED_HEADER.size
        return c.max_bundle_bytes

    def _open(self, rid: int, station: str, req: Open, now: float) -> None:
        k = (station, req.key)
        rec = self._uploads.get(k)
        if rec is not None and rec.size_bytes != req.size_bytes:
            self._error(
                rid,
                station,
                req.seq,
                LinkErrorCode.SIZE_CONFLICT,
                f"upload {req.key.name} was opened with {rec.size_bytes} bytes, not {req.size_bytes}",
                False,
            )
            return
        if rec is None:
            if not 0 < req.size_bytes <= self._max_size(req.key):
                self._error(
                    rid,
                    station,
                    req.seq,
                    LinkErrorCode.UPLOAD_TOO_LARGE,
                    f"{req.key.name} declares {req.size_bytes} bytes; allowed 1..{self._max_size(req.key)}",
                    False,
                )
                return
            if self._have(req.key):
                # Ground already holds it (another post, another station, a file hand-off):
                # it never crosses the link again.
                self._reply(
                    rid,
                    Status(
                        seq=req.seq,
                        key=req.key,
                        state=UploadState.COMMITTED,
                        ranges=RangeSet([(0, req.size_bytes)]),
                        size_bytes=req.size_bytes,
                    ),
                )
                return
            staged = sum(
                u.size_bytes
                for (s, _), u in self._uploads.items()
                if s == station and u.state is UploadState.RECEIVING
            )
            quota = self._quota_for(station)
            quota = self.config.station_quota_bytes if quota is None else quota
            if staged + req.size_bytes > quota:
                self._error(
                    rid,
                    station,
                    req.seq,
                    LinkErrorCode.QUOTA_EXCEEDED,
                    f"station {station} would stage {staged + req.size_bytes} bytes, quota "
                    f"{quota}; finish or drop other uploads first",
                    True,
                )
                return
            rec = UploadRecord(
                station=station,
                key=req.key,
                size_bytes=req.size_bytes,
                owner=req.owner,
                ranges=RangeSet(),
                created=now,
                updated=now,
            )
            self._uploads[k] = rec
            self._events.append(UploadChanged(record=_snapshot(rec)))
        if req.data and rec.state is UploadState.RECEIVING:
            # The whole upload inline, or (link version 3) its first chunk: either way a CHUNK
            # at offset 0, with every check and limit a CHUNK gets (data past the end of the
            # upload is refused there, ``bad_offset``).
            chunk = Chunk(seq=req.seq, key=req.key, offset=0, data=req.data)
            self._chunk(
                rid, station, chunk, now, receipts_since=req.receipts_since, versions=req.receipts_versions
            )
            return
        self._pending[rid] = _Pending(
            rid=rid,
            station=station,
            seq=req.seq,
            key=req.key,
            writes=[],
            receipts_since=req.receipts_since,
            receipts_versions=req.receipts_versions,
        )
        self._maybe_commit(rid, rec)

    def _chunk(
        self,
        rid: int,
        station: str,
        req: Chunk,
        now: float,
        *,
        receipts_since: int | None = None,
        versions: tuple[int, ...] = (),
    ) -> None:
        rec = self._uploads.get((station, req.key))
        n = len(req.data)
        if rec is None:
            self._error(
                rid,
                station,
                req.seq,
                LinkErrorCode.UNKNOWN_UPLOAD,
                f"no open upload {req.key.name} for station {station}; send OPEN first",
                True,
            )
            return
        if n == 0 or n > self.config.max_chunk_bytes:
            self._error(
                rid,
                station,
                req.seq,
                LinkErrorCode.CHUNK_TOO_LARGE,
                f"chunk of {n} bytes; allowed 1..{self.config.max_chunk_bytes}",
                True,
            )
            return
        if req.offset + n > rec.size_bytes:
            self._error(
                rid,
                station,
                req.seq,
                LinkErrorCode.BAD_OFFSET,
                f"chunk [{req.offset}, {req.offset + n}) goes past the end of {req.key.name} ({rec.size_bytes} bytes)",
                False,
            )
            return
        p = _Pending(
            rid=rid,
            station=station,
            seq=req.seq,
            key=req.key,
            writes=[],
            receipts_since=receipts_since,
            receipts_versions=versions,
        )
        self._pending[rid] = p
        if rec.state is not UploadState.RECEIVING:
            self._status(p, rec)  # already whole: a late duplicate changes nothing
            return
        pieces = rec.ranges.count_after_add(req.offset, req.offset + n)
        if pieces > MAX_RANGES and pieces > len(rec.ranges):
            # Checked before a byte is written or acknowledged, so the upload's ranges never
            # grow past what a STATUS can carry (issue 16: they did, and every later OPEN
            # of that upload failed).
            self._error(
                rid,
                station,
                req.seq,
                LinkErrorCode.BAD_OFFSET,
                f"chunk [{req.offset}, {req.offset + n}) would leave {req.key.name} in more than "
                f"{MAX_RANGES} pieces; send the chunks that fill its holes first",
                False,
            )
            return
        rec.updated = now
        # Only the bytes ground lacks are written: a duplicate chunk never rewrites stored data.
        for s, e in rec.ranges.gaps(req.offset, req.offset + n):
            p.writes.append((s, e))
            self._events.append(
                WriteChunk(
                    rid=rid,
                    station=station,
                    key=req.key,
                    offset=s,
                    data=req.data[s - req.offset : e - req.offset],
                )
            )
        if not p.writes:
            self._maybe_commit(rid, rec)

    # -- completions from the driver ---------------------------------------------------

    def chunk_stored(self, rid: int, now: float) -> None:
        """Every WriteChunk of ``rid`` is durable (written and fsynced)."""
        p = self._pending.get(rid)
        if p is None or p.key is None:
            return
        rec = self._uploads.get((p.station, p.key))
        if rec is None:
            return
        grown = RangeSet(rec.ranges)
        for s, e in p.writes:
            grown.add(s, e)
        p.writes = []
        if len(grown) > MAX_RANGES:
            # Another request fragmented the upload between the check in _chunk and now (a
            # driver that does not serialise requests): the bytes are stored but not
            # acknowledged, so the sender sends them again later; the ranges stay bounded.
            self._error(
                rid, p.station, p.seq, LinkErrorCode.BAD_OFFSET, "too many holes in this upload", False
            )
            return
        rec.ranges = grown
        rec.updated = now
        self._events.append(UploadChanged(record=_snapshot(rec)))
        self._maybe_commit(rid, rec)

    def store_failed(self, rid: int, message: str) -> None:
        """The driver could not store a chunk: nothing is acknowledged, the sender retries."""
        p = self._pending.get(rid)
        if p is not None and p.held is not None:
            self._reply(rid, p.held)  # the upload's state stands; its receipts come by RECEIPTS
        elif p is not None:
            self._error(
                rid,
                p.station,
                p.seq,
                LinkErrorCode.STORAGE,
                f"ground could not store the chunk: {message}",
                True,
            )

    def commit_done(
        self,
        rid: int,
        now: float,
        *,
        state: UploadState,
        code: str = "",
        message: str = "",
        retry: bool = False,
    ) -> None:
        """The driver verified the upload: COMMITTED, or REJECTED with the reason.

        ``retry=True`` means the commit failed for a local reason (disk full): the upload
        stays RECEIVING and is committed again on the next request.
        """
        p = self._pending.get(rid)
        if p is None or p.key is None:
            return
        k = (p.station, p.key)
        self._committing.discard(k)
        rec = self._uploads.get(k)
        if rec is None:
            return
        if retry:
            self._error(rid, p.station, p.seq, LinkErrorCode.STORAGE, message or "commit failed; retry", True)
            return
        rec.state, rec.code, rec.message, rec.updated = state, code, message, now
        self._events.append(UploadChanged(record=_snapshot(rec)))
        self._status(p, rec)

    def receipts_ready(
        self, rid: int, document: bytes, next_since: int, more: bool, *, held_ms: int = 0
    ) -> None:
        """The receipts of a ReceiptsWanted are built; ``held_ms``: how long the driver held
        an OPEN's answer for them (it waited for the upload's posts to be published)."""
        p = self._pending.get(rid)
        if p is None:
            return
        batch = ReceiptsBatch(seq=p.seq, document=document, next_since=next_since, more=more)
        if p.held is not None:
            self._reply(rid, dataclasses.replace(p.held, receipts=batch, held_ms=max(0, held_ms)))
        else:
            self._reply(rid, batch)

    def _maybe_commit(self, rid: int, rec: UploadRecord) -> None:
        p = self._pending[rid]
        k = (rec.station, rec.key)
        if (
            rec.state is UploadState.RECEIVING
            and rec.ranges.covers(0, rec.size_bytes)
            and k not in self._committing
        ):
            self._committing.add(k)
            self._events.append(
                CommitUpload(rid=rid, station=rec.station, key=rec.key, size_bytes=rec.size_bytes)
            )
            return
        self._status(p, rec)

    def _status(self, p: _Pending, rec: UploadRecord) -> None:
        ranges = RangeSet(rec.ranges)
        if len(ranges) > MAX_RANGES:
            # Only a record stored before the limit was enforced can get here. Reporting less
            # than ground holds is safe (the sender resends, ground writes only its gaps);
            # a STATUS the sender cannot decode is not.
            ranges = RangeSet(list(ranges)[: MAX_RANGES - 1])
        status = Status(
            seq=p.seq,
            key=rec.key,
            state=rec.state,
            ranges=ranges,
            size_bytes=rec.size_bytes,
            code=rec.code,
            message=rec.message,
        )
        if p.receipts_since is not None and rec.state is not UploadState.RECEIVING:
            # The OPEN asked for receipts (link version 2): the upload is final, so they can
            # say what became of it. The answer waits for them (receipts_ready / store_failed).
            p.held = status
            self._events.append(
                ReceiptsWanted(
                    rid=p.rid,
                    station=p.station,
                    since=p.receipts_since,
                    limit=self.config.max_receipts,
                    versions=p.receipts_versions or OPEN_RECEIPTS_VERSIONS,
                    key=rec.key,
                )
            )
            return
        self._reply(p.rid, status)

    def _reply(self, rid: int, resp: Status | ReceiptsBatch | ErrorFrame) -> None:
        self._pending.pop(rid, None)
        self._ready[rid] = encode_response(resp)

    def _error(
        self, rid: int, station: str, seq: int, code: LinkErrorCode, message: str, retryable: bool
    ) -> None:
        self._events.append(BadRequest(rid=rid, station=station, code=code, message=message))
        self._reply(rid, ErrorFrame(seq=seq, code=code, message=message, retryable=retryable))

    # -- out ---------------------------------------------------------------------------

    def next_event(self) -> ReceiverEvent | None:
        return self._events.popleft() if self._events else None

    def response_for(self, rid: int) -> bytes | None:
        """The response bytes for ``rid`` once ready (drain events first); pops it."""
        return self._ready.pop(rid, None)

    def data_to_send(self) -> list[tuple[int, bytes]]:
        """Every ready response as (rid, bytes)."""
        out = list(self._ready.items())
        self._ready.clear()
        return out

    def next_deadline(self) -> float | None:
        partial = [
            u.updated + self.config.upload_ttl_s
            for u in self._uploads.values()
            if u.state is UploadState.RECEIVING
        ]
        return min(partial) if partial else None

    def retry_commits(self, now: float) -> list[int]:
        """Commit again every whole upload still RECEIVING (its last commit failed for a local
        reason, ``commit_done(retry=True)``), without waiting for its station's next request.

        Returns the rids of the CommitUpload events it queued; their answers go to nobody.
        """
        rids = []
        for k, rec in self._uploads.items():
            if (
                rec.state is UploadState.RECEIVING
                and k not in self._committing
                and rec.ranges.covers(0, rec.size_bytes)
            ):
                rid = self._next_rid
                self._next_rid += 1
                self._pending[rid] = _Pending(rid=rid, station=rec.station, seq=0, key=rec.key, writes=[])
                self._maybe_commit(rid, rec)
                rids.append(rid)
        return rids

    def handle_timeout(self, now: float) -> None:
        """Drop partial uploads nobody touched for upload_ttl_s."""
        for k, u in list(self._uploads.items()):
            if (
                u.state is UploadState.RECEIVING
                and u.updated + self.config.upload_ttl_s <= now
                and k not in self._committing
            ):
                del self._uploads[k]
                self._events.append(UploadExpired(station=u.station, key=u.key))


def _snapshot(rec: UploadRecord) -> UploadRecord:
    return UploadRecord(
        station=rec.station,
        key=rec.key,
        size_bytes=rec.size_bytes,
        owner=rec.owner,
        ranges=RangeSet(rec.ranges),
        state=rec.state,
        code=rec.code,
        message=rec.message,
        created=rec.created,
        updated=rec.updated,
    )
