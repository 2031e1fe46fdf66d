"""Both command lines behave like the tools people know: help, --version, --json, homes, pipes.

Help is rendered by the same click tree the console scripts run (onboard.cli.command(),
ground.cli.command()); JSON shapes are those docs/cli-json.md documents.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from typer.testing import CliRunner

PROGRAMS = ("onboard", "ground")
# What typer shows when a value has no name of its own: a Python type in angle brackets.
PY_TYPE = re.compile(r"<(str|int|float|bool|path|list\[[^\]]*\]|[a-z]+ range|datetime)>", re.I)


def _tree(program: str) -> Any:
    if program == "onboard":
        from onboard.cli import command
    else:
        from ground.cli import command
    return command()


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _help(program: str, path: tuple[str, ...], flag: str = "--help") -> str:
    """The help text exactly as the console script prints it (80 columns)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        _tree(program).main([*path, flag], prog_name=program, max_content_width=80)
    assert exit_.value.code == 0, (path, out.getvalue())
    return out.getvalue()


ALL_COMMANDS = [(p, path) for p in PROGRAMS for path, _ in _commands(_tree(p))]


@pytest.mark.parametrize(
    ("program", "path"), ALL_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v
)
def test_every_command_has_a_summary_described_arguments_and_an_example(
    program: str, path: tuple[str, ...]
) -> None:
    out = _help(program, path)
    assert _help(program, path, "-h") == out
    assert not PY_TYPE.search(out), PY_TYPE.search(out)
    assert "(issue" not in out.lower()
    cmd = dict(_commands(_tree(program)))[path]
    assert cmd.help and cmd.help.strip().splitlines()[0].strip(), f"{path}: no one-line summary"
    assert "Example" in out, f"{program} {' '.join(path)} has no example"
    for param in cmd.params:
        if param.name == "help":
            continue
        assert getattr(param, "help", None), f"{program} {' '.join(path)}: {param.name} is not described"
        for opt in getattr(param, "opts", []):
            if opt.startswith("-"):
                assert opt in out, f"{opt} missing from the help of {program} {' '.join(path)}"


def test_account_add_help_shows_every_name_of_the_secret_option() -> None:
    out = _help("ground", ("account", "add"))
    for name in ("--app-password-file", "--token-file", "--secret-file", "--service-url", "--identifier"):
        assert name in out


@pytest.mark.parametrize("program", PROGRAMS)
def test_version_and_short_help_from_the_installed_scripts(
    program: str, subprocess_env: dict[str, str]
) -> None:
    v = subprocess.run(
        [sys.executable, "-m", program, "--version"],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=60,
    )
    assert v.returncode == 0 and re.fullmatch(rf"{program} \(orbitpost\) \S+\n", v.stdout), v
    h = subprocess.run(
        [sys.executable, "-m", program, "-h"], capture_output=True, text=True, env=subprocess_env, timeout=60
    )
    assert h.returncode == 0 and "Usage:" in h.stdout and "Commands:" in h.stdout


