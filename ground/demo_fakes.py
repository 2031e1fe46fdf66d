"""`ground demo --with-fakes`: the platforms we can only test against local fakes, shown the same way.

A small registry: each entry names a fake server script in the source tree (``tests/fake_*.py``,
written from the platform's public API documentation) and the key of its start-up line that
holds what ``ground account add`` takes. A platform engineer adds one line to
:data:`DEMO_FAKES`. The fakes run on loopback only, in their own processes, and stop with the
demo. They are *fakes*: docs/platforms.md says which platforms are tested against a real server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import GroundError

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoFake:
    """How to start one platform's fake and enroll an account on it."""

    platform: str
    script: str  # relative to the source checkout
    # Key of the fake's first stdout line (JSON) holding the account's credential file content.
    credential: str
    args: tuple[str, ...] = ()  # command-line arguments for the script


DEMO_FAKES: dict[str, DemoFake] = {
    f.platform: f
    for f in (
        DemoFake(platform="x", script="tests/fake_x.py", credential="grant"),
        DemoFake(platform="linkedin", script="tests/fake_linkedin.py", credential="grant"),
        DemoFake(platform="flickr", script="tests/fake_flickr.py", credential="secret"),
        # Meta (issue 13): one fake script, one platform each; Instagram and Threads fetch the
        # photo from `ground serve --public-base-url` (the demo's loopback server).
        *(
            DemoFake(platform=k, script="tests/fake_meta.py", credential="grant", args=("--kind", k))
            for k in ("instagram", "threads", "facebook")
        ),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningFake:
    platform: str
    url: str
    credential_file: Path
    proc: subprocess.Popen[bytes]


def start_fakes(root: Path) -> list[RunningFake]:
    """Start every registered fake on a free loopback port; the caller stops them (:func:`stop_fakes`)."""
    running: list[RunningFake] = []
    try:
        for fake in DEMO_FAKES.values():
            script = REPO / fake.script
            if not script.exists():
                raise GroundError(f"--with-fakes needs the source checkout: {script} is missing")
            proc = subprocess.Popen(
                [sys.executable, str(script), *fake.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            assert proc.stdout is not None
            line = proc.stdout.readline()
            try:
                info = json.loads(line)
            except ValueError as exc:
                proc.kill()
                raise GroundError(f"the {fake.platform} fake did not start ({script})") from exc
            root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"{fake.platform}-", suffix=".json", dir=root)
            with open(fd, "w") as f:
                json.dump(info[fake.credential], f)
            running.append(
                RunningFake(
                    platform=fake.platform, url=str(info["url"]), credential_file=Path(name), proc=proc
                )
            )
            print(f"started the local {fake.platform} fake (written from its API docs) at {info['url']}")
    except BaseException:
        stop_fakes(running)
        raise
    return running


def stop_fakes(running: list[RunningFake]) -> None:
    for r in running:
        r.proc.kill()
        r.proc.wait()
        if r.proc.stdout is not None:
            r.proc.stdout.close()
        r.credential_file.unlink(missing_ok=True)
