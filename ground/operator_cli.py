"""`ground operator ...`: manage the people who may watch and act on the dashboard."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from termtext import dump_json, row, visible, write_lines

from . import operators
from .home import GroundHome
from .operators import OperatorError, Role

operator_app = typer.Typer(
    help="Dashboard operators: accounts, roles (admin / read-only) and API tokens.\n\n"
    "Example:\n\n\b\n    ground operator add ada --role admin",
    no_args_is_help=True,
)


def _home() -> GroundHome:
    from .cli import state  # late: cli imports this module

    return state.home


def _now_ms() -> int:
    return int(time.time() * 1000)


@operator_app.command("add")
def add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The operator's login name.")],
    role: Annotated[
        Role,
        typer.Option("--role", metavar="admin|read-only", help="admin may act; read-only may only watch."),
    ] = Role.READ_ONLY,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from standard input instead of generating one."
        ),
    ] = False,
) -> None:
    """Create an operator; prints a generated password unless --password-stdin is given.

    Example:

    \b
        ground --home G operator add ada --role admin
        printf '%s\\n' "$PASSWORD" | ground --home G operator add rita --password-stdin
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password, generated = operators.generate_password(), True
    op = operators.add_operator(_home().conn, name, password, role, _now_ms())
    typer.echo(f"added operator {visible(op.name)} ({op.role})")
    if generated:
        typer.echo(f"password: {password}")
        typer.echo("(shown once; only its scrypt hash is stored)")


@operator_app.command("list")
def list_(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of text (docs/cli-json.md).")
    ] = False,
) -> None:
    """List operators, their roles and whether they are disabled.

    Example:

    \b
        ground --home G operator list --json
    """
    ops = operators.list_operators(_home().conn)
    if json_out:
        dump_json(
            "orbitpost.ground.operators",
            1,
            {
                "operators": [
                    {
                        "name": op.name,
                        "role": str(op.role),
                        "state": "disabled" if op.disabled_ms is not None else "active",
                    }
                    for op in ops
                ]
            },
        )
        return
    if not ops:
        typer.echo("no operators yet (ground operator add NAME --role admin)")
    write_lines(row(op.name, op.role, "disabled" if op.disabled_ms is not None else "active") for op in ops)


@operator_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The operator to disable.")],
) -> None:
    """Disable an operator and end all their sessions and tokens.

    Example:

    \b
        ground --home G operator remove rita
    """
    operators.remove_operator(_home().conn, name, _now_ms())
    typer.echo(f"disabled operator {visible(name)}; their sessions and tokens no longer work")


@operator_app.command("token")
def token(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The operator the token acts as.")],
    days: Annotated[
        int, typer.Option("--days", min=1, max=366, metavar="DAYS", help="Lifetime of the token.")
    ] = 90,
) -> None:
    """Issue a bearer token for NAME (for scripts and Prometheus: Authorization: Bearer TOKEN).

    Example:

    \b
        TOKEN=$(ground --home G operator token rita)
        curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8470/metrics
    """
    conn = _home().conn
    op = operators.get_operator(conn, name)
    if op is None or op.disabled_ms is not None:
        raise OperatorError(f"no active operator named {name!r}")
    secret, _ = operators.open_session(conn, op, _now_ms(), kind="api", ttl_ms=days * 86400 * 1000)
    typer.echo(secret)