# --- homes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("onboard", ["queue"]),
        ("onboard", ["keys", "list"]),
        ("onboard", ["sync"]),
        ("onboard", ["post", "--as", "alice", "--to", "archive:alice", "hi"]),
        ("ground", ["posts"]),
        ("ground", ["rejections"]),
        ("ground", ["astronauts"]),
        ("ground", ["operator", "list"]),
        ("ground", ["account", "list"]),
        ("ground", ["station", "add", "iss", "--token-out", "T"]),
        ("ground", ["serve", "--port", "0"]),
    ],
)
def test_a_mistyped_home_is_refused_in_one_line_and_not_created(
    program: str, args: list[str], tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    typo = tmp_path / "Aa"
    r = subprocess.run(
        [sys.executable, "-m", program, "--home", str(typo), *args],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 1, r
    assert r.stderr == (
        f"error: no {program} home at {typo} (check --home / ORBITPOST_HOME; "
        f"`{program} --home {typo} init` creates an empty one)\n"
    )
    assert r.stdout == "" and not typo.exists()


def test_only_keys_new_enroll_and_init_create_a_home(tmp_path: Path) -> None:
    cli = Cli(runner=CliRunner(), onboard_home=tmp_path / "A", ground_home=tmp_path / "G")
    cli.onboard("keys", "new", "alice")
    assert (cli.onboard_home / "keys" / "alice.key").exists()
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, "--account", "archive:alice")
    assert (cli.ground_home / "ground.db").exists()
    fresh = Cli(runner=CliRunner(), onboard_home=tmp_path / "A2", ground_home=tmp_path / "G2")
    fresh.onboard("init")
    assert fresh.onboard("queue").output == "queue is empty\n"
    fresh.ground("init")
    assert fresh.ground("posts").output == "no posts yet\n"


# --- JSON shapes ----------------------------------------------------------------------------


def _json(result: Any, schema: str) -> dict[str, Any]:
    doc = json.loads(result.output)
    assert doc["schema"] == schema and doc["version"] == 1
    assert result.output.isascii()  # every non-ASCII character escaped: safe to show raw
    return doc  # type: ignore[no-any-return]


def _keys(d: dict[str, Any]) -> set[str]:
    return set(d)


def test_json_shapes(enrolled: Cli, photo: Path, tmp_path: Path) -> None:
    cli = enrolled
    text = "Dawn over the Pacific 🌏 [b]bold?[/b]"
    post_id = cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "Sunrise", text
    ).output.split()[1]

    keys = _json(cli.onboard("keys", "list", "--json"), "orbitpost.onboard.keys")
    assert [_keys(k) for k in keys["keys"]] == [{"name", "fingerprint", "public_key", "protected"}]
    assert keys["keys"][0]["protected"] is False
    assert keys["keys"][0]["name"] == "alice"

    q = _json(cli.onboard("queue", "--json"), "orbitpost.onboard.queue")
    (item,) = q["items"]
    assert _keys(item) == {
        "id", "kind", "author", "status", "progress", "detail", "exported_to", "text", "photos", "publish_at",
        "accounts", "fidelity",
    }  # fmt: skip
    assert (item["id"], item["kind"], item["status"], item["text"]) == (post_id, "post", "queued", text)
    assert item["photos"][0]["alt"] == "Sunrise" and len(item["photos"][0]["sha256"]) == 64
    assert item["accounts"] == [
        {
            "account": "archive:alice",
            "state": "queued",
            "url": None,
            "detail": None,
            "photos": None,
            "read_back": None,
        }
    ]
    assert item["fidelity"] is None  # no receipt has said how faithfully (docs/RECEIPTS.md)

    out = tmp_path / "OUT"
    cli.onboard("export", str(out))
    (bundle,) = out.glob("*.opb")
    v = _json(cli.ground("verify", "--json", str(bundle)), "orbitpost.ground.verify")
    assert v["ok"] is True and v["authors"] == ["alice"] and v["items"] == 1 and v["blobs"] == 1
    assert _keys(v) == {
        "schema", "version", "file", "ok", "bundle_id", "format", "items", "authors", "blobs", "total_bytes",
        "signatures",
    }  # fmt: skip
    cli.ground("ingest", str(out))

    posts = _json(cli.ground("posts", "--json"), "orbitpost.ground.posts")
    (pub,) = posts["publications"]
    assert _keys(pub) == {
        "post_id", "author", "account", "state", "url", "error", "attempts", "updated", "published"
    }  # fmt: skip
    assert (pub["post_id"], pub["state"]) == (post_id, "published") and pub["url"].startswith("file://")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", pub["published"])

    bad = tmp_path / "bad.opb"
    bad.write_bytes(b"not a bundle")
    r = cli.ground("verify", "--json", str(bad), ok=False)
    assert r.exit_code == 1
    rv = json.loads(r.output)
    assert rv["ok"] is False and rv["code"] and rv["message"]
    rej = _json(cli.ground("rejections", "--json"), "orbitpost.ground.rejections")
    (one,) = rej["rejections"]
    assert _keys(one) == {"time", "source", "sha256", "size_bytes", "code", "message"}
    assert one["code"] == rv["code"] and one["size_bytes"] == len(b"not a bundle")

    astros = _json(cli.ground("astronauts", "--json"), "orbitpost.ground.astronauts")
    (alice,) = astros["astronauts"]
    assert alice["name"] == "alice" and alice["accounts"] == [{"account": "archive:alice", "paused": False}]
    assert alice["keys"][0]["fingerprint"] == keys["keys"][0]["fingerprint"]
    assert alice["keys"][0]["revoked_ms"] is None

    cli.ground("station", "add", "iss", "--token-out", str(tmp_path / "T"))
    st = _json(cli.ground("station", "list", "--json"), "orbitpost.ground.stations")
    assert st["stations"][0]["name"] == "iss" and st["stations"][0]["state"] == "active"
    assert _keys(st["stations"][0]) == {
        "name",
        "state",
        "created",
        "revoked",
        "quota_bytes",
        "last_seen",
        "last_addr",
    }

    cli.ground("operator", "add", "ada", "--role", "admin")
    ops = _json(cli.ground("operator", "list", "--json"), "orbitpost.ground.operators")
    assert ops["operators"] == [{"name": "ada", "role": "admin", "state": "active"}]

    (tmp_path / "pw").write_text("app-password-1234")
    cli.ground("account", "add", "bluesky:alice.test", "--app-password-file", str(tmp_path / "pw"))
    acc = _json(cli.ground("account", "list", "--json"), "orbitpost.ground.accounts")
    assert acc["accounts"] == [
        {
            "account": "bluesky:alice.test",
            "service_url": "https://bsky.social",
            "login": "alice.test",
            "token_expiry": None,
        }
    ]
    assert "app-password-1234" not in json.dumps(acc)

    # Plain listings: one line each, fields the JSON holds, tab-separated.
    assert cli.ground("astronauts").output.split("\t")[0] == "alice"
    assert cli.ground("station", "list").output.startswith("iss\tactive\tnever seen")


