"""`onboard`: the astronaut's command line."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from protocol import Post, ProtocolError
from protocol.capabilities import Capabilities
from protocol.model import Cancel, Retract
from protocol.rules import fidelity_summary
from protocol.transfer import SenderConfig
from termtext import dump_json, row, visible, write_lines
from termtext.cli import (
    CONTEXT_SETTINGS,
    JSON_HELP,
    ChosenHome,
    consoles,
    plain_help,
    run_main,
    run_stoppable,
    stop_on_sigterm,
    stop_reason,
    version_option,
)

from . import keystore, queue
from .compose import PhotoInput, compose_command, compose_post, targets_note
from .errors import OnboardError
from .export import CURRENT_GROUND, export_queue
from .home import Home
from .receipts import Photos, account_words, fidelity_sentence, photo_fidelity
from .renditions import plan_for as rendition_plan

if TYPE_CHECKING:
    from rich.progress import Progress

    from .sync import SyncResult, SyncStatus

app = typer.Typer(
    help="orbitpost onboard client: queue, sign and send posts from the station.\n\n"
    "Example:\n\n\b\n"
    '    onboard --home A post --as alice --to bluesky:alice.bsky.social "Hello from orbit"',
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT_SETTINGS,
)
keys_app = typer.Typer(
    help="Astronaut identities (Ed25519 keys kept on this laptop).\n\nExample:\n\n\b\n    onboard keys list",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
link_app = typer.Typer(
    help="The live link to ground.\n\nExample:\n\n\b\n"
    "    onboard link add --ground http://127.0.0.1:8470 --token-file T",
    no_args_is_help=True,
)
app.add_typer(link_app, name="link")
receipts_app = typer.Typer(
    help="Ground's signed receipts.\n\nExample:\n\n\b\n    onboard receipts import receipts.bin",
    no_args_is_help=True,
)
app.add_typer(receipts_app, name="receipts")

console, err_console = consoles()


def _require_home(h: Home) -> None:
    root = h.root
    if not (root / "onboard.db").exists() and not (root / "keys").is_dir():
        raise OnboardError(
            f"no onboard home at {root} (check --home / ORBITPOST_HOME; "
            f"`onboard --home {root} init` creates an empty one)"
        )


state: ChosenHome[Home] = ChosenHome(_require_home)


@app.callback()
def _root(
    home: Annotated[
        Path,
        typer.Option(
            "--home", envvar="ORBITPOST_HOME", metavar="DIR", help="Onboard data folder (made by `keys new`)."
        ),
    ] = Path("orbitpost-onboard"),
    _version: Annotated[bool, version_option("onboard")] = False,
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file",
            help="For scripts: read the passphrase of protected keys from this file's first line "
            "(or set ORBITPOST_PASSPHRASE); otherwise it is asked on the terminal.",
        ),
    ] = None,
) -> None:
    state.home = Home(home)
    keystore.set_passphrase_source(_passphrase_source(passphrase_file))


def _passphrase_source(path: Path | None) -> keystore.PassphraseSource:
    """Passphrases for protected keys: --passphrase-file, ORBITPOST_PASSPHRASE, else a prompt."""
    asked: dict[str, bytes | None] = {}

    def source(name: str) -> bytes | None:
        if name not in asked:
            asked[name] = _read_passphrase(path, f"passphrase for {name}'s key: ")
        return asked[name]

    return source


def _read_passphrase(path: Path | None, prompt: str) -> bytes | None:
    import getpass
    import os
    import sys

    if path is not None:
        try:
            return path.read_text(encoding="utf-8").splitlines()[0].encode() if path.stat().st_size else b""
        except OSError as exc:
            raise OnboardError(f"cannot read --passphrase-file {path}: {exc.strerror or exc}") from exc
    if os.environ.get("ORBITPOST_PASSPHRASE"):
        return os.environ["ORBITPOST_PASSPHRASE"].encode()
    if sys.stdin.isatty():
        return getpass.getpass(prompt).encode()
    return None


def _new_passphrase(name: str) -> bytes:
    """A new passphrase: ORBITPOST_NEW_PASSPHRASE for scripts, else typed twice."""
    import os

    if os.environ.get("ORBITPOST_NEW_PASSPHRASE"):
        return os.environ["ORBITPOST_NEW_PASSPHRASE"].encode()
    value: str = typer.prompt(f"new passphrase for {name}'s key", hide_input=True, confirmation_prompt=True)
    return value.encode()


def _conn() -> sqlite3.Connection:
    home = state.home.ensure()
    return queue.connect(home.db_path)


@app.command()
def init() -> None:
    """Create an empty onboard home (folders and queue database) at --home.

    Example:

    \b
        onboard --home A init
    """
    state.may_create = True
    _conn().close()
    console.print(f"onboard home ready at {visible(state.home.root)}")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Astronaut name: a-z, 0-9, '.', '_', '-'.")],
    passphrase: Annotated[
        bool,
        typer.Option(
            "--passphrase",
            help="Encrypt the key under a passphrase (asked twice; ORBITPOST_NEW_PASSPHRASE for scripts).",
        ),
    ] = False,
) -> None:
    """Create an Ed25519 identity for astronaut NAME (private key file mode 0600).

    Creates the onboard home if it does not exist yet.

    Example:

    \b
        onboard --home A keys new alice --passphrase
    """
    state.may_create = True
    key = keystore.new_key(state.home.ensure(), name, _new_passphrase(name) if passphrase else None)
    console.print(f"created key for {visible(name)} (fingerprint {keystore.key_fingerprint(key)})")
    console.print("give ground this line:  " + keystore.public_line(key))


@keys_app.command("protect")
def keys_protect(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Astronaut name (see `onboard keys list`).")],
    remove: Annotated[
        bool, typer.Option("--remove", help="Store the key unencrypted again (anyone here could sign).")
    ] = False,
) -> None:
    """Encrypt NAME's key under a (new) passphrase, so reading the file is not enough to sign.

    Example:

    \b
        onboard --home A keys protect alice
    """
    keystore.protect(state.home, name, None if remove else _new_passphrase(name))
    console.print(f"{visible(name)}'s key is {'no longer' if remove else 'now'} protected by a passphrase")


@keys_app.command("show")
def keys_show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Astronaut name (see `onboard keys list`).")],
) -> None:
    """Print NAME's public key as one copyable line (for `ground enroll --key`).

    Example:

    \b
        onboard --home A keys show alice
    """
    print(keystore.public_line_of(keystore.public_key(state.home, name)))


@keys_app.command("list")
def keys_list(json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List the identities on this laptop: name, fingerprint, public key, passphrase or not.

    Example:

    \b
        onboard --home A keys list --json
    """
    home = state.home
    keys = [
        (n, keystore.public_key(home, n), keystore.is_protected(home, n)) for n in keystore.list_names(home)
    ]
    if json_out:
        dump_json(
            "orbitpost.onboard.keys",
            1,
            {
                "keys": [
                    {
                        "name": n,
                        "fingerprint": keystore.fingerprint_of(pub),
                        "public_key": keystore.public_line_of(pub),
                        "protected": protected,
                    }
                    for n, pub, protected in keys
                ]
            },
        )
        return
    if not keys:
        console.print("no keys yet (onboard keys new NAME)")
    write_lines(
        row(
            n,
            keystore.fingerprint_of(pub),
            keystore.public_line_of(pub),
            "passphrase" if p else "no passphrase",
        )
        for n, pub, p in keys
    )


