"""orbitpost's wire format and rules: pure code, bytes and values in and out, no I/O.

See docs/PROTOCOL.md for the byte layout this package implements.
"""

from .bundle import BlobPayload, BundleHeader, VerifiedBundle, build_bundle, read_header, verify_bundle
from .errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from .keys import KnownKey, SigningKey, fingerprint, format_public_key, key_id, parse_public_key
from .limits import DEFAULT_LIMITS, Limits
from .model import Cancel, Item, MediaRef, Post, Retract, decode_item, encode_item
from .signing import SignedItem, VerifiedItem, sign_item, verify_item

__all__ = [
    "DEFAULT_LIMITS",
    "BlobPayload",
    "BundleHeader",
    "Cancel",
    "ErrorCode",
    "Item",
    "KnownKey",
    "Limits",
    "LocalProtocolError",
    "MediaRef",
    "Post",
    "ProtocolError",
    "RemoteProtocolError",
    "Retract",
    "SignedItem",
    "SigningKey",
    "VerifiedBundle",
    "VerifiedItem",
    "build_bundle",
    "decode_item",
    "encode_item",
    "fingerprint",
    "format_public_key",
    "key_id",
    "parse_public_key",
    "read_header",
    "sign_item",
    "verify_bundle",
    "verify_item",
]
