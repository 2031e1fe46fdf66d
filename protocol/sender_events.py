"""What the station sender takes and gives (sans-IO values): ``TransferSpec`` in, ``Outgoing``
requests out, and the events a driver reads with ``TransferSender.next_event``."""

from __future__ import annotations

from dataclasses import dataclass

from .transfer_wire import TransferKey, UploadState


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferSpec:
    """One thing to move: its key and size, who it is for (fairness) and its urgency."""

    key: TransferKey
    size_bytes: int
    owner: str
    # Lower goes first: 0 for text (bundles), 1 for photos (blobs).
    priority: int = 1
    # Keys that must be committed on ground before this one may start (a bundle waits for
    # the photos it references).
    depends_on: tuple[TransferKey, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """One request to carry: its frame bytes and when to give up waiting for the answer."""

    seq: int
    data: bytes
    deadline: float
    key: TransferKey | None
    payload_bytes: int  # chunk bytes inside (0 for OPEN/RECEIPTS)
    # If the request needs a new connection: the shared race's step (``race_every_s``): another
    # attempt this often while any request waits; whichever connects serves the next one.
    race_every_s: float | None = None
    # While the link is believed up (no ``race_every_s``): if the request's new connection has
    # no answer after this long, the driver asks ``TransferSender.connect_unanswered``; given a
    # step, the request also joins the shared race (its first connect still under way: the
    # first to connect serves it). None: no such timer (racing from the start).
    race_after_s: float | None = None
    # A text post written in the dark (``SenderConfig.hedge_dark_posts``): a copy of the request
    # the driver may send as well, on a spare connection the race made, never on a new one.
    # The same OPEN without the receipts cursor, so its answer is a bare STATUS (the station
    # asks for receipts on its own if the copy's answer is the first). The first answer
    # counts (the sender ignores a second with the same seq); the request failed only once
    # every copy did. None: no copy.
    hedge: bytes | None = None
    # A text post sent while the link is believed up (``SenderConfig.hedge_kept_posts``): the
    # copy the driver sends on a new connection if the request went on a kept connection and
    # its bytes are still unacknowledged ``race_after_s`` after they were written (ask
    # ``TransferSender.kept_unacked`` for the race's step first). The same OPEN as ``hedge``.
    copy_if_unacked: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferProgress:
    key: TransferKey
    acked_bytes: int
    size_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferDone:
    key: TransferKey
    state: UploadState  # COMMITTED or REJECTED
    code: str = ""
    message: str = ""
    # Ground's answer carried receipts (a ReceiptsReceived follows this): no need to ask.
    with_receipts: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptsReceived:
    document: bytes
    next_since: int
    more: bool
    # They came in the answer to a bundle's OPEN (``open_receipts_since``), not to a RECEIPTS
    # request of ``request_receipts``.
    with_open: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkUp:
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDown:
    at: float
    reason: str
    retry_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkFatal:
    code: str
    message: str


SenderEvent = TransferProgress | TransferDone | ReceiptsReceived | LinkUp | LinkDown | LinkFatal