def _parse_at(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise OnboardError(f"--at {value!r} is not an ISO time like 2026-12-01T07:30Z") from None
    if dt.tzinfo is None:
        raise OnboardError(f"--at {value!r} needs a time zone, e.g. 2026-12-01T07:30Z")
    return int(dt.timestamp() * 1000)


@app.command()
def post(
    text: Annotated[
        str, typer.Argument(metavar="TEXT", help="The post's text, published byte for byte.")
    ] = "",
    author: Annotated[
        str, typer.Option("--as", metavar="NAME", help="Astronaut whose key signs the post.")
    ] = ...,  # type: ignore[assignment]
    to: Annotated[
        list[str],
        typer.Option("--to", metavar="PLATFORM:ACCOUNT", help="Target account; repeat or comma-separate."),
    ] = [],  # noqa: B006
    photo: Annotated[
        list[Path], typer.Option("--photo", metavar="FILE", help="A photo file; repeat for several.")
    ] = [],  # noqa: B006
    alt: Annotated[
        list[str],
        typer.Option("--alt", metavar="TEXT", help="Alt text for the photo in the same position."),
    ] = [],  # noqa: B006
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Publish not before this UTC time (ISO 8601)."),
    ] = None,
    allow_rendition: Annotated[
        list[str],
        typer.Option(
            "--allow-rendition",
            metavar="PLATFORM:ACCOUNT",
            help="Let ground publish a JPEG rendition (recipe rendition/v1) of a photo over this account's "
            "limits instead of refusing it; signed into the post. Repeat or comma-separate.",
        ),
    ] = [],  # noqa: B006
) -> None:
    """Queue a signed post (text and/or photos) for one or more accounts.

    Nothing is sent yet: `onboard sync` (live link) or `onboard export` (file hand-off) does that.

    Example:

    \b
        onboard post --as alice --to bluesky:alice.bsky.social --photo earth.jpg --alt "Earth at dawn" "Good morning"
    """
    if len(alt) > len(photo):
        raise OnboardError(
            f"{len(alt)} --alt given for {len(photo)} --photo; give one alt per photo, in order"
        )
    targets = [t.strip() for chunk in to for t in chunk.split(",") if t.strip()]
    photos = [PhotoInput(path=p, alt=alt[i] if i < len(alt) else "") for i, p in enumerate(photo)]
    conn = _conn()
    p = compose_post(
        state.home,
        conn,
        author=author,
        text=text,
        targets=targets,
        photos=photos,
        publish_at_ms=_parse_at(at),
        renditions=[t.strip() for chunk in allow_rendition for t in chunk.split(",") if t.strip()],
    )
    console.print(f"queued {p.id} for {visible(', '.join(p.targets))}")
    # Said before a byte is sent: which accounts get a rendition, of what (docs/platforms.md).
    planned = rendition_plan(state.home, conn, p)
    if planned:
        console.print(visible(planned))
    # Said before a byte is sent: which platforms publish the photo bytes as signed (issue 13).
    said = fidelity_summary(p.targets, len(p.media))
    if said:
        console.print(visible(said))
    note = targets_note(conn, author)
    if note:
        err_console.print(visible(note))


