"""Issue 14: what a lone text post costs on the live link, measured in virtual time (the
simulator sends the shipped requests and ground's answers byte for byte, docs/simulation.md).

Goal: ≤ 2 × its bundle's bytes in each direction, for every text size. Link version 2
(docs/PROTOCOL.md §8.2): the bundle rides inside its OPEN and ground answers it, once it has
tried to publish the post, with the receipts inside the STATUS; one request, one answer.
The keep-warm GET /v1/health is a cost per hour of quiet, not per post: reported apart.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simlink.virtual
from simlink.profile import load_profile
from simlink.result import RunResult
from simlink.virtual import run_virtual, transfer_available
from simlink.workload import PlannedPost, accounts_for, load_workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import multilingual  # noqa: E402

pytestmark = pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")

# Far enough apart that each post is alone on the link (its exchange takes ~1 RTT).
GAP_S = 600.0
# A station's first receipts also carry ground's configuration once (the astronaut's enrolled
# accounts, 24 B here, docs/PROTOCOL.md §9.2): a cost per station, not per post. Each run
# starts with this post, left out of the per-post figures.
FIRST_POST = "first post of the station"
# One more account's publication receipt in ground's answer, at most (measured ~165 B).
RECEIPT_BYTES = 200
# The simulator publishes to the archive, whose URL is a long local path; archive layout 2's
# packed URL adds ".packs/<pack>.jsonl#<post id>" (~48 B) to it. That is the platform's
# payload, not the link's overhead: it is allowed for here and stated in docs/link.md (with a
# Mastodon or X URL of ~65 characters the bound holds without it; the shortest texts with the
# archive's URL come to ~2.13x down).
PACKED_URL_BYTES = 48


def _lone_posts(texts: list[str], accounts: int = 1, seed: int = 7) -> RunResult:
    """One virtual run on a clean iss-ku-rate link (0.6 s RTT): each text posted alone."""
    prof = dataclasses.replace(load_profile("iss-ku"), cuts_per_hour=0.0, loss=0.0, dark=(), orbit_s=0.0)
    wl = dataclasses.replace(
        load_workload("burst"),
        photo_post_fraction=0.0,
        backlog_posts_per_astronaut=0,
        posts_per_astronaut_per_hour=0.0,
        accounts_per_post=accounts,
    )
    plan = [
        PlannedPost(
            at_s=GAP_S * (i + 1), author="alice", text=t, photos=(), targets=accounts_for("alice", accounts)
        )
        for i, t in enumerate([FIRST_POST, *texts])
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simlink.virtual, "plan_posts", lambda *_a, **_k: plan)
        return run_virtual(prof, wl, astronauts=1, duration_s=GAP_S * (len(texts) + 2), seed=seed)


def _check_each_post(r: RunResult, texts: list[str], accounts: int = 1) -> list[tuple[int, int, int, int]]:
    """Every post published, each in one OPEN and no RECEIPTS request; returns per post
    (text bytes, bundle bytes, up, down) and asserts the bound: up ≤ 2 × the bundle; down
    ≤ 2 × the bundle plus, for each account after the first, its publication receipt (URL,
    the platform's id, state: ~165 B with the archive's URLs, what the astronaut asked for)."""
    assert r.refused_onboard == 0 and r.rejected == 0
    assert len(r.posts) == len(texts) + 1 and all(p.published_s is not None for p in r.posts)
    kinds = r.traffic_by_kind or {}
    assert set(kinds) <= {"open", "health"}, kinds  # no RECEIPTS request: the OPEN's answer had them
    assert kinds["open"]["requests"] == len(texts) + 1
    rows = []
    for text, (bundle, up, down) in zip(texts, r.bundle_opens[1:], strict=True):
        rows.append((len(text.encode()), bundle, up, down))
        assert up <= 2 * bundle, f"{len(text.encode())} B text: bundle {bundle} B, up {up} B"
        assert down <= 2 * bundle + PACKED_URL_BYTES * accounts + RECEIPT_BYTES * (accounts - 1), (
            f"{len(text.encode())} B text: bundle {bundle} B, down {down} B"
        )
    return rows


def _print(rows: list[tuple[int, int, int, int]], r: RunResult) -> None:
    print("\ntext B  bundle B  up B (x)      down B (x)")
    for text, bundle, up, down in rows:
        print(f"{text:6}  {bundle:8}  {up:4} ({up / bundle:.2f})  {down:4} ({down / bundle:.2f})")
    h = (r.traffic_by_kind or {}).get("health", {"requests": 0, "request_bytes": 0, "response_bytes": 0})
    print(f"keep-warm: {h['requests']} GET /v1/health, {h['request_bytes'] + h['response_bytes']} B")


def _held_out_spread() -> list[str]:
    """Held-out multilingual texts (benchmarks/multilingual.py, never trained on): the five
    shortest, then one at each tenth of the size distribution, and the longest."""
    _, held, _ = multilingual.split()
    by_size = sorted(held, key=lambda t: (len(t.encode()), t))
    picks = by_size[:5] + [by_size[len(by_size) * k // 10] for k in range(1, 10)] + by_size[-1:]
    return list(dict.fromkeys(picks))


def test_a_lone_text_post_costs_at_most_twice_its_bundle_each_way() -> None:
    if not multilingual.load():
        if os.environ.get("CI") == "true":  # .ci/run installs Debian's fortunes-*
            pytest.fail("the fortunes-* packages are missing")
        pytest.skip("Debian's fortunes-* packages are not installed")
    texts = _held_out_spread()
    r = _lone_posts(texts)
    rows = _check_each_post(r, texts)
    _print(rows, r)


def test_the_shortest_texts_and_three_accounts() -> None:
    """The shortest texts are the hardest case (a fixed ~150 B of HTTP per request against
    the smallest bundle); three accounts add three publication receipts to the answer."""
    texts = ["a", "ok", "🌍", "Hi!", "Привет"]
    r = _lone_posts(texts)
    _print(_check_each_post(r, texts), r)
    r3 = _lone_posts(texts[:2], accounts=3)
    _print(_check_each_post(r3, texts[:2], accounts=3), r3)


# Any script, any size a post may have (1..280 characters).
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=280
).filter(lambda t: t.strip() != "")


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_TEXT, min_size=3, max_size=5))
def test_the_bound_holds_for_any_text(texts: list[str]) -> None:
    """A property over text sizes and scripts: each lone post ≤ 2 × its bundle up and down."""
    _check_each_post(_lone_posts(texts), texts)
