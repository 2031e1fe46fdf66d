"""The astronaut's words are shown exactly as written, everywhere (termtext.visible).

A hostile-text corpus goes through every command that prints user text and through the
dashboard's JSON API. Each piece must come out verbatim (printable text, markup-like brackets,
HTML) or visibly escaped (controls, ANSI/OSC escapes, \\r, bidi and zero-width characters) —
never obeyed, dropped or crashing — while what is stored and published stays byte-exact.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import Cli

from termtext import visible

# (text, what must be seen verbatim in plain output)
CORPUS = [
    (
        "a[i] and [red] text [/b] [link=http://evil]x[/link]",
        "a[i] and [red] text [/b] [link=http://evil]x[/link]",
    ),
    ("[unknown_account] [bold red]alarm[/]", "[unknown_account] [bold red]alarm[/]"),
    ("\x1b[31mred\x1b[0m \x1b[2J cleared", "\\x1b[31mred\\x1b[0m \\x1b[2J cleared"),
    (
        "\x1b]8;;http://evil.example\x07click\x1b]8;;\x07",
        "\\x1b]8;;http://evil.example\\x07click\\x1b]8;;\\x07",
    ),
    ("\x1b]0;owned title\x07 \x9b31m C1 CSI", "\\x1b]0;owned title\\x07 \\x9b31m C1 CSI"),
    ("safe\rEVIL overwrite", "safe\\rEVIL overwrite"),
    (
        "bidi \u202egnp.exe\u202c and \u2066isolate\u2069",
        "bidi \\u202egnp.exe\\u202c and \\u2066isolate\\u2069",
    ),
    ("zero\u200bwidth\u200c\ufeff\u00ad", "zero\\u200bwidth\\u200c\\ufeff\\xad"),
    ("<script>alert(1)</script> &amp; <b>", "<script>alert(1)</script> &amp; <b>"),
    ("astronaut 👩\u200d🚀 flag 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f ok", None),
    ("bell\x07 backspace\x08 nul-free del\x7f", "bell\\x07 backspace\\x08 nul-free del\\x7f"),
]
RAW_DANGER = ["\x1b", "\r", "\x07", "\x08", "\x7f", "\x9b", "\u202e", "\u2066", "\u200b", "\ufeff"]


def _no_raw_controls(out: str) -> None:
    for ch in RAW_DANGER:
        assert ch not in out, f"raw {ch!r} reached the terminal: {out!r}"


@pytest.mark.parametrize(("text", "shown"), CORPUS)
def test_visible_escapes_controls_and_keeps_the_rest(text: str, shown: str | None) -> None:
    out = visible(text)
    _no_raw_controls(out)
    if shown is not None:
        assert out == shown
    else:  # emoji sequences keep their joiners and tags: nothing to escape
        assert out == text
    assert all(unicodedata.category(c) not in ("Cc", "Zl", "Zp") for c in out)


def test_visible_keeps_tabs_only_when_asked() -> None:
    assert visible("a\tb") == "a\\tb" and visible("a\tb", tabs=True) == "a\tb"
    assert visible("line\nnext") == "line\\nnext"
    assert visible("\u200d alone") == "\\u200d alone"


@pytest.fixture
def hostile(enrolled: Cli, photo: Path, tmp_path: Path) -> tuple[Cli, list[str]]:
    """Every corpus text queued as a post (with the same text as the photo's alt on the first)."""
    cli = enrolled
    texts = [t for t, _ in CORPUS]
    cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", texts[0], texts[0]
    )
    for t in texts[1:]:
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", t)
    return cli, texts


