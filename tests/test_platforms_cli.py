"""`ground account add|check|list` for X, LinkedIn and Flickr against their fakes (each in its own
process), and `ground demo --with-fakes` end to end."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli
from fake_server import fake_process


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, dict[str, object]]]:
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(fake_process(name)) for name in ("x", "linkedin", "flickr")}


def test_account_add_check_list(cli: Cli, tmp_path: Path, fakes: dict[str, dict[str, object]]) -> None:
    for name, key in (("x", "grant"), ("linkedin", "grant"), ("flickr", "secret")):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(fakes[name][key]))
        r = cli.ground(
            "account",
            "add",
            f"{name}:alice",
            "--token-file",
            str(f),
            "--service-url",
            str(fakes[name]["url"]),
        )
        assert "the secret is not shown" in r.output
    listed = cli.ground("account", "list").output
    assert "linkedin:alice" in listed and "expires in 364 days" in listed
    assert "x:alice" in listed and "renews itself" in listed
    for name in ("x", "linkedin", "flickr"):
        for secret in (fakes[name].get("grant") or fakes[name]["secret"]).values():  # type: ignore[union-attr]
            if (
                isinstance(secret, str)
                and len(secret) > 8
                and secret.startswith(("at-", "rt-", "AQ", "tok", "tsec", "li-secret"))
            ):
                assert secret not in listed
    assert "for @alice" in cli.ground("account", "check", "x:alice").output
    assert "urn:li:person:abc123" in cli.ground("account", "check", "linkedin:alice").output
    assert "alice_in_orbit" in cli.ground("account", "check", "flickr:alice").output


def test_account_add_refuses_a_bad_grant_and_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "g.json"
    f.write_text('{"access_token": "A"}')
    r = cli.ground("account", "add", "x:alice", "--token-file", str(f), ok=False)
    assert r.exit_code == 1 and "client_id" in str(r.exception)
    assert "no accounts yet" in cli.ground("account", "list").output


def test_check_of_a_dead_token_says_reconnect(
    cli: Cli, tmp_path: Path, fakes: dict[str, dict[str, object]]
) -> None:
    grant = dict(fakes["x"]["grant"])  # type: ignore[call-overload]
    grant["access_token"], grant["refresh_token"], grant["expires_in"] = "revoked", "revoked", 1
    f = tmp_path / "x.json"
    f.write_text(json.dumps(grant))
    cli.ground("account", "add", "x:bob", "--token-file", str(f), "--service-url", str(fakes["x"]["url"]))
    r = cli.ground("account", "check", "x:bob", ok=False)
    assert r.exit_code == 1 and "reconnect this account: x:bob" in str(r.exception)


@pytest.mark.slow  # about two minutes on a loaded 2-core machine (a whole demo: serve, sync, publish)
def test_demo_with_fakes_publishes_everywhere_and_says_how_faithfully(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ground", "demo", "--dir", str(tmp_path / "demo"), "--with-fakes"],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert (
        "x, linkedin, instagram, threads and facebook will re-encode this photo; archive \nand flickr keep it exactly"
        in out
        or "x, linkedin, instagram, threads and facebook will re-encode this photo; archive and flickr keep it exactly"
        in out
    )
    for line in (
        "x:alice: re-encoded",
        "linkedin:alice: re-encoded",
        "flickr:alice: exact (photo 1: original read back",
        "instagram:alice: re-encoded (text read back: exact; photos sent byte-exact (fetched from ground's",
        "threads:alice: re-encoded (text read back: exact; photos sent byte-exact (fetched from ground's",
        "facebook:alice: re-encoded (text read back: exact; photos uploaded byte-exact",
    ):
        assert line in out
