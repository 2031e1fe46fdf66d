#!/usr/bin/env python3
"""simulate.py: the whole orbitpost system over an emulated space link, for capacity planning.

    python simulate.py --profile iss-ku --astronauts 4 --hours 24 --seed 7 --report out/virtual   # virtual time
    python simulate.py --profile iss-ku --realtime --minutes 5 --report out/realtime             # real processes
    python simulate.py --profile iss-ku --realtime --packet --minutes 5 --report out/packet      # ... with real loss

Virtual time drives the project's real code (onboard queue and bundler, ground verifier,
ingest and publisher) over a simulated link with a virtual clock: deterministic for a seed.
Real time runs the real `ground serve` and `onboard sync` processes through linkemu's proxy
(no packet loss) or, with --packet, its packet link (network namespaces, the profile's loss).
Profiles: profiles/*.toml; workloads: workloads/*.toml; the report: REPORT/report.json,
REPORT/report.png and a summary printed at the end. See docs/simulation.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from simlink.errors import SimError
from simlink.profile import LinkProfile, load_profile
from simlink.report import build_report, plot, summary, write_json
from simlink.workload import load_workload

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def realtime_offset_s(prof: LinkProfile, duration_s: float) -> float:
    """Where in the orbit a real-time run starts: its shortest gap begins 5 % into the run,
    if that gap ends before the run does (a short run should show a cut and the recovery)."""
    fits = [w for w in prof.dark if w.duration_s <= 0.85 * duration_s]
    if not fits:
        return 0.0
    w = min(fits, key=lambda w: w.duration_s)
    return max(0.0, w.start_s - 0.05 * duration_s)


@app.command()
def main(
    profile: Annotated[
        str, typer.Option(help="Link profile: a name in profiles/ or a .toml path.")
    ] = "iss-ku",
    workload: Annotated[
        str | None,
        typer.Option(
            help="Workload: a name in workloads/ or a .toml path (default: crew-day; burst with --realtime)."
        ),
    ] = None,
    astronauts: Annotated[int, typer.Option(min=1, max=10, help="Astronauts sharing the link.")] = 4,
    hours: Annotated[float | None, typer.Option(help="Simulated duration in hours (virtual time).")] = None,
    minutes: Annotated[float | None, typer.Option(help="Duration in minutes (either mode).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw; same seed, same report.")] = 7,
    report: Annotated[Path, typer.Option(help="Folder for report.json and report.png.")] = Path("out"),
    realtime: Annotated[
        bool, typer.Option("--realtime", help="Run the real processes over the proxy.")
    ] = False,
    packet: Annotated[
        bool,
        typer.Option(
            "--packet",
            help="With --realtime: through linkemu's packet link (network namespaces, real packet loss; root and TUN).",
        ),
    ] = False,
    tcp_cc: Annotated[
        str | None,
        typer.Option(
            help="With --packet: the namespaces' TCP congestion control (cubic, bbr, reno; default: the machine's)."
        ),
    ] = None,
    orbit_offset_min: Annotated[
        float | None,
        typer.Option(
            help="Start this many minutes into the orbit (default: 0; with --realtime, so the run "
            "crosses the profile's shortest gap and sees the link come back)."
        ),
    ] = None,
    transfer: Annotated[
        str,
        typer.Option(
            help="Virtual time: 'transfer' (resumable, issue #3), 'transfer-v1' (the same before issue 14: 4 streams), 'transfer-shared' (before query streams), 'bundle-post' (one POST per bundle) or auto."
        ),
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
) -> None:
    """Run one simulation and write its report."""
    if hours is not None and minutes is not None:
        raise SimError("give --hours or --minutes, not both")
    duration_s = (
        hours * 3600
        if hours is not None
        else (minutes * 60 if minutes is not None else (300 if realtime else 86_400))
    )
    if duration_s <= 0:
        raise SimError("the duration must be positive")
    if packet and not realtime:
        raise SimError("--packet is a real-time link: give --realtime too")
    prof = load_profile(profile)
    wl = load_workload(workload or ("burst" if realtime else "crew-day"))
    if orbit_offset_min is None:
        orbit_offset_min = realtime_offset_s(prof, duration_s) / 60 if realtime else 0.0
    report.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{'real' if realtime else 'virtual'} {prof.name}", total=duration_s, status="")

        def progress(t: float, queued: int, published: int) -> None:
            bar.update(task, completed=t, status=f"{t / 3600:5.2f} h · {published}/{queued} published")

        if realtime:
            from simlink.realtime import run_realtime

            result = run_realtime(
                prof,
                wl,
                astronauts=astronauts,
                duration_s=duration_s,
                seed=seed,
                orbit_offset_s=orbit_offset_min * 60,
                workdir=report / "realtime",
                progress=progress,
                packet=packet,
                tcp_cc=tcp_cc,
            )
        else:
            from simlink.virtual import run_virtual

            result = run_virtual(
                prof,
                wl,
                astronauts=astronauts,
                duration_s=duration_s,
                seed=seed,
                orbit_offset_s=orbit_offset_min * 60,
                transfer=transfer,
                progress=progress,
            )
    rep = build_report(result)
    write_json(rep, report / "report.json")
    plot(rep, report / "report.png")
    print(summary(rep))
    print(
        f"report: {report / 'report.json'}, plot: {report / 'report.png'} ({time.monotonic() - started:.1f} s wall)"
    )


def run() -> None:
    """Entry point: a wrong profile, workload or option prints one line and exits 1."""
    try:
        app()
    except SimError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    run()
