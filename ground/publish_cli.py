"""`ground account …`, `ground retry` and `ground publish`: the operator's publishing commands.

Credentials are read from a file (never a command-line argument, which other users can see
in the process list) and are never printed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from rich.console import Console

from termtext import dump_json, row, visible, write_lines

from .credentials import Credential, CredentialStore, expiry_text, store_for
from .db import audit, transaction
from .errors import GroundError
from .home import GroundHome
from .publish import PublishOutcome, publish_due, remaining, retry

console = Console(highlight=False, markup=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

account_app = typer.Typer(
    help="Platform credentials per account (kept on ground only, files of mode 0600).\n\n"
    "Example:\n\n\b\n    ground account add bluesky:alice.bsky.social --app-password-file pw",
    no_args_is_help=True,
)
TARGET_HELP = "platform:account, e.g. bluesky:alice.bsky.social"


def _home() -> GroundHome:
    from .cli import state  # the root callback has parsed --home by now

    return state.home


def _now_ms() -> int:
    return int(time.time() * 1000)


def _store() -> CredentialStore:
    return store_for(_home().root)


@account_app.command("add")
def account_add(
    target: Annotated[str, typer.Argument(metavar="PLATFORM:ACCOUNT", help=TARGET_HELP)],
    secret_file: Annotated[
        Path,
        typer.Option(
            "--app-password-file",
            "--token-file",
            "--secret-file",
            metavar="FILE",
            help="File holding the app password (Bluesky), access token (Mastodon), HMAC key (webhook), "
            "or for X/LinkedIn a JSON OAuth 2.0 grant with client_id (docs/platforms.md); "
            "the three names are the same option.",
        ),
    ],
    service_url: Annotated[
        str | None,
        typer.Option(
            "--service-url",
            metavar="URL",
            help="PDS, instance or webhook URL (default: bsky.social / the account's instance).",
        ),
    ] = None,
    identifier: Annotated[
        str | None,
        typer.Option(
            "--identifier", metavar="LOGIN", help="Login name if it differs from the account (Bluesky)."
        ),
    ] = None,
) -> None:
    """Store the credentials ground uses to publish as TARGET.

    The secret is read from a file (never the command line, which other users can see) and
    never printed.

    Example:

    \b
        ground --home G account add bluesky:alice.bsky.social --app-password-file pw
        ground --home G account add webhook:intranet --secret-file key --service-url https://intranet.example/hook
    """
    try:
        secret = secret_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GroundError(f"cannot read {secret_file}: {getattr(exc, 'strerror', None) or exc}") from exc
    cred = add_credential(
        _store(), target, secret, service_url=service_url, identifier=identifier, now_ms=_now_ms()
    )
    conn = _home().conn
    with transaction(conn):
        audit(conn, _now_ms(), "cli", "account_add", f"{cred.target} at {cred.service_url}")
    console.print(
        f"stored credentials for {visible(cred.target)} ({visible(cred.service_url)}); the secret is not shown"
    )


@account_app.command("bluesky-web")
def account_bluesky_web(
    service_url: Annotated[str, typer.Argument(help="The PDS, e.g. https://pds.example.org")],
    web_url: Annotated[
        str | None, typer.Argument(help="Web app showing its posts, e.g. https://bsky.app; omit for none.")
    ] = None,
) -> None:
    """Set which web app links to posts on a Bluesky service (without one: the at:// URI).

    Example:

    \b
        ground --home G account bluesky-web https://pds.example.org https://bsky.app
    """
    from .platforms.bluesky import set_web_app

    for u in (service_url, web_url):
        if u is not None and not u.startswith(("https://", "http://")):
            raise GroundError(f"{u!r} is not an http(s) URL")
    set_web_app(_home().root, service_url, web_url)
    shown = f"{web_url}/profile/HANDLE/post/RKEY" if web_url else "the post's at:// URI"
    console.print(f"posts on {service_url} now link to {shown} (new publications)", markup=False)


# Platforms whose --token-file is an OAuth 2.0 grant (JSON) whose tokens rotate.
OAUTH2_PLATFORMS = frozenset({"x", "linkedin"})
# A long-lived token (one line, or JSON with access_token/expires_in): ground/platforms/meta_graph.py.
META_PLATFORMS = frozenset({"instagram", "threads", "facebook"})


def add_credential(
    store: CredentialStore,
    target: str,
    secret: str,
    *,
    service_url: str | None,
    identifier: str | None,
    now_ms: int,
) -> Credential:
    """Store TARGET's credential; an OAuth 2.0 grant is split into app (secret) and tokens (rotating)."""
    from protocol.model import parse_target

    platform = parse_target(target.strip())[0] if ":" in target else ""
    if platform in META_PLATFORMS:
        # Meta's long-lived tokens refresh themselves (no client id, no refresh token).
        from .platforms.meta_graph import meta_token_file

        try:
            token, meta_tokens = meta_token_file(secret, now_ms)
        except ValueError as exc:
            raise GroundError(f"{target}: {exc}") from exc
        cred = store.add(target, token, service_url=service_url, identifier=identifier)
        store.save_tokens(cred.target, meta_tokens)
        return cred
    if platform not in OAUTH2_PLATFORMS:
        return store.add(target, secret, service_url=service_url, identifier=identifier)
    from .platforms.oauth2 import split_token_file

    try:
        app, tokens = split_token_file(secret, now_ms)
    except ValueError as exc:
        raise GroundError(f"{target}: {exc}") from exc
    cred = store.add(target, app, service_url=service_url, identifier=identifier)
    store.save_tokens(cred.target, tokens)
    return cred


def account_rows(store: CredentialStore, now_ms: int) -> list[tuple[str, str, str, str]]:
    """(target, service URL, login, token expiry) per account, never a secret; also for the dashboard."""
    rows = []
    for c in store.all():
        try:
            expiry = expiry_text(store.load_tokens(c.target), now_ms)
        except GroundError as exc:
            expiry = f"reconnect this account ({exc})"
        rows.append((c.target, c.service_url, c.identifier, expiry))
    return rows


@account_app.command("list")
def account_list(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of text (docs/cli-json.md).")
    ] = False,
) -> None:
    """List accounts with stored credentials (never the secrets) and when their tokens expire.

    Example:

    \b
        ground --home G account list --json
    """
    rows = account_rows(_store(), _now_ms())
    if json_out:
        dump_json(
            "orbitpost.ground.accounts",
            1,
            {
                "accounts": [
                    {"account": target, "service_url": url, "login": login, "token_expiry": expiry or None}
                    for target, url, login, expiry in rows
                ]
            },
        )
        return
    if not rows:
        console.print("no accounts yet: ground account add PLATFORM:ACCOUNT --app-password-file FILE")
    write_lines(
        row(target, url, f"login {login}", "secret: stored (0600)", *([expiry] if expiry else []))
        for target, url, login, expiry in rows
    )


