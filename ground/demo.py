"""`ground demo`: the whole path on one machine, with real keys, a real `ground serve`, the live
link and a real archive — every step printed as the command a person would type."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .demo_fakes import RunningFake, start_fakes, stop_fakes
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
    # Instagram and Threads (their local fakes with --with-fakes) fetch photos from here.
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--public-base-url", url]
    print(f"$ ground --home {ground_home} {' '.join(args)} &")
    # The server's messages go to a file, not a pipe: a pipe nobody reads would fill up and
    # stall a server that keeps running (`ground demo --serve`).
    ground_home.mkdir(parents=True, exist_ok=True)
    log = ground_home / "serve.log"
    with log.open("ab") as log_fd:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ground", "--home", str(ground_home), *args],
            stdout=subprocess.DEVNULL,
            stderr=log_fd,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise GroundError(f"ground serve exited at start: {' '.join(err)}")
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    stop_server(proc)
    raise GroundError(f"ground serve did not answer on {url} within 20 s")


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """Ask ``proc`` to stop (SIGTERM); kill it if it has not within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    end_process(proc)
    if proc.stderr is not None:
        proc.stderr.close()


def run_demo(
    root: Path, *, keep_serving: bool = False, port: int | None = None, with_fakes: bool = False
) -> None:
    """Create an astronaut and a station, serve ground, sync posts over the link, publish them.

    With ``with_fakes`` the photo post also goes to every platform in ground/demo_fakes.py,
    each against its local fake (X, LinkedIn, Flickr, …), and the record shows per account
    how faithfully the photo was published.

    With ``keep_serving`` an admin operator is created first and the dashboard URL and login
    are printed before anything is sent, so the posts can be watched arriving; ground keeps
    serving (and a scheduled post keeps one publication due) until Ctrl-C.
    """
    onboard_home, ground_home = root / "onboard", root / "ground"
    root.mkdir(parents=True, exist_ok=True)
    photo = root / "launch.jpg"
    photo.write_bytes((Path(__file__).parent / "demo_data" / "rocket.jpg").read_bytes())
    if not (onboard_home / "keys" / "alice.key").exists():
        _run(["keys", "new", "alice"], onboard_home, "onboard")
    line = _run(["keys", "show", "alice"], onboard_home, "onboard").strip()
    fakes = start_fakes(root) if with_fakes else []
    try:
        _demo(root, onboard_home, ground_home, photo, line, fakes, keep_serving, port)
    finally:
        stop_fakes(fakes)


def _demo(
    root: Path,
    onboard_home: Path,
    ground_home: Path,
    photo: Path,
    line: str,
    fakes: list[RunningFake],
    keep_serving: bool,
    port: int | None,
) -> None:
    fake_accounts = [f"{f.platform}:alice" for f in fakes]
    accounts = ["archive:alice", *fake_accounts]
    enroll_args = [a for acct in accounts for a in ("--account", acct)]
    _run(["enroll", "alice", "--key", line, *enroll_args], ground_home, "ground")
    for f in fakes:
        _run(
            [
                "account",
                "add",
                f"{f.platform}:alice",
                "--token-file",
                str(f.credential_file),
                "--service-url",
                f.url,
            ],
            ground_home,
            "ground",
        )
    token = root / "station.token"
    if not token.exists():
        _run(["station", "add", "iss", "--token-out", str(token)], ground_home, "ground")
    login = _ensure_operator(ground_home, root) if keep_serving else None
    server, url = start_server(ground_home, port)
    if login is not None:
        _print_dashboard(url, *login)
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
                ",".join(accounts),
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
        if fakes:
            _run(["account", "list"], ground_home, "ground")
            _print_fidelity(ground_home)
        if login is not None:
            _schedule_one(onboard_home)
            _print_dashboard(url, *login)
            print("ground keeps serving; press Ctrl-C to stop.", flush=True)
            _wait_for_interrupt(server)
    finally:
        stop_server(server)
    print(
        f"\nPublished posts are under {ground_home / 'archive'}; every file's sha256 is in its record.json."
    )


def _print_fidelity(ground_home: Path) -> None:
    """Per account: how faithfully the photo was published (what ground recorded)."""
    import sqlite3

    conn = sqlite3.connect(ground_home / "ground.db")
    try:
        rows = conn.execute(
            "SELECT account, fidelity, COALESCE(fidelity_note, '') FROM publications "
            "WHERE fidelity IS NOT NULL ORDER BY account"
        ).fetchall()
    finally:
        conn.close()
    print("\nphoto fidelity per account (recorded with the post):")
    for account, fidelity, note in rows:
        print(f"  {account}: {fidelity}" + (f" ({note})" if note else ""))


DEMO_OPERATOR = "demo"


def _ensure_operator(ground_home: Path, root: Path) -> tuple[str, str]:
    """An admin operator for the dashboard; its password is kept in ``root`` (mode 0600) for re-runs."""
    pw_file = root / "operator.password"
    listed = subprocess.run(
        [sys.executable, "-m", "ground", "--home", str(ground_home), "operator", "list"],
        capture_output=True,
        text=True,
    ).stdout
    active = {line.split("\t")[0] for line in listed.splitlines() if line.endswith("\tactive")}
    if pw_file.exists() and DEMO_OPERATOR in active:
        return DEMO_OPERATOR, pw_file.read_text().strip()
    taken = {line.split("\t")[0] for line in listed.splitlines()}
    name = next(
        n for n in (DEMO_OPERATOR, *(f"{DEMO_OPERATOR}-{i}" for i in range(2, 1000))) if n not in taken
    )
    password = secrets.token_urlsafe(12)
    print(f"$ ground --home {ground_home} operator add {name} --role admin --password-stdin")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ground",
            "--home",
            str(ground_home),
            "operator",
            "add",
            name,
            "--role",
            "admin",
            "--password-stdin",
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise GroundError(f"`ground operator add` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    print(proc.stdout.rstrip())
    pw_file.write_text(password + "\n")
    pw_file.chmod(0o600)
    return name, password


def _print_dashboard(url: str, name: str, password: str) -> None:
    print(f"\n  Dashboard: {url}/\n  Log in as: {name}\n  Password:  {password}\n", flush=True)


def _schedule_one(onboard_home: Path) -> None:
    """One more post, due a minute from now, so the dashboard shows it go from scheduled to published."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    _run(
        [
            "post",
            "--as",
            "alice",
            "--to",
            "archive:alice",
            "--at",
            at,
            "Scheduled from orbit: watch me publish.",
        ],
        onboard_home,
        "onboard",
    )
    _run(["sync"], onboard_home, "onboard")


def _wait_for_interrupt(server: subprocess.Popen[bytes]) -> None:
    # SIGTERM ends the demo like Ctrl-C does, so the server child is always stopped with it.
    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _term)
    try:
        server.wait()
        raise GroundError("ground serve stopped unexpectedly")
    except KeyboardInterrupt:
        print("\nstopping ground serve", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
