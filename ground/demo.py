"""`ground demo`: the whole path on one machine, with real keys, a real `ground serve`, the live
link and a real archive — every step printed as the command a person would type."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import GroundError


def _run(args: list[str], home: Path, tool: str) -> str:
    cmd = [sys.executable, "-m", tool, "--home", str(home), *args]
    print(f"$ {tool} --home {home} {' '.join(a if ' ' not in a else repr(a) for a in args)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GroundError(
            f"`{tool} {' '.join(args[:2])}` failed: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    print(proc.stdout.rstrip())
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(ground_home: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start `ground serve` on a free loopback port and wait until it answers."""
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    print(f"$ ground --home {ground_home} {' '.join(args)} &")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ground", "--home", str(ground_home), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise GroundError(f"ground serve exited at start: {err.strip()}")
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    stop_server(proc)
    raise GroundError(f"ground serve did not answer on {url} within 20 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


def run_demo(root: Path) -> None:
    """Create an astronaut and a station, serve ground, sync posts over the link, publish them."""
    onboard_home, ground_home = root / "onboard", root / "ground"
    root.mkdir(parents=True, exist_ok=True)
    photo = root / "launch.jpg"
    photo.write_bytes((Path(__file__).parent / "demo_data" / "rocket.jpg").read_bytes())
    if not (onboard_home / "keys" / "alice.key").exists():
        _run(["keys", "new", "alice"], onboard_home, "onboard")
    line = _run(["keys", "show", "alice"], onboard_home, "onboard").strip()
    _run(["enroll", "alice", "--key", line, "--account", "archive:alice"], ground_home, "ground")
    token = root / "station.token"
    if not token.exists():
        _run(["station", "add", "iss", "--token-out", str(token)], ground_home, "ground")
    server, url = start_server(ground_home)
    try:
        _run(["link", "add", "--ground", url, "--token-file", str(token)], onboard_home, "onboard")
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
        _run(["sync", "--wait-published", "30"], onboard_home, "onboard")
        _run(["queue"], onboard_home, "onboard")
        _run(["posts"], ground_home, "ground")
    finally:
        stop_server(server)
    print(
        f"\nPublished posts are under {ground_home / 'archive'}; every file's sha256 is in its record.json."
    )
