"""`ground`: the ground operator's command line."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from protocol import VerifiedBundle
from termtext import dump_json, row, visible, write_lines
from termtext.cli import (
    CONTEXT_SETTINGS,
    JSON_HELP,
    ChosenHome,
    consoles,
    plain_help,
    run_main,
    version_option,
)

from . import enroll as enroll_mod
from .errors import BundleRejected, GroundError
from .home import GroundHome
from .ingest import Outcome, check_bundle, ingest_bytes, record_rejection
from .log_cli import log_app
from .operator_cli import operator_app
from .publish import publish_due
from .publish_cli import print_outcomes
from .publish_cli import register as register_publishing

app = typer.Typer(
    help="orbitpost ground service: verify, store and publish what the crew signed.\n\n"
    "Example:\n\n\b\n"
    "    ground --home G serve --port 8470",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT_SETTINGS,
)
app.add_typer(operator_app, name="operator")
station_app = typer.Typer(
    help="Stations allowed to use the live link.\n\nExample:\n\n\b\n    ground station add iss --token-out T",
    no_args_is_help=True,
)
app.add_typer(station_app, name="station")
app.add_typer(log_app, name="log")
tls_app = typer.Typer(
    help="HTTPS for the link and the dashboard (docs/DEPLOY.md).\n\nExample:\n\n\b\n"
    "    ground tls init --host ground.example --host 127.0.0.1",
    no_args_is_help=True,
)
app.add_typer(tls_app, name="tls")
register_publishing(app)  # account add/list/remove, retry, publish
console, err_console = consoles()


def _require_home(h: GroundHome) -> None:
    if not h.db_path.exists():
        raise GroundError(
            f"no ground home at {h.root} (check --home / ORBITPOST_HOME; "
            f"`ground --home {h.root} init` creates an empty one)"
        )


state: ChosenHome[GroundHome] = ChosenHome(_require_home)


def _now_ms() -> int:
    return int(time.time() * 1000)


@app.callback()
def _root(
    home: Annotated[
        Path,
        typer.Option(
            "--home",
            envvar="ORBITPOST_HOME",
            metavar="DIR",
            help="Ground data folder (made by `init` or `enroll`).",
        ),
    ] = Path("orbitpost-ground"),
    _version: Annotated[bool, version_option("ground")] = False,
) -> None:
    state.home = GroundHome(home)


@app.command()
def init() -> None:
    """Create an empty ground home (database, blob store) at --home.

    Example:

    \b
        ground --home G init
    """
    state.may_create = True
    state.home.conn  # noqa: B018 - opening the database creates the home
    console.print(f"ground home ready at {visible(state.home.root)}")


@app.command()
def enroll(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The astronaut's name, as on their laptop.")],
    key: Annotated[
        str, typer.Option("--key", metavar="LINE", help="The line `onboard keys show NAME` prints.")
    ],
    account: Annotated[
        list[str],
        typer.Option("--account", metavar="PLATFORM:ACCOUNT", help="An account NAME may publish to; repeat."),
    ] = [],  # noqa: B006
) -> None:
    """Trust an astronaut's public key and the accounts they publish to.

    Creates the ground home if it does not exist yet.

    Example:

    \b
        ground --home G enroll alice --key "ed25519:…" --account bluesky:alice.bsky.social
    """
    state.may_create = True
    fp = enroll_mod.enroll(state.home.conn, name, key, account, _now_ms())
    console.print(
        f"enrolled {visible(name)} key {fp}" + (f" for {visible(', '.join(account))}" if account else "")
    )


@app.command()
def revoke(
    fingerprint: Annotated[
        str, typer.Argument(metavar="FINGERPRINT", help="The key's fingerprint (see `ground astronauts`).")
    ],
) -> None:
    """Revoke an astronaut key by fingerprint; bundles signed with it are rejected from now on.

    Example:

    \b
        ground --home G revoke 3f2a9c01d4e5b6a7
    """
    name = enroll_mod.revoke(state.home.conn, fingerprint, _now_ms())
    console.print(f"revoked key {visible(fingerprint)} of {visible(name)}")


@app.command()
def astronauts(json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List enrolled astronauts: each key's fingerprint (for `ground revoke`) and their accounts.

    Example:

    \b
        ground --home G astronauts
    """
    from protocol import fingerprint as fp_of

    conn = state.home.conn
    people: list[dict[str, Any]] = []
    for (name,) in conn.execute("SELECT name FROM astronauts ORDER BY name").fetchall():
        keys = [
            {"fingerprint": fp_of(bytes(pub)), "enrolled_ms": enrolled, "revoked_ms": revoked}
            for pub, enrolled, revoked in conn.execute(
                "SELECT public_key, enrolled_ms, revoked_ms FROM keys WHERE astronaut = ? ORDER BY enrolled_ms",
                (name,),
            )
        ]
        accounts = [
            {"account": a, "paused": bool(p)}
            for a, p in conn.execute(
                "SELECT account, paused FROM accounts WHERE astronaut = ? ORDER BY account", (name,)
            )
        ]
        people.append({"name": name, "keys": keys, "accounts": accounts})
    if json_out:
        dump_json("orbitpost.ground.astronauts", 1, {"astronauts": people})
        return
    if not people:
        console.print("no astronauts enrolled yet (ground enroll NAME --key LINE --account PLATFORM:ACCOUNT)")
    for p in people:
        keys_txt = ",".join(k["fingerprint"] + (" (revoked)" if k["revoked_ms"] else "") for k in p["keys"])
        accts = ",".join(a["account"] + (" (paused)" if a["paused"] else "") for a in p["accounts"])
        write_lines([row(p["name"], keys_txt or "-", accts or "-")])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GroundError(f"cannot read {path}: {exc.strerror or exc}") from exc


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(metavar="FILE", help="A bundle file (*.opb).")],
    json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Verify a bundle file without storing or publishing anything (a rejection is still logged).

    Exit status 0 when every signature and hash is valid, 1 otherwise.

    Example:

    \b
        ground --home G verify OUT/01JD3Q8Z6Y4W9E2R5T7U1I0O9P.opb
    """
    data = _read(bundle)
    try:
        vb = check_bundle(state.home, data)
    except BundleRejected as exc:
        # A hostile or damaged bundle is a security event even when only checked.
        record_rejection(state.home, data, f"verify:{bundle}", exc, _now_ms())
        if json_out:
            dump_json(
                "orbitpost.ground.verify",
                1,
                {"file": str(bundle), "ok": False, "code": exc.code, "message": exc.message},
            )
        else:
            err_console.print(f"REJECTED {visible(bundle.name)}: [{exc.code}] {visible(exc.message)}")
        raise typer.Exit(1) from None
    authors = sorted({v.astronaut for v in vb.items})
    if json_out:
        dump_json(
            "orbitpost.ground.verify",
            1,
            {
                "file": str(bundle),
                "ok": True,
                "bundle_id": vb.header.bundle_id,
                "format": vb.header.format_version,
                "items": len(vb.items),
                "authors": authors,
                "blobs": len(vb.blobs),
                "total_bytes": vb.header.total_bytes,
                "signatures": _signature_count(vb),
            },
        )
        return
    console.print(
        f"OK {visible(bundle.name)}: bundle {vb.header.bundle_id}, {len(vb.items)} item(s) by "
        f"{visible(', '.join(authors))}, {len(vb.blobs)} blob(s), {vb.header.total_bytes:,} bytes, "
        f"format {vb.header.format_version}, {_signature_count(vb)} signature(s) and every hash valid"
    )


def _signature_count(vb: VerifiedBundle) -> int:
    # Format 2 shares one batch signature among an astronaut's items (docs/PROTOCOL.md §14).
    return len({v.signed.signature for v in vb.items})


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="A bundle file, or a folder of *.opb files.")],
) -> None:
    """Verify, store and publish a bundle file or every *.opb in a folder.

    Example:

    \b
        ground --home G ingest /media/usb/down
    """
    try:
        _ingest_files(path)
    finally:
        # Closing checkpoints the database and removes its -wal file (a 10,000-post bundle's
        # transaction leaves megabytes of it), as the process's exit would if it closed cleanly.
        state.home.close()


def _ingest_files(path: Path) -> None:
    files = sorted(path.glob("*.opb")) if path.is_dir() else [path]
    if not files:
        raise GroundError(f"no bundle files (*.opb) in {path}")
    failures = 0
    for f in files:
        try:
            r = ingest_bytes(state.home, _read(f), source=f"file:{f}", now_ms=_now_ms())
        except BundleRejected as exc:
            failures += 1
            err_console.print(f"REJECTED {visible(f.name)}: [{exc.code}] {visible(exc.message)}")
            continue
        if r.outcome is Outcome.DUPLICATE:
            console.print(
                f"skipped {visible(f.name)}: bundle {r.bundle_id} already ingested, nothing changed"
            )
        else:
            console.print(
                f"accepted {visible(f.name)}: {len(r.post_ids)} post(s), {r.publications} publication(s) queued"
            )
    print_outcomes(asyncio.run(publish_due(state.home, _now_ms())))
    if failures:
        raise GroundError(f"{failures} of {len(files)} bundle(s) rejected; see messages above")


@app.command()
def capabilities() -> None:
    """Print what this ground decodes, for `onboard export --ground-decodes`.

    Example:

    \b
        onboard export OUT --ground-decodes "$(ground capabilities)"
    """
    from .jxl import capabilities as caps

    console.print(caps().to_token())


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


@app.command()
def posts(json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List every accepted post and its per-account publication state.

    Plain output: one tab-separated line per (post, account): id, author, account, state,
    then the URL (published) or the last error.

    Example:

    \b
        ground --home G posts --json | jq '.publications[] | select(.state == "failed")'
    """
    rows = state.home.conn.execute(
        "SELECT p.item_id, i.author, p.account, p.state, p.url, p.last_error, p.attempts, p.updated_ms, "
        "p.published_ms FROM publications p JOIN items i ON i.id = p.item_id ORDER BY p.item_id, p.account"
    ).fetchall()
    if json_out:
        keys = ("post_id", "author", "account", "state", "url", "error", "attempts")
        pubs = [
            {**dict(zip(keys, r[:7], strict=True)), "updated": _iso(r[7]), "published": _iso(r[8])}
            for r in rows
        ]
        dump_json("orbitpost.ground.posts", 1, {"publications": pubs})
        return
    if not rows:
        console.print("no posts yet")
    write_lines(row(r[0], r[1], r[2], r[3], r[4] or r[5] or "") for r in rows)