POST_ID_HELP = "The post's id (see `onboard queue`)."
HEARTBEAT_DEFAULT_S = SenderConfig().heartbeat_s or 0.0  # docs/link.md "A dark with nothing in flight"
HEARTBEAT_MIN_S = 5.0


@app.command()
def cancel(
    post_id: Annotated[str, typer.Argument(metavar="POST_ID", help=POST_ID_HELP)],
) -> None:
    """Cancel a queued or scheduled post before it is published (signed, carried like a post).

    Example:

    \b
        onboard cancel 01JD3Q8Z6Y4W9E2R5T7U1I0O9P
    """
    cmd = compose_command(state.home, _conn(), kind=Cancel, target_id=post_id)
    if isinstance(cmd, Post):  # ground never accepted it (its bundle was refused): cleared here
        console.print(f"cancelled {cmd.id} on this laptop; ground never had it")
        return
    console.print(f"queued cancel {cmd.id} of {visible(post_id.upper())}")


@app.command()
def retract(
    post_id: Annotated[str, typer.Argument(metavar="POST_ID", help=POST_ID_HELP)],
) -> None:
    """Delete a published post from every platform (signed, carried like a post).

    Example:

    \b
        onboard retract 01JD3Q8Z6Y4W9E2R5T7U1I0O9P
    """
    cmd = compose_command(state.home, _conn(), kind=Retract, target_id=post_id)
    console.print(f"queued retract {cmd.id} of {visible(post_id.upper())}")


def _fmt_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%MZ")


