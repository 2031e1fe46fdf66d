"""Bytes on the wire per byte of payload, for orbitpost and three baselines, in one run.

    python benchmarks/bench_bandwidth.py            # the full table (about a minute)
    python benchmarks/bench_bandwidth.py --quick    # fewer posts, same table

Workloads (all real content):
- text-only: 1,050 held-out real tweets (never seen by the dictionary) from 3 astronauts,
  in bundles of 200 posts (the live link's largest text bundle, onboard/link.py; a file
  export puts a whole backlog in one); a second table shows bundles of 1 to 200 posts;
- photo-only: 5 photo posts (skimage's rocket, retina and hubble_deep_field JPEGs, plus a
  progressive and an EXIF+ICC-rich JPEG made from them), alt text, no caption;
- mix: 100 text posts and the 5 photo posts with captions, in one bundle.

Raw payload = UTF-8 of every text and alt text + the photo files' bytes.
Contenders:
- orbitpost: the bundles onboard writes today: format 2 (one Ed25519 signature per astronaut
  per bundle, compact columns, docs/PROTOCOL.md §14), JPEG XL photos, text dictionary v3
  (the newest; docs/PROTOCOL.md §5.2 compares it with v2 language by language);
- (a) one HTTP/1.1 POST per post: JSON body, photo and signature in base64, request line and
  usual headers counted, responses and TCP/TLS not counted;
- (b) tar of the same text and photo files, zstd -19 (no signatures, no ids: a floor for a
  generic archiver, not a protocol);
- (c) orbitpost with the photo codec and the dictionary off (plain zstd items, zstd/as-is photos);
- (d) orbitpost format 1 (the previous release: a signature, id and author per post; JPEG XL
  and dictionary v1 on), to show what the format-2 framing saves.
Targets (issue 7): mix ≤ 0.85 × raw payload; text-only ≤ 0.5 × raw UTF-8.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import zstandard

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.corpus import BASE_MS, astronaut_key, split, targets_for  # noqa: E402
from benchmarks.text_sources import clean_tweet  # noqa: E402
from ground.ingest import decoders  # noqa: E402
from onboard.export import CURRENT_GROUND, choose_blob_encoding, items_encoding  # noqa: E402
from protocol import (  # noqa: E402
    BlobPayload,
    KnownKey,
    MediaRef,
    Post,
    SignedItem,
    build_bundle,
    key_id,
    sign_item,
    verify_bundle,
)
from protocol.bundle import CompactItems  # noqa: E402
from protocol.capabilities import Capabilities  # noqa: E402
from protocol.codecs import Codec  # noqa: E402
from protocol.compact_items import encode_compact_items  # noqa: E402
from protocol.dictionary import CURRENT_DICT_ID, DICT_V1_ID, DICT_V2_ID, compress_items  # noqa: E402
from protocol.ids import new_ulid  # noqa: E402
from protocol.model import with_derived_id  # noqa: E402

T = TypeVar("T")
ASTRONAUTS = ("alice", "bob", "chiara")
TEXT_BATCH = 200
BATCH_SIZES = (1, 10, 50, 100, 200)
MIX_TARGET = 0.85
TEXT_TARGET = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One post as the astronaut wrote it: text, photos (bytes, alt), and its signed form."""

    post: Post
    signed: SignedItem
    photos: tuple[tuple[bytes, str], ...]

    @property
    def raw_bytes(self) -> int:
        return len(self.post.text.encode()) + sum(len(p) + len(alt.encode()) for p, alt in self.photos)


def real_photos() -> list[tuple[str, bytes]]:
    """The five test photos, built the same way as tests/conftest.py's fixtures."""
    from PIL import Image, ImageCms

    data = Path(str(__import__("skimage").__file__)).parent / "data"
    out = [(n, (data / n).read_bytes()) for n in ("rocket.jpg", "retina.jpg", "hubble_deep_field.jpg")]
    buf = io.BytesIO()
    with Image.open(data / "rocket.jpg") as im:
        im.save(buf, "JPEG", progressive=True, quality=88)
    out.append(("progressive.jpg", buf.getvalue()))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Orbital Camera Co", "ISS-CAM 1", "2026:11:27 00:00:00"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    with Image.open(data / "retina.jpg") as im:
        im.save(buf, "JPEG", exif=exif, icc_profile=icc, quality=90)
    out.append(("exif.jpg", buf.getvalue()))
    return out


