"""photocodec.child: a photo's JPEG XL form made in a child process (issue 18).

The result must rebuild the file byte for byte (the same proof as photocodec.jxl.transcode);
anything that cannot gain or cannot be read gives None (the photo travels as-is).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from durable.files import BlobStore
from photocodec import jxl
from photocodec.child import transcode_file

pytestmark = pytest.mark.skipif(not jxl.backends(), reason="no JPEG XL codec on this machine")


def test_a_real_jpeg_is_transcoded_in_a_child_and_rebuilds_exactly(sample_jpegs: list[Path]) -> None:
    original = sample_jpegs[0].read_bytes()
    coded = transcode_file(sample_jpegs[0])
    assert coded is not None and len(coded) < len(original)
    assert jxl.rebuild(coded, len(original)) == original


def test_what_cannot_gain_or_be_read_travels_as_is(tmp_path: Path, sample_pngs: list[Path]) -> None:
    assert transcode_file(sample_pngs[0]) is None  # not a JPEG
    assert transcode_file(tmp_path / "missing.jpg") is None
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 1000)
    assert transcode_file(broken) is None


def test_a_stored_photo_is_checked_in_pieces(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 10_000  # 2.5 MiB: several pieces
    sha = store.put(data)
    assert store.check(sha) == len(data)
    path = store.path(sha)
    path.chmod(0o600)
    path.write_bytes(data[:-1] + b"!")
    with pytest.raises(OSError, match="damaged"):
        store.check(sha)
