"""Starting the compose page: loopback only, a fresh secret every start."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import signal
import socket
import sys
import webbrowser

from aiohttp import web

from .. import queue
from ..errors import OnboardError
from ..home import Home
from .drafts import DraftStore
from .routes import ACTIONS_KEY, CONN_KEY, DRAFTS_KEY, HOME_KEY, MAX_BODY_BYTES, errors, routes
from .security import GATE_KEY, Gate, guard


def loopback_address(host: str) -> str:
    """``host`` if it is a loopback address ('localhost' means 127.0.0.1); anything else is
    refused: the page signs posts as whoever unlocked a key, it must not face a network."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise OnboardError(f"--host {host!r} is not an IP address; use 127.0.0.1 or ::1") from None
    if not addr.is_loopback:
        raise OnboardError(
            f"refusing to listen on {host}: the compose page is for this laptop only; "
            "use --host 127.0.0.1 (the default) or ::1"
        )
    return str(addr)


def make_app(home: Home, gate: Gate) -> web.Application:
    """The page's application (tests build one around a Gate of their own)."""
    home.ensure()
    app = web.Application(middlewares=[guard, errors], client_max_size=MAX_BODY_BYTES)
    app[GATE_KEY] = gate
    app[HOME_KEY] = home
    app[CONN_KEY] = queue.connect(home.db_path)
    app[DRAFTS_KEY] = DraftStore(home)
    app[ACTIONS_KEY] = [0]
    app.add_routes(routes)

    async def close(app: web.Application) -> None:
        app[CONN_KEY].close()

    app.on_cleanup.append(close)
    return app


def run_ui(home: Home, *, host: str, port: int, open_browser: bool, lock_after_s: float) -> None:
    """Serve until Ctrl-C or SIGTERM; prints (and opens) the one address that logs in."""
    addr = loopback_address(host)
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr, port))
    except OSError as exc:
        sock.close()
        raise OnboardError(f"cannot listen on {addr} port {port}: {exc.strerror or exc}") from exc
    sock.listen(64)
    port = sock.getsockname()[1]
    gate = Gate(secret=secrets.token_urlsafe(32), port=port, lock_after_s=lock_after_s)
    shown = f"[{addr}]" if family == socket.AF_INET6 else addr
    url = f"http://{shown}:{port}/login?secret={gate.secret}"
    asyncio.run(_serve(make_app(home, gate), sock, url, open_browser))


async def _serve(app: web.Application, sock: socket.socket, url: str, open_browser: bool) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    print(f"compose page: {url}", flush=True)
    print(
        "(this address carries a secret made for this start; Ctrl-C stops the page)",
        file=sys.stderr,
        flush=True,
    )
    if open_browser:
        with contextlib.suppress(Exception):
            webbrowser.open(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