def make_samples(
    texts: Sequence[str], photos: Sequence[tuple[str, bytes]], alts: Sequence[str]
) -> list[Sample]:
    """Sign one post per text (round-robin astronauts), then one per photo (caption from ``alts``)."""
    out: list[Sample] = []
    t = BASE_MS
    for n, text in enumerate([*texts, *[""] * len(photos)]):
        # Minutes apart, in whole seconds as onboard composes them (onboard/compose.py).
        t += 60_000 + (n * 7919) % 600_000 // 1000 * 1000
        name = ASTRONAUTS[n % len(ASTRONAUTS)]
        photo = photos[n - len(texts)] if n >= len(texts) else None
        media: tuple[MediaRef, ...] = ()
        pics: tuple[tuple[bytes, str], ...] = ()
        if photo is not None:
            alt = f"{photo[0]}: {alts[n % len(alts)]}"
            raw = photo[1]
            media = (
                MediaRef(
                    sha256=hashlib.sha256(raw).digest(), size_bytes=len(raw), media_type="image/jpeg", alt=alt
                ),
            )
            pics = ((raw, alt),)
            text = alts[(n + 1) % len(alts)] if texts else ""
        post = with_derived_id(
            Post(
                id=new_ulid(t, bytes(10)),
                author=name,
                created_ms=t,
                text=text,
                media=media,
                targets=targets_for(name),
            )
        )
        out.append(Sample(post=post, signed=sign_item(astronaut_key(name), post), photos=pics))
    return out


# -- contenders ------------------------------------------------------------------------------


def orbitpost_bundles(batches: Sequence[Sequence[Sample]], peer: Capabilities) -> list[bytes]:
    """The bundles onboard/export.py writes for ``peer`` (same encoding choices)."""
    out = []
    for i, batch in enumerate(batches):
        blobs: dict[bytes, BlobPayload] = {}
        for s in batch:
            for raw, _alt in s.photos:
                sha = hashlib.sha256(raw).digest()
                if sha not in blobs:
                    codec, stored = choose_blob_encoding(raw, "image/jpeg", peer)
                    blobs[sha] = BlobPayload(sha256=sha, raw=raw, codec=codec, stored=stored)
        items_codec, encode_items = items_encoding(peer)
        items: list[SignedItem] | CompactItems = [s.signed for s in batch]
        if peer.reads_format(2):
            keys = {s.post.author: astronaut_key(s.post.author) for s in batch}
            items = CompactItems(raw=encode_compact_items([s.post for s in batch], keys), count=len(batch))
        out.append(
            build_bundle(
                bundle_id=new_ulid(BASE_MS + i, bytes(10)),
                created_ms=BASE_MS + i,
                items=items,
                blobs=blobs.values(),
                items_codec=items_codec,
                encode_items=encode_items,
            )
        )
    return out


