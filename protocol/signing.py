"""Where signatures are made and checked.

An astronaut signs the exact body bytes prefixed with a domain tag, so a signature over a
post can never be replayed as a signature over anything else (docs/PROTOCOL.md §4).
On the wire (bundle format 1) a signed item is ``[body(bin), key_id(bin 8), signature(bin 64)]``.

Bundle format 2 signs in batches instead (§14): the astronaut signs one *statement*, the
sha256 of each of their item bodies in the bundle, so 64 signature bytes are shared by
every post of theirs in it. A body is then proven by the statement's signature plus its
hash being one of the statement's entries.

Bundle format 3 (§17) signs a Merkle tree root over those hashes instead (``batch_tree.py``):
a body is proven by the signature plus its audit path of ⌈log₂ n⌉ hashes, not n hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .batch_tree import BatchInclusion, check_inclusion
from .canonical import expect, expect_list
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .keys import KEY_ID_BYTES, KnownKey, SigningKey, key_id, verify_signature
from .limits import DEFAULT_LIMITS, Limits
from .model import Item, decode_item, encode_item

SIGNATURE_DOMAIN = b"orbitpost/item/v1\x00"
BATCH_DOMAIN = b"orbitpost/batch/v1\x00"
HASH_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedItem:
    """Body bytes plus who signed them; the unit packed into bundles."""

    body: bytes
    key_id: bytes
    signature: bytes
    # Empty: ``signature`` is over this body alone. Otherwise the batch statement that
    # ``signature`` covers, which lists this body's sha256 (docs/PROTOCOL.md §14).
    statement: bytes = b""
    # Set for format 3 (docs/PROTOCOL.md §17): ``signature`` is over a Merkle root of the
    # signer's body hashes, and this is the body's tree size, leaf index and audit path.
    inclusion: BatchInclusion | None = None

    @property
    def format_version(self) -> int:
        """The bundle format whose signature this is: 1 per item, 2 statement, 3 tree."""
        return 3 if self.inclusion is not None else 2 if self.statement else 1

    def to_wire(self) -> list[bytes]:
        if self.statement or self.inclusion is not None:
            raise LocalProtocolError(
                "a batch-signed item travels in bundle format 2 or 3, not as [body, key, sig]"
            )
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


def batch_statement(bodies: Sequence[bytes]) -> bytes:
    """What a batch signature covers (after BATCH_DOMAIN): each body's sha256, in order."""
    return b"".join(hashlib.sha256(b).digest() for b in bodies)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedBatch:
    """A batch statement and its signer's signature."""

    key_id: bytes
    signature: bytes
    statement: bytes


def sign_batch(key: SigningKey, bodies: Sequence[bytes]) -> SignedBatch:
    """One signature by ``key`` over the statement of ``bodies``."""
    statement = batch_statement(bodies)
    return SignedBatch(
        key_id=key_id(key.public_key), signature=key.sign(BATCH_DOMAIN + statement), statement=statement
    )


def statement_lists(statement: bytes, body: bytes) -> bool:
    """Whether ``statement`` lists the sha256 of ``body`` as one of its entries."""
    digest = hashlib.sha256(body).digest()
    return len(statement) % HASH_BYTES == 0 and any(
        statement[i : i + HASH_BYTES] == digest for i in range(0, len(statement), HASH_BYTES)
    )


def check_signature(signed: SignedItem, public_key: bytes) -> bool:
    """Whether ``signed`` proves its body: its own signature, a batch statement's that lists it,
    or a batch tree root's that its audit path leads to."""
    if signed.inclusion is not None:
        return check_inclusion(public_key, signed.signature, signed.body, signed.inclusion)
    if not signed.statement:
        return verify_signature(public_key, signed.signature, SIGNATURE_DOMAIN + signed.body)
    return statement_lists(signed.statement, signed.body) and verify_signature(
        public_key, signed.signature, BATCH_DOMAIN + signed.statement
    )


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
    if not check_signature(signed, known.public_key):
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
