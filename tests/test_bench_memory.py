"""The memory benchmark stays runnable on one 12-MP photo, and onboard's own peak stays bounded.

The figures of a real run (1 GB of photos) are in docs/scale.md; here one photo crosses the real
link and `onboard sync`'s own peak resident set must stay within the issue's 256 MiB (the JPEG
XL encode runs in a child process, photocodec/child.py, whose peak is reported, not bounded).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_memory import GOAL_RSS_BYTES, main
from photocodec import jxl


# ~90 s on a busy 2-core machine (making a 12-MP photo, two interpreters, libjxl both ways): -m slow.
@pytest.mark.slow
@pytest.mark.skipif(not jxl.backends(), reason="no JPEG XL codec on this machine")
def test_memory_benchmark_runs_on_one_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--total-mb", "1", "--dir", str(tmp_path), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["published"] == figures["photos"] == 1
    assert 0 < figures["onboard_kib"] * 1024 <= GOAL_RSS_BYTES
    assert figures["onboard_child_kib"] > 0 and figures["ground_kib"] > 0  # every column measured
