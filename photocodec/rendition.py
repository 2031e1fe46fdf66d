"""Renditions: the one way orbitpost ever changes a photo, and only with signed consent.

A photo over a platform's limits (bytes, pixels, aspect ratio, format) is refused — unless
the astronaut listed that account in the post's signed ``renditions`` (docs/PROTOCOL.md
§3.1). Then ground publishes a *rendition* made by the recipe below to that account alone,
and every record keeps both hashes: the signed original and the bytes sent.

Recipe ``rendition/v1`` (docs/platforms.md, "Renditions"), deterministic for the same input,
limits and Pillow/libjpeg build:

1. Decode with Pillow (first frame of an animation); refuse more than ``MAX_SOURCE_PIXELS``.
2. Apply the EXIF orientation (``ImageOps.exif_transpose``).
3. Convert to sRGB: with an embedded ICC profile, through LittleCMS (``ImageCms``,
   perceptual intent), because the profile is stripped below; transparency is composited
   over white.
4. Aspect ratio outside the platform's range: pad (never crop: every signed pixel stays) to
   the nearest allowed ratio, centred, with black bars.
5. Scale down (never up) with the Lanczos filter to fit the longest-side and pixel limits.
6. Encode baseline JPEG, 4:2:0, optimised Huffman tables, no EXIF, ICC or comment, at
   quality 92, then 85, 78 and 70 until within the byte limit; if quality 70 is still too
   large, scale by 3/4 and try the ladder again (at most ``MAX_SHRINKS`` times). Below 70 JPEG
   artefacts show at any size: fewer pixels at a decent quality look better.

Onboard uses :func:`photo_size` and :func:`plan_size` to say before sending what will happen
("4032×3024 → 2048×1536 JPEG"); ground uses :func:`make_rendition`.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features
from PIL import __version__ as pillow_version

from protocol.rules import PlatformRules

RECIPE = "rendition/v1"
# What a rendition is written as: every platform that refuses photos takes JPEG.
MEDIA_TYPE = "image/jpeg"
QUALITIES = (92, 85, 78, 70)
# 8 shrinks of 3/4 reach 10 % of each side: a 24 MP photo still fits in 100 kB.
MAX_SHRINKS = 8
SHRINK = 0.75
# Decoding holds ~4 bytes a pixel: 250 MP is 1 GB, far beyond any camera the crew carries.
MAX_SOURCE_PIXELS = 250_000_000
PAD_COLOUR = (0, 0, 0)
MATTE_COLOUR = (255, 255, 255)


class RenditionError(Exception):
    """The recipe cannot make a rendition within the limits (or cannot read the photo)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendition:
    """What the recipe made from one photo: the bytes to send and how they were made."""

    data: bytes
    sha256: bytes
    media_type: str
    width: int
    height: int
    quality: int
    source_width: int
    source_height: int
    recipe: str = RECIPE
    # Pillow's version and its JPEG library's: the same inputs give the same bytes on the
    # same build, so the record says which build made them.
    encoder: str = ""


def encoder_id() -> str:
    return f"Pillow {pillow_version}, libjpeg {features.version('jpg') or '?'}"


