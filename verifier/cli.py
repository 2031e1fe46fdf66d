"""`orbitpost-verify`: check, without trusting ground, that a published post is the astronaut's own."""

from __future__ import annotations

import json
import sys
import urllib.parse
from typing import Annotated

import typer

from protocol import LocalProtocolError, parse_public_key

from .platforms import Readers
from .proof import VerificationFailed, check_proof, load
from .readback import fetch, read_back

app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


def proof_url(target: str, ground: str | None) -> str:
    """The proof JSON's URL for a proof page URL, or for a platform URL with ``ground``."""
    parts = urllib.parse.urlsplit(target)
    if "/p/" in parts.path and parts.scheme in ("http", "https"):
        path = parts.path.removesuffix(".json")
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + ".json", "", ""))
    if ground is None:
        raise VerificationFailed("that is not a proof page URL: give --ground URL to look a platform URL up")
    return f"{ground.rstrip('/')}/p/lookup?json=1&url={urllib.parse.quote(target, safe='')}"


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name or not value:
            raise VerificationFailed(f"{option} wants PLATFORM=VALUE, got {v!r}")
        out[name.strip().lower()] = value.strip()
    return out


def _witness_keys(values: list[str]) -> dict[str, bytes]:
    out = {}
    for v in values:
        name, _, key = v.partition("=")
        out[name] = parse_public_key(key)
    return out


@app.command()
def verify(
    target: Annotated[
        str, typer.Argument(help="A post's proof page URL (…/p/<id>) or its URL on a platform.")
    ],
    ground: Annotated[
        str | None, typer.Option(help="Ground's public base URL, to look a platform URL up.")
    ] = None,
    ground_key: Annotated[str | None, typer.Option(help="Pin ground's log key (ed25519:…).")] = None,
    witness: Annotated[list[str], typer.Option(help="A witness you trust, name=ed25519:…; repeatable.")] = [],  # noqa: B006
    min_witnesses: Annotated[int, typer.Option(help="How many trusted witnesses must have cosigned.")] = 0,
    pds: Annotated[
        str | None, typer.Option(help="Read Bluesky records from this PDS instead of resolving the DID.")
    ] = None,
    plc: Annotated[str, typer.Option(help="PLC directory for resolving did:plc.")] = "https://plc.directory",
    read_token: Annotated[
        list[str],
        typer.Option(
            help="PLATFORM=TOKEN: your token to read copies back (x, instagram, threads, facebook; flickr=API key)."
        ),
    ] = [],  # noqa: B006
    api: Annotated[
        list[str],
        typer.Option(help="PLATFORM=URL: read that platform's API at URL instead of its public host."),
    ] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check a post: the astronaut's signature, the log, and the copies the platforms hold.

    Example: orbitpost-verify https://ground.example/p/01J9Z… --ground-key ed25519:…
    """
    try:
        proof = load(fetch(proof_url(target, ground)))
        result = check_proof(
            proof,
            ground_key=None if ground_key is None else parse_public_key(ground_key),
            witnesses=_witness_keys(witness),
            min_witnesses=min_witnesses,
        )
        readers = Readers(tokens=_pairs(read_token, "--read-token"), apis=_pairs(api, "--api"))
        copies = [read_back(result.post, p, pds=pds, plc=plc, readers=readers) for p in result.publications]
    except (VerificationFailed, LocalProtocolError) as exc:
        if as_json:
            print(json.dumps({"version": 1, "verified": False, "reason": str(exc)}))
        else:
            print(f"NOT VERIFIED: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    if as_json:
        print(
            json.dumps(
                {
                    "version": 1,
                    "verified": True,
                    "item_id": result.post.id,
                    "author": result.post.author,
                    "steps": [*result.steps, *(c.detail for c in copies if c.checked)],
                    "unchecked": [c.detail for c in copies if not c.checked],
                    "witnesses": list(result.witnesses),
                }
            )
        )
        return
    print(f"VERIFIED: post {result.post.id} by {result.post.author}")
    for step in result.steps:
        print(f"  ok  {step}")
    for c in copies:
        print(f"  {'ok' if c.checked else '--'}  {c.detail}")


def main() -> None:
    app()
