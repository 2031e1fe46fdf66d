"""Through the real CLIs: photos cross as Lepton or JPEG XL and are published byte-identical."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import Cli

from photocodec import jxl, lepton
from protocol import read_header
from protocol.codecs import Codec

NAMES = ("rocket.jpg", "retina.jpg", "hubble_deep_field.jpg", "progressive.jpg", "exif.jpg", "truncated.jpg")


def _post_all(cli: Cli, test_jpegs: dict[str, Path]) -> dict[str, str]:
    ids = {}
    for name in NAMES:
        out = cli.onboard(
            "post", "--as", "alice", "--to", "archive:alice", "--photo", str(test_jpegs[name]),
            "--alt", f"photo {name}", f"Posting {name} from orbit 🌏",
        ).output  # fmt: skip
        ids[name] = out.split()[1]
    return ids


def _published(cli: Cli, post_id: str) -> bytes:
    (media,) = sorted((cli.ground_home / "archive" / "alice" / post_id).glob("media-1.*"))
    return media.read_bytes()


needs_codecs = pytest.mark.skipif(
    not (jxl.backends() and lepton.codec_present()), reason="no JPEG XL or no Lepton codec on this machine"
)


@needs_codecs
def test_real_photos_cross_as_lepton_or_jpeg_xl_and_publish_byte_identical(
    enrolled: Cli, test_jpegs: dict[str, Path], tmp_path: Path
) -> None:
    cli = enrolled
    ids = _post_all(cli, test_jpegs)
    outdir = tmp_path / "OUT"
    cli.onboard("export", str(outdir))
    (bundle,) = sorted(outdir.glob("*.opb"))
    header = read_header(bundle.read_bytes())
    assert header.items_codec == Codec.ZSTD_DICT
    codecs = {b.sha256: b for b in header.blobs}
    for name in NAMES:
        raw = test_jpegs[name].read_bytes()
        entry = codecs[hashlib.sha256(raw).digest()]
        if name == "truncated.jpg":
            # libjxl cannot keep a cut-off JPEG exact; Lepton can (proven onboard, hashed on ground).
            assert entry.codec == Codec.LEPTON and entry.stored_bytes < 0.9 * len(raw)
        else:
            assert entry.codec in (Codec.LEPTON, Codec.JPEG_XL) and entry.stored_bytes < 0.9 * len(raw)
    # Each photo went as the smaller of the two: both are used on these samples.
    assert {b.codec for b in header.blobs} == {Codec.LEPTON, Codec.JPEG_XL}
    raw_total = sum(test_jpegs[n].stat().st_size for n in NAMES)
    assert bundle.stat().st_size < 0.9 * raw_total
    cli.ground("ingest", str(outdir))
    for name, post_id in ids.items():
        assert _published(cli, post_id) == test_jpegs[name].read_bytes(), name


def test_png_passes_through_unchanged(enrolled: Cli, sample_pngs: list[Path], tmp_path: Path) -> None:
    cli = enrolled
    png = sample_pngs[0]
    out = cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(png), "--alt", "a", "coffee"
    )
    post_id = out.output.split()[1]
    outdir = tmp_path / "OUT"
    cli.onboard("export", str(outdir))
    (bundle,) = sorted(outdir.glob("*.opb"))
    assert all(b.codec in (Codec.IDENTITY, Codec.ZSTD) for b in read_header(bundle.read_bytes()).blobs)
    cli.ground("ingest", str(outdir))
    assert _published(cli, post_id) == png.read_bytes()


def test_older_ground_gets_what_it_decodes(
    enrolled: Cli, test_jpegs: dict[str, Path], tmp_path: Path
) -> None:
    """`--ground-decodes` with only the baseline codecs: no JPEG XL, no dictionary, still exact."""
    cli = enrolled
    ids = _post_all(cli, test_jpegs)
    outdir = tmp_path / "OUT"
    cli.onboard("export", str(outdir), "--ground-decodes", "codecs=0,1")
    (bundle,) = sorted(outdir.glob("*.opb"))
    header = read_header(bundle.read_bytes())
    assert header.items_codec == Codec.ZSTD
    assert all(b.codec in (Codec.IDENTITY, Codec.ZSTD) for b in header.blobs)
    cli.ground("ingest", str(outdir))
    for name, post_id in ids.items():
        assert _published(cli, post_id) == test_jpegs[name].read_bytes(), name


@needs_codecs
@pytest.mark.parametrize(("switch", "codec"), [("ORBITPOST_JXL", "3"), ("ORBITPOST_LEPTON", "4")])
def test_ground_without_codec_refuses_clearly_and_changes_nothing(
    enrolled: Cli,
    test_jpegs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    switch: str,
    codec: str,
) -> None:
    cli = enrolled
    _post_all(cli, test_jpegs)
    outdir = tmp_path / "OUT"
    cli.onboard("export", str(outdir))
    token = cli.ground("capabilities").output.strip()
    assert token.startswith("codecs=0,1,2,3,4;")
    monkeypatch.setenv(switch, "none")
    assert codec not in cli.ground("capabilities").output.split(";")[0]
    r = cli.ground("ingest", str(outdir), ok=False)
    assert r.exit_code == 1 and "unknown_codec" in r.output
    assert cli.ground("posts").output.strip() == "no posts yet"
    monkeypatch.delenv(switch)
    cli.ground("ingest", str(outdir))  # the codec is back: the same file is accepted
    assert "published" in cli.ground("posts").output


@needs_codecs
def test_a_ground_of_the_release_before_lepton_gets_jpeg_xl(
    enrolled: Cli, test_jpegs: dict[str, Path], tmp_path: Path
) -> None:
    """Its token lists codec 3, not 4: photos go as JPEG XL (or as-is), as they did before."""
    cli = enrolled
    ids = _post_all(cli, test_jpegs)
    outdir = tmp_path / "OUT"
    cli.onboard("export", str(outdir), "--ground-decodes", "codecs=0,1,2,3;dicts=6f700001;formats=1,2")
    (bundle,) = sorted(outdir.glob("*.opb"))
    used = {b.codec for b in read_header(bundle.read_bytes()).blobs}
    assert Codec.JPEG_XL in used and Codec.LEPTON not in used
    cli.ground("ingest", str(outdir))
    for name, post_id in ids.items():
        assert _published(cli, post_id) == test_jpegs[name].read_bytes(), name


def test_bad_capability_token_is_one_clear_line(enrolled: Cli, tmp_path: Path) -> None:
    res = enrolled.onboard("export", str(tmp_path / "O"), "--ground-decodes", "codecs=zero", ok=False)
    assert res.exit_code != 0
    assert "codec id 'zero' is not a number" in str(res.exception) + res.output
