"""The transfer state machines: a sender on the station, a receiver on ground (sans-IO).

Both move opaque frames (protocol/transfer_wire.py) and never touch a socket, file or
clock: time comes in as ``now`` (seconds, any monotonic origin). A driver — onboard's
aiohttp client, ground's aiohttp server, or the simulator with a virtual clock — only
carries request bytes one way and response bytes back, and advances time
(docs/PROTOCOL.md §8).

This module only re-exports; the code lives in modules named for what they hold:

- protocol/transfer_sender.py — the station side (``TransferSender``): windows, chunk
  sizing, resume after a cut, backoff, receipts requests; its config in
  protocol/sender_config.py, its specs, requests and events in protocol/sender_events.py.
- protocol/transfer_receiver.py — the ground side (``TransferReceiver``): staging records,
  durable ranges, commit, expiry; its config and events.
- protocol/transfer_wire.py — the frames both exchange; protocol/rangeset.py — byte ranges.
"""

from __future__ import annotations

from .sender_config import SenderConfig
from .sender_events import (
    LinkDown,
    LinkFatal,
    LinkUp,
    Outgoing,
    ReceiptsReceived,
    SenderEvent,
    TransferDone,
    TransferProgress,
    TransferSpec,
)
from .transfer_receiver import (
    BadRequest,
    CommitUpload,
    ReceiptsWanted,
    ReceiverConfig,
    ReceiverEvent,
    TransferReceiver,
    UploadChanged,
    UploadExpired,
    UploadRecord,
    WriteChunk,
)
from .transfer_sender import (
    FATAL_CODES,
    TRANSFER_FATAL_CODES,
    ChunkSource,
    SenderStats,
    TransferSender,
    TState,
)

__all__ = [
    "FATAL_CODES",
    "TRANSFER_FATAL_CODES",
    "BadRequest",
    "ChunkSource",
    "CommitUpload",
    "LinkDown",
    "LinkFatal",
    "LinkUp",
    "Outgoing",
    "ReceiptsReceived",
    "ReceiptsWanted",
    "ReceiverConfig",
    "ReceiverEvent",
    "SenderConfig",
    "SenderEvent",
    "SenderStats",
    "TState",
    "TransferDone",
    "TransferProgress",
    "TransferReceiver",
    "TransferSender",
    "TransferSpec",
    "UploadChanged",
    "UploadExpired",
    "UploadRecord",
    "WriteChunk",
]
