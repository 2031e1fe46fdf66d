"""Astronaut identities on the laptop: Ed25519 private keys in files of mode 0600."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import SigningKey, fingerprint, format_public_key

from .errors import IdentityError
from .home import Home

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise IdentityError(
            f"astronaut name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'"
        )
    return name


def _key_path(home: Home, name: str) -> Path:
    return home.keys_dir / f"{check_name(name)}.key"


def new_key(home: Home, name: str) -> SigningKey:
    """Create ``name``'s identity; refuses to overwrite an existing key."""
    home.ensure()
    path = _key_path(home, name)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        # O_EXCL: never clobber a key whose public half ground may already trust.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(
            f"astronaut {name!r} already has a key in {path}; refusing to replace it"
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return SigningKey.from_seed(private.private_bytes_raw())


def load_key(home: Home, name: str) -> SigningKey:
    """Load ``name``'s private key, or explain how to create it."""
    path = _key_path(home, name)
    if not path.exists():
        raise IdentityError(
            f"unknown astronaut {name!r}: no key in {home.keys_dir}; create one with `onboard keys new {name}`"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(f"key file {path} has mode {mode:o}; run `chmod 600 {path}` first")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise IdentityError(f"key file {path} is not a readable PEM private key: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise IdentityError(f"key file {path} is not an Ed25519 key")
    return SigningKey.from_seed(private.private_bytes_raw())


def list_names(home: Home) -> list[str]:
    if not home.keys_dir.exists():
        return []
    return sorted(p.stem for p in home.keys_dir.glob("*.key"))


def public_line(key: SigningKey) -> str:
    return format_public_key(key.public_key)


def key_fingerprint(key: SigningKey) -> str:
    return fingerprint(key.public_key)
