"""Issue 14, one request's deadline while ground answers others (docs/link.md "A lone
deadline"). The deadline calls the link down (a dark that has just begun looks the same at
that moment), and the next answer calls it back; but a return after less than the path's round
trip unheard was no dark: no burst begins (the send gate does not restart as after a start)
and the path's round trip is kept. Virtual, cuts profile: 7 such downs in 4 of seeds 17-26,
ground heard 0.01-0.27 s before each.

The rule is sans-IO: examples for each side, then a property over random schedules of
answers, deadlines, cuts and darks.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from link_support import committed_answer, live_sender, text_post

from protocol.transfer import LinkDown, LinkUp, TransferSender

RTT = 1.4


def _flying(s: TransferSender, posts: int, now: float, first: int = 100) -> dict[int, Any]:
    """``posts`` text posts handed out at ``now``: their requests by seq."""
    for i in range(posts):
        text_post(s, first + i, now)
    return {o.seq: o for o in s.data_to_send(now)}


def _answer(s: TransferSender, o: Any, now: float) -> None:
    """Ground's answer to ``o``: the post committed whole."""
    t = s._transfers.get(o.key)  # noqa: SLF001
    s.receive(committed_answer(o.seq, o.key, t.spec.size_bytes if t is not None else 0), now)


def _events(s: TransferSender) -> list[Any]:
    return list(iter(s.next_event, None))


def _down_at_a_deadline(answered_before: float) -> tuple[TransferSender, dict[int, Any], float]:
    """Three posts in flight and a fourth sent a second later; two answered
    ``answered_before`` s before the third's deadline, which then passes (the link called down)."""
    s = live_sender(RTT)
    flying = _flying(s, 3, RTT)
    seqs = sorted(flying)
    deadline = flying[seqs[2]].deadline
    flying |= _flying(s, 1, RTT + 1.0, first=200)  # (its deadline a second later)
    for seq in seqs[:2]:
        _answer(s, flying.pop(seq), deadline - answered_before)
    _events(s)
    s.handle_timeout(deadline)
    flying.pop(seqs[2])
    assert len(flying) == 1
    (down,) = _events(s)
    assert isinstance(down, LinkDown) and not s.link_up
    return s, flying, deadline


def test_an_answer_just_after_a_lone_deadline_is_no_return_from_a_dark() -> None:
    """Ground answered 0.09 s before the deadline and answers again 0.1 s after it: the link
    is back, but no burst begins and the path's round trip is kept."""
    s, flying, deadline = _down_at_a_deadline(0.09)
    burst, path = s.burst_ends_at, s.path_rtt_s
    _answer(s, flying.popitem()[1], deadline + 0.1)
    assert s.link_up and isinstance(_events(s)[0], LinkUp)
    assert s.burst_ends_at == burst and s.path_rtt_s == path == RTT
    assert not s.burst_recent(deadline + 0.1)


def test_a_return_after_a_silence_longer_than_the_path_is_a_burst() -> None:
    """Unheard for more than the path's round trip across the down: a dark, as before."""
    s, flying, deadline = _down_at_a_deadline(0.09)
    back = deadline - 0.09 + RTT + 0.01
    _answer(s, flying.popitem()[1], back)
    assert s.link_up and s.burst_recent(back)
    assert s.burst_ends_at == back + s.config.clamp_hold_rtts * RTT


@settings(max_examples=300, deadline=None)
@given(
    rtt=st.floats(0.2, 3.0),
    posts=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(1.0, 3.0), st.booleans()), max_size=40),
    dark=st.tuples(st.floats(0.0, 60.0), st.floats(0.0, 30.0)),
)
def test_a_burst_begins_at_a_return_exactly_when_ground_was_unheard_longer_than_the_path(
    rtt: float, posts: list[tuple[float, float, bool]], dark: tuple[float, float]
) -> None:
    """A busy link: posts every (gap) seconds, each answered after (so many) round trips or
    never (its deadline passes while the others are answered), and one dark in which nothing
    is answered; every deadline the sender names is taken. At each return a burst begins if
    and only if ground went unheard across the down for longer than the path's round trip,
    and otherwise the path's round trip is kept."""
    s = live_sender(rtt)
    dark_from, dark_to = rtt + dark[0], rtt + dark[0] + dark[1]
    sends, answers, now = [], {}, rtt
    for i, (gap, rtts, answered) in enumerate(posts):
        now += gap
        sends.append((now, i, rtts if answered else None))
    returns = {"dark": 0, "quick": 0}
    for at, i, rtts in sends:
        _run_until(s, at, answers, returns)
        text_post(s, i, at)
        for o in s.data_to_send(at):
            back = at + (rtts or 0) * rtt
            if rtts is not None and not dark_from <= back <= dark_to:
                answers[o.seq] = (back, o)
    _run_until(s, now + 400.0, answers, returns)


def _run_until(s: TransferSender, end: float, answers: dict[int, Any], returns: dict[str, int]) -> None:
    """Deliver the answers and take the deadlines due before ``end``, in time order."""
    while True:
        due = s.next_deadline()
        nxt = min(answers.values(), key=lambda a: a[0], default=None)
        if nxt is not None and nxt[0] <= end and (due is None or nxt[0] <= due):
            at, o = answers.pop(nxt[1].seq)
            if o.seq in s._requests:  # noqa: SLF001  (not given up on already)
                _answer_checked(s, o, at, returns)
        elif due is not None and due <= end:
            s.handle_timeout(due)
            _events(s)
        else:
            return


def _answer_checked(s: TransferSender, o: Any, at: float, returns: dict[str, int]) -> None:
    path, unheard = s.path_rtt_s, at - s._down_heard_at  # noqa: SLF001
    was_up, burst_at = s.link_up, s._burst_at  # noqa: SLF001
    _answer(s, o, at)
    _events(s)
    if was_up:
        return
    from_dark = path is None or unheard > path
    returns["dark" if from_dark else "quick"] += 1
    event("a return from a dark" if from_dark else "a return with no dark (a lone deadline)")
    assert s._burst_at == (at if from_dark else burst_at)  # noqa: SLF001
    if not from_dark:
        assert s.path_rtt_s is not None and path is not None and s.path_rtt_s <= path