def test_onboard_queue_shows_every_text_as_written_piped_and_in_a_table(
    hostile: tuple[Cli, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, texts = hostile
    plain = cli.onboard("queue").output
    _no_raw_controls(plain)
    # The 40-character preview: what was written, cut, controls escaped; brackets kept.
    for text, shown in CORPUS:
        if shown is not None:
            assert visible(text[:40]) in plain
    assert "a[i] and [red] text [/b]" in plain and "[unknown_account]" in plain
    import onboard.cli

    monkeypatch.setattr(onboard.cli, "_stdout_is_terminal", lambda: True)
    # Wide enough that the table folds no cell. The console is made once at import, so its width
    # is set on it: COLUMNS alone loses to a width fixed when the module was first imported.
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(onboard.cli.console, "_width", 250)
    table = cli.onboard("queue").output
    _no_raw_controls(table)
    assert "[/b]" in table and "[unknown_account]" in table and "\\x1b[31mred" in table

    doc = json.loads(cli.onboard("queue", "--json").output)
    assert [i["text"] for i in doc["items"]] == texts  # JSON carries the exact text
    assert doc["items"][0]["photos"][0]["alt"] == texts[0]


def test_ground_commands_and_storage_keep_the_bytes(hostile: tuple[Cli, list[str]], tmp_path: Path) -> None:
    cli, texts = hostile
    out = tmp_path / "OUT"
    cli.onboard("export", str(out))
    for bundle in out.glob("*.opb"):
        v = cli.ground("verify", str(bundle)).output
        assert v.startswith("OK ")
    ing = cli.ground("ingest", str(out)).output
    _no_raw_controls(ing)
    published = {
        p.name: (p / "text.txt").read_bytes() for p in (cli.ground_home / "archive" / "alice").iterdir()
    }
    assert sorted(published.values()) == sorted(t.encode() for t in texts)  # byte-exact on the platform
    posts = cli.ground("posts").output
    assert posts.count("\tpublished\t") == len(texts)


def test_rejections_and_errors_quote_hostile_names_visibly(
    enrolled: Cli, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    cli = enrolled
    evil = tmp_path / "x[red]\x1b[31m\u202eevil[b].opb"
    evil.write_bytes(b"not a bundle")
    r = cli.ground("verify", str(evil), ok=False)
    assert r.exit_code == 1
    listed = cli.ground("rejections").output
    _no_raw_controls(listed)
    assert "x[red]\\x1b[31m\\u202eevil[b].opb" in listed
    assert "\t[" in listed and "]\t" in listed  # the bracketed code is shown, not eaten as markup
    doc = json.loads(cli.ground("rejections", "--json").output)
    assert doc["rejections"][0]["source"] == f"verify:{evil}"

    # An error quoting user text: one line, escaped, brackets kept, no traceback.
    p = subprocess.run(
        cli.onboard_argv("post", "--as", "[/b]\x1b[31mx", "hi"),
        capture_output=True, text=True, env=subprocess_env, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1
    assert "[/b]\\x1b[31mx" in p.stderr
    _no_raw_controls(p.stderr)
    g = subprocess.run(
        cli.ground_argv("verify", str(evil)),
        capture_output=True, text=True, env=subprocess_env, timeout=60,
    )  # fmt: skip
    assert g.returncode == 1 and g.stderr.startswith("REJECTED x[red]\\x1b[31m\\u202eevil[b].opb: [")
    _no_raw_controls(g.stderr)


async def test_dashboard_api_returns_every_text_verbatim(
    hostile: tuple[Cli, list[str]], tmp_path: Path
) -> None:
    from dashboard_support import ADMIN, make_app

    from ground import operators
    from ground.home import GroundHome

    cli, texts = hostile
    cli.onboard("export", str(tmp_path / "OUT"))
    # In a thread: ingest publishes with asyncio.run(), and this test's loop is running.
    await asyncio.to_thread(cli.ground, "ingest", str(tmp_path / "OUT"))
    evil = tmp_path / "x[red]\x1b[31m\u202eevil[b].opb"
    evil.write_bytes(b"not a bundle")
    await asyncio.to_thread(cli.ground, "verify", str(evil), ok=False)
    home = GroundHome(cli.ground_home)
    operators.add_operator(home.conn, ADMIN[0], ADMIN[1], operators.Role.ADMIN, 1_000)
    try:
        async with TestClient(TestServer(make_app(home))) as c:
            r = await c.post("/api/login", json={"name": ADMIN[0], "password": ADMIN[1]})
            assert r.status == 200
            r = await c.get("/api/posts")
            assert r.status == 200
            body: dict[str, Any] = await r.json()
            raw = await r.text()
            r = await c.get("/api/security")
            security = await r.json()
            raw += await r.text()
    finally:
        home.close()
    shown = json.dumps(body)
    for t in texts:
        assert json.dumps(t)[1:-1] in shown, t  # every text present, exactly
    assert "\x1b" not in raw and "\u202e" not in raw  # JSON escapes controls: nothing raw on the wire
    assert any(e["source"] == f"verify:{evil}" for e in security["events"])  # the hostile name, exactly
