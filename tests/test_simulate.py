"""simulate.py in virtual time: the documented command works and a seed fixes the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from simlink.profile import load_profile
from simlink.report import build_report
from simlink.virtual import run_virtual
from simlink.workload import load_workload

REPO_ROOT = Path(__file__).resolve().parent.parent


def _report(seed: int, hours: float = 3.0, profile: str = "iss-ku") -> dict:
    r = run_virtual(
        load_profile(profile), load_workload("crew-day"), astronauts=4, duration_s=hours * 3600, seed=seed
    )
    return build_report(r)


def test_same_seed_identical_report() -> None:
    a, b = _report(11), _report(11)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a != _report(12)


def test_virtual_run_delivers_everything_on_a_good_link() -> None:
    rep = _report(5, hours=6)
    p = rep["posts"]
    assert (
        p["queued"] > 5 and p["published"] >= p["queued"] - 2
    )  # a post made in the last seconds may be in flight
    assert rep["bytes"]["on_wire"] > 0.5 * rep["bytes"]["payload"]
    assert rep["latency_s"]["text_only"]["p50"] < 60


def test_the_one_post_per_bundle_baseline_still_runs() -> None:
    """`simulate.py --transfer bundle-post` (the baseline before the resumable transfer) delivers
    what the link allows: it had broken silently when exports began keeping a bundle's hash."""
    r = run_virtual(
        load_profile("iss-ku"),
        load_workload("burst"),
        astronauts=3,
        duration_s=1800,
        seed=5,
        transfer="bundle-post",
    )
    rep = build_report(r)
    assert rep["transfer"].startswith("bundle-post")
    p = rep["posts"]
    # Posts written in the last dark window of the half hour may still wait onboard.
    assert p["queued"] > 5 and p["rejected_by_ground"] == 0 and p["published"] >= 0.8 * p["queued"]
    assert p["published"] + p["awaiting_publication"] + p["still_queued_onboard"] == p["queued"]


def test_documented_command(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "simulate.py",
        "--profile",
        "iss-ku",
        "--astronauts",
        "4",
        "--hours",
        "24",
        "--seed",
        "7",
    ]
    res = subprocess.run(
        [*cmd, "--report", str(out), "--quiet"],
        cwd=REPO_ROOT,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "latency queued→published" in res.stdout and "goodput/rate" in res.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["profile"]["name"] == "iss-ku" and rep["duration_s"] == 86_400
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same command again: the very same report
    out2 = tmp_path / "out2"
    res2 = subprocess.run(
        [*cmd, "--report", str(out2), "--quiet"],
        cwd=REPO_ROOT,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res2.returncode == 0, res2.stderr
    assert (out / "report.json").read_bytes() == (out2 / "report.json").read_bytes()


def test_bad_profile_file_one_line_error(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[link]\nto_ground_kbit_s = 0\nto_station_kbit_s = 10\none_way_delay_ms = 1\n')
    res = subprocess.run(
        [
            sys.executable,
            "simulate.py",
            "--profile",
            str(bad),
            "--hours",
            "1",
            "--report",
            str(tmp_path / "o"),
        ],
        cwd=REPO_ROOT,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: {bad}: field 'link.to_ground_kbit_s' must be >= 0.1, got 0"
    ]


def test_summary_header_says_the_duration_as_a_person_would() -> None:
    from simlink.report import fmt_duration, summary

    assert [fmt_duration(s) for s in (30, 300, 5400, 86_400, 21_600)] == [
        "30 s",
        "5 min",
        "90 min",
        "24 h",
        "6 h",
    ]
    r = run_virtual(load_profile("iss-ku"), load_workload("crew-day"), astronauts=1, duration_s=300, seed=7)
    head = summary(build_report(r)).splitlines()[0]
    assert (
        head
        == "virtual run: profile iss-ku, 1 astronaut, 5 min, workload crew-day, sent by the transfer driver"
    )
