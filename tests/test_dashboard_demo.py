"""`ground demo --serve`: the newcomer's path — run the demo, open the printed URL, log in, see the posts."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_demo_serve_prints_a_working_dashboard_login(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ground",
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env,
    )
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "ground keeps serving" in line:
                break
        text = "".join(out)
        assert "ground keeps serving" in text, text
        url = re.search(r"Dashboard: (\S+)", text).group(1)  # type: ignore[union-attr]
        name = re.search(r"Log in as: (\S+)", text).group(1)  # type: ignore[union-attr]
        password = re.search(r"Password:  (\S+)", text).group(1)  # type: ignore[union-attr]
        assert url == f"http://127.0.0.1:{port}/"

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(url) as r:
                assert r.status == 200 and "orbitpost" in await r.text()
            async with http.post(url + "api/login", json={"name": name, "password": password}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["role"] == "admin"
            async with http.get(url + "api/posts") as r:
                posts = (await r.json())["posts"]
            states = sorted(p["publications"][0]["display_state"] for p in posts)
            # Two published over the live link, one scheduled a minute ahead to watch it go out.
            assert states == ["published", "published", "scheduled"], states
            async with http.get(url + "api/summary") as r:
                summary = await r.json()
            assert summary["link"]["stations"][0]["station"] == "iss"
            assert summary["link"]["bytes_today"] > 80_000  # the photo crossed the link (as JPEG XL: ~93 KB)
            async with http.get(url + "metrics") as r:
                metrics = await r.text()
            link_bytes = re.search(r'orbitpost_link_received_bytes_total\{station="iss"\} (\S+)', metrics)
            assert link_bytes and float(link_bytes.group(1)) > 80_000
            assert 'orbitpost_link_transfers{kind="blob",state="complete"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(out) + rest
    assert "stopping ground serve" in rest
    # The server child went with it: nothing listens on the port any more.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