@app.command()
def rejections(json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List rejected bundles with their reasons (newest last).

    Plain output: one tab-separated line each: time, source, [code], message.

    Example:

    \b
        ground --home G rejections --json
    """
    rows = state.home.conn.execute(
        "SELECT received_ms, source, sha256, size_bytes, code, message FROM rejections ORDER BY id"
    ).fetchall()
    if json_out:
        keys = ("source", "sha256", "size_bytes", "code", "message")
        rej = [{"time": _iso(r[0]), **dict(zip(keys, r[1:], strict=True))} for r in rows]
        dump_json("orbitpost.ground.rejections", 1, {"rejections": rej})
        return
    if not rows:
        console.print("no rejections")
    write_lines(row(_iso(ts), source, f"[{code}]", msg) for ts, source, _sha, _size, code, msg in rows)


@station_app.command("add")
def station_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Station name, e.g. iss.")],
    token_out: Annotated[
        Path,
        typer.Option("--token-out", metavar="FILE", help="Write the station's credential here (0600)."),
    ],
    quota_mb: Annotated[
        int | None,
        typer.Option(
            "--quota-mb",
            metavar="MB",
            help="Unfinished uploads may hold at most this much on ground (default 2048).",
        ),
    ] = None,
) -> None:
    """Register station NAME and write its upload token and ground's receipt key to a file.

    Example:

    \b
        ground --home G station add iss --token-out iss.token
    """
    from .receipts import ground_key_line
    from .stations import add_station, write_token_file

    if token_out.exists():
        raise GroundError(f"{token_out} already exists; refusing to overwrite a credential")
    key_line = ground_key_line(state.home)
    quota = None if quota_mb is None else quota_mb * 1024 * 1024
    token = add_station(state.home.conn, name, _now_ms(), quota_bytes=quota)
    from .jxl import capabilities as ground_capabilities
    from .tls import home_files

    tls = home_files(state.home.root)
    write_token_file(
        token_out,
        station=name,
        token=token,
        ground_key_line=key_line,
        ground_decodes=ground_capabilities().to_token(),
        # The station pins ground's own certificate when ground has one (ground tls init).
        tls_sha256=tls.sha256 if tls.cert.exists() else None,
    )
    console.print(
        f"station {visible(name)} added; give {visible(token_out)} to the station "
        "(onboard link add --token-file …)"
    )


@station_app.command("revoke")
def station_revoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Station name (see `ground station list`).")],
) -> None:
    """Revoke station NAME's token: its requests are refused from now on.

    Example:

    \b
        ground --home G station revoke iss
    """
    from .stations import revoke_station

    revoke_station(state.home.conn, name, _now_ms())
    console.print(f"station {visible(name)} revoked")


@station_app.command("list")
def station_list(json_out: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List stations: name, state (active / revoked), quota and when ground last heard from it.

    Example:

    \b
        ground --home G station list
    """
    rows = state.home.conn.execute(
        "SELECT s.name, s.created_ms, s.revoked_ms, s.quota_bytes, c.last_seen_ms, c.last_addr "
        "FROM stations s LEFT JOIN link_contacts c ON c.station = s.name ORDER BY s.name"
    ).fetchall()
    stations = [
        {
            "name": n,
            "state": "revoked" if revoked else "active",
            "created": _iso(created),
            "revoked": _iso(revoked),
            "quota_bytes": quota,
            "last_seen": _iso(seen),
            "last_addr": addr,
        }
        for n, created, revoked, quota, seen, addr in rows
    ]
    if json_out:
        dump_json("orbitpost.ground.stations", 1, {"stations": stations})
        return
    if not stations:
        console.print("no stations yet (ground station add NAME --token-out FILE)")
    write_lines(
        row(s["name"], s["state"], s["last_seen"] and f"last seen {s['last_seen']}" or "never seen")
        for s in stations
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", metavar="ADDR", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="TCP port.")] = 8470,
    session_idle_min: Annotated[
        int,
        typer.Option(
            "--session-idle-min",
            envvar="ORBITPOST_SESSION_IDLE_MIN",
            min=0,
            metavar="MINUTES",
            help="End an operator's browser session after this many minutes unused (0: never).",
        ),
    ] = 30,  # operators.SESSION_IDLE_MS (not imported here: it costs an scrypt hash at import)
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            metavar="text|json",
            help="Log lines on stderr as text, or one JSON object per line for log shippers.",
        ),
    ] = "text",
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve HTTPS with <home>/tls (made by `ground tls init` or now).")
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", metavar="FILE", help="Serve HTTPS with this certificate chain (PEM)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="FILE", help="The private key for --tls-cert.")
    ] = None,
    conns_per_address: Annotated[
        int,
        typer.Option(
            "--conns-per-address",
            metavar="N",
            min=1,
            help="Open connections allowed from one client address (raise it behind a proxy or a large NAT).",
        ),
    ] = 192,  # ground/edge.py EdgeLimits.max_conns_per_addr
    public_base_url: Annotated[
        str | None,
        typer.Option(
            "--public-base-url",
            envvar="ORBITPOST_PUBLIC_BASE_URL",
            metavar="URL",
            help="Public URL reaching this server's /public/media/ (Instagram and Threads fetch photos there).",
        ),
    ] = None,
) -> None:
    """Run the ground service: the station link endpoint, the dashboard and the publisher.

    Logs one line per event on stderr (listening, each bundle accepted or rejected, each
    publication, each refused credential, shutdown); never a credential. Ctrl-C or SIGTERM
    stops it cleanly.

    Example:

    \b
        ground --home G serve --host 127.0.0.1 --port 8470 --log-format json
    """
    import logging
    import sys

    from . import logs
    from .edge import EdgeLimits
    from .server import serve as run

    if log_format not in ("text", "json"):
        raise GroundError(f"--log-format must be text or json, not {log_format!r}")
    home = state.home
    logs.setup(log_format)
    # Whatever a library prints straight to stderr goes through the same redaction.
    sys.stderr = logs.RedactingStream(sys.stderr)
    _register_secrets(home, logs)
    _warn_without_operators(home, logs, logging.WARNING)
    if public_base_url is not None:
        from .public_media import set_base_url

        logs.event(
            "public_media",
            f"photos for Instagram/Threads served under {set_base_url(home.root, public_base_url)}/public/media/",
        )

    ctx = _tls_context(home, host, tls, tls_cert, tls_key, logs)
    try:
        asyncio.run(
            run(
                home,
                host,
                port,
                session_idle_ms=session_idle_min * 60_000,
                ssl_context=ctx,
                edge_limits=EdgeLimits(max_conns_per_addr=conns_per_address),
            )
        )
    except OSError as exc:
        raise GroundError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _register_secrets(home: GroundHome, logs: Any) -> None:
    """Tell the log redaction every credential and OAuth token this ground holds now."""
    from .credentials import store_for

    store = store_for(home.root)
    for cred in store.all():
        logs.register_secret(cred.secret)
        # OAuth tokens as they are at start: they rotate, and the redaction's shapes catch later ones.
        with contextlib.suppress(GroundError):
            tokens = store.load_tokens(cred.target)
            if tokens is not None:
                logs.register_secret(tokens.access_token)
                logs.register_secret(tokens.refresh_token)