def photo_size(data: bytes) -> tuple[int, int]:
    """(width, height) as displayed (EXIF rotation applied), reading only the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RenditionError(f"cannot read the photo's size: {exc}") from exc
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def plan_size(width: int, height: int, rules: PlatformRules) -> tuple[int, int]:
    """The (width, height) of the rendition of a ``width`` × ``height`` photo before any byte-limit
    shrink: padded into the aspect range, then scaled down into the side and pixel limits."""
    cw, ch = width, height
    if rules.aspect_range is not None:
        # Pad with whole pixels, rounding up: the padded canvas holds the picture unscaled.
        lo, hi = rules.aspect_range
        if cw / ch > hi:
            ch = math.ceil(cw / hi)
        elif cw / ch < lo:
            cw = math.ceil(ch * lo)
    scale = 1.0
    if rules.max_side_px is not None:
        scale = min(scale, rules.max_side_px / max(cw, ch))
    if rules.max_pixels is not None:
        scale = min(scale, math.sqrt(rules.max_pixels / (cw * ch)))
    w, h = max(1, math.floor(cw * scale)), max(1, math.floor(ch * scale))
    if rules.aspect_range is not None:
        # Rounding may step just outside the range: trim (never grow, so limits still hold).
        lo, hi = rules.aspect_range
        if w / h > hi:
            w = max(1, math.floor(h * hi))
        elif w / h < lo:
            h = max(1, math.floor(w / lo))
    return w, h


def make_rendition(data: bytes, rules: PlatformRules) -> Rendition:
    """Run ``rendition/v1`` on ``data`` for ``rules``; RenditionError if it cannot fit."""
    base, (sw, sh) = _decode(data)
    w, h = plan_size(sw, sh, rules)
    limit = rules.max_media_bytes
    for _ in range(MAX_SHRINKS + 1):
        canvas = _fit(base, w, h)
        for quality in QUALITIES:
            out = _encode(canvas, quality)
            if limit is None or len(out) <= limit:
                return Rendition(
                    data=out,
                    sha256=hashlib.sha256(out).digest(),
                    media_type=MEDIA_TYPE,
                    width=w,
                    height=h,
                    quality=quality,
                    source_width=sw,
                    source_height=sh,
                    encoder=encoder_id(),
                )
        w, h = max(1, math.floor(w * SHRINK)), max(1, math.floor(h * SHRINK))
    raise RenditionError(
        f"{RECIPE} could not bring a {sw}×{sh} photo under {limit:,} bytes for {rules.title}"
        if limit is not None
        else f"{RECIPE} could not make a rendition of a {sw}×{sh} photo for {rules.title}"
    )


def _decode(data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    """Steps 1-3: an sRGB ``RGB`` image, upright, and its size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = Image.open(io.BytesIO(data))
            if src.size[0] * src.size[1] > MAX_SOURCE_PIXELS:
                raise RenditionError(
                    f"the photo is {src.size[0]}×{src.size[1]}; {RECIPE} decodes at most {MAX_SOURCE_PIXELS:,} pixels"
                )
            src.seek(0)
            src.load()
            icc = src.info.get("icc_profile")
            im: Image.Image = ImageOps.exif_transpose(src) or src
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                matte = Image.new("RGB", rgba.size, MATTE_COLOUR)
                matte.paste(rgba, mask=rgba.getchannel("A"))
                im = matte
            if icc:
                try:
                    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                    mode = im.mode if im.mode in ("RGB", "CMYK", "L") else "RGB"
                    converted = ImageCms.profileToProfile(
                        im.convert(mode),
                        profile,
                        ImageCms.createProfile("sRGB"),
                        renderingIntent=ImageCms.Intent.PERCEPTUAL,
                        outputMode="RGB",
                    )
                    im = converted or im
                except (ImageCms.PyCMSError, OSError, ValueError):
                    pass  # a broken profile: the pixels are taken as sRGB, as a browser would
            im = im.convert("RGB")
    except RenditionError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RenditionError(f"{RECIPE} cannot decode the photo: {exc}") from exc
    return im, im.size


def _fit(im: Image.Image, w: int, h: int) -> Image.Image:
    """Steps 4-5: the picture scaled (Lanczos) to fit inside ``w`` × ``h``, centred on a black
    canvas of exactly that size (bars only where the aspect ratio needed padding)."""
    sw, sh = im.size
    iw = max(1, min(w, round(h * sw / sh)))
    ih = max(1, min(h, round(w * sh / sw)))
    scaled = im if (iw, ih) == (sw, sh) else im.resize((iw, ih), Image.Resampling.LANCZOS)
    if (iw, ih) == (w, h):
        return scaled
    canvas = Image.new("RGB", (w, h), PAD_COLOUR)
    canvas.paste(scaled, ((w - iw) // 2, (h - ih) // 2))
    return canvas


def _encode(im: Image.Image, quality: int) -> bytes:
    """Step 6 at one quality: baseline JPEG, 4:2:0, optimised tables, no metadata."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=2, optimize=True, progressive=False)
    return buf.getvalue()
