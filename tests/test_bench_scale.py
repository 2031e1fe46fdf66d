"""The scale benchmark stays runnable in its quickest mode (figures printed, never asserted as timings)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import multilingual
from benchmarks.bench_scale import main
from ground.platforms.archive import archived_posts


def test_scale_benchmark_runs_on_a_small_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpora = ["english"]
    if multilingual.load() or os.environ.get("CI") == "true":  # .ci/run installs Debian's fortunes-*
        corpora.append("multilingual")
    assert main(["--sizes", "30", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for corpus in corpora:
        row = next(line for line in out.splitlines() if line.startswith(f"| {corpus} | 30 |"))
        # Every column filled: accept, whole ingest (wall, CPU), disk per post, the three floors.
        assert len([c for c in row.split("|") if c.strip()]) == 10
        assert len(archived_posts(tmp_path / corpus / "ingest-30" / "archive")) == 30
