"""Ed25519 identities: key ids, fingerprints and the one-line public key format.

A public key travels between people as one copyable line: ``ed25519:<base64url>``.
On the wire a signer is named by its 8-byte key id (first bytes of sha256 of the raw
public key); 64 bits is collision-safe for the handful of keys one ground enrolls and
saves 24 bytes per post over sending the full key (docs/PROTOCOL.md §3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import LocalProtocolError

KEY_ID_BYTES = 8
PUBLIC_KEY_PREFIX = "ed25519:"


def key_id(public_key: bytes) -> bytes:
    """The 8-byte key id that names ``public_key`` on the wire."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES]


def fingerprint(public_key: bytes) -> str:
    """Human-readable fingerprint (hex of the key id), e.g. ``3f2a9c01d4e5b6a7``."""
    return key_id(public_key).hex()


def format_public_key(public_key: bytes) -> str:
    """The copyable one-line form of a raw 32-byte public key."""
    return PUBLIC_KEY_PREFIX + base64.urlsafe_b64encode(public_key).rstrip(b"=").decode()


def parse_public_key(line: str) -> bytes:
    """Parse ``ed25519:<base64url>`` back to 32 raw bytes, or raise LocalProtocolError."""
    text = line.strip()
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise LocalProtocolError(
            f"public key must start with {PUBLIC_KEY_PREFIX!r} (copy the line `onboard keys show` prints)"
        )
    body = text[len(PUBLIC_KEY_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise LocalProtocolError(f"public key is not valid base64url: {exc}") from exc
    if len(raw) != 32:
        raise LocalProtocolError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    """An astronaut's private key (raw 32-byte seed), kept on the laptop only."""

    seed: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise LocalProtocolError("an Ed25519 seed is 32 bytes")
        return cls(seed=seed)

    @property
    def public_key(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over exactly ``message``."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature over ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownKey:
    """A key ground has enrolled: whose it is and whether it still counts."""

    astronaut: str
    public_key: bytes
    revoked: bool = False
