"""Astronaut identities on the laptop: Ed25519 private keys in files of mode 0600.

A key may be protected by a passphrase: the file is then PKCS#8 encrypted with the
cryptography library's ``BestAvailableEncryption`` (scrypt + AES-256-CBC today), so a crew
mate who can read the file still cannot sign as its owner. Each key's public half sits
beside it in ``NAME.pub`` (one `keys show` line) so listing identities needs no passphrase.

Where a passphrase comes from is the caller's choice: ``load_key(..., passphrase=...)``, or
a process-wide source set with :func:`set_passphrase_source` (the CLI asks on the terminal,
reads ``--passphrase-file`` or ``ORBITPOST_PASSPHRASE``; the compose page asks in the page).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from durable.files import write_atomic
from protocol import SigningKey, fingerprint, format_public_key, parse_public_key

from .errors import IdentityError
from .home import Home

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# A passphrase shorter than this is refused when protecting a key: scrypt slows guessing,
# it cannot save a 3-letter word.
MIN_PASSPHRASE_CHARS = 8
_ENCRYPTED_MARK = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"

PassphraseSource = Callable[[str], bytes | None]
_source: PassphraseSource | None = None


class KeyLocked(IdentityError):
    """The key is protected and no passphrase was given (or it was wrong)."""


def set_passphrase_source(source: PassphraseSource | None) -> None:
    """Where ``load_key`` asks for a passphrase it was not given: ``source(name)`` returns it,
    or None when there is none to be had (then KeyLocked is raised)."""
    global _source
    _source = source


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise IdentityError(
            f"astronaut name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'"
        )
    return name


def _key_path(home: Home, name: str) -> Path:
    return home.keys_dir / f"{check_name(name)}.key"


def _pub_path(home: Home, name: str) -> Path:
    return home.keys_dir / f"{check_name(name)}.pub"


def _check_passphrase(passphrase: bytes) -> bytes:
    if len(passphrase.decode("utf-8", "replace")) < MIN_PASSPHRASE_CHARS:
        raise IdentityError(f"a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters")
    return passphrase


def _pem(private: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(_check_passphrase(passphrase))
    )
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def new_key(home: Home, name: str, passphrase: bytes | None = None) -> SigningKey:
    """Create ``name``'s identity (encrypted under ``passphrase`` if given); refuses to
    overwrite an existing key."""
    home.ensure()
    path = _key_path(home, name)
    private = Ed25519PrivateKey.generate()
    pem = _pem(private, passphrase)
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
    key = SigningKey.from_seed(private.private_bytes_raw())
    write_atomic(_pub_path(home, name), (public_line(key) + "\n").encode())
    return key


def is_protected(home: Home, name: str) -> bool:
    """Whether ``name``'s key file is encrypted under a passphrase."""
    return _read(home, name).lstrip().startswith(_ENCRYPTED_MARK)


def _read(home: Home, name: str) -> bytes:
    path = _key_path(home, name)
    if not path.exists():
        raise IdentityError(
            f"unknown astronaut {name!r}: no key in {home.keys_dir}; create one with `onboard keys new {name}`"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(f"key file {path} has mode {mode:o}; run `chmod 600 {path}` first")
    return path.read_bytes()


def load_key(home: Home, name: str, passphrase: bytes | None = None) -> SigningKey:
    """Load ``name``'s private key, or explain how to create or unlock it.

    A protected key needs ``passphrase``, or the process's passphrase source; without one
    (or with a wrong one) KeyLocked is raised and nothing is signed.
    """
    path = _key_path(home, name)
    pem = _read(home, name)
    encrypted = pem.lstrip().startswith(_ENCRYPTED_MARK)
    if encrypted and passphrase is None and _source is not None:
        passphrase = _source(name)
    if encrypted and passphrase is None:
        raise KeyLocked(
            f"{name}'s key is protected by a passphrase: type it when asked, or give it with "
            "--passphrase-file FILE or the ORBITPOST_PASSPHRASE environment variable"
        )
    try:
        private = serialization.load_pem_private_key(pem, password=passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise KeyLocked(f"wrong passphrase for {name}'s key") from None
        raise IdentityError(f"key file {path} is not a readable PEM private key: {exc}") from exc
    except TypeError as exc:
        raise IdentityError(f"key file {path}: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise IdentityError(f"key file {path} is not an Ed25519 key")
    return SigningKey.from_seed(private.private_bytes_raw())


def protect(home: Home, name: str, new_passphrase: bytes | None, old_passphrase: bytes | None = None) -> None:
    """Re-encrypt ``name``'s key under ``new_passphrase`` (None removes the protection).

    The file is replaced atomically (mode 0600): a crash leaves the old file or the new one.
    """
    key = load_key(home, name, old_passphrase)
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    write_atomic(_key_path(home, name), _pem(private, new_passphrase), mode=0o600)
    write_atomic(_pub_path(home, name), (public_line(key) + "\n").encode())


def public_key(home: Home, name: str) -> bytes:
    """``name``'s public key, without the passphrase (from NAME.pub, else the open key file)."""
    pub = _pub_path(home, name)
    if pub.exists():
        return parse_public_key(pub.read_text().strip())
    if is_protected(home, name):
        raise IdentityError(f"{pub} is missing; run `onboard keys show {name}` once with the passphrase")
    return load_key(home, name).public_key


def list_names(home: Home) -> list[str]:
    if not home.keys_dir.exists():
        return []
    return sorted(p.stem for p in home.keys_dir.glob("*.key"))


def public_line(key: SigningKey) -> str:
    return format_public_key(key.public_key)


def public_line_of(public: bytes) -> str:
    """The `keys show` line for a public key (read without the passphrase)."""
    return format_public_key(public)


def fingerprint_of(public: bytes) -> str:
    return fingerprint(public)


def key_fingerprint(key: SigningKey) -> str:
    return fingerprint(key.public_key)
