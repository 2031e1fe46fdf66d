"""Transfer frames: the request and response bytes the two transfer machines exchange.

Every frame is one canonical msgpack array ``[version, type, seq, ...fields]``
(docs/PROTOCOL.md §8). Requests go from the station (sender) to ground (receiver); each
response echoes the request's ``seq``. New fields are only ever appended.

    OPEN      [1, 1, seq, kind, sha256, size_bytes, owner, data?, receipts_since?, [version, ...]?]
                                                                   open or query an upload
                                                                   (data: the whole upload, or
                                                                   link version 3 its first chunk)
    CHUNK     [1, 2, seq, kind, sha256, offset, data]              bytes at an offset
    RECEIPTS  [1, 3, seq, since, cursor=2, [claim sha256, ...], [version, ...]?]
                                                                   signed receipts after change `since`
    STATUS    [1, 16, seq, kind, sha256, state, ranges, code, msg, size_bytes,
               document?, next_since?, more?, held_ms?]            what ground durably has
    RECEIPTS_BATCH [1, 17, seq, document, next_since, more]
    ERROR     [1, 18, seq, code, message, retryable]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import msgpack

from .canonical import expect, expect_list, pack, unpack
from .errors import ErrorCode, RemoteProtocolError
from .rangeset import RangeSet

WIRE_VERSION = 1
# Live-link versions this code speaks (capability token ``link=``, docs §5.3): 1 is §8 as first
# shipped; 2 adds an OPEN's receipts cursor answered inside its STATUS (issue 14); 3 lets an
# OPEN's ``data`` be the upload's first chunk (shorter than the upload, kept as a CHUNK at
# offset 0), so a new upload's data leaves in its first flight (issue 14); 4: a request may
# carry the ``Orbitpost-Window`` header and ground clamps that connection's receive window to
# it (protocol/window_clamp.py; listed only by a ground that can, ground/window.py). Frames keep
# WIRE_VERSION 1: the new fields are appended, and sent only to a ground that lists them.
LINK_VERSIONS = frozenset({1, 2, 3, 4})
FIRST_FLIGHT_LINK_VERSION = 3
# Receipts versions a station speaking link version 2 reads (the release that added it also
# added version 3, §9.4): the receipts in an OPEN's answer are written in the newest of these
# ground knows, as a RECEIPTS frame's appended versions would ask.
OPEN_RECEIPTS_VERSIONS = (2, 3)
# A chunk frame is the chunk plus ~60 bytes of framing; 4 MiB bounds what one request can
# make either side buffer, well above the largest chunk the sender uses (docs §8.4).
MAX_FRAME_BYTES = 4 * 1024 * 1024
# Ground merges ranges as they arrive; more than this many holes means a broken sender.
MAX_RANGES = 4096
# An owner (astronaut name) is a fairness label only.
MAX_OWNER_BYTES = 256


class FrameType(IntEnum):
    OPEN = 1
    CHUNK = 2
    RECEIPTS = 3
    STATUS = 16
    RECEIPTS_BATCH = 17
    ERROR = 18


class TransferKind(IntEnum):
    BLOB = 1  # one photo's exact bytes, named by its sha256
    BUNDLE = 2  # a bundle file (docs §6), named by the sha256 of its bytes
    # A photo in a transport codec (docs §8.1, §10): ``codec u8 | raw_size u64 | stored``,
    # named by the sha256 of the *original* photo, which ground rebuilds and checks.
    CODED_BLOB = 3


CODED_HEADER = struct.Struct(">BQ")


def pack_coded_blob(codec: int, raw_size: int, stored: bytes) -> bytes:
    """The bytes of a CODED_BLOB upload."""
    return CODED_HEADER.pack(codec, raw_size) + stored


def unpack_coded_blob(data: bytes, *, max_raw_bytes: int) -> tuple[int, int, bytes]:
    """(codec, raw_size, stored) of a CODED_BLOB upload, or RemoteProtocolError."""
    if len(data) < CODED_HEADER.size:
        raise RemoteProtocolError(ErrorCode.TRUNCATED, "coded photo is shorter than its 9-byte header")
    codec, raw_size = CODED_HEADER.unpack_from(data)
    if not 0 < raw_size <= max_raw_bytes:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"coded photo declares {raw_size} bytes, allowed 1..{max_raw_bytes}"
        )
    return codec, raw_size, data[CODED_HEADER.size :]


class UploadState(IntEnum):
    RECEIVING = 0  # ranges say what ground has; send the rest
    COMMITTED = 1  # whole, verified and stored: nothing more to send
    REJECTED = 2  # whole but refused; ``code``/``message`` say why (final)


class LinkErrorCode(StrEnum):
    """Stable codes of ERROR frames; ground's HTTP driver maps each to a 4xx status."""

    BAD_FRAME = "bad_frame"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_UPLOAD = "unknown_upload"
    SIZE_CONFLICT = "size_conflict"
    BAD_OFFSET = "bad_offset"
    CHUNK_TOO_LARGE = "chunk_too_large"
    UPLOAD_TOO_LARGE = "upload_too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    STORAGE = "storage"  # ground could not write; retry later
    BUSY = "busy"
    RATE_LIMITED = "rate_limited"  # ground/server.py only: too many bad tokens from one address


