"""What the fake platforms share: scripted faults, and running one on its own.

Faults: a test scripts ``Fault(method, path, status, after=…)`` and the fake answers that
status to the next matching request — before acting, or *after* acting (the ambiguous case a
lost answer makes; ``status=0`` drops the connection instead of answering).

On its own (the subprocess tests: test_crash.py, `ground demo --with-fakes`), every fake serves its ``app()`` on loopback at a free port (or ``port``), learns its own base
URL (it writes it into the links it answers), prints one JSON line — ``{"url": …}`` plus what
an operator would be given (a grant, a secret) — and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RequestLog = list[tuple[str, str, int]]  # (method, path, status answered), in order


@dataclass
class Fault:
    """Answer ``status`` to the next ``times`` matching requests; ``after`` = act first, then fail
    (``status=0`` drops the connection without an answer)."""

    method: str
    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False
    times: int = 1


def take_fault(faults: list[Fault], method: str, path: str) -> Fault | None:
    """The first scripted fault for this request that has tries left (one is used up), or None."""
    for f in faults:
        if f.method == method and path.startswith(f.path) and f.times > 0:
            f.times -= 1
            return f
    return None


def drop_connection(request: web.Request) -> NoReturn:
    """Close the connection without an answer: what a client sees when the answer is lost."""
    assert request.transport is not None
    request.transport.close()
    raise ConnectionResetError


async def play_fault(
    faults: list[Fault],
    log: RequestLog,
    request: web.Request,
    handler: Handler,
    error: Callable[[int, str], web.StreamResponse],
) -> web.StreamResponse | None:
    """Play the first scripted fault matching ``request`` and log it, or None if none does.

    Before acting: ``error(status, "scripted fault")``. After acting (``handler`` has run):
    ``error(status, "scripted after acting")``, or the connection dropped for ``status=0``.
    """
    fault = take_fault(faults, request.method, request.path)
    if fault is None:
        return None
    if not fault.after:
        log.append((request.method, request.path, fault.status))
        return error(fault.status, "scripted fault")
    await handler(request)
    log.append((request.method, request.path, fault.status))
    if fault.status == 0:
        drop_connection(request)
    return error(fault.status, "scripted after acting")


async def logged(log: RequestLog, request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer ``request`` with ``handler`` and log the status answered."""
    resp = await handler(request)
    log.append((request.method, request.path, resp.status))
    return resp


async def serve_standalone(fake: Any, port: int, **given: Any) -> None:
    """Serve ``fake`` on 127.0.0.1:``port`` (0: any free port); print its URL and ``given``; never return."""
    runner = web.AppRunner(fake.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(json.dumps({"url": fake.base_url, **given}), flush=True)
    await asyncio.Event().wait()


def serve_main(doc: str | None, fake: Any, **given: Any) -> None:
    """A fake's ``__main__``: takes ``--port`` (default 0: any free port), then serve_standalone."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve_standalone(fake, parser.parse_args().port, **given))


def start_fake(
    name: str, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """``tests/fake_NAME.py ARGS`` in its own process; returns it and the JSON line it printed
    (``url`` and a grant or secret). Its stderr is dropped: a client killed mid-request is
    logged there, which is expected noise in the crash tests."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name(f"fake_{name}.py")), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def stop_fake(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


@contextlib.contextmanager
def fake_process(name: str, *args: str, env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """start_fake for the block: what the fake printed; killed when the block ends."""
    proc, info = start_fake(name, *args, env=env)
    try:
        yield info
    finally:
        stop_fake(proc)
