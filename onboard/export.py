"""File hand-off: pack queued items into bundle files another system carries down."""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from durable.files import BlobStore, write_atomic
from photocodec import jxl, transport
from photocodec.child import transcode_file
from protocol import BlobPayload, Post, SignedItem, SigningKey, build_bundle, key_id
from protocol.bundle import FORMATS, CompactItems
from protocol.bundle import choose_blob_encoding as choose_generic_encoding
from protocol.capabilities import Capabilities
from protocol.codecs import Codec
from protocol.compact_items import COMPACT_BODY_VERSIONS, encode_compact_items
from protocol.dictionary import compress_items, shipped_ids
from protocol.ids import new_ulid
from protocol.model import BODY_VERSIONS
from protocol.receipts import RECEIPTS_VERSIONS

from . import queue
from .errors import IdentityError, OnboardError
from .home import Home
from .keystore import load_key

BUNDLE_SUFFIX = ".opb"
# Keep each file small enough that a failed hand-off wastes little; a single larger photo
# still gets a bundle of its own. A bundle is built in memory (its photos, their JPEG XL
# forms and the bundle bytes: ~3× this), so this also bounds export's memory (issue 18).
DEFAULT_TARGET_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedBundle:
    path: Path
    bundle_id: str
    item_ids: tuple[str, ...]
    size_bytes: int


def plan_batches(items: list[queue.QueuedItem], target_bytes: int) -> list[list[queue.QueuedItem]]:
    """Group items so each batch's media stays under ``target_bytes`` (text-only items first)."""
    ordered = sorted(items, key=lambda q: (bool(isinstance(q.item, Post) and q.item.media), q.item.id))
    batches: list[list[queue.QueuedItem]] = []
    current: list[queue.QueuedItem] = []
    size = 0
    for q in ordered:
        media = q.item.media if isinstance(q.item, Post) else ()
        n = sum(m.size_bytes for m in media) + len(q.signed.body)
        if current and size + n > target_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(q)
        size += n
    if current:
        batches.append(current)
    return batches


# What a ground of this release decodes: every codec, the shipped text dictionaries, JPEG XL
# and Lepton (imagecodecs and lepton_jpeg_python are dependencies). A file hand-off to an older or codec-less ground
# passes that ground's own token (`ground capabilities`) as `onboard export --ground-decodes`.
CURRENT_GROUND = Capabilities(
    codecs=frozenset({Codec.IDENTITY, Codec.ZSTD, Codec.ZSTD_DICT, Codec.JPEG_XL, Codec.LEPTON}),
    dictionaries=shipped_ids(),
    formats=FORMATS,
    bodies=BODY_VERSIONS,
    compact_bodies=COMPACT_BODY_VERSIONS,
    receipts=RECEIPTS_VERSIONS,
)


def choose_blob_encoding(
    raw: bytes, media_type: str, peer: Capabilities = CURRENT_GROUND, *, path: Path | None = None
) -> tuple[int, bytes]:
    """How one blob travels: Lepton or JPEG XL (the smaller) when the peer decodes it and the
    round trip proved byte-exact here (docs/PROTOCOL.md §10), else zstd if that saves, else as-is.

    ``path``: the stored file holding ``raw``; the encode then runs in a bounded child process
    (photocodec/child.py), so the codec's memory is not this process's (issue 18).
    """
    codecs = transport.usable(peer.decodes) if media_type == "image/jpeg" else ()
    if codecs:
        if path is not None and transport.worth_encoding(raw[: jxl.HEAD_BYTES], len(raw), codecs):
            found = transcode_file(path, codecs=codecs)
        else:
            found = transport.best(raw, codecs) if path is None else None
        if found is not None:
            return found
    codec, stored = choose_generic_encoding(raw)
    if not peer.decodes(codec):
        return Codec.IDENTITY, raw
    return codec, stored


def items_encoding(peer: Capabilities = CURRENT_GROUND) -> tuple[int, Callable[[bytes], bytes] | None]:
    """``(items_codec, encode_items)`` for build_bundle: the text dictionary if ``peer`` has it
    (docs/PROTOCOL.md §5), else plain zstd. Any bundle writer (file hand-off, live link) uses this."""
    # The newest dictionary the peer has: a ground of the previous release has only v1.
    for dict_id in sorted(shipped_ids(), reverse=True):
        if peer.has_dictionary(dict_id):
            return Codec.ZSTD_DICT, functools.partial(compress_items, dict_id=dict_id)
    return Codec.ZSTD, None


