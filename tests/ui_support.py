"""Helpers for the compose page tests: a real `onboard ui` process and its login address."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

URL_RE = re.compile(r"compose page: (http://\S+)")


@dataclass(frozen=True)
class Ui:
    proc: subprocess.Popen[bytes]
    login_url: str

    @property
    def base(self) -> str:
        return self.login_url.split("/login", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    @property
    def secret(self) -> str:
        return self.login_url.split("secret=", 1)[1]


def start_ui(home: Path, env: dict[str, str], *args: str) -> Ui:
    """`onboard --home HOME ui --no-open --port 0`, waiting for the address it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onboard", "--home", str(home), "ui", "--no-open", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = b""
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"onboard ui exited {proc.returncode} at start")
        chunk = proc.stdout.read()
        if chunk:
            line += chunk
            m = URL_RE.search(line.decode())
            if m:
                return Ui(proc=proc, login_url=m.group(1))
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("onboard ui printed no address within 30 s")


def stop_ui(ui: Ui, sig: int = signal.SIGTERM) -> None:
    if ui.proc.poll() is None:
        ui.proc.send_signal(sig)
        try:
            ui.proc.wait(10)
        except subprocess.TimeoutExpired:
            ui.proc.kill()
            ui.proc.wait(5)
    if ui.proc.stdout is not None:
        ui.proc.stdout.close()


@contextmanager
def running_ui(home: Path, env: dict[str, str], *args: str) -> Iterator[Ui]:
    ui = start_ui(home, env, *args)
    try:
        yield ui
    finally:
        stop_ui(ui)