def http_json_posts(samples: Sequence[Sample]) -> int:
    """Bytes of one HTTP/1.1 POST per post: JSON body with base64 photos and signature."""
    total = 0
    for s in samples:
        p = s.post
        body = json.dumps(
            {
                "id": p.id,
                "author": p.author,
                "created_ms": p.created_ms,
                "text": p.text,
                "targets": list(p.targets),
                "media": [
                    {"type": "image/jpeg", "alt": alt, "data": base64.b64encode(raw).decode()}
                    for raw, alt in s.photos
                ],
                "key_id": s.signed.key_id.hex(),
                "signature": base64.b64encode(s.signed.signature).decode(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        head = (
            "POST /api/v1/posts HTTP/1.1\r\nHost: ground.orbitpost.example\r\n"
            "Authorization: Bearer " + "x" * 43 + "\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        total += len(head) + len(body)
    return total


def tar_zstd(samples: Sequence[Sample]) -> int:
    """tar of each post's text, alt texts and photos, compressed with zstd -19."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_790_000_000
            tar.addfile(info, io.BytesIO(data))

        for n, s in enumerate(samples):
            if s.post.text:
                add(f"post-{n:04}.txt", s.post.text.encode())
            for k, (raw, alt) in enumerate(s.photos):
                add(f"post-{n:04}-{k}.jpg", raw)
                add(f"post-{n:04}-{k}.alt.txt", alt.encode())
    return len(zstandard.ZstdCompressor(level=19).compress(buf.getvalue()))


# -- measuring -------------------------------------------------------------------------------


# What the other contenders' grounds read: codec and dictionary off (format 2), and the
# previous release (format 1, dictionary v1).
PLAIN = Capabilities(codecs=frozenset({Codec.IDENTITY, Codec.ZSTD}), formats=frozenset({1, 2}))
FORMAT_1 = Capabilities(
    codecs=frozenset({Codec.IDENTITY, Codec.ZSTD, Codec.ZSTD_DICT, Codec.JPEG_XL}),
    dictionaries=frozenset({DICT_V1_ID}),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    workload: str
    raw: int
    orbitpost: int
    http_json: int
    tar_zstd: int
    plain: int
    format1: int
    enc_s: float
    dec_s: float
    plain_enc_s: float
    plain_dec_s: float


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _keyring() -> dict[bytes, KnownKey]:
    return {
        key_id(astronaut_key(a).public_key): KnownKey(astronaut=a, public_key=astronaut_key(a).public_key)
        for a in ASTRONAUTS
    }


def measure(name: str, batches: Sequence[Sequence[Sample]]) -> Row:
    samples = [s for b in batches for s in b]
    ring = _keyring()
    decs = decoders()
    full, enc_s = _timed(lambda: orbitpost_bundles(batches, CURRENT_GROUND))
    plain, plain_enc_s = _timed(lambda: orbitpost_bundles(batches, PLAIN))
    old = orbitpost_bundles(batches, FORMAT_1)
    _, dec_s = _timed(lambda: [verify_bundle(b, ring, decoders=decs) for b in full])
    _, plain_dec_s = _timed(lambda: [verify_bundle(b, ring, decoders=decs) for b in plain])
    for b in old:
        verify_bundle(b, ring, decoders=decs)
    return Row(
        workload=name,
        raw=sum(s.raw_bytes for s in samples),
        orbitpost=sum(len(b) for b in full),
        http_json=http_json_posts(samples),
        tar_zstd=tar_zstd(samples),
        plain=sum(len(b) for b in plain),
        format1=sum(len(b) for b in old),
        enc_s=enc_s,
        dec_s=dec_s,
        plain_enc_s=plain_enc_s,
        plain_dec_s=plain_dec_s,
    )


def by_batch_size(samples: Sequence[Sample], sizes: Sequence[int] = BATCH_SIZES) -> list[str]:
    """Text-only bytes per post and ratio to raw UTF-8 for bundles of each size, both formats."""
    raw = sum(s.raw_bytes for s in samples)
    n = len(samples)
    lines = [
        f"Text-only by bundle size ({n} held-out tweets, {raw / n:.1f} B of UTF-8 each on average, 3 astronauts):",
        f"  {'posts/bundle':>12} {'format 2 B/post':>16} {'× raw UTF-8':>12} {'format 1 B/post':>16} {'× raw':>7}  target ≤ {TEXT_TARGET}",
    ]
    for size in sizes:
        batches = [samples[i : i + size] for i in range(0, n, size)]
        new = sum(len(b) for b in orbitpost_bundles(batches, CURRENT_GROUND))
        old = sum(len(b) for b in orbitpost_bundles(batches, FORMAT_1))
        verdict = "PASS" if new <= TEXT_TARGET * raw else "FAIL"
        lines.append(
            f"  {size:>12} {new / n:>16.1f} {new / raw:>12.3f} {old / n:>16.1f} {old / raw:>7.3f}  {verdict}"
        )
    return lines


def by_dictionary(texts: Sequence[str], sizes: Sequence[int] = (1, 10, 50, 200)) -> list[str]:
    """Text-only × raw UTF-8 by bundle size with dictionary v2 and with the current one, on the
    held-out tweets as the corpus has them and without its ``@anonymous``/``url_removed``
    stand-ins (v2 learnt them; real posts have names and links instead)."""
    v2_ground = replace(CURRENT_GROUND, dictionaries=frozenset({DICT_V1_ID, DICT_V2_ID}))
    lines = [
        f"Text-only × raw UTF-8 by dictionary (format 2; bundles of 1 and 10 on the first {min(len(texts), 200)} tweets):",
        f"  {'tweets':8} {'posts/bundle':>12} {'dict v2':>8} {f'dict v{CURRENT_DICT_ID & 0xFF}':>8}",
    ]
    clean = [c for c in map(clean_tweet, texts) if c]
    for name, corpus in (("raw", texts), ("clean", clean)):
        for size in sizes:
            some = corpus if size >= 50 else corpus[:200]
            samples = make_samples(some, [], [""])
            raw = sum(s.raw_bytes for s in samples)
            batches = [samples[i : i + size] for i in range(0, len(samples), size)]
            old, new = (
                sum(len(b) for b in orbitpost_bundles(batches, peer)) / raw
                for peer in (v2_ground, CURRENT_GROUND)
            )
            lines.append(f"  {name:8} {size:>12} {old:>8.3f} {new:>8.3f}")
    return lines


def framing_report(texts: Sequence[str]) -> list[str]:
    """Where the bytes of a format-2 text bundle go, per post: each part compressed alone
    with the same dictionary, so the figures show what each field costs on the wire."""
    samples = make_samples(texts[:TEXT_BATCH], [], [""])
    n = len(samples)
    posts = [s.post for s in samples]
    keys = {a: astronaut_key(a) for a in ASTRONAUTS}
    section = encode_compact_items(posts, keys)
    stored = len(compress_items(section))
    text_bytes = sum(len(p.text.encode()) for p in posts)
    texts_alone = len(compress_items("".join(p.text for p in posts).encode()))
    bundle = orbitpost_bundles([samples], CURRENT_GROUND)[0]
    signers = len({p.author for p in posts})
    lines = [
        f"Where a format-2 text bundle's bytes go ({n} posts by {signers} astronauts, {text_bytes / n:.1f} B of text each):",
        f"  {f'texts alone, zstd + dictionary v{CURRENT_DICT_ID & 0xFF}':46} {texts_alone / n:6.1f} B/post",
        f"  {'Ed25519 batch signatures (64 B × astronauts)':46} {64 * signers / n:6.1f} B/post",
        f"  {'everything else in the items section':46} {(stored - texts_alone - 64 * signers) / n:6.1f} B/post"
        "  (time deltas, lengths, kinds, signer and target-list indexes, zstd frame)",
        f"  {'bundle prefix, header and checksum':46} {(len(bundle) - stored) / n:6.1f} B/post",
        f"  {'total on the wire':46} {len(bundle) / n:6.1f} B/post = {len(bundle) / text_bytes:.3f} × raw UTF-8",
        "  Not sent at all (rebuilt by ground): the author (the key names the astronaut), the 16-byte id",
        "  (derived from content and time), per-post key ids and signatures, repeated target lists.",
    ]
    return lines


def by_length(texts: Sequence[str], lengths: Sequence[int] = (0, 140, 280, 500, 1000)) -> list[str]:
    """Text-only ratio when the same real text comes as longer posts (tweets joined in order)."""
    lines = [
        f"Text-only vs post length (the same held-out tweets joined into longer posts, bundles of {TEXT_BATCH}):"
    ]
    lines.append(f"  {'post ≥':>7} {'posts':>6} {'avg text B':>11} {'wire B/post':>12} {'× raw UTF-8':>12}")
    for n in lengths:
        posts: list[str] = []
        cur = ""
        for t in texts:
            cur = f"{cur} {t}".strip() if n else t
            if len(cur.encode()) >= n:
                posts.append(cur)
                cur = ""
        samples = make_samples(posts, [], [""])
        batches = [samples[i : i + TEXT_BATCH] for i in range(0, len(samples), TEXT_BATCH)]
        wire = sum(len(b) for b in orbitpost_bundles(batches, CURRENT_GROUND))
        raw = sum(len(x.post.text.encode()) for x in samples)
        k = len(samples)
        lines.append(f"  {n:>7} {k:>6} {raw / k:>11.0f} {wire / k:>12.1f} {wire / raw:>12.3f}")
    return lines


def _cell(v: int, raw: int, width: int = 16) -> str:
    return f"{v:>9,} {v / raw:5.3f}x".rjust(width)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 text posts instead of 1,050 (same table)")
    args = ap.parse_args(argv)
    _train, held_out = split()
    texts = held_out[:200] if args.quick else held_out
    photos = real_photos()
    text_samples = make_samples(texts, [], [""])
    photo_samples = make_samples([], photos, held_out[-50:])
    mix_samples = make_samples(texts[:100], photos, held_out[-50:])
    rows = [
        measure(
            "text-only", [text_samples[i : i + TEXT_BATCH] for i in range(0, len(text_samples), TEXT_BATCH)]
        ),
        measure("photo-only", [photo_samples]),
        measure("mix", [mix_samples]),
    ]
    print(f"orbitpost bandwidth benchmark — {len(texts)} held-out real tweets, {len(photos)} real JPEGs")
    print()
    hdr = (
        f"{'workload':11} {'raw B':>10} | {'orbitpost':>16} | {'(a) HTTP+JSON':>16} | {'(b) tar+zstd19':>16} "
        f"| {'(c) codec+dict off':>18} | {'(d) format 1':>16}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r.workload:11} {r.raw:>10,} | {_cell(r.orbitpost, r.raw)} | {_cell(r.http_json, r.raw)} | "
            f"{_cell(r.tar_zstd, r.raw)} | {_cell(r.plain, r.raw, 18)} | {_cell(r.format1, r.raw)}"
        )
    print(f"  (each cell: bytes on the wire, and that over the raw payload; text in bundles of {TEXT_BATCH})")
    print()
    print(
        "Time per MB of raw payload on this machine (encode = bundle building incl. JPEG XL round-trip proof;"
    )
    print("decode = verify_bundle incl. signatures and the bounded JPEG XL child per photo):")
    for r in rows:
        mb = r.raw / 1e6
        print(
            f"  {r.workload:11} orbitpost enc {r.enc_s / mb:6.3f} s/MB, dec {r.dec_s / mb:6.3f} s/MB | "
            f"codec+dict off enc {r.plain_enc_s / mb:6.3f} s/MB, dec {r.plain_dec_s / mb:6.3f} s/MB"
        )
    print()
    photo = rows[1]
    print(
        f"Photos: {1 - photo.orbitpost / photo.plain:.1%} fewer bytes than with the codec off ({photo.plain:,} → {photo.orbitpost:,})."
    )
    text = rows[0]
    print(
        f"Text: the dictionary saves {1 - text.orbitpost / text.plain:.1%} over plain zstd ({text.plain:,} → {text.orbitpost:,}); "
        f"format 2 saves {1 - text.orbitpost / text.format1:.1%} over format 1 ({text.format1:,} → {text.orbitpost:,})."
    )
    print()
    for line in by_batch_size(text_samples):
        print(line)
    print()
    for line in by_dictionary(texts):
        print(line)
    print()
    for line in framing_report(texts):
        print(line)
    print()
    for line in by_length(texts):
        print(line)
    print()
    mix, text_utf8 = rows[2], rows[0]
    ok_mix = mix.orbitpost <= MIX_TARGET * mix.raw
    ok_text = text_utf8.orbitpost <= TEXT_TARGET * text_utf8.raw
    print(
        f"TARGET mix ≤ {MIX_TARGET} × raw payload:       {mix.orbitpost / mix.raw:.3f}  {'PASS' if ok_mix else 'FAIL'}"
    )
    print(
        f"TARGET text-only ≤ {TEXT_TARGET} × raw UTF-8:     {text_utf8.orbitpost / text_utf8.raw:.3f}  "
        f"{'PASS' if ok_text else 'FAIL'} (bundles of {TEXT_BATCH}; smaller bundles: see the table by bundle size)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
