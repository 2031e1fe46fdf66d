"""The shipped zstd text dictionary: codec ZSTD_DICT for the items section (docs/PROTOCOL.md §5).

Short posts barely compress alone: a tweet-length text has too little history for zstd to
find matches in. A dictionary trained on real short texts (and on our own msgpack item
framing) gives every items section that history up front. v1 and v2 learnt English tweets
only; v3 learnt real short text in many languages and scripts (docs/PROTOCOL.md §5.2).

Versioning: every dictionary has a zstd dictionary id, and the compressor writes it into the
zstd frame header, so the bundle names the dictionary its items need. Each new dictionary is
added beside the older ones in ``_SHIPPED``; the decoder picks by id, and a side that lacks the id says
so (UNKNOWN_CODEC) instead of guessing. Never change a shipped file: its sha256 is pinned.

The dictionary is package data read once with importlib.resources: immutable bytes that
ship with the code, like a constant, so this stays sans-IO in every way that matters
(no environment, clock or mutable state is consulted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cache
from importlib import resources

import zstandard

from .codecs import Codec, Decoder, exactly
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError

# Ids below 32768 and at or above 2**31 are reserved by the zstd format; "op" + version.
DICT_V1_ID = 0x6F700001
DICT_V2_ID = 0x6F700002
DICT_V3_ID = 0x6F700003


# id -> (file in protocol/data, sha256 of that file). Append new versions; never edit one.
_SHIPPED: Mapping[int, tuple[str, str]] = {
    DICT_V1_ID: ("posts-v1.zdict", "8ca0fa152917e666d4a00977e01dab758345ff643378933ed9932d943b02b571"),
    DICT_V2_ID: ("posts-v2.zdict", "d175d241bdccabc0ef102cf43d61b081f0a8e6e078f3cf985341855dfb6a2ceb"),
    DICT_V3_ID: ("posts-v3.zdict", "7a1202bd0b2b10aac584036191d00fb92c91f0abc62910a59bb591bc6717dcac"),
}

# The dictionary new bundles are written with when the receiver has it: v3 (512 KiB, real short
# text in many languages and scripts, format-3 sections, docs/PROTOCOL.md §5.2). v2 (110 KiB,
# English tweets, format-2 sections) and v1 (32 KiB, format-1 items) stay for reading and for
# a peer that lists only them: onboard/export.py items_encoding picks the newest both have.
CURRENT_DICT_ID = DICT_V3_ID

# Level 19: the items section is small (kilobytes), so even zstd's slow levels cost
# milliseconds, and every byte saved crosses a ~10 kbit/s link.
ITEMS_LEVEL = 19
_TABLE_LOG = 20  # see table_params


def shipped_ids() -> frozenset[int]:
    """Dictionary ids this side can decode (part of its capabilities)."""
    return frozenset(_SHIPPED)


@cache
def dictionary(dict_id: int = CURRENT_DICT_ID) -> zstandard.ZstdCompressionDict:
    """The shipped dictionary with ``dict_id``; LocalProtocolError if it is unknown or damaged."""
    try:
        name, sha = _SHIPPED[dict_id]
    except KeyError:
        raise LocalProtocolError(f"no shipped text dictionary has id {dict_id:#x}") from None
    data = resources.files(__package__).joinpath("data", name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise LocalProtocolError(
            f"text dictionary {name} is damaged (sha256 differs from the pinned one); reinstall orbitpost"
        )
    d = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
    if d.dict_id() != dict_id:
        raise LocalProtocolError(f"text dictionary {name} has id {d.dict_id():#x}, expected {dict_id:#x}")
    # Digest it once per process: loading a dictionary into level-19 tables costs tens of
    # milliseconds, which would otherwise be paid again by every bundle, even a lone post.
    d.precompute_compress(compression_params=table_params(len(data)))
    return d


def table_params(dict_size: int) -> zstandard.ZstdCompressionParameters:
    """Level 19's parameters for a dictionary of ``dict_size`` bytes, its match tables capped.

    Level 19 sizes the hash and chain tables for v3 (512 KiB) at 2**22 and 2**24 entries:
    +34 MiB while compressing, against onboard's 256 MiB budget (docs/scale.md). 2**20
    entries still index every position of the dictionary and of an items section: the output
    was byte for byte the same on 318 sections of held-out tweets (1 to 1,050 posts, up to
    90 KB), at +16 MiB. v1's and v2's tables are below the cap, so nothing changes for them.
    """
    p = zstandard.ZstdCompressionParameters.from_level(ITEMS_LEVEL, dict_size=dict_size)
    return zstandard.ZstdCompressionParameters(
        window_log=p.window_log,
        chain_log=min(p.chain_log, _TABLE_LOG),
        hash_log=min(p.hash_log, _TABLE_LOG),
        search_log=p.search_log,
        min_match=p.min_match,
        target_length=p.target_length,
        strategy=p.strategy,
    )


def compress_items(raw: bytes, dict_id: int = CURRENT_DICT_ID) -> bytes:
    """One zstd frame of ``raw`` using the dictionary; its id, size and checksum are recorded."""
    cctx = zstandard.ZstdCompressor(
        level=ITEMS_LEVEL,
        dict_data=dictionary(dict_id),
        write_content_size=True,
        write_checksum=True,
        write_dict_id=True,
    )
    return cctx.compress(raw)


def frame_dict_id(stored: bytes) -> int:
    """The dictionary id a zstd frame names (0: none), or RemoteProtocolError if it is no frame."""
    try:
        return int(zstandard.get_frame_parameters(stored).dict_id)
    except (zstandard.ZstdError, ValueError) as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"not a zstd frame: {exc}") from exc


def decode_items(stored: bytes, raw_size: int) -> bytes:
    """Decoder for Codec.ZSTD_DICT: the dictionary is the one the frame header names."""
    dict_id = frame_dict_id(stored)
    if dict_id == 0:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, "section says ZSTD_DICT but its frame names no dictionary"
        )
    if dict_id not in _SHIPPED:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_CODEC,
            f"section is compressed with text dictionary {dict_id:#x}, which this side does not have "
            f"(it has {', '.join(f'{i:#x}' for i in sorted(_SHIPPED))}); upgrade orbitpost",
        )
    params = zstandard.get_frame_parameters(stored)  # frame_dict_id() parsed it already
    if params.content_size != raw_size:
        code = ErrorCode.DECOMPRESSION_BOMB if params.content_size > raw_size else ErrorCode.MALFORMED
        raise RemoteProtocolError(
            code, f"zstd frame declares {params.content_size} bytes, header says {raw_size}"
        )
    end = _frame_end(stored, params.has_checksum)
    if end != len(stored):
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"section has {len(stored) - end} bytes after its zstd frame"
        )
    # One-shot decompression into the declared raw_size bytes (already bounded by the
    # caller's limits): zstd itself fails on more, on less, on a cut block and on a
    # checksum mismatch.
    return exactly(
        raw_size,
        lambda: zstandard.ZstdDecompressor(dict_data=dictionary(dict_id)).decompress(
            stored, max_output_size=raw_size
        ),
    )


def _frame_end(stored: bytes, has_checksum: bool) -> int:
    """Offset just past the zstd frame at the start of ``stored`` (RFC 8878 §3.1.1)."""
    try:
        pos = zstandard.frame_header_size(stored)
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"not a zstd frame: {exc}") from exc
    while True:
        if pos + 3 > len(stored):  # a frame cut short is malformed (docs/PROTOCOL.md §5)
            raise RemoteProtocolError(ErrorCode.MALFORMED, "zstd frame ends inside a block header")
        header = int.from_bytes(stored[pos : pos + 3], "little")
        last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == 3:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "zstd frame has a reserved block type")
        pos += 3 + (1 if block_type == 1 else size)  # an RLE block stores one byte
        if last:
            break
    return pos + (4 if has_checksum else 0)


DECODERS: Mapping[int, Decoder] = {Codec.ZSTD_DICT: decode_items}
