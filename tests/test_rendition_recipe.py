"""The rendition recipe (photocodec/rendition.py, docs/platforms.md "Renditions").

Properties, on real photos from scikit-image's data/ and on extreme sizes: the output is a
JPEG every limit of the target accepts, it is the same bytes every time, it carries no
metadata, and the picture is upright and whole (padded, never cropped).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path

import pytest
import skimage
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from photocodec.rendition import RECIPE, RenditionError, make_rendition, photo_size, plan_size
from protocol.rules import INSTAGRAM, LINKEDIN, THREADS, PlatformRules, X, check_photo_size

DATA = Path(os.path.dirname(skimage.__file__)) / "data"
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "hubble_deep_field.jpg", "rocket.jpg", "retina.jpg"]

# Tight limits so the small sample photos are over them on every axis.
TIGHT = PlatformRules(
    platform="tight",
    title="Tight",
    max_media_bytes=20_000,
    media_types=frozenset({"image/jpeg"}),
    max_side_px=300,
    max_pixels=60_000,
    aspect_range=(0.8, 1.91),
)


def jpeg(im: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def assert_within(data: bytes, rules: PlatformRules) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.mode == "RGB"
    if rules.max_media_bytes is not None:
        assert len(data) <= rules.max_media_bytes
    assert check_photo_size("t:a", rules, 1, *im.size) == []
    assert "exif" not in im.info and "icc_profile" not in im.info and not im.getexif()
    return im


@pytest.mark.parametrize("name", PHOTOS)
def test_real_photos_fit_and_are_deterministic(name: str) -> None:
    data = (DATA / name).read_bytes()
    a = make_rendition(data, TIGHT)
    b = make_rendition(data, TIGHT)
    assert a.data == b.data and a.sha256 == hashlib.sha256(a.data).digest()
    assert a.recipe == RECIPE == "rendition/v1" and a.media_type == "image/jpeg"
    im = assert_within(a.data, TIGHT)
    assert im.size == (a.width, a.height)
    assert (a.source_width, a.source_height) == photo_size(data)


@pytest.mark.parametrize(
    ("size", "rules"),
    [
        ((9000, 1200), X),  # a panorama over X's 8192-pixel side
        ((20000, 20), X),  # a 1000:1 strip
        ((20, 9000), X),
        ((3000, 200), INSTAGRAM),  # 15:1, padded into 1.91:1
        ((200, 3000), INSTAGRAM),  # 1:15, padded into 4:5
        ((12000, 40), THREADS),  # 300:1, padded into 10:1
        ((7000, 6000), LINKEDIN),  # 42 MP over 36 MP
        ((1, 1), replace(INSTAGRAM, media_types=frozenset({"image/jpeg"}))),
    ],
)
def test_extreme_sizes_fit(size: tuple[int, int], rules: PlatformRules) -> None:
    # A real photo stretched to the size: real texture, so the byte limits are exercised too.
    with Image.open(DATA / "coffee.png") as src:
        big = src.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    data = jpeg(big)
    r = make_rendition(data, rules)
    im = assert_within(r.data, rules)
    assert (r.width, r.height) == im.size == plan_size(*size, rules)
    assert make_rendition(data, rules).data == r.data


def test_padding_keeps_every_pixel_and_centres() -> None:
    # 3:1 white picture into Instagram's 1.91:1: black bars above and below, none at the sides.
    data = jpeg(Image.new("RGB", (1500, 500), (255, 255, 255)))
    r = make_rendition(data, INSTAGRAM)
    im = Image.open(io.BytesIO(r.data))
    w, h = im.size
    assert abs(w / h - 1.91) < 0.01 and w == 1500
    assert sum(im.getpixel((w // 2, 2))) < 40  # type: ignore[arg-type]
    assert sum(im.getpixel((w // 2, h - 3))) < 40  # type: ignore[arg-type]
    assert sum(im.getpixel((2, h // 2))) > 700  # type: ignore[arg-type]


def test_exif_orientation_is_applied() -> None:
    # Stored 400×200 with "rotate 90° CW" (6): displayed, and rendered, 200×400.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = jpeg(Image.new("RGB", (400, 200), (10, 200, 10)), exif=exif)
    assert photo_size(data) == (200, 400)
    r = make_rendition(data, replace(TIGHT, aspect_range=None, max_pixels=None))
    assert (r.width, r.height) == (150, 300)
    assert_within(r.data, replace(TIGHT, aspect_range=None, max_pixels=None))


def test_icc_profile_is_converted_then_stripped() -> None:
    # The recipe converts a tagged photo to sRGB with LittleCMS before dropping the profile
    # (so stripping it does not shift colours); an sRGB-tagged photo keeps its colours.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    flat = Image.new("RGB", (400, 400), (200, 80, 30))
    r = make_rendition(jpeg(flat, icc_profile=srgb), TIGHT)
    out = assert_within(r.data, TIGHT)
    px = out.getpixel((150, 150))
    assert isinstance(px, tuple) and all(abs(a - b) <= 6 for a, b in zip(px, (200, 80, 30), strict=True))


def test_transparency_is_composited_over_white() -> None:
    im = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    r = make_rendition(buf.getvalue(), replace(INSTAGRAM, max_media_bytes=100_000))
    out = Image.open(io.BytesIO(r.data))
    assert sum(out.getpixel((300, 200))) > 740  # type: ignore[arg-type]


def test_quality_steps_down_before_shrinking() -> None:
    with Image.open(DATA / "astronaut.png") as src:
        data = jpeg(src.convert("RGB"))
    loose = PlatformRules(platform="p", title="P", max_media_bytes=10**9)
    assert make_rendition(data, loose).quality == 92
    small = make_rendition(data, replace(loose, max_media_bytes=40_000))
    assert small.quality < 92 and len(small.data) <= 40_000 and (small.width, small.height) == (512, 512)
    tiny = make_rendition(data, replace(loose, max_media_bytes=6_000))
    assert tiny.quality >= 70 and (tiny.width, tiny.height) < (512, 512) and len(tiny.data) <= 6_000


def test_impossible_and_unreadable_are_clear_errors() -> None:
    with Image.open(DATA / "astronaut.png") as src:
        data = jpeg(src.convert("RGB"))
    with pytest.raises(RenditionError, match="could not bring a 512×512 photo under 200 bytes"):
        make_rendition(data, PlatformRules(platform="p", title="P", max_media_bytes=200))
    with pytest.raises(RenditionError, match="cannot decode"):
        make_rendition(b"\xff\xd8\xff\xe0 not really a jpeg", TIGHT)


@settings(deadline=None, max_examples=300)
@given(
    st.integers(min_value=1, max_value=200_000),
    st.integers(min_value=1, max_value=200_000),
    st.none() | st.integers(min_value=16, max_value=20_000),
    st.none() | st.integers(min_value=256, max_value=100_000_000),
    st.none() | st.tuples(st.floats(min_value=0.05, max_value=1.0), st.floats(min_value=1.0, max_value=20.0)),
)
def test_planned_size_always_meets_the_pixel_limits(
    w: int, h: int, side: int | None, pixels: int | None, aspect: tuple[float, float] | None
) -> None:
    # The geometry alone, for any photo and any limits: within every pixel rule, never larger
    # than the padded source (only scaled down), never zero.
    rules = PlatformRules(platform="p", title="P", max_side_px=side, max_pixels=pixels, aspect_range=aspect)
    pw, ph = plan_size(w, h, rules)
    assert pw >= 1 and ph >= 1
    if side is not None:
        assert max(pw, ph) <= max(side, 1)
    if pixels is not None:
        assert pw * ph <= pixels or (pw == 1 or ph == 1)
    if aspect is not None and pw > 1 and ph > 1:
        assert aspect[0] - 1e-9 <= pw / ph <= aspect[1] + 1e-9 or min(pw, ph) <= 2


def test_the_same_bytes_in_another_process(subprocess_env: dict[str, str]) -> None:
    # Deterministic across runs, not only within one: a fresh interpreter makes the same bytes.
    import subprocess
    import sys

    src = DATA / "chelsea.png"
    code = (
        "import sys, hashlib; from photocodec.rendition import make_rendition; from protocol.rules import INSTAGRAM;"
        f"print(hashlib.sha256(make_rendition(open({str(src)!r}, 'rb').read(), INSTAGRAM).data).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == hashlib.sha256(make_rendition(src.read_bytes(), INSTAGRAM).data).hexdigest()


@pytest.mark.parametrize(
    ("rules", "size", "words"),
    [
        (X, (8193, 10), "photo 1 is 8193×10; X allows at most 8192 pixels a side [x.media_side]"),
        (
            LINKEDIN,
            (7000, 6000),
            "photo 1 is 7000×6000 (42,000,000 pixels); LinkedIn allows 36,152,320 [linkedin.media_pixels]",
        ),
        (
            INSTAGRAM,
            (300, 900),
            "photo 1 is 300×900 (aspect 0.333:1); Instagram takes 4:5 to 1.91:1 [instagram.media_aspect]",
        ),
        (
            THREADS,
            (12000, 40),
            "photo 1 is 12000×40 (aspect 300:1); Threads takes 1:10 to 10:1 [threads.media_aspect]",
        ),
    ],
)
def test_pixel_limits_say_the_exact_limit(rules: PlatformRules, size: tuple[int, int], words: str) -> None:
    (v,) = check_photo_size(f"{rules.platform}:a", rules, 1, *size)
    assert words in str(v) and v.renditionable and v.photo == 1


def test_within_every_limit_nothing_to_say() -> None:
    for rules in (X, LINKEDIN, INSTAGRAM, THREADS):
        assert check_photo_size("t:a", rules, 1, 1080, 1080) == []