# HTTP status for each code (ground/server.py); none is ever a 500.
HTTP_STATUS: dict[str, int] = {
    LinkErrorCode.BAD_FRAME: 400,
    LinkErrorCode.UNAUTHORIZED: 401,
    LinkErrorCode.UNKNOWN_UPLOAD: 404,
    LinkErrorCode.SIZE_CONFLICT: 409,
    LinkErrorCode.BAD_OFFSET: 416,
    LinkErrorCode.CHUNK_TOO_LARGE: 413,
    LinkErrorCode.UPLOAD_TOO_LARGE: 413,
    LinkErrorCode.QUOTA_EXCEEDED: 429,
    LinkErrorCode.STORAGE: 503,
    LinkErrorCode.BUSY: 503,
    LinkErrorCode.RATE_LIMITED: 429,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferKey:
    """What is being moved: a kind and the sha256 of its exact bytes."""

    kind: TransferKind
    sha256: bytes

    @property
    def name(self) -> str:
        return f"{self.kind.name.lower()}:{self.sha256.hex()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Open:
    seq: int
    key: TransferKey
    size_bytes: int
    owner: str
    # The whole upload inline (small uploads only): saves a round trip for a text bundle. To a
    # ground listing link version 3 it may be shorter: the upload's first chunk (offset 0),
    # so a photo's data leaves with its OPEN instead of a round trip after it.
    data: bytes = b""
    # Link version 2 (a ground whose capability token lists ``link=2``, docs §8.2): ground
    # answers with the receipts after this change seq inside its STATUS, so a lone text post
    # costs one request, not an OPEN and a RECEIPTS (issue 14). None: not asked.
    receipts_since: int | None = None
    # Appended (receipts version 4, §9.5): the receipts versions the station reads, sent with a
    # ``receipts_since`` only to a ground whose token lists a version beyond
    # OPEN_RECEIPTS_VERSIONS. Empty: those, as link version 2 first said.
    receipts_versions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    seq: int
    key: TransferKey
    offset: int
    data: bytes


class ReceiptsCursor(IntEnum):
    """What a RECEIPTS request's ``since`` counts (docs/PROTOCOL.md §9)."""

    TIME = 1  # wall-clock ms: could skip a change committed late with an older time; refused
    SEQ = 2  # ground's change sequence number: exact


# Bundles one request may claim (file hand-off, §9); a station has a few files awaiting at most.
MAX_RECEIPT_CLAIMS = 256
# Receipts document versions one request may list (there are two today).
MAX_RECEIPT_VERSIONS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptsRequest:
    seq: int
    since: int
    cursor: ReceiptsCursor = ReceiptsCursor.SEQ
    # sha256 of bundles this station handed off as files, so it may read their receipts (§9).
    claims: tuple[bytes, ...] = ()
    # Appended: receipts document versions the station reads (§9.3). Empty: version 2 only, and
    # the frame is the 6 fields of before (a ground that lists no ``receipts=`` refuses a 7th).
    versions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptsBatch:
    seq: int
    document: bytes
    next_since: int
    more: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    seq: int
    key: TransferKey
    state: UploadState
    ranges: RangeSet
    size_bytes: int
    code: str = ""
    message: str = ""
    # The receipts an OPEN asked for (``Open.receipts_since``), same seq; None: none carried.
    receipts: ReceiptsBatch | None = None
    # How long ground held this answer before sending it (it let the upload's posts be
    # published first), as QUIC's ACK Delay: the sender takes it out of its round-trip sample.
    held_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorFrame:
    seq: int
    code: str
    message: str
    retryable: bool


Request = Open | Chunk | ReceiptsRequest
Response = Status | ReceiptsBatch | ErrorFrame


def _key_fields(key: TransferKey) -> list[Any]:
    return [int(key.kind), key.sha256]


def encode_request(req: Request) -> bytes:
    """The frame bytes of one request."""
    if isinstance(req, Open):
        head = [WIRE_VERSION, FrameType.OPEN, req.seq, *_key_fields(req.key), req.size_bytes, req.owner]
        # The optional fields are only present when used, so a plain OPEN has one byte form;
        # ``data`` is then empty when only ``receipts_since`` is wanted.
        if req.receipts_since is not None:
            extra = [list(req.receipts_versions)] if req.receipts_versions else []
            return pack(head + [req.data, req.receipts_since, *extra])
        return pack(head + [req.data] if req.data else head)
    if isinstance(req, Chunk):
        return pack([WIRE_VERSION, FrameType.CHUNK, req.seq, *_key_fields(req.key), req.offset, req.data])
    if req.cursor is ReceiptsCursor.TIME:  # the form releases before the change log sent
        return pack([WIRE_VERSION, FrameType.RECEIPTS, req.seq, req.since])
    fields = [WIRE_VERSION, FrameType.RECEIPTS, req.seq, req.since, int(req.cursor), list(req.claims)]
    if req.versions:
        fields.append(list(req.versions))
    return pack(fields)


def encode_response(resp: Response) -> bytes:
    """The frame bytes of one response."""
    if isinstance(resp, Status):
        fields = [
            WIRE_VERSION,
            FrameType.STATUS,
            resp.seq,
            *_key_fields(resp.key),
            int(resp.state),
            resp.ranges.to_wire(),
            resp.code,
            resp.message,
            resp.size_bytes,
        ]
        r = resp.receipts
        return pack(fields if r is None else [*fields, r.document, r.next_since, r.more, resp.held_ms])
    if isinstance(resp, ReceiptsBatch):
        return pack(
            [WIRE_VERSION, FrameType.RECEIPTS_BATCH, resp.seq, resp.document, resp.next_since, resp.more]
        )
    return pack([WIRE_VERSION, FrameType.ERROR, resp.seq, resp.code, resp.message, resp.retryable])


def _head(data: bytes, what: str) -> list[Any]:
    # The largest frame is a STATUS with MAX_RANGES ranges; a request is a handful of fields.
    bound = 2 * MAX_RANGES + 16
    v = expect_list(
        unpack(data, what=what, max_bytes=MAX_FRAME_BYTES, max_array_len=bound, max_values=2 * bound),
        what=what,
        min_len=3,
    )
    version = expect(v[0], int, what=f"{what} version")
    if version != WIRE_VERSION:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"{what} version {version} is not {WIRE_VERSION}; upgrade orbitpost",
        )
    expect(v[1], int, what=f"{what} type")
    seq = expect(v[2], int, what=f"{what} seq")
    if not 0 <= seq < 2**63:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} seq {seq} out of range")
    return v


