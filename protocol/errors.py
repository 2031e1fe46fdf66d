"""The protocol's one exception hierarchy.

    ProtocolError
    ├── LocalProtocolError   the caller misused the API (a bug on this side)
    └── RemoteProtocolError  the peer's bytes are bad; carries a stable ``code``

A remote error's ``code`` is stable across versions: ground records it and sends it
back to the astronaut in a rejection receipt, so never rename one (docs/PROTOCOL.md §7).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    NOT_A_BUNDLE = "not_a_bundle"
    UNSUPPORTED_VERSION = "unsupported_version"
    TRUNCATED = "truncated"
    TRAILING_DATA = "trailing_data"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    MALFORMED = "malformed"
    LIMIT_EXCEEDED = "limit_exceeded"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNKNOWN_CODEC = "unknown_codec"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    BAD_SIGNATURE = "bad_signature"
    AUTHOR_MISMATCH = "author_mismatch"
    MEDIA_MISSING = "media_missing"
    MEDIA_HASH_MISMATCH = "media_hash_mismatch"
    MEDIA_SIZE_MISMATCH = "media_size_mismatch"
    REPLAY = "replay"
    DUPLICATE_ITEM = "duplicate_item"
    RULE_VIOLATION = "rule_violation"
    UNKNOWN_ACCOUNT = "unknown_account"
    TRANSFER = "transfer"
    # Body version 2's rendition consents (docs/PROTOCOL.md §3.1).
    RENDITION_NOT_A_TARGET = "rendition_not_a_target"
    RENDITION_DUPLICATE = "rendition_duplicate"


class ProtocolError(Exception):
    """Base of every error raised by ``protocol``."""


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol does not allow (e.g. build an empty post)."""


class RemoteProtocolError(ProtocolError):
    """Bytes from the other side broke a rule; ``code`` says which, the message says where."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message
