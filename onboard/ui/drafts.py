"""Drafts and the photos attached to them, on disk so a crash or a closed tab loses nothing.

A draft is one JSON file, replaced atomically (durable.files.write_atomic: fsync'd, then
renamed) on every autosave. A photo dropped on the page is staged by its sha256 (the bytes
as chosen, never altered) with a thumbnail and its size on the wire; queueing a draft hands
the staged files to onboard.compose.compose_post like `onboard post --photo` does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from durable.files import write_atomic
from protocol.mediatype import sniff_media_type

from ..errors import OnboardError
from ..home import Home

DRAFT_ID_RE = re.compile(r"^[a-z0-9]{16}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# Bounds on what the page may store: a draft is text plus a handful of photos.
MAX_DRAFT_BYTES = 256 * 1024
MAX_PHOTOS_PER_DRAFT = 16
THUMB_PX = 320


class DraftError(OnboardError):
    """A draft or photo the page sent cannot be stored as given."""


@dataclass(slots=True, kw_only=True)
class DraftPhoto:
    sha: str
    alt: str = ""
    name: str = ""


@dataclass(slots=True, kw_only=True)
class Draft:
    id: str
    author: str = ""
    text: str = ""
    targets: list[str] = field(default_factory=list)
    photos: list[DraftPhoto] = field(default_factory=list)
    publish_at: str = ""  # "YYYY-MM-DDTHH:MM" in UTC, or empty
    updated_ms: int = 0
    # Accounts (each one of ``targets``) where ground may publish a rendition of a photo over
    # the platform's limits: signed into the post (docs/platforms.md "Renditions").
    renditions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _str(v: Any, what: str, limit: int) -> str:
    if not isinstance(v, str):
        raise DraftError(f"{what} must be text")
    if len(v) > limit:
        raise DraftError(f"{what} is longer than {limit} characters")
    return v


def draft_from_json(draft_id: str, d: Any) -> Draft:
    """Check the page's JSON strictly; a malformed draft is refused, never half-stored."""
    if not isinstance(d, dict):
        raise DraftError("a draft is a JSON object")
    targets = d.get("targets", [])
    photos = d.get("photos", [])
    renditions = d.get("renditions", [])
    if not isinstance(targets, list) or not isinstance(photos, list) or not isinstance(renditions, list):
        raise DraftError("targets, renditions and photos must be lists")
    if len(photos) > MAX_PHOTOS_PER_DRAFT:
        raise DraftError(f"at most {MAX_PHOTOS_PER_DRAFT} photos in a draft")
    out_photos = []
    for p in photos:
        if not isinstance(p, dict) or not isinstance(p.get("sha"), str) or not SHA_RE.match(p["sha"]):
            raise DraftError("each photo needs the sha of a staged photo")
        out_photos.append(
            DraftPhoto(
                sha=p["sha"],
                alt=_str(p.get("alt", ""), "alt text", 10_000),
                name=_str(p.get("name", ""), "file name", 255),
            )
        )
    return Draft(
        id=draft_id,
        author=_str(d.get("author", ""), "author", 64),
        text=_str(d.get("text", ""), "text", 64_000),
        targets=[_str(t, "target", 300) for t in targets][:64],
        photos=out_photos,
        publish_at=_str(d.get("publish_at", ""), "publish time", 32),
        updated_ms=int(time.time() * 1000),
        renditions=[_str(t, "rendition account", 300) for t in renditions][:64],
    )


