"""12-megapixel test photos made from scikit-image's sample images (never committed).

Each photo is one of scikit-image's ``data/`` colour images (astronaut, coffee, chelsea, rocket,
retina, hubble_deep_field, immunohistochemistry) upscaled to 4,000 × 3,000, shifted by a random
offset, with sensor-like grain, saved as a baseline JPEG at quality 92 (~3–5 MB, like a phone's
12-MP photo). Every photo differs from every other (its own offset and grain), so none is
shared between posts and each one crosses the link.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 4000, 3000
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field", "immunohistochemistry")
QUALITY = 92


@cache
def _base(name: str) -> np.ndarray:
    """The sample image upscaled to a bit more than 12 MP (room for the random offset)."""
    from PIL import Image
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    big = Image.fromarray(img[..., :3]).resize((WIDTH + 64, HEIGHT + 64), Image.Resampling.BICUBIC)
    return np.asarray(big)


@cache
def _grain(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 7.0, (HEIGHT + 64, WIDTH + 64, 3)).astype(np.int16)


def photo(i: int) -> bytes:
    """Photo number ``i`` as JPEG bytes (deterministic)."""
    from PIL import Image

    rng = np.random.default_rng(i)
    base = _base(SOURCES[i % len(SOURCES)])
    dy, dx, gy, gx = (int(v) for v in rng.integers(0, 64, 4))
    grain = _grain(i % 3)
    pixels = base[dy : dy + HEIGHT, dx : dx + WIDTH].astype(np.int16)
    pixels += grain[gy : gy + HEIGHT, gx : gx + WIDTH]
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


def write_photos(folder: Path, total_bytes: int, *, start: int = 0) -> Iterator[Path]:
    """Write photos into ``folder`` until ``total_bytes`` are there; yields each path."""
    folder.mkdir(parents=True, exist_ok=True)
    written, i = 0, start
    while written < total_bytes:
        path = folder / f"photo-{i:04d}.jpg"
        data = photo(i)
        path.write_bytes(data)
        written += len(data)
        i += 1
        yield path
