"""The live-link benchmark's virtual matrix stays runnable, cold and warm (figures printed,
never asserted as timings): `bench_link.py --virtual --warm SECONDS` starts each run remembering
a pass on the same link (docs/link.md "A start on a fast, long link it remembers")."""

from __future__ import annotations

import pytest

from benchmarks.bench_link import _modelled, _virtual_one, print_table


def test_a_cold_and_a_warm_run_report_their_figures(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        _virtual_one(("fill-rtt0.6-loss0", "transfer", 0.75, 7, "photo-backlog", warm, None))
        for warm in (0.0, 20.0)
    ]
    assert [r["warm_s"] for r in rows] == [0.0, 20.0]
    for r in rows:
        assert 0.5 < r["goodput"] <= 1.0 and r["cuts"] == 0
    print_table(rows[1:], 0.75, [7], [], ["fill-rtt0.6-loss0"], ["transfer"])
    out = capsys.readouterr().out
    assert "remembering a 20 s pass on the same link" in out
    assert "| fill-rtt0.6-loss0 |" in out


def test_the_model_runs_the_congestion_control_asked_for() -> None:
    """--tcp-cc: the model's congestion control (a real run's where simlink models it: the
    real-time matrix's virtual column once called this with too few arguments)."""
    assert _modelled("cubic") == "cubic" and _modelled("reno") == "reno"
    assert _modelled("bbr") is None and _modelled(None) is None
    rows = {
        cc: _virtual_one(("fill-rtt1.4-loss1", "transfer", 0.75, 7, "photo-backlog", 0.0, cc))
        for cc in ("reno", None)
    }
    assert rows["reno"]["tcp_cc"] == "reno" and rows[None]["tcp_cc"] == "cubic"
    assert rows["reno"]["goodput"] != rows[None]["goodput"]