def _tls_context(
    home: GroundHome, host: str, tls: bool, cert: Path | None, key: Path | None, logs: Any
) -> ssl.SSLContext | None:
    """The server's TLS context: the operator's files, or (``--tls``) the home's own, made
    self-signed the first time; None for plain HTTP."""
    from .tls import TlsFiles, home_files, make_self_signed, server_context

    if cert is not None or key is not None:
        if cert is None or key is None:
            raise GroundError("--tls-cert and --tls-key go together")
        return server_context(TlsFiles(cert=cert, key=key))
    if not tls:
        return None
    files = home_files(home.root)
    if not files.cert.exists():
        files = make_self_signed(home.root, [host, "localhost", "127.0.0.1"])
        logs.event(
            "tls_certificate",
            f"made a self-signed certificate {files.cert}; re-issue station tokens to pin it",
        )
    ctx = server_context(files)
    logs.event("tls_certificate", f"TLS certificate SHA-256 {files.sha256}", sha256=files.sha256)
    return ctx


def _warn_without_operators(home: GroundHome, logs: Any, level: int) -> None:
    from . import operators

    if not any(op.disabled_ms is None for op in operators.list_operators(home.conn)):
        logs.event(
            "no_operator",
            "no operator can log in to the dashboard yet; add one with "
            f"`ground --home {home.root} operator add NAME --role admin`",
            level=level,
        )


