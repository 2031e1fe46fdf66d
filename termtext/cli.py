"""What both command lines share: plain help, -h, --version, --home, quiet consoles, the
entry point's one-line errors, and stop signals.

Help is click's plain text (typer's rich panels cut long option names such as
``--app-password-file, --token-file, --secret-file`` and show Python types like
``<list[str]>``); :func:`plain_help` gives every value an upper-case name instead.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from importlib import metadata
from types import FrameType
from typing import Any, Generic, TypeVar

import typer
from rich.console import Console

from . import visible

# Passed to every typer.Typer(...): `-h` as well as `--help`, on every command.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
JSON_HELP = "Print one JSON document instead of text (shape in docs/cli-json.md)."
H = TypeVar("H")


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles that never interpret markup and never wrap: user text goes
    through visible() instead."""
    return (
        Console(highlight=False, markup=False, soft_wrap=True),
        Console(stderr=True, highlight=False, markup=False, soft_wrap=True),
    )


class ChosenHome(Generic[H]):
    """The home chosen by --home; only commands that create a home may use a missing one.

    ``check`` raises the command line's own error, naming the folder and how to create it,
    when the home is missing; a command that creates one sets ``may_create`` first.
    """

    def __init__(self, check: Callable[[H], None]) -> None:
        self._check = check
        self.may_create = False

    @property
    def home(self) -> H:
        h = self._home
        if not self.may_create:
            self._check(h)
        return h

    @home.setter
    def home(self, value: H) -> None:
        self._home = value
        self.may_create = False


def version() -> str:
    """The installed orbitpost version (pyproject.toml), or 'unknown' when run from a bare tree."""
    try:
        return metadata.version("orbitpost")
    except metadata.PackageNotFoundError:
        return "unknown"


def version_option(program: str) -> Any:
    """The eager ``--version`` option: prints "``program`` (orbitpost) VERSION" and exits."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{program} (orbitpost) {version()}")
            raise typer.Exit()

    return typer.Option("--version", callback=show, is_eager=True, help="Print the version and exit.")


def run_main(command: Any, prog_name: str, errors: tuple[type[Exception], ...], err_console: Console) -> None:
    """Run ``command`` (click's); a user mistake (one of ``errors``) prints one line and exits 1,
    never a traceback."""
    try:
        command(prog_name=prog_name)
    except errors as exc:
        err_console.print(f"error: {visible(exc)}")
        raise SystemExit(1) from None


def plain_help(command: Any) -> Any:
    """Name every option value and argument in upper case instead of its Python type.

    ``command`` is what ``typer.main.get_command`` returns (click's, vendored by recent typer:
    hence duck typing). Called on the whole tree, so a command added later gets readable help
    without anyone thinking of it.
    """
    for param in command.params:
        if param.metavar is None and not getattr(param, "is_flag", False):
            param.metavar = (param.name or "value").upper()
        if param.param_type_name == "argument" and hasattr(param, "display_type_rich"):
            # typer prints an argument's Python type beside its name even when it has one,
            # and a required one as {NAME}: usage reads NAME / [NAME] as in every other tool.
            param.display_type_rich = _no_type
            shown = param.metavar if param.required else f"[{param.metavar}]"
            param._usage_display_name = lambda shown=shown: shown
    if getattr(command, "help", None) and not getattr(command, "short_help", None):
        # The listing shows the whole first line, not click's 45-character cut.
        command.short_help = command.help.strip().splitlines()[0]
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)
    return command


def _no_type(ctx: Any) -> None:
    return None


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM) arrived; raised like Ctrl-C so every caller unwinds the same way."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Stopped`, so a long command can say why it ended."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_reason(exc: KeyboardInterrupt) -> str:
    """'SIGTERM' for :class:`Stopped`, 'Ctrl-C' for a plain interrupt."""
    return exc.signame if isinstance(exc, Stopped) else "Ctrl-C"