def _key(v: list[Any], i: int) -> TransferKey:
    kind = expect(v[i], int, what="transfer kind")
    if kind not in tuple(TransferKind):
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown transfer kind {kind}")
    sha = expect(v[i + 1], bytes, what="transfer sha256")
    if len(sha) != 32:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"transfer sha256 must be 32 bytes, got {len(sha)}")
    return TransferKey(kind=TransferKind(kind), sha256=sha)


def _nonneg(value: Any, what: str) -> int:
    n = expect(value, int, what=what)
    if not 0 <= n < 2**63:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} {n} out of range")
    return int(n)


def _receipt_versions(value: Any) -> tuple[int, ...]:
    listed = expect_list(value, what="receipts versions", min_len=1, max_len=MAX_RECEIPT_VERSIONS)
    return tuple(_nonneg(x, "receipts version") for x in listed)


def decode_request(data: bytes) -> Request:
    """Decode one request frame or raise RemoteProtocolError saying what is wrong."""
    v = _head(data, "request frame")
    t, seq = v[1], v[2]
    if t == FrameType.OPEN:
        expect_list(v, what="OPEN frame", min_len=7, max_len=10)
        owner = expect(v[6], str, what="owner")
        if len(owner.encode()) > MAX_OWNER_BYTES:
            raise RemoteProtocolError(
                ErrorCode.LIMIT_EXCEEDED, f"owner is longer than {MAX_OWNER_BYTES} bytes"
            )
        inline = expect(v[7], bytes, what="inline data") if len(v) >= 8 else b""
        if len(v) == 8 and not inline:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "OPEN inline data, when present, is not empty")
        since = _nonneg(v[8], "receipts since") if len(v) >= 9 else None
        return Open(
            seq=seq,
            key=_key(v, 3),
            size_bytes=_nonneg(v[5], "upload size"),
            owner=owner,
            data=inline,
            receipts_since=since,
            receipts_versions=_receipt_versions(v[9]) if len(v) == 10 else (),
        )
    if t == FrameType.CHUNK:
        expect_list(v, what="CHUNK frame", min_len=7, max_len=7)
        data_ = expect(v[6], bytes, what="chunk data")
        return Chunk(seq=seq, key=_key(v, 3), offset=_nonneg(v[5], "chunk offset"), data=data_)
    if t == FrameType.RECEIPTS:
        expect_list(v, what="RECEIPTS frame", min_len=4, max_len=7)
        since = _nonneg(v[3], "receipts since")
        if len(v) == 4:
            return ReceiptsRequest(seq=seq, since=since, cursor=ReceiptsCursor.TIME)
        cursor = expect(v[4], int, what="receipts cursor kind")
        if cursor not in tuple(ReceiptsCursor):
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown receipts cursor kind {cursor}")
        raw = expect_list(
            v[5] if len(v) >= 6 else [], what="receipts claims", min_len=0, max_len=MAX_RECEIPT_CLAIMS
        )
        claims = tuple(expect(c, bytes, what="claimed bundle sha256") for c in raw)
        if any(len(c) != 32 for c in claims):
            raise RemoteProtocolError(ErrorCode.MALFORMED, "a claimed bundle sha256 must be 32 bytes")
        versions: tuple[int, ...] = ()
        if len(v) == 7:
            listed = expect_list(v[6], what="receipts versions", min_len=1, max_len=MAX_RECEIPT_VERSIONS)
            versions = tuple(_nonneg(x, "receipts version") for x in listed)
        return ReceiptsRequest(
            seq=seq, since=since, cursor=ReceiptsCursor(cursor), claims=claims, versions=versions
        )
    raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown request frame type {t}")


