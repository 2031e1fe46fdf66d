"""A text post written while one of the driver's own asks (the heartbeat, a warm-up) is out
finds the kept connection busy and needs a new one. If a short dark took the ask, it takes that
SYN too, and the kernel's next comes 1 s later: such posts were published up to 2.29 RTT after
the return on `iss-ku` (docs/link.md "A post beside a heartbeat"). Their connect now races
after ``race_beside_ask_rtts`` least round trips (0.3), not ``race_after_s`` (2).

Two layers: the sender's rule (sans-IO), and the simulator (a heartbeat carried into the last
second of a 58 s dark, a post written after it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from link_support import live_sender, text_post
from test_link_short_dark import _published

from protocol.transfer import SenderConfig, TransferSender, TransferSpec
from protocol.transfer_wire import TransferKey, TransferKind
from simlink.virtual import transfer_available

RTT = 0.6


def _photo(s: TransferSender, i: int, now: float) -> None:
    """A photo too large to copy: its OPEN never races early."""
    body = bytes([i % 256]) * 200_000
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(body + bytes([i])).digest())
    s.add(
        TransferSpec(key=key, size_bytes=len(body), owner="a", priority=1), lambda o, n: body[o : o + n], now
    )


def _early(s: TransferSender) -> float:
    after = s.race_after_s
    assert after is not None
    return min(after, max(s.config.race_min_s, 0.3 * RTT))


def test_a_text_post_beside_an_ask_races_early_until_the_ask_ends() -> None:
    s = live_sender(RTT)
    normal = s.race_after_s
    assert normal == pytest.approx(max(1.0, 2 * RTT))
    text_post(s, 0)
    (o,) = s.data_to_send(1.0)
    assert o.race_after_s == normal  # no ask out
    s.ground_asked(2.0)
    text_post(s, 1)
    (o,) = s.data_to_send(2.1)
    assert o.race_after_s == pytest.approx(_early(s)) == pytest.approx(0.18)
    s.ground_heard(2.7)
    text_post(s, 2)
    (o,) = s.data_to_send(2.8)
    assert o.race_after_s == normal
    s.ground_asked(3.0)
    s.ground_ask_ended(3.5)  # failed: nothing is out any more
    text_post(s, 3)
    (o,) = s.data_to_send(3.6)
    assert o.race_after_s == normal


def test_off_the_rule_changes_nothing_and_it_holds_without_the_kept_posts_copy() -> None:
    s = live_sender(RTT, SenderConfig(race_beside_ask_rtts=None))
    s.ground_asked(2.0)
    text_post(s, 0)
    (o,) = s.data_to_send(2.1)
    assert o.race_after_s == s.race_after_s
    uncopied = live_sender(RTT, SenderConfig(hedge_kept_posts=False))
    uncopied.ground_asked(2.0)
    text_post(uncopied, 0)
    (o,) = uncopied.data_to_send(2.1)
    assert o.copy_if_unacked is None and o.race_after_s == pytest.approx(_early(uncopied))


@dataclass(frozen=True)
class _Op:
    kind: str  # ask, heard, ended, text, photo


ops = st.lists(st.sampled_from(["ask", "heard", "ended", "text", "photo"]).map(_Op), max_size=30)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_only_a_text_post_while_an_ask_is_out_races_early(seq: list[_Op]) -> None:
    """Whatever the order of asks, answers, failures and posts: a text post's new connection
    races after ``race_beside_ask_rtts`` exactly while an ask is out, every other request after
    ``race_after_s``, and none later than that."""
    s = live_sender(RTT)
    asking = False
    now = 1.0
    for i, op in enumerate(seq):
        now += 0.05
        if op.kind == "ask":
            s.ground_asked(now)
            asking = True
        elif op.kind in ("heard", "ended"):
            (s.ground_heard if op.kind == "heard" else s.ground_ask_ended)(now)
            asking = False
        else:
            (text_post if op.kind == "text" else _photo)(s, i, now)
            for o in s.data_to_send(now):
                if o.race_after_s is None:
                    continue  # racing from its first attempt (the link silent or suspect)
                normal = s.race_after_s
                assert normal is not None and o.race_after_s <= normal
                early = o.copy_if_unacked is not None and asking
                assert o.race_after_s == pytest.approx(_early(s) if early else normal)


@pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")
@pytest.mark.parametrize("before_s", [0.1, 0.3, 0.5, 0.7])
def test_in_the_simulator_a_post_beside_a_heartbeat_in_the_dark_is_published_within_2_rtt(
    monkeypatch: pytest.MonkeyPatch, before_s: float
) -> None:
    """iss-ku, a 58 s dark that cuts nothing, the heartbeat sent 0.75 s before its end: a post
    written after it, ``before_s`` before the end, is published within 2 RTT of the return.
    Waiting out ``race_after_s`` (or the heartbeat's silence) it read 2.01-2.29 RTT."""
    now = _published(monkeypatch, before_s, dark_s=58.0, first_at_s=890.0)
    off = _published(monkeypatch, before_s, dark_s=58.0, first_at_s=890.0, race_beside_ask_rtts=None)
    assert now <= 2.0 < off, (now, off)
