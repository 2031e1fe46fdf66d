"""The station sender's tunables (``SenderConfig``): every constant of the live link's sending
rules, each with the measurement it was chosen on (docs/link.md). The rules that read them
are in protocol/transfer_sender.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderConfig:
    # Requests in flight at once, each on its own TCP connection (parallel streams, as
    # GridFTP/bbcp do): at least ``window``; up to ``max_window`` while the link has room the
    # streams do not use (``_size_streams``, docs/link.md). 4 keeps a clean 2 Mbit/s, 1.4 s
    # RTT link busy; at 1 % loss a 1.5 Mbit/s, 1.4 s link needs ~30 (each stream is held to
    # its Mathis bound and idles a round trip between requests). Starting at 8 fills a clean
    # link sooner after a loss of signal (8 initial TCP windows: 112 kB in the first round trip).
    window: int = 8
    # Streams at the start, before any round trip has been measured (within window..max_window).
    # 16 fills a long path sooner: 16 initial TCP windows, ~224 kB in the first round trip,
    # against 8's ~112 kB: at 2.6 s RTT, 1 % loss the start idled ~11 s with 8 (docs/link.md).
    # A short clean path sheds the excess within a few round trips.
    initial_streams: int = 16
    # 160 at most (with ``query_streams`` and the pool's 2, 178 connections: ground's edge
    # allows 192 per address, `ground serve --conns-per-address`). 96 held a 6 Mbit/s, 2.6 s,
    # 1 % link to 0.57-0.61 of its rate (~130 loss-bound streams fill it); 160 reaches
    # 0.67-0.69, 128 less (192 and 256 were tried on one seed only; docs/link.md "A faster
    # link: 160 streams"). On 1.5 Mbit/s the caps below bind long before. And ...
    max_window: int = 160
    # ... at most this many per second of the least round trip (at least ``streams_floor_max``):
    # one stream's Mathis bound falls as 1/RTT, so a longer path needs more for the same loss.
    # A flat 32 held 2.6 s RTT, 1 % loss to 0.68 of 1.5 Mbit/s; this (62 there) reaches
    # ~0.90 with ``query_streams``, and 1.4 s keeps 34, where a flat 64 had cost 0.91 -> 0.85.
    streams_per_rtt_s: float = 24.0
    # ... and up to this many while the link shows no queue at all (the standing round trip
    # under ``lossy_queue_ratio`` × the base): every stream is held by random loss, and the
    # link idles (3 %: 62 streams left 2.6 s at 0.79-0.83, docs/link.md "More streams where
    # every stream is loss-bound"); where a queue forms the extra streams only share it (2.6 s
    # / 1 % lost a point with them always on), so they are shed again. 1.25 and 1.05 did worse.
    lossy_streams_per_rtt_s: float = 32.0
    lossy_queue_ratio: float = 1.1
    streams_floor_max: int = 32
    # ... or, on a faster link, as many as leave each stream this share of what the last
    # interval delivered in the least round trip (nominal; with no queue,
    # ``lossy_stream_share_bytes``). Nominal: 1.5 x the share 24 a second leave each stream of
    # 1.5 Mbit/s, where they were measured, so there those still bind (an interval of bunched
    # answers after a start read 1.5 x the link's rate). The per-second caps alone held a 6
    # Mbit/s link at 1.4 s / 1 % to 45 streams and 0.52-0.55 of its rate (docs/link.md "A
    # faster link"). With no queue, a stream at 3 % loss holds ~7 segments a round trip
    # (Mathis) and idles one between its requests, ~5 kB: 8.8 kB (1.5 x, as nominal) pinned a
    # 6 Mbit/s link at 0.6 s / 3 % to the 32-stream floor at 0.57-0.59 of its rate while it
    # showed no queue at all (docs/link.md "No queue: a smaller share").
    stream_share_bytes: int = 11_719
    lossy_stream_share_bytes: int = 4_400
    # Requests that carry no data (an OPEN asking what ground has, a commit poll, receipts)
    # may be in flight this many beyond ``streams``, so a stream never idles a round trip
    # behind a request that moves nothing: the next photos are opened while the last ones'
    # chunks still fly, and every stream always has a chunk to carry. Before, a burst of
    # OPENs held up to a quarter of the streams at 2.6 s RTT (0.87 of the link there at 1 %
    # loss; ~0.895 with these, 0.92 without loss, docs/link.md). 16: 8 did as well on some
    # seeds, 1-2 points worse on others.
    query_streams: int = 16
    # Photos are opened ahead while an astronaut's open ones hold less than its share of this
    # many chunks for every stream (``_ready_enough``). 1 cost 1-2 points at 2.6 s / 1 % (an
    # OPEN's round trip left streams without a chunk); 4 did as well as opening everything.
    open_ahead_rounds: float = 4.0
    # The base RTT is the least seen this long (a route or relay change moves it).
    rtt_window_s: float = 300.0
    # RTT this far above the base: the link's queue is filling (the link is the limit).
    queue_rtt_ratio: float = 1.5
    # Link version 4 (protocol/window_clamp.py): connections are clamped while the link holds a
    # queue (the last interval's standing RTT ≥ this × the base), and for ``clamp_hold_rtts``
    # base RTTs after the link's return (every stream starting again at once). Streams held by
    # random loss alone are not clamped.
    clamp_queue_ratio: float = 1.1
    clamp_hold_rtts: float = 10.0
    # Streams added per interval until the queue is first seen, as a fraction of ``streams``.
    start_growth: float = 0.5
    # Small requests kept in flight (a photo opened ahead when fewer fly): the round trips
    # the stream count is sized by (``_needs_sample``).
    sample_requests: int = 1
    # Bare OPENs a start sends ahead of its first flights when every upload would otherwise take
    # a stream with its first chunk (``_first_sample``), while no round trip is measured. Sent
    # together, the first answer to come back sets the base: with one, a segment of its answer
    # lost read the first base up to 3 s long on a 1.4 s path, and a cut seconds later then
    # looked like a slow link to the send gate (docs/link.md "The first sample").
    first_samples: int = 2
    # A request carrying at most this much (an OPEN, a commit poll, receipts, a small bundle
    # inline) crosses in a few segments, so its round trip is the path's RTT plus the queue
    # ahead of it at the link: the end-to-end sample the stream count is sized from.
    small_request_bytes: int = 4096
    # Chunk bounds: 1 KiB keeps framing under 10 % at 10 kbit/s; 512 KiB caps what one cut
    # can waste on a fast link.
    min_chunk_bytes: int = 1024
    max_chunk_bytes: int = 512 * 1024
    # All chunks in flight together stay under this (chunks shrink as streams grow): a fast
    # link gives 32 streams 64 KiB each, not 512 KiB, so the station's memory and ground's
    # held request bodies (ground/body_limits.py) stay small; at 1.5 Mbit/s × 8 s it never binds.
    max_inflight_bytes: int = 2 * 1024 * 1024
    # ... or ``inflight_bdps`` round trips of what the last interval delivered, if more (at most
    # ``inflight_ceiling_bytes``): a request holds its bytes from its first byte sent until its
    # answer, a round trip after its last, and a loss-bound stream sends its chunk over several,
    # so ~1 BDP in flight (2 MiB at 6 Mbit/s and 2.6 s) leaves the link idle. 3: 2 and 4
    # gained less there (docs/link.md "In flight: round trips of the rate"); on 1.5 Mbit/s
    # links 2 MiB stays the more up to a 3.7 s round trip.
    inflight_bdps: float = 3.0
    # Half ground's body budget for one station (ground/body_limits.py: 8 × 4 MiB).
    inflight_ceiling_bytes: int = 16 * 1024 * 1024
    # Before the first rate sample (64 KiB ≈ 0.35 s of a 1.5 Mbit/s link on one stream).
    initial_chunk_bytes: int = 64 * 1024
    # A first flight's chunk (an OPEN carrying its upload's first bytes) at most this (None:
    # a chunk). 12 KiB fits one fresh connection's initial window with its request, so the
    # first round trip, sent before anything is measured and so held by no window, puts no
    # more in the network than TCP would: a cut 6 s into a 1.4 s start fell from ~1.1 to
    # 0.2-0.4 BDP in real time, but the link idles through the first round trips and at 2.6 s
    # / 1 % goodput fell under 0.9 (virtual 0.906 -> 0.900; docs/link.md). Not the default.
    first_flight_bytes: int | None = None
    # Aim for chunks that take this long to cross on one of ``streams`` at the estimated rate.
    # 8 s: a loss-limited stream spends most of its time sending, not idle a round trip
    # between requests; a cut costs only what is in the network (ground keeps the rest).
    chunk_time_s: float = 8.0
    # A geostationary relay: 500–1400 ms RTT; start pessimistic.
    initial_rtt_s: float = 1.5
    # The rate chunks are sized by before one is measured (and the last interval's, which
    # sizes the chunk bytes in flight): a start on a remembered link begins at its rate
    # (onboard/sync.py ``sized_by_memory``), not 4 kB/s (at 6 Mbit/s and 2.6 s its chunks
    # stayed at 13 kB, 2 MiB among 160 streams, for 11 s).
    initial_rate_bytes_s: float = 4000.0
    # No request is given less than this before it is declared lost.
    min_timeout_s: float = 10.0
    max_timeout_s: float = 300.0
    # Backoff while the link is down: probes are tiny, so keep the ceiling low enough to
    # notice a returning link within a few seconds.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 4.0
    # While the link is down, new connections race (Happy Eyeballs' connection attempt delay,
    # RFC 8305 §5, for one address; onboard/race.py): one race shared by every request waiting
    # for a connection starts another attempt each race step while any waits; whichever
    # connects serves the next waiting request. The step is ``race_down_rtts`` RTT divided among
    # the requests racing, so each waits ~0.2 RTT for its attempt after the link's return and a
    # lost SYN or SYN-ACK costs one step, not a whole 0.4 RTT as with a race per request
    # (measured, docs/link.md); but at most ``race_attempts_per_rtt`` attempts per RTT (each
    # that reaches ground holds a connection there until claimed or closed; ground's edge
    # allows 96 per address) and at most one per ``race_min_s`` (onboard/race.py enforces
    # that floor whatever it is told). While up, no race: the kernel's SYN retry is enough.
    race_down_rtts: float = 0.2
    race_attempts_per_rtt: float = 40.0
    race_min_s: float = 0.05
    # While down, a request (the probe) waits this long: its connection keeps racing all the
    # while, so the link's return is seen within 0.4 RTT. A probe giving up loses the
    # attempt then under way, so the link's return must not fall in its last RTT: at 300 s
    # that is ~1 % of returns on a 2.6 s path (at 60 s it was 4 %, measured).
    down_probe_timeout_s: float = 300.0
    # While the link is believed up, a new connection for a request that has no answer after
    # ``suspect_after_rtts`` small-request round trips (the path's least, or the last one's
    # if longer: ``race_after_s``; at least ``suspect_min_s``) makes the request *suspect*:
    # the link may have gone dark with nothing in flight to notice it (docs/link.md "After a
    # loss of signal"), so it joins the shared race, and so does every request needing a
    # connection after it, until ground answers anything. 2 round trips: a SYN-ACK behind a
    # queue that grew since the last sample still comes in time. 1 s: TCP's initial RTO (RFC
    # 6298 §2.1), when the kernel sends the SYN again itself; a short path's lost SYN is then
    # raced once the kernel's own retry is under way, not before. The link is called down
    # only as before (a request's failure).
    suspect_after_rtts: float = 2.0
    suspect_min_s: float = 1.0
    # A dark that begins while nothing is in flight is noticed by nothing: a post written just
    # before the link's return left on a plain connect whose SYN the dark took, and waited
    # for the kernel's retry (up to 2.7 RTT after the return on ``iss-ku``), or, where the
    # dark closed nothing, on the kept connection for TCP's backed-off retransmission (5.5
    # RTT). So while the link is believed up and nothing is in flight, the driver asks ground
    # something small (GET /v1/health on its kept connection) once it has heard nothing from
    # ground for this long (``heartbeat_at``). That ask, or the driver's warm-up connect,
    # unanswered for ``race_after_s`` makes the link *silent* (``ground_unanswered``): every
    # request needing a connection races from its first attempt, as after a suspect connect,
    # until ground answers anything (docs/link.md "A dark with nothing in flight"). 60 s, as
    # keep-alive pings usually are: darks last minutes (4-45 in the profiles), and each
    # heartbeat costs ~343 B with TCP/IP headers (~45 bit/s of an idle link; 30 s cost 6
    # points of `iss-ku`'s wire on a light day, 60 s 4, 120 s 2). None: no heartbeat, and the
    # driver's asks unanswered tell the sender nothing (as before 5 Dec, ninth session).
    heartbeat_s: float | None = 60.0
    # While down, small uploads (text) probing at once besides the first (``_small_probes``).
    down_small_probes: int = 15
    # While down, a probe's new connection answered across the path (it began at least
    # ``up_on_connect_rtts`` × the least round trip after the probe was handed out) calls the
    # link back at once: ground's host answered a SYN, so every stream may start a round trip
    # before the probe's own answer would say so (docs/link.md "After a loss of signal"). A
    # connection made sooner proves nothing (a local TCP proxy accepts at once, dark or not):
    # the answer does, as before. None: only an answer calls the link up.
    up_on_connect_rtts: float | None = 0.5
    # While every byte is acked but ground has not committed yet, ask again this often.
    commit_poll_s: float = 1.0
    # Uploads up to this size go whole inside their first OPEN (a text bundle is ~1 KiB);
    # if ground already had it, at most this much was sent for nothing.
    inline_bytes: int = 16 * 1024
    # End game (BitTorrent's, bbcp's): once nothing is left to send but bytes in flight, a
    # stream that would idle sends again a chunk that has been in flight this many base RTTs
    # more than the bytes in flight need at the estimated rate (a loss-slowed stream crawling
    # with it, not a queue), in pieces of ``end_game_piece_bytes`` (about
    # one initial TCP window: each crosses in one round trip on a fresh stream). Ground keeps
    # ranges, so whichever copy lands first counts and the other changes nothing. The whole
    # chunk, not its second half: ground stores a request's bytes only once its body is whole
    # (or cut), so half a crawling chunk sent again would still wait for the crawling first half.
    end_game: bool = True
    end_game_after_rtts: float = 1.5
    end_game_piece_bytes: int = 12 * 1024
    # Duplicate bytes in flight at once at most this many base RTTs of the estimated rate, and
    # in all at most this share of the bytes sent: through linkemu, a small app-limited
    # workload's chunks waited behind one another long enough to look crawling, and copies
    # added ~80 kB to 320 kB (docs/link.md). A 97 MB backlog at 2.6 s / 1 % loss copied
    # 1.2 % with a 2 % budget; 2 % let a CPU-loaded real-time run copy 15 kB of 765 kB.
    end_game_max_rtts: float = 1.0
    end_game_budget: float = 0.01
    # Hedged requests after a loss of signal (Dean & Barroso, "The Tail at Scale", 2013): a
    # text post written in the dark (a bundle whole inside its OPEN, a probe sent while the
    # link is down) comes with a copy (``Outgoing.hedge``) the driver sends on a spare
    # connection the race made at the link's return, if one comes. A lost segment of one
    # copy then costs nothing, not TCP's retransmission timeout (≥ 1.14 RTT); ground takes
    # the same OPEN twice exactly once (docs/link.md "After a loss of signal"). Only frames
    # up to ``small_request_bytes``; never while the link is up, so a lone post on a live
    # link costs what it did.
    hedge_dark_posts: bool = True
    # A short dark the heartbeat did not see (docs/link.md "A short dark"): a text post sent
    # while the link is believed up went on the kept connection, the dark took its segments,
    # and TCP's backed-off retransmission left it up to 7 RTT after the link's return. So a
    # text post on a kept connection whose bytes ground's TCP has not acknowledged after
    # ``race_after_s`` (``kept_unacked``) makes the link *silent*, as an unanswered heartbeat
    # does, and its copy (``Outgoing.copy_if_unacked``) races on a new connection; whichever
    # answer comes first counts. An acknowledgement, not an answer: ground holds a bundle's
    # answer until its publisher has tried the post (up to 2 s). False: the post waits on the
    # kept connection (as before 5 Dec, eleventh session).
    hedge_kept_posts: bool = True
    # A text post written while one of the driver's own asks (the heartbeat, a warm-up) is
    # unanswered finds the kept connection busy and needs a new one. If a dark took the ask,
    # it takes that SYN too, and the kernel's next comes 1 s later: published up to 2.29 RTT
    # after a short dark's return on `iss-ku` (11 of 4,644 posts over 2 RTT, docs/link.md "A
    # short dark"). Such a connect is suspect after this many least round trips instead of
    # ``race_after_s``, so the race sends a SYN every ``race_down_rtts`` from then on and one
    # crosses within half a round trip of any return: a few SYNs more for a post written in
    # the ~1 RTT a heartbeat is out (each minute of an idle link). None: as any other connect.
    race_beside_ask_rtts: float | None = 0.3

    @property
    def start_streams(self) -> int:
        """Streams at a sender's start: ``initial_streams`` within ``window``..``max_window``."""
        return min(self.max_window, max(self.window, self.initial_streams))