# A CHUNK or OPEN frame's data is a msgpack bin after a fixed head: bin 8/16/32 length bytes.
_BIN_LENGTH_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4}
# Frame array headers whose data field follows this many head fields: CHUNK's 7 fields (data
# last), OPEN's 8 to 10 (data, then receipts_since and its versions: a cut OPEN never shows them).
_SALVAGE_HEADS = {
    0x97: (FrameType.CHUNK, 6),
    0x98: (FrameType.OPEN, 7),
    0x99: (FrameType.OPEN, 7),
    0x9A: (FrameType.OPEN, 7),
}


def salvage_chunk(prefix: bytes) -> Chunk | Open | None:
    """What arrived of a CHUNK frame (or an OPEN carrying data) cut short (the link dropped
    mid-request): the request with the data bytes that made it, or None if the prefix is not
    such a frame's, holds no data byte yet, or is the whole frame (decode that with
    ``decode_request``). A salvaged OPEN's data is a prefix of its upload (link version 3).

    Like tus keeping every byte of an interrupted PATCH, ground stores what reached it, so a
    cut costs only what was still in the network. Nothing here is trusted more than a whole
    chunk: the upload's sha256, signed in its bundle, is checked at commit (docs §8.4)."""
    if len(prefix) < 2 or prefix[0] not in _SALVAGE_HEADS:
        return None
    frame_type, n_head = _SALVAGE_HEADS[prefix[0]]
    unpacker = msgpack.Unpacker(raw=False, use_list=True, max_buffer_size=MAX_FRAME_BYTES)
    unpacker.feed(prefix[1:])
    head: list[Any] = []
    try:
        for _ in range(n_head):
            head.append(unpacker.unpack())
    except (msgpack.OutOfData, ValueError):
        return None
    if len(head) < 2 or head[1] != frame_type:
        return None
    pos = 1 + unpacker.tell()
    n = _BIN_LENGTH_BYTES.get(prefix[pos]) if pos < len(prefix) else None
    if n is None or len(prefix) < pos + 1 + n:
        return None
    declared = int.from_bytes(prefix[pos + 1 : pos + 1 + n], "big")
    data = prefix[pos + 1 + n : pos + 1 + n + declared]
    if not data or len(data) >= declared:
        return None
    try:
        # The header passes every check a whole frame's would (version, type, key, offset).
        req = decode_request(pack([*head, bytes(data)]))
    except RemoteProtocolError:
        return None
    return req if isinstance(req, Chunk | Open) else None


