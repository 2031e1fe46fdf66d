"""The photo transport codec (JPEG XL lossless JPEG transcoding, docs/PROTOCOL.md §10)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import pytest
from conftest import BASE_MS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ground import jxl as ground_jxl
from ground.ingest import decoders
from onboard.export import CURRENT_GROUND as THIS_RELEASE
from onboard.export import choose_blob_encoding
from photocodec import jxl
from protocol import BlobPayload, MediaRef, Post, RemoteProtocolError, build_bundle, sign_item, verify_bundle
from protocol.bundle import PREFIX_BYTES, TRAILER_BYTES, read_header
from protocol.capabilities import BASELINE
from protocol.codecs import Codec
from protocol.errors import ErrorCode
from protocol.ids import new_ulid

BACKENDS = {b.name: b for b in jxl.backends()}
# A ground that decodes JPEG XL but not Lepton (the release before it), so JPEG XL is chosen;
# tests/test_lepton.py covers the choice between the two.
CURRENT_GROUND = dataclasses.replace(THIS_RELEASE, codecs=THIS_RELEASE.codecs - {Codec.LEPTON})
GOOD = ("rocket.jpg", "retina.jpg", "hubble_deep_field.jpg", "progressive.jpg", "exif.jpg")

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no JPEG XL codec on this machine")


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> jxl.Backend:
    return BACKENDS[request.param]


@pytest.fixture(scope="module")
def tiny_jpeg(sample_jpegs: list[Path]) -> bytes:
    """A 160×160 crop of a real photo: small enough to corrupt at every byte, big enough to shrink."""
    with Image.open(sample_jpegs[0]) as im:
        buf = io.BytesIO()
        im.crop((200, 100, 360, 260)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("name", GOOD)
def test_real_photos_shrink_and_rebuild_byte_identical(
    name: str, test_jpegs: dict[str, Path], backend: jxl.Backend
) -> None:
    raw = test_jpegs[name].read_bytes()
    coded = jxl.transcode(raw, backend)
    assert coded is not None
    assert len(coded) < len(raw) * 0.9  # measured: 11-20 % smaller
    assert jxl.rebuild(coded, len(raw), backend) == raw


@pytest.mark.parametrize(
    "variant",
    [
        lambda raw: raw + b"\x00" * 64 + b"vendor data after EOI",  # phones append data after EOI
        lambda raw: raw + raw,  # a second JPEG after the first (MPF-style preview)
    ],
)
def test_data_after_the_image_survives_exactly(
    variant, test_jpegs: dict[str, Path], backend: jxl.Backend
) -> None:  # type: ignore[no-untyped-def]
    raw = variant(test_jpegs["rocket.jpg"].read_bytes())
    coded = jxl.transcode(raw, backend)
    assert coded is not None and jxl.rebuild(coded, len(raw), backend) == raw


def test_exif_and_progressive_fixtures_are_what_they_claim(test_jpegs: dict[str, Path]) -> None:
    with Image.open(test_jpegs["exif.jpg"]) as im:
        assert im.getexif()[0x010F] == "Orbital Camera Co" and im.info.get("icc_profile")
    with Image.open(test_jpegs["progressive.jpg"]) as im:
        assert im.info.get("progressive") or im.info.get("progression")


def test_corrupt_cmyk_and_non_jpeg_travel_as_is(
    test_jpegs: dict[str, Path], sample_pngs: list[Path], backend: jxl.Backend
) -> None:
    assert jxl.transcode(test_jpegs["truncated.jpg"].read_bytes(), backend) is None
    assert jxl.transcode(sample_pngs[0].read_bytes(), backend) is None
    with Image.open(sample_pngs[0]) as im:  # libjxl cannot keep CMYK JPEGs exact
        buf = io.BytesIO()
        im.convert("CMYK").save(buf, "JPEG", quality=85)
    assert jxl.transcode(buf.getvalue(), backend) is None


def test_backends_read_each_others_output(test_jpegs: dict[str, Path]) -> None:
    if len(BACKENDS) < 2:
        pytest.skip("needs both imagecodecs and libjxl-tools")
    raw = test_jpegs["progressive.jpg"].read_bytes()
    a, b = BACKENDS["imagecodecs"], BACKENDS["cli"]
    assert b.decode(a.encode(raw), len(raw)) == raw
    assert a.decode(b.encode(raw), len(raw)) == raw


def test_export_choice_follows_the_peer(test_jpegs: dict[str, Path]) -> None:
    raw = test_jpegs["rocket.jpg"].read_bytes()
    assert choose_blob_encoding(raw, "image/jpeg", CURRENT_GROUND)[0] == Codec.JPEG_XL
    assert choose_blob_encoding(raw, "image/jpeg", BASELINE)[0] in (Codec.IDENTITY, Codec.ZSTD)
    bad = test_jpegs["truncated.jpg"].read_bytes()
    assert choose_blob_encoding(bad, "image/jpeg", CURRENT_GROUND)[0] != Codec.JPEG_XL


def test_huge_photos_travel_as_is(monkeypatch: pytest.MonkeyPatch, test_jpegs: dict[str, Path]) -> None:
    # Past MAX_PIXELS ground's memory-capped decoder might fail, so onboard never tries.
    monkeypatch.setattr(jxl, "MAX_PIXELS", 1000)
    assert jxl.transcode(test_jpegs["rocket.jpg"].read_bytes()) is None


def test_header_decides_before_a_photo_is_read_whole(
    monkeypatch: pytest.MonkeyPatch, test_jpegs: dict[str, Path], sample_pngs: list[Path]
) -> None:
    raw = test_jpegs["rocket.jpg"].read_bytes()
    head = raw[: raw.index(b"\xff\xda")]  # the header segments, up to the first scan
    assert jxl.worth_transcoding(head, len(raw))
    # The same header over far more bytes than its 640×427 pixels could fill: as-is.
    assert not jxl.worth_transcoding(head, 640 * 427 * jxl.MAX_BYTES_PER_PIXEL + jxl.HEAD_BYTES + 1)
    assert not jxl.worth_transcoding(raw[:20], len(raw))  # no frame header: unreadable
    assert not jxl.worth_transcoding(sample_pngs[0].read_bytes(), 1000)
    monkeypatch.setattr(jxl, "MAX_PIXELS", 1000)
    assert not jxl.worth_transcoding(head, len(raw))
    monkeypatch.undo()
    monkeypatch.setenv("ORBITPOST_JXL", "none")
    assert not jxl.worth_transcoding(head, len(raw))


def test_the_laptop_client_checks_for_a_codec_without_loading_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    # Loading imagecodecs would bring numpy and libjxl into onboard's own process (~12 MiB):
    # only the encoder child loads them (issue 18).
    probe = (
        "import sys; from photocodec import jxl; "
        "print(jxl.codec_present(), 'imagecodecs' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False"]
    for want, present in (("none", False), ("cli", "cli" in BACKENDS), ("bogus", False)):
        monkeypatch.setenv("ORBITPOST_JXL", want)
        assert jxl.codec_present() is present


def test_codec_switched_off_means_as_is(test_jpegs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORBITPOST_JXL", "none")
    raw = test_jpegs["rocket.jpg"].read_bytes()
    assert jxl.default_backend() is None and jxl.transcode(raw) is None
    assert choose_blob_encoding(raw, "image/jpeg", CURRENT_GROUND)[0] != Codec.JPEG_XL


# Ground: the bounded child decoder ----------------------------------------------------


def test_ground_child_rebuilds_exactly(test_jpegs: dict[str, Path]) -> None:
    raw = test_jpegs["exif.jpg"].read_bytes()
    coded = jxl.transcode(raw)
    assert coded is not None
    assert ground_jxl.decode_jpeg(coded, len(raw)) == raw
    assert Codec.JPEG_XL in ground_jxl.capabilities().codecs


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda c, n: (c[: len(c) // 2], n), ErrorCode.MALFORMED),  # truncated
        (lambda c, n: (b"not jpeg xl at all", n), ErrorCode.MALFORMED),
        (lambda c, n: (c, n - 1), ErrorCode.MALFORMED),  # rebuilds more than declared
        (lambda c, n: (c, n + 1), ErrorCode.MALFORMED),  # rebuilds less than declared
    ],
)
def test_ground_child_refuses_bad_data(test_jpegs: dict[str, Path], mutate, code) -> None:  # type: ignore[no-untyped-def]
    raw = test_jpegs["rocket.jpg"].read_bytes()
    coded = jxl.transcode(raw)
    assert coded is not None
    stored, size = mutate(coded, len(raw))
    with pytest.raises(RemoteProtocolError) as e:
        ground_jxl.decode_jpeg(stored, size)
    assert e.value.code == code


def test_ground_child_is_bounded_in_memory_and_time() -> None:
    # A flat 4000×4000 photo: 1.5 KB of JPEG XL rebuilds a 0.4 MB JPEG but needs ~0.5 GB.
    buf = io.BytesIO()
    Image.new("RGB", (4000, 4000), (200, 30, 40)).save(buf, "JPEG", quality=90, subsampling=0)
    raw = buf.getvalue()
    coded = jxl.backends()[0].encode(raw)  # transcode() would refuse nothing here; be direct
    assert len(coded) < len(raw) // 100
    with pytest.raises(RemoteProtocolError) as e:
        ground_jxl.decode_jpeg(coded, len(raw), memory_bytes=350 * 1024**2)
    assert e.value.code in (ErrorCode.DECOMPRESSION_BOMB, ErrorCode.MALFORMED)
    with pytest.raises(RemoteProtocolError) as e:
        ground_jxl.decode_jpeg(coded, len(raw), timeout_s=0.01)
    assert e.value.code == ErrorCode.DECOMPRESSION_BOMB
    assert ground_jxl.decode_jpeg(coded, len(raw)) == raw


def test_ground_without_the_codec_decodes_nothing_jxl(
    monkeypatch: pytest.MonkeyPatch, tiny_jpeg: bytes
) -> None:
    monkeypatch.setenv("ORBITPOST_JXL", "none")
    coded = jxl.backends()[0].encode(tiny_jpeg)
    with pytest.raises(RemoteProtocolError) as e:
        ground_jxl.decode_jpeg(coded, len(tiny_jpeg))
    assert e.value.code == ErrorCode.UNKNOWN_CODEC


def test_every_single_byte_corruption_of_a_jxl_blob_is_caught(tiny_jpeg: bytes) -> None:
    """In-process, every flipped byte either fails to rebuild or rebuilds the very original.

    (verify_bundle then hashes: only the original's sha256 is ever accepted.)
    """
    b = jxl.backends()[0]
    coded = b.encode(tiny_jpeg)
    assert b.decode(coded, len(tiny_jpeg)) == tiny_jpeg
    want = hashlib.sha256(tiny_jpeg).digest()
    harmless = 0
    for i in range(len(coded)):
        bad = bytearray(coded)
        bad[i] ^= 0xFF
        try:
            out = b.decode(bytes(bad), len(tiny_jpeg))
        except jxl.JxlError:
            continue
        if hashlib.sha256(out).digest() == want:
            harmless += 1  # e.g. a byte libjxl never reads: the published photo is still exact
        # anything else would be refused by verify_bundle's hash check (tested below)
    assert harmless < len(coded) // 10


def _jxl_bundle(alice_key, raw: bytes) -> bytes:  # type: ignore[no-untyped-def]
    sha = hashlib.sha256(raw).digest()
    post = Post(
        id=new_ulid(BASE_MS, b"\x05" * 10),
        author="alice",
        created_ms=BASE_MS,
        text="the view tonight",
        media=(MediaRef(sha256=sha, size_bytes=len(raw), media_type="image/jpeg", alt="Earth"),),
        targets=("archive:alice",),
    )
    codec, stored = choose_blob_encoding(raw, "image/jpeg", CURRENT_GROUND)
    assert codec == Codec.JPEG_XL
    return build_bundle(
        bundle_id=new_ulid(BASE_MS, b"\x06" * 10),
        created_ms=BASE_MS,
        items=[sign_item(alice_key, post)],
        blobs=[BlobPayload(sha256=sha, raw=raw, codec=codec, stored=stored)],
    )


def _reseal(data: bytearray) -> bytes:
    """Recompute the (unauthenticated) bundle checksum, as an attacker in the path could."""
    body = bytes(data[:-TRAILER_BYTES])
    return body + hashlib.sha256(body).digest()


def test_jxl_bundle_verifies_to_the_original_photo(alice_key, keyring, tiny_jpeg: bytes) -> None:  # type: ignore[no-untyped-def]
    data = _jxl_bundle(alice_key, tiny_jpeg)
    assert read_header(data).blobs[0].codec == Codec.JPEG_XL
    vb = verify_bundle(data, keyring, decoders=decoders())
    assert list(vb.blobs.values()) == [tiny_jpeg]
    with pytest.raises(RemoteProtocolError) as e:  # a side without the codec says so
        verify_bundle(data, keyring)
    assert e.value.code == ErrorCode.UNKNOWN_CODEC


def test_every_byte_flip_in_a_jxl_blob_is_rejected_by_verify(alice_key, keyring, tiny_jpeg: bytes) -> None:  # type: ignore[no-untyped-def]
    data = _jxl_bundle(alice_key, tiny_jpeg)
    h = read_header(data)
    start = h.total_bytes - TRAILER_BYTES - h.blobs[0].stored_bytes
    assert start > PREFIX_BYTES
    for i in range(start, h.total_bytes - TRAILER_BYTES):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(RemoteProtocolError) as e:
            verify_bundle(bytes(bad), keyring, decoders=decoders())
        assert e.value.code == ErrorCode.CHECKSUM_MISMATCH


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_resealed_corruption_decodes_to_the_original_or_is_rejected(
    alice_key, keyring, tiny_jpeg: bytes, data: st.DataObject
) -> None:  # type: ignore[no-untyped-def]
    """Even with the checksum recomputed, the real child decoder + hash let only the original through."""
    bundle = bytearray(_jxl_bundle(alice_key, tiny_jpeg))
    h = read_header(bytes(bundle))
    start = h.total_bytes - TRAILER_BYTES - h.blobs[0].stored_bytes
    i = data.draw(st.integers(start, h.total_bytes - TRAILER_BYTES - 1))
    bundle[i] = data.draw(st.integers(0, 255).filter(lambda v: v != bundle[i]))
    try:
        vb = verify_bundle(_reseal(bundle), keyring, decoders=decoders())
    except RemoteProtocolError as e:
        assert e.code in (ErrorCode.MALFORMED, ErrorCode.MEDIA_HASH_MISMATCH, ErrorCode.DECOMPRESSION_BOMB)
        return
    assert list(vb.blobs.values()) == [tiny_jpeg]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 5000))
def test_any_bytes_rebuild_or_raise_jxl_error(stored: bytes, raw_size: int) -> None:
    b = jxl.backends()[0]
    try:
        out = b.decode(stored, raw_size)
    except jxl.JxlError:
        return
    assert len(out) <= raw_size


@settings(max_examples=5, deadline=None)
@given(st.sampled_from(["rocket.jpg", "progressive.jpg"]), st.integers(0, 2**32 - 1))
def test_round_trip_property_on_real_photo_crops(name: str, seed: int) -> None:
    import random

    from conftest import SKIMAGE_DATA

    rng = random.Random(seed)
    src = SKIMAGE_DATA / "rocket.jpg"
    with Image.open(src) as im:
        x, y = rng.randrange(0, im.width - 64), rng.randrange(0, im.height - 64)
        buf = io.BytesIO()
        im.crop((x, y, x + rng.randrange(16, 64), y + rng.randrange(16, 64))).save(
            buf, "JPEG", quality=rng.randrange(50, 98), progressive=name == "progressive.jpg"
        )
    raw = buf.getvalue()
    coded = jxl.transcode(raw)
    if coded is not None:  # tiny crops may not shrink; then they travel as-is
        assert jxl.rebuild(coded, len(raw)) == raw