@account_app.command("remove")
def account_remove(
    target: Annotated[str, typer.Argument(metavar="PLATFORM:ACCOUNT", help=TARGET_HELP)],
) -> None:
    """Delete TARGET's stored credentials.

    Example:

    \b
        ground --home G account remove mastodon:alice@example.social
    """
    if not _store().remove(target):
        raise GroundError(f"no credentials stored for {target} (see `ground account list`)")
    conn = _home().conn
    with transaction(conn):
        audit(conn, _now_ms(), "cli", "account_remove", target)
    console.print(f"removed credentials for {visible(target)}")


@account_app.command("check")
def account_check(
    target: Annotated[str, typer.Argument(metavar="PLATFORM:ACCOUNT", help=TARGET_HELP)],
) -> None:
    """Log in to TARGET's platform with the stored credentials and say whether it worked.

    Example:

    \b
        ground --home G account check bluesky:alice.bsky.social
    """
    from protocol.model import parse_target

    from .errors import PublishError
    from .publish import default_platforms

    platform = default_platforms(_home()).get(parse_target(target)[0])
    check = getattr(platform, "check", None)
    if check is None:
        console.print(
            f"{visible(target)}: nothing to check for this platform (credentials are used as stored)"
        )
        return

    async def run() -> str:
        async with aiohttp.ClientSession() as session:
            said = str(await check(target.partition(":")[2], session))
            fetch = getattr(platform, "rules", None)
            learned = await fetch(target, session) if fetch is not None else None
            if learned is not None:
                # Stations get these with their next receipts; onboard then checks the same limits.
                from . import account_limits

                account_limits.record(_home().conn, target, learned, _now_ms())
            return said

    try:
        console.print(f"{visible(target)}: {visible(asyncio.run(run()))}")
    except PublishError as exc:
        raise GroundError(f"{target}: {exc}") from exc


