"""A rendition consent in bundle formats 2 and 3: the compact section's 15th field
(protocol/compact_items.py, docs/PROTOCOL.md §14.8), and who gets it (§5.3).

Properties: any batch mixing consenting posts, plain posts and commands round trips in both
formats (every body rebuilt exactly, version 2 where a consent is, canonical bytes); a batch
without consents is the 14 fields of before; any change to the 15th field decodes or raises
the protocol's remote error, never anything else, and never yields a post whose consent differs
from what was signed. Onboard writes the field only to a ground that announced it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import Cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import commands, msgpack_values, posts, rendition_posts

from protocol import KnownKey, RemoteProtocolError, SigningKey, key_id, read_header
from protocol.canonical import pack
from protocol.compact_items import decode_compact_items, encode_compact_items
from protocol.errors import ErrorCode
from protocol.model import Item, Post, encode_item, with_derived_id
from protocol.signing import check_signature

NAMES = ("alice", "bob")
KEYS = {n: SigningKey.from_seed(hashlib.sha256(f"orbitpost test key {n}".encode()).digest()) for n in NAMES}
RING = {
    key_id(k.public_key): KnownKey(astronaut=n, public_key=k.public_key, revoked=False)
    for n, k in KEYS.items()
}
T0 = 1_790_000_000_000


@st.composite
def batches(draw: st.DrawFn, *, consents: bool = True) -> list[Item]:
    out: list[Item] = []
    for k in range(draw(st.integers(1, 8))):
        author = draw(st.sampled_from(NAMES))
        kinds = [posts(author), commands(author)] + ([rendition_posts(author)] * 2 if consents else [])
        it = draw(st.one_of(*kinds))
        it = replace(it, created_ms=T0 + 1000 * k)
        out.append(with_derived_id(it) if draw(st.booleans()) else it)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from([2, 3]))
def test_consents_round_trip_in_formats_2_and_3(items: list[Item], fmt: int) -> None:
    raw = encode_compact_items(items, KEYS, format_version=fmt)
    verified = decode_compact_items(raw, len(items), RING, format_version=fmt)
    assert [v.item for v in verified] == items
    assert [v.signed.body for v in verified] == [encode_item(it) for it in items]
    assert all(check_signature(v.signed, KEYS[v.astronaut].public_key) for v in verified)
    assert encode_compact_items([v.item for v in verified], KEYS, format_version=fmt) == raw
    fields = msgpack.unpackb(raw, raw=False)
    consenting = [i for i, it in enumerate(items) if isinstance(it, Post) and it.renditions]
    assert len(fields) == (15 if consenting else 14)
    if consenting:
        assert [e[0] for e in fields[14]] == consenting


@settings(max_examples=40, deadline=None)
@given(batches(consents=False), st.sampled_from([2, 3]))
def test_without_a_consent_the_section_is_the_14_fields_of_before(items: list[Item], fmt: int) -> None:
    assert len(msgpack.unpackb(encode_compact_items(items, KEYS, format_version=fmt), raw=False)) == 14


_fifteenth = st.one_of(
    msgpack_values,
    st.lists(st.tuples(st.integers(-1, 9), st.lists(st.text(max_size=20), max_size=3)).map(list), max_size=4),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), _fifteenth, st.sampled_from([2, 3]))
def test_any_15th_field_decodes_or_raises_the_remote_error(items: list[Item], value: Any, fmt: int) -> None:
    fields = msgpack.unpackb(encode_compact_items(items, KEYS, format_version=fmt), raw=False)
    before = fields[14] if len(fields) == 15 else None
    fields[14:] = [value]
    try:
        verified = decode_compact_items(pack(fields), len(items), RING, format_version=fmt)
    except RemoteProtocolError:
        return
    # Accepted only if it says exactly what was signed: the same lists, for the same posts.
    assert value == before
    assert [v.item for v in verified] == items


def test_consent_codes_are_those_of_format_1() -> None:
    p = with_derived_id(
        Post(id="01M3250V000000000000000000", author="alice", created_ms=T0, text="hi",
             targets=("x:alice", "bluesky:alice.test"), renditions=("x:alice",))
    )  # fmt: skip
    for fmt in (2, 3):
        fields = msgpack.unpackb(encode_compact_items([p], KEYS, format_version=fmt), raw=False)
        for listed, code in (
            (["mastodon:alice"], ErrorCode.RENDITION_NOT_A_TARGET),
            (["x:alice", "x:alice"], ErrorCode.RENDITION_DUPLICATE),
            (["bluesky:alice.test"], ErrorCode.BAD_SIGNATURE),  # a valid list, but not the signed one
        ):
            fields[14] = [[0, listed]]
            with pytest.raises(RemoteProtocolError) as err:
                decode_compact_items(pack(fields), 1, RING, format_version=fmt)
            assert err.value.code == code, (fmt, listed)
        del fields[14]  # the consent dropped in transit: rebuilt as version 1, not what was signed
        with pytest.raises(RemoteProtocolError) as err:
            decode_compact_items(pack(fields), 1, RING, format_version=fmt)
        assert err.value.code == ErrorCode.BAD_SIGNATURE


# --- who gets it --------------------------------------------------------------------------------


def _consent_post(cli: Cli, photo: Path) -> str:
    out = cli.onboard(
        "post", "--as", "alice", "--to", "x:alice,archive:alice", "--photo", str(photo),
        "--allow-rendition", "x:alice", "Consent in a compact bundle",
    ).output  # fmt: skip
    return out.split()[1]


@pytest.fixture
def consenting(enrolled: Cli, photo: Path) -> Cli:
    line = enrolled.onboard("keys", "show", "alice").output.strip()
    enrolled.ground("enroll", "alice", "--key", line, "--account", "x:alice", "--account", "archive:alice")
    return enrolled


@pytest.mark.parametrize(
    ("token", "fmt"),
    [
        (None, 3),  # this release's ground (onboard/export.py CURRENT_GROUND)
        ("codecs=0,1;formats=1,2;bodies=1,2;compact_bodies=1,2", 2),
        ("codecs=0,1;formats=1,2,3;bodies=1,2", 1),  # the previous release: consents in format 1
    ],
)
def test_export_writes_the_field_only_for_a_ground_that_reads_it(
    consenting: Cli, photo: Path, tmp_path: Path, token: str | None, fmt: int
) -> None:
    cli = consenting
    post_id = _consent_post(cli, photo)
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "and a plain one beside it")
    out = tmp_path / "OUT"
    cli.onboard("export", *(["--ground-decodes", token] if token else []), str(out))
    (bundle,) = out.glob("*.opb")
    assert read_header(bundle.read_bytes()).format_version == fmt
    # This ground reads all three: the consent arrives signed, whatever the format.
    cli.ground("ingest", str(out))
    from ground.home import GroundHome
    from protocol import decode_item

    home = GroundHome(cli.ground_home)
    try:
        (body,) = home.conn.execute("SELECT body FROM items WHERE id = ?", (post_id,)).fetchone()
    finally:
        home.close()
    item = decode_item(bytes(body))
    assert isinstance(item, Post) and item.renditions == ("x:alice",)