def batch_items(
    home: Home, batch: list[queue.QueuedItem], peer: Capabilities = CURRENT_GROUND
) -> list[SignedItem] | CompactItems:
    """The items of one bundle: format 3 (one signature per astronaut over a Merkle root of the
    batch, compact columns, docs/PROTOCOL.md §17) when ``peer`` reads it, else format 2 (one
    signature over the list of hashes, §14), provided every author's key is here and is the one
    that signed their queued items; else format 1, the per-item signatures made when each item
    was queued."""
    check_bodies(batch, peer)
    fmt = next((f for f in (3, 2) if peer.reads_format(f)), 1)
    if fmt == 1:
        return [q.signed for q in batch]
    if not peer.compact_carries(2) and any(isinstance(q.item, Post) and q.item.renditions for q in batch):
        # A ground before the rendition field (docs/PROTOCOL.md §14.8) refuses a 15-field
        # section: a version-2 body (rendition consent) travels to it in format 1.
        return [q.signed for q in batch]
    keys: dict[str, SigningKey] = {}
    for q in batch:
        author = q.item.author
        if author not in keys:
            try:
                keys[author] = load_key(home, author)
            except IdentityError:
                return [q.signed for q in batch]
        if key_id(keys[author].public_key) != q.signed.key_id:
            return [q.signed for q in batch]
    raw = encode_compact_items([q.item for q in batch], keys, format_version=fmt)
    return CompactItems(raw=raw, count=len(batch), format_version=fmt)


def body_refusal(post: Post, peer: Capabilities) -> str | None:
    """Why ``peer`` cannot be sent ``post``'s body, or None: a version-2 body (a rendition
    consent, docs/PROTOCOL.md §3.1) goes only to a ground that announced it reads it (§5.3)."""
    if peer.reads_body(post.body_version):
        return None
    versions = ", ".join(str(v) for v in sorted(peer.bodies))
    return (
        f"post {post.id} allows a rendition ({', '.join(post.renditions)}), which needs item body version "
        f"{post.body_version}, but this ground reads body version {versions} only (its capability token); "
        f"upgrade ground, or `onboard cancel {post.id}` and post it again without --allow-rendition"
    )


def check_bodies(batch: list[queue.QueuedItem], peer: Capabilities) -> None:
    """Raise OnboardError naming the first post ``peer`` cannot read (see body_refusal)."""
    for q in batch:
        if isinstance(q.item, Post):
            why = body_refusal(q.item, peer)
            if why:
                raise OnboardError(why)


def build_batch_bundle(
    home: Home, batch: list[queue.QueuedItem], now_ms: int, peer: Capabilities = CURRENT_GROUND
) -> tuple[str, bytes]:
    """Bundle bytes for one batch: each referenced blob stored once, in a form ``peer`` decodes.

    The items of the whole batch share one zstd frame with the shipped text dictionary
    (docs/PROTOCOL.md §5) when the peer has it, so short posts share context.
    """
    store = BlobStore(home.blobs_dir)
    blobs: dict[bytes, BlobPayload] = {}
    for q in batch:
        if isinstance(q.item, Post):
            for m in q.item.media:
                if m.sha256 not in blobs:
                    raw = store.get(m.sha256)
                    codec, stored = choose_blob_encoding(raw, m.media_type, peer, path=store.path(m.sha256))
                    blobs[m.sha256] = BlobPayload(sha256=m.sha256, raw=raw, codec=codec, stored=stored)
    bundle_id = new_ulid(now_ms, os.urandom(10))
    items_codec, encode_items = items_encoding(peer)
    data = build_bundle(
        bundle_id=bundle_id,
        created_ms=now_ms,
        items=batch_items(home, batch, peer),
        blobs=blobs.values(),
        items_codec=items_codec,
        encode_items=encode_items,
    )
    return bundle_id, data


def export_queue(
    home: Home,
    conn: sqlite3.Connection,
    outdir: Path,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    peer: Capabilities = CURRENT_GROUND,
) -> list[ExportedBundle]:
    """Write every queued item into bundle files in ``outdir`` and mark them exported."""
    outdir.mkdir(parents=True, exist_ok=True)
    out: list[ExportedBundle] = []
    for batch in plan_batches(queue.items(conn, status="queued"), target_bytes):
        bundle_id, data = build_batch_bundle(home, batch, int(time.time() * 1000), peer)
        path = outdir / f"{bundle_id}{BUNDLE_SUFFIX}"
        write_atomic(path, data)
        ids = [q.item.id for q in batch]
        queue.mark_exported(conn, ids, bundle_id, str(path))
        out.append(ExportedBundle(path=path, bundle_id=bundle_id, item_ids=tuple(ids), size_bytes=len(data)))
    return out
