"""Signed items (docs/PROTOCOL.md §4): exact bytes signed under a domain tag, checked in order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import items, msgpack_values

from protocol import (
    KnownKey,
    Post,
    RemoteProtocolError,
    SigningKey,
    key_id,
    sign_item,
    verify_item,
)
from protocol.errors import ErrorCode
from protocol.ids import new_ulid
from protocol.keys import verify_signature
from protocol.signing import SIGNATURE_DOMAIN, SignedItem, signed_item_from_wire


def _post(author: str = "alice", text: str = "hi") -> Post:
    return Post(
        id=new_ulid(1_790_000_000_000, bytes(10)),
        author=author,
        created_ms=1_790_000_000_000,
        text=text,
        targets=(f"archive:{author}",),
    )


@settings(deadline=None)
@given(items(author="alice"))
def test_sign_then_verify(alice_key: SigningKey, keyring: dict[bytes, KnownKey], item: Post) -> None:
    signed = sign_item(alice_key, item)
    assert signed.key_id == key_id(alice_key.public_key)
    assert verify_signature(alice_key.public_key, signed.signature, SIGNATURE_DOMAIN + signed.body)
    v = verify_item(signed, keyring)
    assert v.item == item and v.astronaut == "alice" and v.signed == signed
    assert v.fingerprint == key_id(alice_key.public_key).hex()
    assert signed_item_from_wire(signed.to_wire()) == signed


def test_signature_is_over_domain_tag_and_body(alice_key: SigningKey) -> None:
    signed = sign_item(alice_key, _post())
    # Ed25519 is deterministic: the same key and bytes give the same signature.
    assert signed.signature == alice_key.sign(b"orbitpost/item/v1\x00" + signed.body)
    assert not verify_signature(alice_key.public_key, signed.signature, signed.body)


@settings(max_examples=20, deadline=None)
@given(items(author="alice"), st.data())
def test_every_body_byte_flip_is_a_bad_signature(
    alice_key: SigningKey, keyring: dict[bytes, KnownKey], item: Post, data: st.DataObject
) -> None:
    signed = sign_item(alice_key, item)
    for i in range(len(signed.body)):
        mask = data.draw(st.integers(min_value=1, max_value=255))
        body = bytearray(signed.body)
        body[i] ^= mask
        bad = SignedItem(body=bytes(body), key_id=signed.key_id, signature=signed.signature)
        with pytest.raises(RemoteProtocolError) as e:
            verify_item(bad, keyring)
        # The signature is checked before the body is decoded, so the code is always this one.
        assert e.value.code is ErrorCode.BAD_SIGNATURE


def test_every_signature_bit_flip_is_rejected(alice_key: SigningKey, keyring: dict[bytes, KnownKey]) -> None:
    signed = sign_item(alice_key, _post())
    for i in range(64 * 8):
        sig = bytearray(signed.signature)
        sig[i // 8] ^= 1 << (i % 8)
        with pytest.raises(RemoteProtocolError) as e:
            verify_item(SignedItem(body=signed.body, key_id=signed.key_id, signature=bytes(sig)), keyring)
        assert e.value.code is ErrorCode.BAD_SIGNATURE


def test_unknown_key(keyring: dict[bytes, KnownKey]) -> None:
    mallory = SigningKey.from_seed(b"m" * 32)
    with pytest.raises(RemoteProtocolError) as e:
        verify_item(sign_item(mallory, _post()), keyring)
    assert e.value.code is ErrorCode.UNKNOWN_KEY
    assert key_id(mallory.public_key).hex() in str(e.value) and "ground enroll" in str(e.value)


def test_alice_signing_as_bob_is_author_mismatch(
    alice_key: SigningKey, keyring: dict[bytes, KnownKey]
) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        verify_item(sign_item(alice_key, _post(author="bob")), keyring)
    assert e.value.code is ErrorCode.AUTHOR_MISMATCH
    assert "claims author 'bob'" in str(e.value) and "'alice'" in str(e.value)


def test_alice_signature_under_bobs_key_id_is_bad_signature(
    alice_key: SigningKey, bob_key: SigningKey, keyring: dict[bytes, KnownKey]
) -> None:
    s = sign_item(alice_key, _post(author="bob"))
    forged = SignedItem(body=s.body, key_id=key_id(bob_key.public_key), signature=s.signature)
    with pytest.raises(RemoteProtocolError) as e:
        verify_item(forged, keyring)
    assert e.value.code is ErrorCode.BAD_SIGNATURE


def test_revoked_key(alice_key: SigningKey) -> None:
    ring = {
        key_id(alice_key.public_key): KnownKey(
            astronaut="alice", public_key=alice_key.public_key, revoked=True
        )
    }
    with pytest.raises(RemoteProtocolError) as e:
        verify_item(sign_item(alice_key, _post()), ring)
    assert e.value.code is ErrorCode.REVOKED_KEY
    assert "revoked key" in str(e.value)


def test_valid_signature_over_a_bad_body_is_a_decoding_error(
    alice_key: SigningKey, keyring: dict[bytes, KnownKey]
) -> None:
    # An enrolled astronaut's own software could sign garbage; it still only gets a remote error.
    body = b"\x93\x01\x02\x03"
    signed = SignedItem(
        body=body, key_id=key_id(alice_key.public_key), signature=alice_key.sign(SIGNATURE_DOMAIN + body)
    )
    with pytest.raises(RemoteProtocolError) as e:
        verify_item(signed, keyring)
    assert e.value.code is ErrorCode.MALFORMED


@settings(deadline=None)
@given(msgpack_values)
def test_wire_shape_checks_raise_only_remote_errors(value: object) -> None:
    try:
        signed_item_from_wire(value)
    except RemoteProtocolError:
        pass


@settings(deadline=None)
@given(st.binary(max_size=200), st.binary(min_size=64, max_size=64))
def test_random_bodies_and_signatures_rejected(
    alice_key: SigningKey, keyring: dict[bytes, KnownKey], body: bytes, sig: bytes
) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        verify_item(SignedItem(body=body, key_id=key_id(alice_key.public_key), signature=sig), keyring)
    assert e.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    "wire",
    [[b"", b"x" * 7, b"s" * 64], [b"", b"x" * 8, b"s" * 63], [b"", b"x" * 8], ["body", b"x" * 8, b"s" * 64]],
)
def test_wire_shape_errors(wire: list[object]) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        signed_item_from_wire(wire)
    assert e.value.code is ErrorCode.MALFORMED
