"""Workloads: who posts what and when, as data (workloads/*.toml), drawn deterministically.

Texts come from a file of real post texts; photos from real sample photos (scikit-image's data
folder or files beside the workload). With ``unique_photos`` each drawn photo gets a small
metadata tag (a JPEG COM segment or a PNG tEXt chunk) so no two posts share bytes: otherwise
"a photo crosses the link once" would make a day of a handful of sample photos look free.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from protocol.mediatype import sniff_media_type

from .errors import ConfigError
from .fields import Table, load_toml
from .profile import resolve

WORKLOADS_DIR = Path(__file__).resolve().parent.parent / "workloads"
NAMES = ("alice", "bob", "chiaki", "dmitri", "elena", "farid", "gaia", "hiro", "ines", "jun")


@dataclass(frozen=True, slots=True, kw_only=True)
class PhotoSource:
    name: str
    data: bytes
    media_type: str
    weight: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    name: str
    description: str
    posts_per_astronaut_per_hour: float
    backlog_posts_per_astronaut: int
    photo_post_fraction: float
    photos_per_post: tuple[tuple[int, float], ...]  # (count, weight)
    accounts_per_post: int
    unique_photos: bool
    texts: tuple[str, ...]
    lines_min: int
    lines_max: int
    photos: tuple[PhotoSource, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedPhoto:
    name: str
    data: bytes
    media_type: str
    alt: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedPost:
    """One post an astronaut queues ``at_s`` seconds into the run."""

    at_s: float
    author: str
    text: str
    photos: tuple[PlannedPhoto, ...]
    targets: tuple[str, ...]

    @property
    def payload_bytes(self) -> int:
        return len(self.text.encode()) + sum(len(p.data) for p in self.photos)


def accounts_for(name: str, n: int) -> tuple[str, ...]:
    """The accounts an astronaut is enrolled for in a simulation (archive platform, on local disk)."""
    return tuple(f"archive:{name}" if i == 0 else f"archive:{name}-{i + 1}" for i in range(n))


def load_workload(name_or_path: str) -> Workload:
    """Read and validate a workload; raises ConfigError naming the bad field."""
    path = resolve(name_or_path, WORKLOADS_DIR, "workload")
    return parse_workload(load_toml(path), str(path), path.parent)


def _skimage_data() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def parse_workload(data: object, source: str, base: Path) -> Workload:
    top = Table(source, data)
    name = top.string("name")
    description = top.string("description", "", allow_empty=True)
    rate = top.number("posts_per_astronaut_per_hour", min=0, max=3600)
    backlog = top.integer("backlog_posts_per_astronaut", 0, min=0, max=10_000)
    if rate == 0 and backlog == 0:
        raise top.error("posts_per_astronaut_per_hour", "is 0 and there is no backlog: nobody would post")
    photo_fraction = top.number("photo_post_fraction", min=0, max=1)
    accounts = top.integer("accounts_per_post", 1, min=1, max=64)
    unique = top.boolean("unique_photos", True)
    counts: list[tuple[int, float]] = []
    for i, c in enumerate(top.array("photos_per_post")):
        ct = Table(source, c, f"photos_per_post[{i}]")
        counts.append((ct.integer("count", min=1, max=16), ct.number("weight", min=0, min_exclusive=True)))
        ct.done()
    if photo_fraction > 0 and not counts:
        raise top.error("photos_per_post", "is missing or empty while photo_post_fraction > 0")

    tt = top.table("text", required=True)
    text_file = tt.string("file")
    lines_min = tt.integer("lines_min", 1, min=1, max=100)
    lines_max = tt.integer("lines_max", lines_min, min=1, max=100)
    if lines_max < lines_min:
        raise tt.error("lines_max", f"must be >= lines_min ({lines_min}), got {lines_max}")
    text_path = base / text_file
    try:
        raw_lines = text_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise tt.error("file", f"cannot be read as UTF-8 text ({text_path}): {exc}") from exc
    texts = tuple(ln.strip() for ln in raw_lines if ln.strip() and not ln.lstrip().startswith("#"))
    if not texts:
        raise tt.error("file", f"{text_path} holds no post texts (one per line expected)")
    tt.done()

    photos: list[PhotoSource] = []
    for i, p in enumerate(top.array("photos")):
        pt = Table(source, p, f"photos[{i}]")
        f = pt.string("file")
        weight = pt.number("weight", 1.0, min=0, min_exclusive=True)
        enlarge = pt.integer("enlarge", 1, min=1, max=8)
        grain = pt.integer("grain", 0, min=0, max=64)
        pt.done()
        path = _skimage_data() / f.removeprefix("skimage:") if f.startswith("skimage:") else base / f
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise pt.error("file", f"cannot be read ({path}): {exc.strerror or exc}") from exc
        mt = sniff_media_type(blob[:64])
        if mt not in ("image/jpeg", "image/png"):
            raise pt.error("file", f"{path} is not a JPEG or PNG photo (found {mt or 'unknown data'})")
        if enlarge > 1 or grain:
            blob, mt = _camera_frame(blob, enlarge, grain), "image/jpeg"
        photos.append(PhotoSource(name=path.name, data=blob, media_type=mt, weight=weight))
    if photo_fraction > 0 and not photos:
        raise top.error("photos", "is missing or empty while photo_post_fraction > 0")
    top.done()
    return Workload(
        name=name,
        description=description,
        posts_per_astronaut_per_hour=rate,
        backlog_posts_per_astronaut=backlog,
        photo_post_fraction=photo_fraction,
        photos_per_post=tuple(counts),
        accounts_per_post=accounts,
        unique_photos=unique,
        texts=texts,
        lines_min=lines_min,
        lines_max=lines_max,
        photos=tuple(photos),
    )


def _camera_frame(blob: bytes, enlarge: int, grain: int) -> bytes:
    """A sample photo as a camera's full frame: ``enlarge`` x its size, a seeded sensor grain of
    +-``grain`` levels, JPEG quality 95 (hubble_deep_field.jpg x4, grain 12: 4000 x 3488, ~6 MB).
    The sample photos are a few hundred kB; a crew's camera writes megabytes a frame, and a
    backlog of a few large photos leaves the sender few small requests to measure the path by."""
    import io

    import numpy as np
    from PIL import Image

    im = Image.open(io.BytesIO(blob)).convert("RGB")
    im = im.resize((im.width * enlarge, im.height * enlarge), Image.Resampling.BICUBIC)
    if grain:
        px = np.asarray(im).astype(np.int16)
        px += np.random.default_rng(1).integers(-grain, grain, px.shape, dtype=np.int16)
        im = Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=95)
    return out.getvalue()


def tag_photo(data: bytes, media_type: str, tag: str) -> bytes:
    """The same picture with a metadata tag, so its bytes (and sha256) are unique."""
    payload = f"orbitpost-sim {tag}".encode()
    if media_type == "image/jpeg":
        # A COM segment right after SOI; decoders skip it, the pixels are untouched.
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    # PNG: a tEXt chunk right after IHDR (8-byte signature + 25-byte IHDR chunk).
    chunk = b"tEXt" + b"Comment\x00" + payload
    text = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:33] + text + data[33:]


def plan_posts(wl: Workload, astronauts: int, duration_s: float, seed: int) -> list[PlannedPost]:
    """Every post of the run in time order; the same seed gives the same posts, byte for byte."""
    if not 1 <= astronauts <= len(NAMES):
        raise ConfigError("--astronauts", "astronauts", f"must be 1..{len(NAMES)}, got {astronauts}")
    rng = random.Random(seed)
    out: list[PlannedPost] = []
    serial = 0
    for a in range(astronauts):
        name = NAMES[a]
        arng = random.Random(rng.getrandbits(64))
        times = [0.0] * wl.backlog_posts_per_astronaut
        if wl.posts_per_astronaut_per_hour > 0:
            t = arng.expovariate(wl.posts_per_astronaut_per_hour / 3600)
            while t < duration_s:
                times.append(t)
                t += arng.expovariate(wl.posts_per_astronaut_per_hour / 3600)
        for t in times:
            serial += 1
            n_lines = arng.randint(wl.lines_min, wl.lines_max)
            text = " ".join(arng.choice(wl.texts) for _ in range(n_lines))
            photos: list[PlannedPhoto] = []
            if wl.photos and arng.random() < wl.photo_post_fraction:
                n = arng.choices([c for c, _ in wl.photos_per_post], [w for _, w in wl.photos_per_post])[0]
                for k in range(n):
                    src = arng.choices(wl.photos, [p.weight for p in wl.photos])[0]
                    data = (
                        tag_photo(src.data, src.media_type, f"{seed}-{serial}-{k}")
                        if wl.unique_photos
                        else src.data
                    )
                    photos.append(
                        PlannedPhoto(
                            name=src.name, data=data, media_type=src.media_type, alt=f"{src.name} ({name})"
                        )
                    )
            out.append(
                PlannedPost(
                    at_s=round(t, 3),
                    author=name,
                    text=text,
                    photos=tuple(photos),
                    targets=accounts_for(name, wl.accounts_per_post),
                )
            )
    out.sort(key=lambda p: (p.at_s, p.author))
    return out