def retry_cmd(
    post_id: Annotated[str, typer.Argument(metavar="POST_ID", help="The post id (see `ground posts`).")],
    account: Annotated[
        str | None,
        typer.Option(
            "--account",
            metavar="PLATFORM:ACCOUNT",
            help="Only this account (default: every failed one).",
        ),
    ] = None,
) -> None:
    """Queue a failed publication again (per account); published ones are never touched.

    Example:

    \b
        ground --home G retry 01JD3Q8Z6Y4W9E2R5T7U1I0O9P --account bluesky:alice.bsky.social
    """
    done = retry(_home().conn, post_id, _now_ms(), account)
    console.print(f"queued again: {visible(post_id.upper())} → {visible(', '.join(done))}")


def print_outcomes(outcomes: list[PublishOutcome]) -> None:
    """One line per publication that moved: successes on stdout, the rest on stderr."""
    # Written as plain lines in one go: a 10,000-post hand-off printed through rich's console
    # spent ~0.2 ms a line laying out text it never styles (issue 18).
    write_lines(
        f"published {o.item_id} → {visible(o.account)}: {visible(o.url)}"
        for o in outcomes
        if o.state == "published"
    )
    for o in outcomes:
        acct = visible(o.account)
        if o.state == "published":
            continue
        if o.state == "retracted":
            console.print(f"retracted {o.item_id} → {acct}")
        elif o.state == "failed":
            err_console.print(f"FAILED {o.item_id} → {acct}: {visible(o.error)}")
        else:
            when = time.strftime("%H:%M:%SZ", time.gmtime((o.next_attempt_ms or 0) / 1000))
            err_console.print(f"{o.state} {o.item_id} → {acct}: {visible(o.error)}; next try at {when}")


def publish_cmd(
    loop: Annotated[
        bool, typer.Option("--loop", help="Keep going until nothing due is left (retries included).")
    ] = False,
    interval_s: Annotated[
        float, typer.Option("--interval", metavar="SECONDS", help="Seconds between passes with --loop.")
    ] = 1.0,
) -> None:
    """Publish everything that is due now (what `ground serve` does continuously).

    Prints one line per publication that moved, then what is left; "nothing due" when there
    was nothing to do.

    Example:

    \b
        ground --home G publish --loop
    """
    home = _home()
    moved = 0
    while True:
        outcomes = asyncio.run(publish_due(home, _now_ms()))
        print_outcomes(outcomes)
        moved += len(outcomes)
        left = remaining(home, _now_ms())
        if not loop or left == 0:
            break
        time.sleep(interval_s)
    if moved == 0:
        console.print("nothing due" + (f"; {left} publication(s) waiting for a later time" if left else ""))
    else:
        console.print(
            f"{moved} publication(s) attempted; "
            + (f"{left} still to do (retries or scheduled)" if left else "nothing left to do")
        )


def register(app: typer.Typer) -> None:
    """Add these commands to the `ground` CLI."""
    app.add_typer(account_app, name="account")
    app.command("retry")(retry_cmd)
    app.command("publish")(publish_cmd)