def _batch(seq: int, v: list[Any]) -> ReceiptsBatch:
    return ReceiptsBatch(
        seq=seq,
        document=expect(v[0], bytes, what="receipts document"),
        next_since=_nonneg(v[1], "receipts cursor"),
        more=expect(v[2], bool, what="more flag"),
    )


def decode_response(data: bytes) -> Response:
    """Decode one response frame or raise RemoteProtocolError saying what is wrong."""
    v = _head(data, "response frame")
    t, seq = v[1], v[2]
    if t == FrameType.STATUS:
        expect_list(v, what="STATUS frame", min_len=10, max_len=14)
        if len(v) not in (10, 14):
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, "STATUS receipts need document, next_since, more and held_ms"
            )
        key = _key(v, 3)
        state = expect(v[5], int, what="upload state")
        if state not in tuple(UploadState):
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown upload state {state}")
        size = _nonneg(v[9], "upload size")
        return Status(
            seq=seq,
            key=key,
            state=UploadState(state),
            ranges=RangeSet.from_wire(v[6], size_bytes=size, max_ranges=MAX_RANGES),
            code=expect(v[7], str, what="status code"),
            message=expect(v[8], str, what="status message"),
            size_bytes=size,
            receipts=_batch(seq, v[10:13]) if len(v) == 14 else None,
            held_ms=_nonneg(v[13], "held_ms") if len(v) == 14 else 0,
        )
    if t == FrameType.RECEIPTS_BATCH:
        expect_list(v, what="RECEIPTS_BATCH frame", min_len=6, max_len=6)
        return _batch(seq, v[3:])
    if t == FrameType.ERROR:
        expect_list(v, what="ERROR frame", min_len=6, max_len=6)
        return ErrorFrame(
            seq=seq,
            code=expect(v[3], str, what="error code"),
            message=expect(v[4], str, what="error message"),
            retryable=expect(v[5], bool, what="retryable flag"),
        )
    raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown response frame type {t}")
