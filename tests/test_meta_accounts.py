"""`ground account add|check` for Instagram, Threads and Facebook Pages, against the fakes in
their own processes: the token works, whose it is, how long it lives, the quota; a dead token
says "reconnect this account"; the secret is never printed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli
from fake_server import fake_process

from ground.credentials import DEFAULT_SERVICE, store_for


@pytest.fixture
def fakes(subprocess_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        yield {
            kind: stack.enter_context(
                fake_process("meta", "--kind", kind, "--token", "secret-tok", env=subprocess_env)
            )["url"]
            for kind in ("instagram", "threads", "facebook")
        }


def test_add_and_check_each_meta_account(cli: Cli, tmp_path: Path, fakes: dict[str, str]) -> None:
    tok = tmp_path / "tok"
    tok.write_text("secret-tok\n")
    # What Meta's long-lived token exchange answers: the expiry is known from the start.
    grant = tmp_path / "grant.json"
    grant.write_text(
        json.dumps({"access_token": "secret-tok", "token_type": "bearer", "expires_in": 5_184_000})
    )
    expected = {
        "instagram": ["token works for @alice", "quota 0 of 50 used", "expiry not known yet"],
        "threads": [
            "token works for @alice",
            "quota 0 of 250 used",
            "token expires in 59 days (refreshed automatically)",
        ],
        "facebook": ["Page token works for 'Alice in Orbit'", "do not expire"],
    }
    for kind, url in fakes.items():
        token_file = grant if kind == "threads" else tok
        out = cli.ground(
            "account", "add", f"{kind}:alice", "--token-file", str(token_file), "--service-url", url
        ).output
        assert "secret-tok" not in out
        out = cli.ground("account", "check", f"{kind}:alice").output
        for words in expected[kind]:
            assert words in out, out
        assert "secret-tok" not in out
    listed = cli.ground("account", "list").output
    assert "secret-tok" not in listed and "instagram:alice" in listed
    rows = {line.split("\t")[0]: line for line in listed.splitlines()}
    assert rows["threads:alice"].endswith("expires in 59 days")
    assert rows["instagram:alice"].endswith("no expiry known")


def test_a_dead_token_says_reconnect_and_the_defaults_point_at_meta(
    cli: Cli, tmp_path: Path, fakes: dict[str, str]
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not-a-token")
    cli.ground("account", "add", "threads:bob", "--token-file", str(bad), "--service-url", fakes["threads"])
    r = cli.ground("account", "check", "threads:bob", ok=False)
    said = str(r.exception)  # `ground` prints GroundError as one line (cli.main)
    assert "reconnect this account" in said and "not-a-token" not in said
    # Without --service-url the account lives on Meta's documented hosts.
    cli.ground("account", "add", "instagram:carol", "--token-file", str(bad))
    assert store_for(cli.ground_home).require("instagram:carol").service_url == "https://graph.instagram.com"
    assert DEFAULT_SERVICE["threads"] == "https://graph.threads.net"
    assert DEFAULT_SERVICE["facebook"] == "https://graph.facebook.com"
