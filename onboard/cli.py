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
from protocol.model import Cancel, Retract

from . import keystore, queue
from .compose import PhotoInput, compose_command, compose_post
from .errors import OnboardError
from .export import export_queue
from .home import Home

app = typer.Typer(
    help="orbitpost onboard client: queue, sign and send posts from the station.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Astronaut identities (Ed25519 keys kept on this laptop).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

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
) -> None:
    state.home = Home(home)


def _conn() -> sqlite3.Connection:
    state.home.ensure()
    return queue.connect(state.home.db_path)


@keys_app.command("new")
def keys_new(name: str) -> None:
    """Create an Ed25519 identity for astronaut NAME (private key file mode 0600)."""
    key = keystore.new_key(state.home, name)
    console.print(f"created key for {name} (fingerprint {keystore.key_fingerprint(key)})")
    console.print("give ground this line:  " + keystore.public_line(key))


@keys_app.command("show")
def keys_show(name: str) -> None:
    """Print NAME's public key as one copyable line."""
    print(keystore.public_line(keystore.load_key(state.home, name)))


@keys_app.command("list")
def keys_list() -> None:
    """List the identities on this laptop."""
    for name in keystore.list_names(state.home):
        key = keystore.load_key(state.home, name)
        print(f"{name}\t{keystore.key_fingerprint(key)}\t{keystore.public_line(key)}")


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
    p = compose_post(
        state.home,
        _conn(),
        author=author,
        text=text,
        targets=targets,
        photos=photos,
        publish_at_ms=_parse_at(at),
    )
    console.print(f"queued {p.id} for {', '.join(p.targets)}")


@app.command()
def cancel(post_id: str) -> None:
    """Cancel a queued or scheduled post before it is published (signed, carried like a post)."""
    cmd = compose_command(state.home, _conn(), kind=Cancel, target_id=post_id)
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
        accounts = "\n".join(
            f"{t}: {st}" + (f" {url}" if url else "") + (f" ({det})" if det else "")
            for t, st, url, det in queue.deliveries(conn, it.id)
        )
        status = q.status + (f" → {Path(q.exported_to).name}" if q.exported_to else "")
        table.add_row(it.id, it.author, status, what, accounts)
    console.print(table)


@app.command()
def export(outdir: Path) -> None:
    """Write all queued items as bundle files into OUTDIR for a file hand-off."""
    done = export_queue(state.home, _conn(), outdir)
    if not done:
        console.print("nothing queued to export")
    for b in done:
        console.print(f"wrote {b.path} ({b.size_bytes:,} bytes, {len(b.item_ids)} item(s))")


def main() -> None:
    """Entry point: user mistakes print one line and exit 1, never a traceback."""
    try:
        app()
    except (OnboardError, ProtocolError) as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise SystemExit(1) from None
