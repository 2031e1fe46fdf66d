"""`ground demo`: the whole path on one machine, with real keys, real bundles and a real archive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(args: list[str], home: Path, tool: str) -> str:
    cmd = [sys.executable, "-m", tool, "--home", str(home), *args]
    print(f"$ {tool} --home {home} {' '.join(a if ' ' not in a else repr(a) for a in args)}")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(out.rstrip())
    return out


def run_demo(root: Path) -> None:
    """Create an astronaut, queue posts, carry them down as bundle files and publish them."""
    onboard_home, ground_home, outdir = root / "onboard", root / "ground", root / "outbox"
    root.mkdir(parents=True, exist_ok=True)
    photo = root / "launch.jpg"
    photo.write_bytes((Path(__file__).parent / "demo_data" / "rocket.jpg").read_bytes())
    if not (onboard_home / "keys" / "alice.key").exists():
        _run(["keys", "new", "alice"], onboard_home, "onboard")
    line = _run(["keys", "show", "alice"], onboard_home, "onboard").strip()
    _run(["enroll", "alice", "--key", line, "--account", "archive:alice"], ground_home, "ground")
    _run(
        ["post", "--as", "alice", "--to", "archive:alice", "First light over the Pacific 🌏"],
        onboard_home,
        "onboard",
    )
    _run(
        [
            "post",
            "--as",
            "alice",
            "--to",
            "archive:alice",
            "--photo",
            str(photo),
            "--alt",
            "A rocket lifting off",
            "Watching a launch from orbit. Café crème at 400 km.",
        ],
        onboard_home,
        "onboard",
    )
    _run(["export", str(outdir)], onboard_home, "onboard")
    _run(["ingest", str(outdir)], ground_home, "ground")
    _run(["posts"], ground_home, "ground")
    print(
        f"\nPublished posts are under {ground_home / 'archive'}; every file's sha256 is in its record.json."
    )