class DraftStore:
    """Drafts in ``<home>/drafts/<id>.json``; staged photos in ``<home>/ui-photos/``."""

    def __init__(self, home: Home) -> None:
        self.dir = home.root / "drafts"
        self.photos = home.root / "ui-photos"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.photos.mkdir(parents=True, exist_ok=True)

    def new(self) -> Draft:
        d = Draft(id=secrets.token_hex(8), updated_ms=int(time.time() * 1000))
        self.save(d)
        return d

    def _path(self, draft_id: str) -> Path:
        if not DRAFT_ID_RE.match(draft_id):
            raise DraftError(f"no draft {draft_id!r}")
        return self.dir / f"{draft_id}.json"

    def save(self, d: Draft) -> None:
        data = json.dumps(d.to_json(), ensure_ascii=False).encode()
        if len(data) > MAX_DRAFT_BYTES:
            raise DraftError(f"draft is {len(data):,} bytes; the page keeps drafts under {MAX_DRAFT_BYTES:,}")
        write_atomic(self._path(d.id), data, mode=0o600)

    def get(self, draft_id: str) -> Draft:
        path = self._path(draft_id)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DraftError(f"no draft {draft_id!r} (queued or discarded already?)") from None
        except (OSError, ValueError) as exc:
            raise DraftError(f"draft {path} is unreadable: {exc}") from exc
        d = draft_from_json(draft_id, raw)
        d.updated_ms = int(raw.get("updated_ms", 0))
        return d

    def all(self) -> list[Draft]:
        out = []
        for p in self.dir.glob("*.json"):
            try:
                out.append(self.get(p.stem))
            except DraftError:
                continue  # a damaged file is left for a person to look at, not shown
        return sorted(out, key=lambda d: d.updated_ms, reverse=True)

    def delete(self, draft_id: str) -> None:
        self._path(draft_id).unlink(missing_ok=True)
        self._collect()

    def _collect(self) -> None:
        """Drop staged photos no draft refers to any more (queued ones are in the blob store)."""
        used = {p.sha for d in self.all() for p in d.photos}
        for f in self.photos.iterdir():
            sha = f.name.split(".", 1)[0]
            if SHA_RE.match(sha) and sha not in used:
                f.unlink(missing_ok=True)

    # -- photos ------------------------------------------------------------------------------

    def photo_path(self, sha: str) -> Path:
        if not SHA_RE.match(sha):
            raise DraftError("not a photo id")
        return self.photos / f"{sha}.img"

    def thumb_path(self, sha: str) -> Path:
        return self.photo_path(sha).with_suffix(".thumb.jpg")

    def meta(self, sha: str) -> dict[str, Any] | None:
        try:
            meta: dict[str, Any] = json.loads(self.photo_path(sha).with_suffix(".json").read_text())
            return meta
        except (OSError, ValueError):
            return None

    def stage(self, data: bytes, name: str, wire: tuple[str, int]) -> dict[str, Any]:
        """Keep ``data`` as chosen, with a thumbnail and its size on the wire; returns its meta."""
        media_type = sniff_media_type(data[:64])
        if media_type is None:
            raise DraftError(
                f"{name or 'that file'} is not a photo we can publish (JPEG, PNG, GIF, WebP, HEIC, AVIF)"
            )
        sha = hashlib.sha256(data).hexdigest()
        path = self.photo_path(sha)
        if not path.exists():
            write_atomic(path, data, mode=0o600)
        thumb = _thumbnail(data)
        if thumb is not None:
            write_atomic(self.thumb_path(sha), thumb, mode=0o600)
        codec, wire_bytes = wire
        meta = {
            "sha": sha,
            "name": os.path.basename(name)[:255],
            "size_bytes": len(data),
            "media_type": media_type,
            "wire_codec": codec,
            "wire_bytes": wire_bytes,
            "thumb": thumb is not None,
        }
        write_atomic(path.with_suffix(".json"), json.dumps(meta).encode(), mode=0o600)
        return meta


def _thumbnail(data: bytes) -> bytes | None:
    """A small JPEG made here with Pillow (the original is never touched); None if Pillow
    cannot read the format (HEIC, AVIF without plugins): the page then shows the name."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at reduced scale, far less CPU
            small = ImageOps.exif_transpose(im)
            small.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            small.convert("RGB").save(out, "JPEG", quality=80)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