def _queue_json(q: queue.QueuedItem, progress: dict[str, float], conn: sqlite3.Connection) -> dict[str, Any]:
    it = q.item
    entry: dict[str, Any] = {
        "id": it.id,
        "kind": it.kind.name.lower(),
        "author": it.author,
        "status": q.status,
        "progress": progress.get(it.id) if q.status == "sending" else None,
        "detail": q.detail,
        "exported_to": q.exported_to,
    }
    if isinstance(it, Post):
        entry["text"] = it.text
        entry["photos"] = [
            {"sha256": m.sha256.hex(), "size_bytes": m.size_bytes, "media_type": m.media_type, "alt": m.alt}
            for m in it.media
        ]
        entry["publish_at"] = _iso(it.publish_at_ms)
    else:
        entry["target_id"] = it.target_id
    # Per account, how faithfully ground says each photo went out (receipts version 3, §9.4).
    fidelity = photo_fidelity(conn, it.id)
    entry["accounts"] = [
        {"account": t, "state": st, "url": url, "detail": det} | _photos_json(fidelity.get(t))
        for t, st, url, det in queue.deliveries(conn, it.id)
    ]
    if isinstance(it, Post):
        entry["fidelity"] = fidelity_sentence({a: p for a, (p, _) in fidelity.items()}) or None
    return entry


def _photos_json(reported: tuple[Photos, str] | None) -> dict[str, Any]:
    if reported is None:
        return {"photos": None, "read_back": None}  # no receipt has said (absent is null, docs/cli-json.md)
    photos, read_back = reported
    return {
        "photos": [
            {"photo": n, "fidelity": f, "original_sha256": h} for n, (f, h) in enumerate(photos, start=1)
        ],
        "read_back": read_back or None,
    }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _what(it: Any, detail: str | None = None) -> str:
    if not isinstance(it, Post):
        # What ground did with a cancel or retract, in its words (docs/PROTOCOL.md §9.2).
        return f"{it.kind.name.lower()} {it.target_id}" + (f": {visible(detail)}" if detail else "")
    what = visible(it.text[:40]) + ("…" if len(it.text) > 40 else "")
    if it.media:
        what += f" [{len(it.media)} photo{'s' if len(it.media) > 1 else ''}]"
    if it.publish_at_ms:
        what += f" (at {_fmt_time(it.publish_at_ms)})"
    return what


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


