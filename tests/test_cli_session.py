"""The walking-skeleton session from the issue, verbatim, through the real CLIs."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from conftest import Cli

from ground.platforms.archive import archived_posts


def test_full_session_publishes_byte_identical(enrolled: Cli, photo: Path, tmp_path: Path) -> None:
    cli = enrolled
    key_file = cli.onboard_home / "keys" / "alice.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    text = "First light over the Pacific 🌏"
    original = photo.read_bytes()
    out = cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "Sunrise", text
    )
    post_id = out.output.split()[1]
    # Editing the original after queueing must change nothing that is published.
    photo.write_bytes(b"\xff\xd8\xff" + b"edited" * 10)
    q = cli.onboard("queue").output
    assert post_id in q and "queued" in q
    outdir = tmp_path / "OUT"
    cli.onboard("export", str(outdir))
    assert "exported" in cli.onboard("queue").output
    (bundle,) = sorted(outdir.glob("*.opb"))
    v = cli.ground("verify", str(bundle))
    assert v.output.startswith("OK ") and len(v.output.strip().splitlines()) == 1
    cli.ground("ingest", str(outdir))
    folder = cli.ground_home / "archive" / "alice" / post_id
    assert (folder / "text.txt").read_bytes() == text.encode()
    assert hashlib.sha256((folder / "media-1.jpg").read_bytes()).digest() == hashlib.sha256(original).digest()
    record = json.loads((folder / "record.json").read_text())
    assert record["post_id"] == post_id
    assert record["files"]["media-1.jpg"] == hashlib.sha256(original).hexdigest()
    assert record["files"]["text.txt"] == hashlib.sha256(text.encode()).hexdigest()
    assert record["alt"] == ["Sunrise"]
    # Ingesting the same folder again publishes nothing twice.
    again = cli.ground("ingest", str(outdir))
    assert "already ingested" in again.output
    assert len(archived_posts(cli.ground_home / "archive", "alice")) == 1


def test_home_from_environment(cli: Cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from onboard.cli import app

    monkeypatch.setenv("ORBITPOST_HOME", str(cli.onboard_home))
    r = CliRunner().invoke(app, ["keys", "new", "bob"])
    assert r.exit_code == 0, r.output
    assert (cli.onboard_home / "keys" / "bob.key").exists()
    assert os.environ["ORBITPOST_HOME"] == str(cli.onboard_home)
