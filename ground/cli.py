"""`ground`: the ground operator's command line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from protocol import VerifiedBundle

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
    help="orbitpost ground service: verify, store and publish what the crew signed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(operator_app, name="operator")
station_app = typer.Typer(help="Stations allowed to use the live link (issue 3).", no_args_is_help=True)
app.add_typer(station_app, name="station")
app.add_typer(log_app, name="log")
tls_app = typer.Typer(help="HTTPS for the link and the dashboard (docs/DEPLOY.md).", no_args_is_help=True)
app.add_typer(tls_app, name="tls")
register_publishing(app)  # account add/list/remove, retry, publish
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    home: GroundHome


state = _State()


def _now_ms() -> int:
    return int(time.time() * 1000)


@app.callback()
def _root(
    home: Annotated[Path, typer.Option("--home", envvar="ORBITPOST_HOME", help="Ground data folder.")] = Path(
        "orbitpost-ground"
    ),
) -> None:
    state.home = GroundHome(home)


@app.command()
def enroll(
    name: str,
    key: Annotated[str, typer.Option("--key", help="The line `onboard keys show NAME` prints.")],
    account: Annotated[
        list[str], typer.Option("--account", help="platform:account NAME may publish to; repeat.")
    ] = [],  # noqa: B006
) -> None:
    """Trust an astronaut's public key and the accounts they publish to."""
    fp = enroll_mod.enroll(state.home.conn, name, key, account, _now_ms())
    console.print(f"enrolled {name} key {fp}" + (f" for {', '.join(account)}" if account else ""))


@app.command()
def revoke(fingerprint: str) -> None:
    """Revoke an astronaut key by fingerprint; bundles signed with it are rejected from now on."""
    name = enroll_mod.revoke(state.home.conn, fingerprint, _now_ms())
    console.print(f"revoked key {fingerprint} of {name}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GroundError(f"cannot read {path}: {exc.strerror or exc}") from exc


@app.command()
def verify(bundle: Path) -> None:
    """Verify a bundle file without storing or publishing anything (a rejection is still logged)."""
    data = _read(bundle)
    try:
        vb = check_bundle(state.home, data)
    except BundleRejected as exc:
        # A hostile or damaged bundle is a security event even when only checked.
        record_rejection(state.home, data, f"verify:{bundle}", exc, _now_ms())
        err_console.print(f"REJECTED {bundle.name}: [{exc.code}] {exc.message}", markup=False)
        raise typer.Exit(1) from None
    authors = sorted({v.astronaut for v in vb.items})
    console.print(
        f"OK {bundle.name}: bundle {vb.header.bundle_id}, {len(vb.items)} item(s) by {', '.join(authors)}, "
        f"{len(vb.blobs)} blob(s), {vb.header.total_bytes:,} bytes, format {vb.header.format_version}, "
        f"{_signature_count(vb)} signature(s) and every hash valid"
    )


def _signature_count(vb: VerifiedBundle) -> int:
    # Format 2 shares one batch signature among an astronaut's items (docs/PROTOCOL.md §14).
    return len({v.signed.signature for v in vb.items})


@app.command()
def ingest(path: Path) -> None:
    """Verify, store and publish a bundle file or every *.opb in a folder."""
    files = sorted(path.glob("*.opb")) if path.is_dir() else [path]
    if not files:
        raise GroundError(f"no bundle files (*.opb) in {path}")
    failures = 0
    for f in files:
        try:
            r = ingest_bytes(state.home, _read(f), source=f"file:{f}", now_ms=_now_ms())
        except BundleRejected as exc:
            failures += 1
            err_console.print(f"REJECTED {f.name}: [{exc.code}] {exc.message}", markup=False)
            continue
        if r.outcome is Outcome.DUPLICATE:
            console.print(f"skipped {f.name}: bundle {r.bundle_id} already ingested, nothing changed")
        else:
            console.print(
                f"accepted {f.name}: {len(r.post_ids)} post(s), {r.publications} publication(s) queued"
            )
    print_outcomes(asyncio.run(publish_due(state.home, _now_ms())))
    if failures:
        raise GroundError(f"{failures} of {len(files)} bundle(s) rejected; see messages above")


@app.command()
def capabilities() -> None:
    """Print what this ground decodes, for `onboard export --ground-decodes`."""
    from .jxl import capabilities as caps

    console.print(caps().to_token())


@app.command()
def posts() -> None:
    """List every accepted post and its per-account publication state."""
    rows = state.home.conn.execute(
        "SELECT p.item_id, i.author, p.account, p.state, COALESCE(p.url, p.last_error, '') "
        "FROM publications p JOIN items i ON i.id = p.item_id ORDER BY p.item_id, p.account"
    ).fetchall()
    if not rows:
        console.print("no posts yet")
    for r in rows:
        console.print("\t".join(str(x) for x in r))


@app.command()
def rejections() -> None:
    """List rejected bundles with their reasons."""
    for ts, source, code, msg in state.home.conn.execute(
        "SELECT received_ms, source, code, message FROM rejections ORDER BY id"
    ):
        console.print(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ts / 1000))}Z {source} [{code}] {msg}"
        )


@station_app.command("add")
def station_add(
    name: str,
    token_out: Annotated[
        Path, typer.Option("--token-out", help="Write the station's credential here (0600).")
    ],
    quota_mb: Annotated[
        int | None,
        typer.Option(
            "--quota-mb", help="Unfinished uploads may hold at most this much on ground (default 2048)."
        ),
    ] = None,
) -> None:
    """Register station NAME and write its upload token and ground's receipt key to a file."""
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
    console.print(f"station {name} added; give {token_out} to the station (onboard link add --token-file …)")