@app.command("queue")
def show_queue(json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Show every post: its id, status and per-account fate (published URL or the reason it failed).

    On a terminal: a table. Piped: one tab-separated line per item, then one indented line per
    account; nothing is wrapped or cut, so ids and URLs stay whole.

    Example:

    \b
        onboard --home A queue --json | jq '.items[] | {id, status}'
    """
    conn = _conn()
    rows = queue.items(conn)
    from .link import progress_by_item

    progress = progress_by_item(conn)
    if json_out:
        dump_json("orbitpost.onboard.queue", 1, {"items": [_queue_json(q, progress, conn) for q in rows]})
        return
    if not rows:
        console.print("queue is empty")
        return

    def show(st: str, item_id: str) -> str:
        return f"sending {int(progress.get(item_id, 0.0) * 100)}%" if st == "sending" else st

    lines: list[tuple[str, str, str, str, list[str]]] = []
    for q in rows:
        it = q.item
        fidelity = photo_fidelity(conn, it.id)
        accounts = [
            f"{visible(t)}: {show(st, it.id)}"
            + (f" {visible(url)}" if url else "")
            + (f" ({visible(det)})" if det else "")
            + (f" [{account_words(fidelity[t][0])}]" if st == "published" and t in fidelity else "")
            for t, st, url, det in queue.deliveries(conn, it.id)
        ]
        summary = fidelity_sentence({a: p for a, (p, _) in fidelity.items()})
        if summary:
            accounts.append("photos: " + visible(summary))
        status = show(q.status, it.id) + (f" → {visible(Path(q.exported_to).name)}" if q.exported_to else "")
        lines.append((it.id, visible(it.author), status, _what(it, q.detail), accounts))
    if not _stdout_is_terminal():
        for item_id, author, status, what, accounts in lines:
            print("\t".join((item_id, author, status, what)))
            for a in accounts:
                print("  " + a)
        return
    table = Table(show_lines=False)
    table.add_column("id", no_wrap=True, min_width=26)
    for col in ("author", "status", "what", "accounts"):
        table.add_column(col, overflow="fold")
    for item_id, author, status, what, accounts in lines:
        # Text(): cells are shown as written, never parsed as rich markup.
        table.add_row(item_id, Text(author), Text(status), Text(what), Text("\n".join(accounts)))
    console.print(table)


@app.command()
def export(
    outdir: Annotated[
        Path, typer.Argument(metavar="OUTDIR", help="Folder to write bundle files (*.opb) into.")
    ],
    ground_decodes: Annotated[
        str | None,
        typer.Option(
            "--ground-decodes",
            metavar="TOKEN",
            help="What the receiving ground decodes: the token `ground capabilities` prints "
            "(default: everything this release knows, JPEG XL photos and the text dictionary).",
        ),
    ] = None,
) -> None:
    """Write all queued items as bundle files into OUTDIR for a file hand-off.

    Example:

    \b
        onboard --home A export /media/usb/down
    """
    peer = CURRENT_GROUND if ground_decodes is None else Capabilities.from_token(ground_decodes)
    done = export_queue(state.home, _conn(), outdir, peer=peer)
    if not done:
        console.print("nothing queued to export")
    for b in done:
        console.print(f"wrote {visible(b.path)} ({b.size_bytes:,} bytes, {len(b.item_ids)} item(s))")


@link_app.command("add")
def link_add(
    ground: Annotated[
        str, typer.Option("--ground", metavar="URL", help="Ground's URL, e.g. http://127.0.0.1:8470")
    ],
    token_file: Annotated[
        Path, typer.Option("--token-file", metavar="FILE", help="The file `ground station add` wrote.")
    ],
) -> None:
    """Configure the link: ground URL, station token, and ground's receipt key (pinned).

    Example:

    \b
        onboard --home A link add --ground http://127.0.0.1:8470 --token-file T
    """
    from .link import add_link

    cfg = add_link(state.home, ground, token_file)
    console.print(
        f"link to {visible(cfg.ground_url)} as station {visible(cfg.station)}; ground receipt key pinned"
    )


# The bounds ``link expect`` takes: a modem's 300 bit/s to a 10 Gbit/s optical terminal, and a
# loopback's millisecond to a minute (Mars at closest approach is ~6 light-minutes each way:
# nothing this link does suits it).
EXPECT_RATE_KBIT_S = (0.3, 10_000_000.0)
EXPECT_RTT_MS = (1.0, 60_000.0)


def _bounded(flag: str, metavar: str, bounds: tuple[float, float], help: str) -> Any:
    """An optional number option refused, with its range named, outside ``bounds``."""
    lo, hi = bounds

    def check(value: float | None) -> float | None:
        if value is not None and not lo <= value <= hi:  # (NaN fails too)
            raise typer.BadParameter(f"{value:g}: {flag} must be from {lo:g} to {hi:,.0f}")
        return value

    return typer.Option(flag, metavar=metavar, help=help, callback=check)


@link_app.command("expect")
def link_expect(
    rate_kbit: Annotated[
        float | None,
        _bounded(
            "--rate-kbit",
            "KBIT/S",
            EXPECT_RATE_KBIT_S,
            "The station-to-ground rate the crew's share of the link carries, in kbit/s.",
        ),
    ] = None,
    rtt_ms: Annotated[
        float | None,
        _bounded(
            "--rtt-ms",
            "MS",
            EXPECT_RTT_MS,
            "The link's round trip, in milliseconds (e.g. 600 through a GEO relay).",
        ),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Forget the link set here.")] = False,
) -> None:
    """Tell the station what link to expect before it has measured one of its own.

    A sync sizes its start (first requests, streams, send gate) by the link it measured on its
    last pass. A station's first sync, or one after a week without any, has nothing measured
    and assumes the reference link (1500 kbit/s, 600 ms: ISS Ku-band through a GEO relay)
    until the link shows a queue: on a longer path it fills the link a few round trips late,
    on a slower one it holds more than the link does for its first seconds, which a cut then
    loses. Set here, the link sizes such a start instead; anything the station measures itself
    takes its place. With no option, shows what is set.

    Example:

    \b
        onboard --home A link expect --rate-kbit 1500 --rtt-ms 600
    """
    from protocol.link_memory import LinkMemory, reference_link

    from .link import ensure_schema, expect_link, expected_link

    conn = _conn()
    ensure_schema(conn)
    if clear and (rate_kbit is not None or rtt_ms is not None):
        raise typer.BadParameter("give --clear alone, or --rate-kbit and --rtt-ms")
    if (rate_kbit is None) != (rtt_ms is None):
        raise typer.BadParameter("give both --rate-kbit and --rtt-ms")
    if clear:
        expect_link(conn, None)
    elif rate_kbit is not None and rtt_ms is not None:
        expected = LinkMemory(
            rate_bytes_s=rate_kbit * 1000 / 8, base_rtt_s=rtt_ms / 1000, measured_at=time.time()
        )
        expect_link(conn, expected)
    shown = expected_link(conn)
    if shown is None:
        ref = reference_link(time.time())
        console.print(
            "no link expected: a start with nothing measured assumes the reference link, "
            f"{ref.rate_bytes_s * 8 / 1000:g} kbit/s, round trip {ref.base_rtt_s * 1000:g} ms"
        )
    else:
        console.print(
            f"expected link: {shown.rate_bytes_s * 8 / 1000:g} kbit/s, round trip {shown.base_rtt_s * 1000:g} ms"
            f" (a bandwidth-delay product of {shown.bdp_bytes / 1000:,.1f} kB)"
        )


@link_app.command("check-log")
def link_check_log() -> None:
    """Check ground's public transparency log against what ground told this station.

    Every receipt carried ground's log checkpoint at the time; this fetches the public log's
    newest checkpoint, checks it extends every one the station kept, and checks the public
    proof of every post published from here holds the very body signed here.

    Example:

    \b
        onboard --home A link check-log
    """
    from .link import load_link
    from .logcheck import check

    cfg = load_link(state.home)
    result = check(_conn(), cfg.ground_url, cfg.ground_key)
    console.print(
        f"ground's public log ({result.public.size} leaves) extends the {result.heads_checked} checkpoint(s) "
        f"it sent this station and proves the {result.posts_checked} post(s) published from here"
    )


def _heartbeat_seconds(value: float) -> float:
    """0 (no heartbeat) or at least HEARTBEAT_MIN_S: more often only loads the link and ground."""
    if value != 0 and not value >= HEARTBEAT_MIN_S:
        raise typer.BadParameter(f"{value:g} s: give 0 (never) or at least {HEARTBEAT_MIN_S:g} seconds")
    return value


@app.command()
def sync(
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep going across outages until Ctrl-C or SIGTERM.")
    ] = False,
    give_up_after: Annotated[
        float,
        typer.Option(
            "--give-up-after",
            metavar="SECONDS",
            help="Without --watch: stop after the link is down this long.",
        ),
    ] = 120.0,
    wait_published: Annotated[
        float,
        typer.Option(
            "--wait-published",
            metavar="SECONDS",
            help="Keep fetching receipts up to this long until everything sent is published.",
        ),
    ] = 0.0,
    heartbeat: Annotated[
        float,
        typer.Option(
            "--heartbeat",
            metavar="SECONDS",
            callback=_heartbeat_seconds,
            help="With --watch: ask an idle ground this often whether the link is still there, so "
            "a post after an unnoticed loss of signal races for the link's return (0: never).",
        ),
    ] = HEARTBEAT_DEFAULT_S,
    json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP + " Progress stays on stderr.")] = False,
) -> None:
    """Send everything queued to ground, resuming where the last cut stopped; fetch receipts.

    The progress bar (stderr) shows bytes sent, the rate and the time left at that rate.

    Example:

    \b
        onboard --home A sync --wait-published 60
    """

    home = state.home  # a missing home is refused before any progress is drawn
    from .sync import sync as run_sync

    config = SenderConfig(heartbeat_s=heartbeat or None)
    progress, on_status = _sync_progress()
    with stop_on_sigterm(), progress:
        try:
            result = run_stoppable(
                run_sync(
                    home,
                    watch=watch,
                    give_up_after_s=give_up_after,
                    wait_published_s=wait_published,
                    config=config,
                    on_status=on_status,
                )
            )
        except KeyboardInterrupt as exc:
            progress.stop()
            err_console.print(
                f"sync stopped by {stop_reason(exc)}; nothing is lost: "
                "run `onboard sync` again to resume where it left off"
            )
            return
    if json_out:
        dump_json("orbitpost.onboard.sync", 1, _sync_json(result))
        return
    _print_sync_result(result)


def _sync_progress() -> tuple[Progress, Callable[[SyncStatus], None]]:
    """The sync progress bar on stderr and the callback that moves it."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task("sending", total=None)

    def on_status(s: SyncStatus) -> None:
        link_txt = "link up" if s.link_up else f"link down ({visible(s.reason[:40])})"
        progress.update(
            task,
            total=s.total_bytes or None,
            completed=s.acked_bytes,
            description=f"{link_txt} · {s.transfers_left} transfer(s) left",
        )

    return progress, on_status


def _sync_json(result: SyncResult) -> dict[str, Any]:
    """`onboard sync --json`'s fields (docs/cli-json.md)."""
    return {
        "committed": result.committed,
        "rejected": result.rejected,
        "receipts": result.receipts,
        "requests": result.requests,
        "request_bytes": result.request_bytes,
        "chunk_bytes": result.chunk_bytes,
        "retried": result.failures,
        "duration_s": round(result.duration_s, 3),
        "pending_items": result.pending_items,
        "photos_as_is": list(result.photos_as_is),
    }


def _print_sync_result(result: SyncResult) -> None:
    """The summary line, photos sent as they are, and (exit 1) what ground refused."""
    console.print(
        f"sync done: {result.committed} transfer(s) committed, {result.rejected} rejected, "
        f"{result.receipts} receipt(s); {result.request_bytes:,} bytes sent in {result.requests} request(s), "
        f"{result.failures} retried"
    )
    if result.photos_as_is:
        # Not an error (each photo still arrives byte for byte), but bandwidth the astronaut may want back.
        err_console.print(
            f"note: {len(result.photos_as_is)} photo(s) sent as they are, not smaller as Lepton or JPEG XL:"
        )
        for line in result.photos_as_is[:5]:
            err_console.print(f"  {visible(line)}")
    if result.refused or result.rejected:
        # One line the astronaut can act on; `onboard queue` has each reason and its remedy.
        what = "; ".join(result.refused[:3]) + (
            f"; and {len(result.refused) - 3} more" if len(result.refused) > 3 else ""
        )
        err_console.print(
            f"error: ground refused {len(result.refused) + result.rejected} thing(s) sent: "
            f"{what or 'see onboard queue'} — see `onboard queue` for what resolves each",
            markup=False,
            soft_wrap=True,
        )
        raise SystemExit(1)


@app.command()
def ui(
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to listen on (never another).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free one).")] = 0,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in this laptop's browser.")
    ] = True,
    lock_after: Annotated[
        float, typer.Option("--lock-after", help="Forget unlocked keys after this many idle minutes.")
    ] = 10.0,
) -> None:
    """The compose page: write, attach photos, send and follow posts in a browser on this laptop.

    Example:

    \b
        onboard --home A ui
    """
    from .ui.server import run_ui

    run_ui(state.home, host=host, port=port, open_browser=open_browser, lock_after_s=lock_after * 60)


@receipts_app.command("import")
def receipts_import(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="The file `ground receipts --out` wrote.")],
) -> None:
    """Apply a receipts file from ground (`ground receipts --out F`), verified against the pinned key.

    Example:

    \b
        onboard --home A receipts import /media/usb/up/receipts.bin
    """
    from .link import load_link
    from .receipts import import_file

    applied = import_file(_conn(), path, load_link(state.home).ground_key)
    console.print(f"applied {applied.receipts} receipt(s), {applied.changed} change(s)")


def command() -> Any:
    """The `onboard` command tree as click runs it, with plain help (termtext/cli.py)."""
    return plain_help(typer.main.get_command(app))


def main() -> None:
    """Entry point: user mistakes print one line and exit 1, never a traceback."""
    run_main(command(), "onboard", (OnboardError, ProtocolError), err_console)