@app.command()
def receipts(
    out: Annotated[
        Path, typer.Option("--out", metavar="FILE", help="Write the signed receipts document here.")
    ],
    since: Annotated[
        int,
        typer.Option(
            "--since", metavar="N", help="Only changes after this change number (docs/PROTOCOL.md §9)."
        ),
    ] = 0,
    station: Annotated[
        str | None,
        typer.Option(
            "--station",
            metavar="NAME",
            help="Only what this station uploaded over the live link (default: all).",
        ),
    ] = None,
    version: Annotated[
        int,
        typer.Option(
            "--version",
            metavar="V",
            help="Receipts version: 2 (every onboard reads it), 3 (adds each account's photo fidelity; "
            "docs/PROTOCOL.md §9.4) or 4 (the same as 3, compact: §9.5; an onboard of this release or later).",
        ),
    ] = 2,
) -> None:
    """Write signed receipts for a file hand-off back up to the station (`onboard receipts import`).

    Example:

    \b
        ground --home G receipts --out /media/usb/up/receipts.bin
    """
    from durable.files import write_atomic

    from .receipts import build_document

    if (
        station is not None
        and not state.home.conn.execute("SELECT 1 FROM stations WHERE name = ?", (station,)).fetchone()
    ):
        raise GroundError(f"no station {station!r} (`ground station add` registers one)")
    from protocol.receipts import RECEIPTS_VERSIONS

    if version not in RECEIPTS_VERSIONS:
        raise GroundError(
            f"--version {version}: this ground writes receipts versions "
            + ", ".join(map(str, sorted(RECEIPTS_VERSIONS)))
        )
    doc, _next, more = build_document(
        state.home, since, _now_ms(), limit=10_000, station=station, versions=(version,), live=False
    )
    write_atomic(out, doc)
    console.print(
        f"wrote {visible(out)} ({len(doc):,} bytes)"
        + (" — more remain; run again with --since" if more else "")
    )


