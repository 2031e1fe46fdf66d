"""`onboard`: the astronaut's command line."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from protocol import Post, ProtocolError
from protocol.capabilities import Capabilities
from protocol.model import Cancel, Retract
from protocol.rules import fidelity_summary

from . import keystore, queue
from .compose import PhotoInput, compose_command, compose_post, targets_note
from .errors import OnboardError
from .export import CURRENT_GROUND, export_queue
from .home import Home

app = typer.Typer(
    help="orbitpost onboard client: queue, sign and send posts from the station.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Astronaut identities (Ed25519 keys kept on this laptop).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
link_app = typer.Typer(help="The live link to ground (issue 3).", no_args_is_help=True)
app.add_typer(link_app, name="link")
receipts_app = typer.Typer(help="Ground's signed receipts.", no_args_is_help=True)
app.add_typer(receipts_app, name="receipts")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class _State:
    home: Home


state = _State()


@app.callback()
def _root(
    home: Annotated[
        Path, typer.Option("--home", envvar="ORBITPOST_HOME", help="Onboard data folder.")
    ] = Path("orbitpost-onboard"),
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
    state.home.ensure()
    return queue.connect(state.home.db_path)


@keys_app.command("new")
def keys_new(
    name: str,
    passphrase: Annotated[
        bool,
        typer.Option(
            "--passphrase",
            help="Encrypt the key under a passphrase (asked twice; ORBITPOST_NEW_PASSPHRASE for scripts).",
        ),
    ] = False,
) -> None:
    """Create an Ed25519 identity for astronaut NAME (private key file mode 0600)."""
    key = keystore.new_key(state.home, name, _new_passphrase(name) if passphrase else None)
    console.print(f"created key for {name} (fingerprint {keystore.key_fingerprint(key)})")
    console.print("give ground this line:  " + keystore.public_line(key))


@keys_app.command("protect")
def keys_protect(
    name: str,
    remove: Annotated[
        bool, typer.Option("--remove", help="Store the key unencrypted again (anyone here could sign).")
    ] = False,
) -> None:
    """Encrypt NAME's key under a (new) passphrase, so reading the file is not enough to sign."""
    keystore.protect(state.home, name, None if remove else _new_passphrase(name))
    console.print(f"{name}'s key is {'no longer' if remove else 'now'} protected by a passphrase")


@keys_app.command("show")
def keys_show(name: str) -> None:
    """Print NAME's public key as one copyable line."""
    print(keystore.public_line_of(keystore.public_key(state.home, name)))


@keys_app.command("list")
def keys_list() -> None:
    """List the identities on this laptop (and whether each is protected by a passphrase)."""
    for name in keystore.list_names(state.home):
        pub = keystore.public_key(state.home, name)
        lock = "passphrase" if keystore.is_protected(state.home, name) else "no passphrase"
        print(f"{name}\t{keystore.fingerprint_of(pub)}\t{keystore.public_line_of(pub)}\t{lock}")


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
    text: Annotated[str, typer.Argument(help="The post's text, published byte for byte.")] = "",
    author: Annotated[str, typer.Option("--as", help="Astronaut whose key signs the post.")] = ...,  # type: ignore[assignment]
    to: Annotated[
        list[str], typer.Option("--to", help="Target account platform:account; repeat or comma-separate.")
    ] = [],  # noqa: B006
    photo: Annotated[list[Path], typer.Option("--photo", help="A photo file; repeat for several.")] = [],  # noqa: B006
    alt: Annotated[
        list[str], typer.Option("--alt", help="Alt text for the photo in the same position.")
    ] = [],  # noqa: B006
    at: Annotated[
        str | None, typer.Option("--at", help="Publish not before this UTC time (ISO 8601).")
    ] = None,
) -> None:
    """Queue a signed post (text and/or photos) for one or more accounts."""
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
    )
    console.print(f"queued {p.id} for {', '.join(p.targets)}")
    # Said before a byte is sent: which platforms publish the photo bytes as signed (issue 13).
    said = fidelity_summary(p.targets, len(p.media))
    if said:
        console.print(said, markup=False)
    note = targets_note(conn, author)
    if note:
        err_console.print(note, markup=False)


@app.command()
def cancel(post_id: str) -> None:
    """Cancel a queued or scheduled post before it is published (signed, carried like a post)."""
    cmd = compose_command(state.home, _conn(), kind=Cancel, target_id=post_id)
    if isinstance(cmd, Post):  # ground never accepted it (its bundle was refused): cleared here
        console.print(f"cancelled {cmd.id} on this laptop; ground never had it")
        return
    console.print(f"queued cancel {cmd.id} of {post_id.upper()}")


@app.command()
def retract(post_id: str) -> None:
    """Delete a published post from every platform (signed, carried like a post)."""
    cmd = compose_command(state.home, _conn(), kind=Retract, target_id=post_id)
    console.print(f"queued retract {cmd.id} of {post_id.upper()}")


def _fmt_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%MZ")


