"""Key ids, fingerprints and the one-line public key format (docs/PROTOCOL.md §3)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import LocalProtocolError, SigningKey, fingerprint, format_public_key, key_id, parse_public_key
from protocol.keys import verify_signature


@settings(deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_public_key_line_round_trip(raw: bytes) -> None:
    line = format_public_key(raw)
    assert line.startswith("ed25519:") and "=" not in line and len(line) == 8 + 43
    assert parse_public_key(line) == raw
    assert parse_public_key(f"  {line}\n") == raw  # pasted with whitespace


@settings(deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_key_id_and_fingerprint(raw: bytes) -> None:
    assert key_id(raw) == hashlib.sha256(raw).digest()[:8]
    assert fingerprint(raw) == key_id(raw).hex()


@settings(deadline=None)
@given(st.text(max_size=80))
def test_parse_is_total(text: str) -> None:
    # The line comes from an operator (`ground enroll --key`): a local error, never a crash.
    try:
        assert len(parse_public_key(text)) == 32
    except LocalProtocolError:
        pass


@settings(deadline=None)
@given(st.binary(max_size=60).filter(lambda b: len(b) != 32))
def test_wrong_length_keys_refused(raw: bytes) -> None:
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        parse_public_key(format_public_key(raw))


@pytest.mark.parametrize(
    ("line", "words"),
    [("ssh-ed25519 AAAA", "must start with 'ed25519:'"), ("ed25519:!!!!", "not valid base64url|32 bytes")],
)
def test_bad_lines_say_what_to_do(line: str, words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        parse_public_key(line)


def test_deterministic_test_keys(alice_key: SigningKey, bob_key: SigningKey) -> None:
    # tests/vectors/ depends on these seeds; if this changes, every golden vector changes.
    assert alice_key.seed == hashlib.sha256(b"orbitpost test key alice").digest()
    assert fingerprint(alice_key.public_key) != fingerprint(bob_key.public_key)


@settings(deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=100))
def test_sign_verify(seed: bytes, message: bytes) -> None:
    k = SigningKey.from_seed(seed)
    sig = k.sign(message)
    assert len(sig) == 64 and verify_signature(k.public_key, sig, message)
    assert not verify_signature(k.public_key, sig, message + b"x")


@settings(deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=10))
def test_verify_signature_is_total(public: bytes, sig: bytes, message: bytes) -> None:
    # Garbage keys and signatures are "not valid", never an exception.
    assert verify_signature(public, sig, message) in (True, False)


def test_seed_length_checked() -> None:
    with pytest.raises(LocalProtocolError):
        SigningKey.from_seed(b"short")
