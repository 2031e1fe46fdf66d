"""The scale benchmark stays runnable in its quickest mode (figures printed, never asserted as timings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_scale import main


def test_scale_benchmark_runs_on_a_small_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "30", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 30 |"))
    # Every column filled: accept, whole ingest, disk per post, both floors.
    assert len([c for c in row.split("|") if c.strip()]) == 7
    assert len(list((tmp_path / "ingest-30" / "archive").glob("*/*/record.json"))) == 30
