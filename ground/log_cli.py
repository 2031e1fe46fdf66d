"""`ground log ...`: the public transparency log — bring it up to date, show it, witness it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from protocol import LocalProtocolError, format_public_key, parse_public_key
from verifier.proof import VerificationFailed
from verifier.witness import load_key, witness_once

from . import translog
from .home import GroundHome
from .receipts import ground_key

log_app = typer.Typer(
    help="The public transparency log: every key, post and outcome, with signed checkpoints.\n\n"
    "Example:\n\n\b\n    ground --home G log checkpoint",
    no_args_is_help=True,
)


def _home() -> GroundHome:
    from .cli import state  # late: cli imports this module

    return state.home


def _now_ms() -> int:
    return int(time.time() * 1000)


@log_app.command("sync")
def sync_log() -> None:
    """Log what changed since the last run and sign a checkpoint (ground serve does this every 2 s).

    Example: ground log sync
    """
    home = _home()
    added = translog.catch_up(home, _now_ms())
    print(f"{added} new leaves; checkpoint:")
    print(translog.latest(home), end="")


@log_app.command("checkpoint")
def show_checkpoint() -> None:
    """Print the newest signed checkpoint and the log's public key (give both to witnesses).

    Example: ground log checkpoint
    """
    home = _home()
    note = translog.latest(home)
    if note is None:
        translog.catch_up(home, _now_ms())
        note = translog.latest(home)
    print(f"log key: {format_public_key(ground_key(home).public_key)}")
    print(note, end="")


@log_app.command("add-witness")
def add_witness(
    name: Annotated[str, typer.Argument(help="The witness's name, as it signs.")],
    key: Annotated[str, typer.Argument(help="Its public key, ed25519:…")],
) -> None:
    """Accept cosignatures from a witness; they are then shown on every proof page.

    Example: ground log add-witness esa-witness ed25519:AbC…
    """
    try:
        public = parse_public_key(key)
    except LocalProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    translog.add_witness(_home(), name, public, _now_ms())
    print(f"witness {name} added")


@log_app.command("witness")
def witness(
    ground_url: Annotated[str, typer.Argument(help="Ground's public base URL, e.g. https://ground.example")],
    state_dir: Annotated[Path, typer.Option("--state", help="Where this witness keeps what it saw.")] = Path(
        "witness-state"
    ),
    name: Annotated[str, typer.Option("--name", help="The name this witness signs as.")] = "witness",
    ground_key_line: Annotated[
        str | None, typer.Option("--ground-key", help="Ground's log key (first run only; then pinned).")
    ] = None,
) -> None:
    """Run as an independent witness: check the log only grew since last time, then cosign it.

    Needs no ground home. Exits 2 on a split view (the log does not extend what it showed before).

    Example: ground log witness https://ground.example --state ~/witness --name esa --ground-key ed25519:…
    """
    key = load_key(state_dir / "witness.key")
    try:
        result = witness_once(ground_url, state_dir, key, name, int(time.time()), ground_key=ground_key_line)
    except VerificationFailed as exc:
        print(f"REFUSED: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    cp = result.checkpoint
    print(
        f"checkpoint {cp.size} (was {result.previous_size}) is consistent; cosigned as {name}"
        + (
            ""
            if result.cosigned
            else " (ground did not accept the cosignature: ask its operator to add this witness)"
        )
    )
    print(f"witness key: {format_public_key(key.public_key)}")
