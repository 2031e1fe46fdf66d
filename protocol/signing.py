"""Where signatures are made and checked.

An astronaut signs the exact body bytes prefixed with a domain tag, so a signature over a
post can never be replayed as a signature over anything else (docs/PROTOCOL.md §4).
On the wire a signed item is ``[body(bin), key_id(bin 8), signature(bin 64)]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .canonical import expect, expect_list
from .errors import ErrorCode, RemoteProtocolError
from .keys import KEY_ID_BYTES, KnownKey, SigningKey, key_id, verify_signature
from .limits import DEFAULT_LIMITS, Limits
from .model import Item, decode_item, encode_item

SIGNATURE_DOMAIN = b"orbitpost/item/v1\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedItem:
    """Body bytes plus who signed them; the unit packed into bundles."""

    body: bytes
    key_id: bytes
    signature: bytes

    def to_wire(self) -> list[bytes]:
        return [self.body, self.key_id, self.signature]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedItem:
    """A signed item whose signature, signer and body all checked out."""

    item: Item
    signed: SignedItem
    astronaut: str

    @property
    def fingerprint(self) -> str:
        return self.signed.key_id.hex()


def sign_item(key: SigningKey, item: Item) -> SignedItem:
    """Encode ``item`` canonically and sign it with ``key``."""
    body = encode_item(item)
    return SignedItem(body=body, key_id=key_id(key.public_key), signature=key.sign(SIGNATURE_DOMAIN + body))


def signed_item_from_wire(value: Any) -> SignedItem:
    """Shape-check one ``[body, key_id, signature]`` array (no crypto yet)."""
    v = expect_list(value, what="signed item", min_len=3, max_len=3)
    body = expect(v[0], bytes, what="item body")
    kid = expect(v[1], bytes, what="key id")
    sig = expect(v[2], bytes, what="signature")
    if len(kid) != KEY_ID_BYTES or len(sig) != 64:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "key id must be 8 bytes and signature 64 bytes")
    return SignedItem(body=body, key_id=kid, signature=sig)


def verify_item(
    signed: SignedItem, keyring: Mapping[bytes, KnownKey], limits: Limits = DEFAULT_LIMITS
) -> VerifiedItem:
    """Check the signature first, then decode the body and check its author is the signer.

    Raises RemoteProtocolError with code UNKNOWN_KEY, REVOKED_KEY, BAD_SIGNATURE,
    AUTHOR_MISMATCH or a decoding code.
    """
    known = keyring.get(signed.key_id)
    if known is None:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_KEY,
            f"signature by unknown key {signed.key_id.hex()}: enroll it with `ground enroll`",
        )
    if not verify_signature(known.public_key, signed.signature, SIGNATURE_DOMAIN + signed.body):
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE,
            f"bad signature by key {signed.key_id.hex()} ({known.astronaut}): the item was altered",
        )
    item = decode_item(signed.body, limits)
    if known.revoked:
        raise RemoteProtocolError(
            ErrorCode.REVOKED_KEY,
            f"item {item.id} is signed by revoked key {signed.key_id.hex()} ({known.astronaut})",
        )
    if item.author != known.astronaut:
        raise RemoteProtocolError(
            ErrorCode.AUTHOR_MISMATCH,
            f"item {item.id} claims author {item.author!r} but is signed by "
            f"{known.astronaut!r}'s key {signed.key_id.hex()}",
        )
    return VerifiedItem(item=item, signed=signed, astronaut=known.astronaut)
