"""Bytes on the wire per byte of payload, for orbitpost and three baselines, in one run.

    python benchmarks/bench_bandwidth.py            # the full table (about a minute)
    python benchmarks/bench_bandwidth.py --quick    # fewer posts, same table

Workloads (all real content):
- text-only: 1,050 held-out real tweets (never seen by the dictionary) from 3 astronauts,
  in batches of 50 posts per bundle;
- photo-only: 5 photo posts (skimage's rocket, retina and hubble_deep_field JPEGs, plus a
  progressive and an EXIF+ICC-rich JPEG made from them), alt text, no caption;
- mix: 100 text posts and the 5 photo posts with captions, in one bundle.

Raw payload = UTF-8 of every text and alt text + the photo files' bytes.
Contenders:
- orbitpost: the bundles onboard writes (JPEG XL photos, text dictionary), per-post Ed25519;
- (a) one HTTP/1.1 POST per post: JSON body, photo and signature in base64, request line and
  usual headers counted, responses and TCP/TLS not counted;
- (b) tar of the same text and photo files, zstd -19 (no signatures, no ids: a floor for a
  generic archiver, not a protocol);
- (c) orbitpost with the photo codec and the dictionary off (plain zstd items, zstd/as-is photos).
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
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import zstandard

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.corpus import BASE_MS, astronaut_key, split, targets_for  # noqa: E402
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
from protocol.canonical import pack  # noqa: E402
from protocol.capabilities import BASELINE, Capabilities  # noqa: E402
from protocol.dictionary import compress_items  # noqa: E402
from protocol.ids import new_ulid  # noqa: E402

T = TypeVar("T")
ASTRONAUTS = ("alice", "bob", "chiara")
TEXT_BATCH = 50
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
        t += 60_000 + (n * 7919) % 600_000
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
        post = Post(
            id=new_ulid(t, hashlib.sha256(f"id{n}".encode()).digest()[:10]),
            author=name,
            created_ms=t,
            text=text,
            media=media,
            targets=targets_for(name),
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
        out.append(
            build_bundle(
                bundle_id=new_ulid(BASE_MS + i, bytes(10)),
                created_ms=BASE_MS + i,
                items=[s.signed for s in batch],
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    workload: str
    raw: int
    orbitpost: int
    http_json: int
    tar_zstd: int
    plain: int
    enc_s: float
    dec_s: float
    plain_enc_s: float
    plain_dec_s: float


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(name: str, batches: Sequence[Sequence[Sample]]) -> Row:
    samples = [s for b in batches for s in b]
    ring = {
        key_id(astronaut_key(a).public_key): KnownKey(astronaut=a, public_key=astronaut_key(a).public_key)
        for a in ASTRONAUTS
    }
    decs = decoders()
    full, enc_s = _timed(lambda: orbitpost_bundles(batches, CURRENT_GROUND))
    plain, plain_enc_s = _timed(lambda: orbitpost_bundles(batches, BASELINE))
    _, dec_s = _timed(lambda: [verify_bundle(b, ring, decoders=decs) for b in full])
    _, plain_dec_s = _timed(lambda: [verify_bundle(b, ring, decoders=decs) for b in plain])
    return Row(
        workload=name,
        raw=sum(s.raw_bytes for s in samples),
        orbitpost=sum(len(b) for b in full),
        http_json=http_json_posts(samples),
        tar_zstd=tar_zstd(samples),
        plain=sum(len(b) for b in plain),
        enc_s=enc_s,
        dec_s=dec_s,
        plain_enc_s=plain_enc_s,
        plain_dec_s=plain_dec_s,
    )


def framing_report(texts: Sequence[str]) -> list[str]:
    """Per-post bytes in a text-only batch, raw and after compression, by field."""
    samples = make_samples(texts[:TEXT_BATCH], [], [""])
    n = len(samples)
    raw_items = pack([s.signed.to_wire() for s in samples])
    text_bytes = sum(len(s.post.text.encode()) for s in samples)
    stored = len(compress_items(raw_items))
    texts_alone = len(compress_items("".join(s.post.text for s in samples).encode()))
    p = samples[0].post
    author, targets = len(p.author.encode()), sum(len(t.encode()) + 1 for t in p.targets)
    fields = [
        ("Ed25519 signature", 64 + 2),
        ("key id (8) ", 8 + 2),
        ("item id (ULID: 6 time + 10 random)", 16 + 2),
        ("created_ms (msgpack uint64)", 9),
        ("author", author + 1),
        (f"targets ({len(p.targets)})", targets + 1),
        ("version, kind, media [], publish_at nil", 4),
        ("array + body headers", 1 + 1 + 2),
    ]
    lines = [f"Per-post framing in a batch of {n} text posts (raw msgpack, before compression):"]
    for label, size in fields:
        lines.append(f"  {label:40} {size:4} B")
    lines.append(f"  {'text (average)':40} {text_bytes / n:6.1f} B")
    lines.append(f"  {'whole item (average, measured)':40} {len(raw_items) / n:6.1f} B")
    lines.append(
        f"After zstd + dictionary: {stored / n:.1f} B/post on the wire, of which the texts alone "
        f"compress to {texts_alone / n:.1f} B;\n  framing costs {(stored - texts_alone) / n:.1f} B/post, "
        f"{64 + 10:.0f} B of it incompressible (signature 64 + random id bits 10)."
    )
    floor = (64 + 10 + texts_alone / n) / (text_bytes / n)
    lines.append(
        f"  Floor with per-post signatures: ≥ {floor:.2f} × raw UTF-8 for these posts "
        f"(average {text_bytes / n:.0f} B of text)."
    )
    return lines


def by_length(texts: Sequence[str], lengths: Sequence[int] = (0, 140, 280, 500, 1000)) -> list[str]:
    """Text-only ratio when the same real text comes as longer posts (tweets joined in order)."""
    lines = ["Text-only vs post length (the same held-out tweets joined into longer posts, batches of 50):"]
    lines.append(
        f"  {'post ≥':>7} {'posts':>6} {'avg text B':>11} {'wire B/post':>12} {'× raw UTF-8':>12} {'minus 64 B sig':>15}"
    )
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
        lines.append(
            f"  {n:>7} {k:>6} {raw / k:>11.0f} {wire / k:>12.1f} {wire / raw:>12.3f} {(wire - 64 * k) / raw:>15.3f}"
        )
    return lines


def _cell(v: int, raw: int, width: int = 16) -> str:
    return f"{v:>9,} {v / raw:5.3f}x".rjust(width)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="150 text posts instead of 1,050 (same table)")
    args = ap.parse_args(argv)
    _train, held_out = split()
    texts = held_out[:150] if args.quick else held_out
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
    hdr = f"{'workload':11} {'raw B':>10} | {'orbitpost':>16} | {'(a) HTTP+JSON':>16} | {'(b) tar+zstd19':>16} | {'(c) codec+dict off':>18}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r.workload:11} {r.raw:>10,} | {_cell(r.orbitpost, r.raw)} | {_cell(r.http_json, r.raw)} | "
            f"{_cell(r.tar_zstd, r.raw)} | {_cell(r.plain, r.raw, 18)}"
        )
    print("  (each cell: bytes on the wire, and that over the raw payload)")
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
        f"Text: the dictionary saves {1 - text.orbitpost / text.plain:.1%} over plain zstd ({text.plain:,} → {text.orbitpost:,})."
    )
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
        f"TARGET text-only ≤ {TEXT_TARGET} × raw UTF-8:     {text_utf8.orbitpost / text_utf8.raw:.3f}  {'PASS' if ok_text else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