@app.command()
def demo(
    root: Annotated[
        Path, typer.Option("--dir", metavar="DIR", help="Where the demo keeps its homes.")
    ] = Path("orbitpost-demo"),
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Keep serving afterwards and print the dashboard URL and a login."),
    ] = False,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="PORT", help="Port for ground serve (default: a free one)."),
    ] = None,
    with_fakes: Annotated[
        bool,
        typer.Option(
            "--with-fakes",
            help="Also publish the photo post to X, LinkedIn, Flickr… on local fakes written from their docs.",
        ),
    ] = False,
) -> None:
    """Run the whole path locally: keys, posts with a real photo, bundles, verification, publishing.

    Example:

    \b
        ground demo --serve
    """
    from .demo import run_demo

    run_demo(root, keep_serving=serve, port=port, with_fakes=with_fakes)


def command() -> Any:
    """The `ground` command tree as click runs it, with plain help (termtext/cli.py)."""
    return plain_help(typer.main.get_command(app))


def main() -> None:
    """Entry point: operator mistakes print one line and exit 1, never a traceback."""
    run_main(command(), "ground", (GroundError,), err_console)


@tls_app.command("init")
def tls_init(
    host: Annotated[
        list[str], typer.Option("--host", help="A name or address stations and browsers use (repeatable).")
    ],
) -> None:
    """Make ground's self-signed TLS certificate; stations added afterwards pin it.

    Example:

    \b
        ground --home G tls init --host ground.example --host 127.0.0.1
    """
    from .tls import make_self_signed

    files = make_self_signed(state.home.root, host)
    console.print(f"certificate {files.cert} (key {files.key}, 0600)")
    console.print(f"SHA-256 {files.sha256}")
    console.print(
        "serve it with `ground serve --tls`; `ground station add` now writes this pin into token files"
    )


@tls_app.command("show")
def tls_show() -> None:
    """Print the SHA-256 of ground's TLS certificate (what stations pin, what browsers show).

    Example:

    \b
        ground --home G tls show
    """
    from .tls import home_files

    files = home_files(state.home.root)
    if not files.cert.exists():
        raise GroundError("no TLS certificate yet: run `ground tls init --host NAME`")
    console.print(files.sha256)
