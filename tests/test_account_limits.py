"""Per-account limits: ground learns a Mastodon instance's limits, signs them into receipts,
and onboard then refuses exactly what ground would for that account (no more, no less)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli
from fake_server import fake_process
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import RemoteProtocolError, SigningKey
from protocol.canonical import pack
from protocol.keys import key_id
from protocol.receipts import RECEIPTS_DOMAIN, AccountLimitsReceipt, sign_receipts, verify_receipts

TARGET = "mastodon:alice@fake.example"
GROUND = SigningKey.from_seed(hashlib.sha256(b"ground receipt key").digest())
LIMITS = AccountLimitsReceipt(
    account=TARGET,
    max_text=1000,
    max_media=6,
    max_media_bytes=8_000_000,
    url_length=23,
    max_alt=1500,
    media_types=("image/jpeg", "image/png"),
    seq=42,
)


# --- the protocol entry ---------------------------------------------------------------------


def test_limits_entry_round_trips_and_every_byte_flip_is_rejected() -> None:
    doc = sign_receipts(GROUND, 50, [LIMITS, AccountLimitsReceipt(account="mastodon:b@x.y", seq=1)])
    got = verify_receipts(doc, GROUND.public_key)
    assert got.receipts == (LIMITS, AccountLimitsReceipt(account="mastodon:b@x.y", seq=1))
    for i in range(len(doc)):
        bad = bytearray(doc)
        bad[i] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            verify_receipts(bytes(bad), GROUND.public_key)


def _resign(entries: list[object]) -> bytes:
    body = pack([2, 7, entries])
    return pack([body, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + body)])


def test_fields_appended_later_are_ignored_and_bad_values_refused() -> None:
    entry = [3, TARGET, 1000, None, None, None, None, None, 9]
    (r,) = verify_receipts(_resign([[*entry, "a later field", 5]]), GROUND.public_key).receipts
    assert r == AccountLimitsReceipt(account=TARGET, max_text=1000, seq=9)
    for bad in (
        [3, TARGET, -1, *entry[3:]],
        [3, TARGET, "1000", *entry[3:]],
        entry[:8],
        [3, TARGET, 2**41, *entry[3:]],
    ):
        with pytest.raises(RemoteProtocolError):
            verify_receipts(_resign([bad]), GROUND.public_key)


@settings(max_examples=100)
@given(
    st.builds(
        AccountLimitsReceipt,
        account=st.text(max_size=40),
        max_text=st.none() | st.integers(0, 2**40),
        max_media=st.none() | st.integers(0, 64),
        max_media_bytes=st.none() | st.integers(0, 2**40),
        url_length=st.none() | st.integers(0, 100),
        max_alt=st.none() | st.integers(0, 10_000),
        media_types=st.none() | st.lists(st.text(max_size=20), max_size=8).map(tuple),
        seq=st.integers(0, 2**53),
    )
)
def test_any_limits_entry_round_trips(r: AccountLimitsReceipt) -> None:
    assert verify_receipts(sign_receipts(GROUND, 3, [r]), GROUND.public_key).receipts == (r,)


# --- ground learns, onboard obeys ---------------------------------------------------------------


@pytest.fixture
def fake_mastodon(subprocess_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    with fake_process("mastodon", "--max-characters", str(request.param), env=subprocess_env) as info:
        yield info["url"]


def _linked(cli: Cli, tmp_path: Path) -> None:
    """alice onboard, enrolled on ground for TARGET, and the station's link pinning ground's key."""
    cli.onboard("keys", "new", "alice")
    line = cli.onboard("keys", "show", "alice").output.strip()
    # The second account has no learned limits: posts to it get the platform defaults.
    cli.ground(
        "enroll", "alice", "--key", line, "--account", TARGET, "--account", "mastodon:alice@other.example"
    )
    cli.ground("station", "add", "laptop", "--token-out", str(tmp_path / "station.json"))
    cli.onboard(
        "link", "add", "--ground", "http://127.0.0.1:9", "--token-file", str(tmp_path / "station.json")
    )


def _learn(cli: Cli, tmp_path: Path, url: str) -> None:
    """`ground account check` reads the instance's limits; a receipts file carries them up."""
    (tmp_path / "tok").write_text("token-alice")
    cli.ground("account", "add", TARGET, "--token-file", str(tmp_path / "tok"), "--service-url", url)
    out = cli.ground("account", "check", TARGET).output
    assert "token works" in out
    cli.ground("receipts", "--out", str(tmp_path / "receipts.bin"))
    cli.onboard("receipts", "import", str(tmp_path / "receipts.bin"))


def _post(cli: Cli, n: int, *, ok: bool) -> str:
    r = cli.onboard("post", "--as", "alice", "--to", TARGET, "x" * n, ok=ok)
    return f"{r.output}{r.exception or ''}"


@pytest.mark.parametrize("fake_mastodon", [1000], indirect=True)
def test_a_larger_instance_limit_lets_a_longer_post_through(
    cli: Cli, tmp_path: Path, fake_mastodon: str
) -> None:
    _linked(cli, tmp_path)
    refused = _post(cli, 700, ok=False)  # before ground said anything: Mastodon's default 500
    assert "mastodon.text_length" in refused and "allows 500" in refused
    _learn(cli, tmp_path, fake_mastodon)
    _post(cli, 700, ok=True)
    refused = _post(cli, 1001, ok=False)
    assert "allows 1000" in refused and TARGET in refused


@pytest.mark.parametrize("fake_mastodon", [300], indirect=True)
def test_a_smaller_instance_limit_refuses_naming_rule_and_account(
    cli: Cli, tmp_path: Path, fake_mastodon: str
) -> None:
    _linked(cli, tmp_path)
    _post(cli, 400, ok=True)  # the default (500) would let it through
    _learn(cli, tmp_path, fake_mastodon)
    refused = _post(cli, 400, ok=False)
    assert "mastodon.text_length" in refused and TARGET in refused and "allows 300" in refused
    _post(cli, 300, ok=True)
    # Another account on another instance still gets the defaults.
    r = cli.onboard("post", "--as", "alice", "--to", "mastodon:alice@other.example", "x" * 400)
    assert r.exit_code == 0, r.output
