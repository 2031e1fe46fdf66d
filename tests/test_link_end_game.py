"""Issue 14's tail: once nothing is left to send, a stream that would idle sends again a chunk
still crawling on a loss-slowed stream (``SenderConfig.end_game``, docs/link.md). Ground keeps
ranges, so whichever copy lands first counts: nothing stored is lost or written twice, and the
duplicates in flight stay bounded."""

from __future__ import annotations

import dataclasses
import heapq
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st
from test_transfer import Ground, add, make_pair

from protocol.transfer import Outgoing, SenderConfig, TransferDone, TransferSender, WriteChunk
from protocol.transfer_sender import TState
from protocol.transfer_wire import TransferKey

CFG = SenderConfig(
    window=4,
    initial_streams=4,
    max_window=8,
    query_streams=2,
    initial_chunk_bytes=4096,
    min_chunk_bytes=1024,
    max_chunk_bytes=8192,
    end_game_piece_bytes=2048,
    end_game=True,
    end_game_budget=0.5,
)


class _Run:
    """Sender and ground over a link whose every request takes its own time to arrive (a
    crawling stream), answers half an RTT after ground has it; ground stores in arrival order."""

    def __init__(self, cfg: SenderConfig, uploads: list[bytes], delays: list[float]) -> None:
        pair = make_pair()
        self.sender = pair.sender = TransferSender(cfg, 0.0)
        self.ground: Ground = pair.ground
        self.keys = {add(pair, data): data for data in uploads}
        self.delays = delays
        self.written = 0  # bytes ground wrote: each stored byte once
        self.copies_over_bound = 0
        self.done_at: dict[TransferKey, float] = {}
        drain = self.ground.drain

        def counting_drain(now: float) -> None:
            r = self.ground.receiver
            events = []
            while (ev := r.next_event()) is not None:
                events.append(ev)
                if isinstance(ev, WriteChunk):
                    self.written += len(ev.data)
            r._events.extendleft(reversed(events))  # noqa: SLF001 - handed on as they came
            drain(now)

        self.ground.drain = counting_drain  # type: ignore[method-assign]

    def run(self, until: float = 3_000.0) -> float:
        """Run until the sender is idle; returns when it was."""
        s, q, tick, now, sent = self.sender, [], count(), 0.0, 0
        while now < until and not s.idle:
            outs = s.data_to_send(now)
            for o in outs:
                heapq.heappush(
                    q, (now + self.delays[sent % len(self.delays)], next(tick), "arrive", o.seq, o.data)
                )
                sent += 1
            if any(s._requests[o.seq].copy for o in outs):  # noqa: SLF001
                self._check_copies()  # as each copy leaves: the bound moves with the rate
            d = s.next_deadline()
            if q and (d is None or q[0][0] <= d):
                now, _, what, seq, data = heapq.heappop(q)
                if what == "arrive":
                    resp = self.ground.handle(data, now)
                    heapq.heappush(q, (now + 0.5, next(tick), "answer", seq, resp or b""))
                else:
                    s.receive(data, now)
            elif d is not None:
                now = d
                s.handle_timeout(now)
            while (ev := s.next_event()) is not None:
                if isinstance(ev, TransferDone):
                    self.done_at[ev.key] = now
        return now

    def _check_copies(self) -> None:
        s = self.sender
        c, base = s.config, s.base_rtt_s or 0.0
        flying = sum(r.span[1] - r.span[0] for r in s._requests.values() if r.copy and r.span)  # noqa: SLF001
        if flying > max(c.end_game_piece_bytes, s.rate_bytes_s * base * c.end_game_max_rtts) + (
            c.end_game_piece_bytes * 5 // 4
        ):
            self.copies_over_bound += 1


PHOTOS = [bytes([i]) * (20_000 + 3_000 * i) for i in range(4)]


@settings(max_examples=40, deadline=None)
@given(delays=st.lists(st.sampled_from([0.5, 0.5, 0.6, 0.8, 3.0, 12.0, 40.0]), min_size=1, max_size=40))
def test_the_end_game_never_loses_or_rewrites_a_stored_byte(delays: list[float]) -> None:
    run = _Run(CFG, PHOTOS, delays)
    run.run()
    assert run.sender.idle
    assert {k: run.ground.committed.get(k) for k in run.keys} == run.keys  # every byte, once committed
    assert run.written == sum(map(len, PHOTOS))  # no stored byte written twice
    assert run.copies_over_bound == 0
    s = run.sender
    assert s.stats.end_game_bytes <= s.config.end_game_budget * s.stats.chunk_bytes  # and in all


def test_a_crawling_chunk_is_sent_again_and_the_upload_ends_sooner() -> None:
    """The fifth request (a chunk) crawls for 9 s (its deadline is 10 s); every other
    arrives in half a second."""
    delays = [0.5] * 4 + [9.0] + [0.5] * 200
    ended = {}
    for on in (True, False):
        run = _Run(dataclasses.replace(CFG, end_game=on), PHOTOS[:1], delays)
        run.run()
        ended[on] = max(run.done_at.values())
        assert run.ground.committed == run.keys and run.written == len(PHOTOS[0])
        assert (run.sender.stats.end_game_bytes > 0) is on
    assert ended[True] < ended[False] - 4


def test_no_copy_while_a_stream_has_new_bytes_to_carry() -> None:
    """A copy goes only when no open upload has bytes neither acknowledged nor in flight."""
    run = _Run(CFG, [bytes([i]) * 30_000 for i in range(12)], [0.5, 0.5, 9.0, 0.6, 25.0])
    s = run.sender
    send = s.data_to_send
    copies = 0

    def checked(now: float) -> list[Outgoing]:
        nonlocal copies
        out = send(now)
        for o in out:
            if s._requests[o.seq].copy:  # noqa: SLF001
                copies += 1
                for t in s._transfers.values():  # noqa: SLF001
                    assert not (t.state is TState.SENDING and t.open_seq is None and s._gaps(t))  # noqa: SLF001
        return out

    s.data_to_send = checked  # type: ignore[method-assign]
    run.run()
    assert run.ground.committed == run.keys and copies > 0
    assert run.written == 12 * 30_000


def test_a_trickle_of_uploads_pays_for_no_copies() -> None:
    """The default budget (2 % of the bytes sent): one small photo whose chunk crawls gets no
    copy; the end game is for the tail of a large backlog."""
    cfg = dataclasses.replace(CFG, end_game_budget=SenderConfig().end_game_budget)
    run = _Run(cfg, PHOTOS[:1], [0.5] * 4 + [9.0] + [0.5] * 200)
    run.run()
    assert run.ground.committed == run.keys and run.sender.stats.end_game_bytes == 0