@app.command("queue")
def show_queue() -> None:
    """Show every post: its id, status and per-account fate."""
    conn = _conn()
    rows = queue.items(conn)
    if not rows:
        console.print("queue is empty")
        return
    table = Table(show_lines=False)
    table.add_column("id", no_wrap=True, min_width=26)
    for col in ("author", "status", "what", "accounts"):
        table.add_column(col, overflow="fold")
    from .link import progress_by_item

    progress = progress_by_item(conn)

    def show(st: str, item_id: str) -> str:
        return f"sending {int(progress.get(item_id, 0.0) * 100)}%" if st == "sending" else st

    for q in rows:
        it = q.item
        if isinstance(it, Post):
            what = (it.text[:40] + ("…" if len(it.text) > 40 else "")).replace("\n", " ")
            if it.media:
                what += f" [{len(it.media)} photo{'s' if len(it.media) > 1 else ''}]"
            if it.publish_at_ms:
                what += f" (at {_fmt_time(it.publish_at_ms)})"
        else:
            what = f"{it.kind.name.lower()} {it.target_id}"
            if q.detail:  # what ground did with it, in its words (docs/PROTOCOL.md §9.2)
                what += f": {q.detail}"
        accounts = "\n".join(
            f"{t}: {show(st, it.id)}" + (f" {url}" if url else "") + (f" ({det})" if det else "")
            for t, st, url, det in queue.deliveries(conn, it.id)
        )
        status = show(q.status, it.id) + (f" → {Path(q.exported_to).name}" if q.exported_to else "")
        table.add_row(it.id, it.author, status, what, accounts)
    console.print(table)


@app.command()
def export(
    outdir: Path,
    ground_decodes: Annotated[
        str | None,
        typer.Option(
            "--ground-decodes",
            help="What the receiving ground decodes: the token `ground capabilities` prints "
            "(default: everything this release knows, JPEG XL photos and the text dictionary).",
        ),
    ] = None,
) -> None:
    """Write all queued items as bundle files into OUTDIR for a file hand-off."""
    peer = CURRENT_GROUND if ground_decodes is None else Capabilities.from_token(ground_decodes)
    done = export_queue(state.home, _conn(), outdir, peer=peer)
    if not done:
        console.print("nothing queued to export")
    for b in done:
        console.print(f"wrote {b.path} ({b.size_bytes:,} bytes, {len(b.item_ids)} item(s))")


@link_app.command("add")
def link_add(
    ground: Annotated[str, typer.Option("--ground", help="Ground's URL, e.g. http://127.0.0.1:8470")],
    token_file: Annotated[Path, typer.Option("--token-file", help="The file `ground station add` wrote.")],
) -> None:
    """Configure the link: ground URL, station token, and ground's receipt key (pinned)."""
    from .link import add_link

    cfg = add_link(state.home, ground, token_file)
    console.print(f"link to {cfg.ground_url} as station {cfg.station}; ground receipt key pinned")


@app.command()
def sync(
    watch: Annotated[bool, typer.Option("--watch", help="Keep going across outages until Ctrl-C.")] = False,
    give_up_after: Annotated[
        float,
        typer.Option("--give-up-after", help="Without --watch: stop after the link is down this long (s)."),
    ] = 120.0,
    wait_published: Annotated[
        float,
        typer.Option("--wait-published", help="Keep fetching receipts up to this long (s) until published."),
    ] = 0.0,
) -> None:
    """Send everything queued to ground, resuming where the last cut stopped; fetch receipts."""
    import asyncio

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from .sync import SyncStatus
    from .sync import sync as run_sync

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task("sending", total=None)

    def on_status(s: SyncStatus) -> None:
        link_txt = "link up" if s.link_up else f"link down ({s.reason[:40]})"
        progress.update(
            task,
            total=s.total_bytes or None,
            completed=s.acked_bytes,
            description=f"{link_txt} · {s.transfers_left} transfer(s) left",
        )

    with progress:
        try:
            result = asyncio.run(
                run_sync(
                    state.home,
                    watch=watch,
                    give_up_after_s=give_up_after,
                    wait_published_s=wait_published,
                    on_status=on_status,
                )
            )
        except KeyboardInterrupt:
            console.print("stopped; run `onboard sync` again to resume where it left off")
            return
    console.print(
        f"sync done: {result.committed} transfer(s) committed, {result.rejected} rejected, "
        f"{result.receipts} receipt(s); {result.request_bytes:,} bytes sent in {result.requests} request(s), "
        f"{result.failures} retried"
    )
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
    """The compose page: write, attach photos, send and follow posts in a browser on this laptop."""
    from .ui.server import run_ui

    run_ui(state.home, host=host, port=port, open_browser=open_browser, lock_after_s=lock_after * 60)


@receipts_app.command("import")
def receipts_import(path: Path) -> None:
    """Apply a receipts file from ground (`ground receipts --out F`), verified against the pinned key."""
    from .link import load_link
    from .receipts import import_file

    applied = import_file(_conn(), path, load_link(state.home).ground_key)
    console.print(f"applied {applied.receipts} receipt(s), {applied.changed} change(s)")


def main() -> None:
    """Entry point: user mistakes print one line and exit 1, never a traceback."""
    try:
        app()
    except (OnboardError, ProtocolError) as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise SystemExit(1) from None