@station_app.command("revoke")
def station_revoke(name: str) -> None:
    """Revoke station NAME's token: its requests are refused from now on."""
    from .stations import revoke_station

    revoke_station(state.home.conn, name, _now_ms())
    console.print(f"station {name} revoked")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8470,
    session_idle_min: Annotated[
        int,
        typer.Option(
            "--session-idle-min",
            envvar="ORBITPOST_SESSION_IDLE_MIN",
            min=0,
            help="End an operator's browser session after this many minutes unused (0: never).",
        ),
    ] = 30,  # operators.SESSION_IDLE_MS (not imported here: it costs an scrypt hash at import)
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve HTTPS with <home>/tls (made by `ground tls init` or now).")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate chain (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="The private key for --tls-cert.")] = None,
    conns_per_address: Annotated[
        int,
        typer.Option(
            "--conns-per-address",
            min=1,
            help="Open connections allowed from one client address (raise it behind a proxy or a large NAT).",
        ),
    ] = 64,
    public_base_url: Annotated[
        str | None,
        typer.Option(
            "--public-base-url",
            envvar="ORBITPOST_PUBLIC_BASE_URL",
            help="Public URL reaching this server's /public/media/ (Instagram and Threads fetch photos there).",
        ),
    ] = None,
) -> None:
    """Run the ground service: the station link endpoint, the dashboard and the publisher."""
    from .edge import EdgeLimits
    from .server import serve as run
    from .tls import TlsFiles, home_files, make_self_signed, server_context

    if public_base_url is not None:
        from .public_media import set_base_url

        console.print(
            f"photos for Instagram/Threads served under {set_base_url(state.home.root, public_base_url)}/public/media/"
        )

    ctx = None
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            raise GroundError("--tls-cert and --tls-key go together")
        ctx = server_context(TlsFiles(cert=tls_cert, key=tls_key))
    elif tls:
        files = home_files(state.home.root)
        if not files.cert.exists():
            files = make_self_signed(state.home.root, [host, "localhost", "127.0.0.1"])
            console.print(f"made a self-signed certificate {files.cert}; re-issue station tokens to pin it")
        ctx = server_context(files)
        console.print(f"TLS certificate SHA-256 {files.sha256}")
    scheme = "https" if ctx is not None else "http"
    console.print(f"ground serving on {scheme}://{host}:{port} (Ctrl-C to stop)")
    try:
        asyncio.run(
            run(
                state.home,
                host,
                port,
                session_idle_ms=session_idle_min * 60_000,
                ssl_context=ctx,
                edge_limits=EdgeLimits(max_conns_per_addr=conns_per_address),
            )
        )
    except OSError as exc:
        raise GroundError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@app.command()
def receipts(
    out: Annotated[Path, typer.Option("--out", help="Write the signed receipts document here.")],
    since: Annotated[
        int, typer.Option("--since", help="Only changes after this change number (docs/PROTOCOL.md §9).")
    ] = 0,
    station: Annotated[
        str | None,
        typer.Option("--station", help="Only what this station uploaded over the live link (default: all)."),
    ] = None,
) -> None:
    """Write signed receipts for a file hand-off back up to the station (`onboard receipts import`)."""
    from durable.files import write_atomic

    from .receipts import build_document

    if (
        station is not None
        and not state.home.conn.execute("SELECT 1 FROM stations WHERE name = ?", (station,)).fetchone()
    ):
        raise GroundError(f"no station {station!r} (`ground station add` registers one)")
    doc, _next, more = build_document(state.home, since, _now_ms(), limit=10_000, station=station)
    write_atomic(out, doc)
    console.print(
        f"wrote {out} ({len(doc):,} bytes)" + (" — more remain; run again with --since" if more else "")
    )


@app.command()
def demo(
    root: Annotated[Path, typer.Option("--dir", help="Where the demo keeps its homes.")] = Path(
        "orbitpost-demo"
    ),
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Keep serving afterwards and print the dashboard URL and a login."),
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="Port for ground serve (default: a free one).")
    ] = None,
    with_fakes: Annotated[
        bool,
        typer.Option(
            "--with-fakes",
            help="Also publish the photo post to X, LinkedIn, Flickr… on local fakes written from their docs.",
        ),
    ] = False,
) -> None:
    """Run the whole path locally: keys, posts with a real photo, bundles, verification, publishing."""
    from .demo import run_demo

    run_demo(root, keep_serving=serve, port=port, with_fakes=with_fakes)


def main() -> None:
    """Entry point: operator mistakes print one line and exit 1, never a traceback."""
    try:
        app()
    except GroundError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise SystemExit(1) from None


@tls_app.command("init")
def tls_init(
    host: Annotated[
        list[str], typer.Option("--host", help="A name or address stations and browsers use (repeatable).")
    ],
) -> None:
    """Make ground's self-signed TLS certificate; stations added afterwards pin it."""
    from .tls import make_self_signed

    files = make_self_signed(state.home.root, host)
    console.print(f"certificate {files.cert} (key {files.key}, 0600)")
    console.print(f"SHA-256 {files.sha256}")
    console.print(
        "serve it with `ground serve --tls`; `ground station add` now writes this pin into token files"
    )


@tls_app.command("show")
def tls_show() -> None:
    """Print the SHA-256 of ground's TLS certificate (what stations pin, what browsers show)."""
    from .tls import home_files

    files = home_files(state.home.root)
    if not files.cert.exists():
        raise GroundError("no TLS certificate yet: run `ground tls init --host NAME`")
    console.print(files.sha256)