def test_publish_says_what_it_did(enrolled: Cli, tmp_path: Path) -> None:
    cli = enrolled
    assert cli.ground("publish").output == "nothing due\n"
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "hello")
    cli.onboard("export", str(tmp_path / "OUT"))
    for f in (tmp_path / "OUT").glob("*.opb"):
        cli.ground("verify", str(f))
    # ingest publishes at once; a second publish pass has nothing left.
    cli.ground("ingest", str(tmp_path / "OUT"))
    assert cli.ground("publish").output == "nothing due\n"


# --- pipes -------------------------------------------------------------------------------


def test_piped_output_never_wraps_urls_ids_or_accounts(
    enrolled: Cli, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    cli = enrolled
    for i in range(3):
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", f"post {i} " + "long text " * 20)
    cli.onboard("export", str(tmp_path / "OUT"))
    cli.ground("ingest", str(tmp_path / "OUT"))
    urls = [p["url"] for p in json.loads(cli.ground("posts", "--json").output)["publications"]]
    assert len(urls) == 3 and all(len(u) > 60 for u in urls)
    # onboard learns the URLs from ground's signed receipts.
    receipts = tmp_path / "receipts.bin"
    cli.ground("receipts", "--out", str(receipts))
    # A receipts import needs the pinned ground key: set the link up as a station would.
    cli.ground("station", "add", "iss", "--token-out", str(tmp_path / "T"))
    cli.onboard("link", "add", "--ground", "http://127.0.0.1:9", "--token-file", str(tmp_path / "T"))
    cli.onboard("receipts", "import", str(receipts))
    env = {**subprocess_env, "COLUMNS": "40", "LINES": "10"}
    for program, home, args in (
        ("onboard", cli.onboard_home, ["queue"]),
        ("ground", cli.ground_home, ["posts"]),
    ):
        r = subprocess.run(
            [sys.executable, "-m", program, "--home", str(home), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        for u in urls:
            assert u in r.stdout, f"{program} {args} split {u}:\n{r.stdout}"
        lines = r.stdout.splitlines()
        ids = {ln.split("\t")[0] for ln in lines if not ln.startswith(" ")}
        assert all(len(i) == 26 for i in ids), lines
