"""Link profiles: the space link as data (profiles/*.toml, documented in profiles/README.md).

A profile gives the rate each way, the one-way delay, random segment loss, the loss-of-signal
schedule repeated every orbit, and how often the connection is cut at random while the link is
up. Both the virtual-time link (``simlink.link``) and the real-time proxy read the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .fields import Table, load_toml

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


@dataclass(frozen=True, slots=True, kw_only=True)
class DarkWindow:
    """A coverage gap, in seconds from the start of each orbit."""

    start_s: float
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProfile:
    name: str
    description: str
    to_ground_bps: float
    to_station_bps: float
    one_way_delay_s: float
    loss: float  # probability that one TCP segment (or ACK) is lost, each direction
    mss_bytes: int
    buffer_bytes: int  # bottleneck queue each way; 0: two BDPs, at least 64 packets
    orbit_s: float  # 0: no loss-of-signal schedule
    dark: tuple[DarkWindow, ...]
    cut_after_s: float  # how long into a dark window connections stall before they are cut
    cuts_per_hour: float  # random cuts while the link is up
    cuts_at_s: tuple[float, ...] = ()  # and cuts at these times into the run (docs/link.md)

    @property
    def rtt_s(self) -> float:
        return 2 * self.one_way_delay_s

    def dark_windows(self, until_s: float, offset_s: float = 0.0) -> list[tuple[float, float]]:
        """Every dark window as (start, end) in run time, for a run starting ``offset_s`` into an orbit."""
        if not self.orbit_s or not self.dark:
            return []
        out: list[tuple[float, float]] = []
        k = 0
        while True:
            base = k * self.orbit_s - offset_s
            if base > until_s:
                break
            for w in self.dark:
                s, e = base + w.start_s, base + w.start_s + w.duration_s
                if e > 0 and s < until_s:
                    out.append((max(s, 0.0), min(e, until_s)))
            k += 1
        return sorted(out)

    def dark_fraction(self) -> float:
        if not self.orbit_s:
            return 0.0
        return sum(w.duration_s for w in self.dark) / self.orbit_s


def resolve(name_or_path: str, folder: Path, what: str) -> Path:
    """A shipped name (``iss-ku``) or a path to a .toml file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    candidate = folder / f"{name_or_path}.toml"
    if not candidate.exists():
        shipped = ", ".join(sorted(x.stem for x in folder.glob("*.toml")))
        problem = f"is not a shipped {what} ({shipped}) nor a .toml file"
        raise ConfigError(name_or_path, "(name)", problem, message=f"{what} {name_or_path!r} {problem}")
    return candidate


def load_profile(name_or_path: str) -> LinkProfile:
    """Read and validate a profile; raises ConfigError naming the bad field."""
    path = resolve(name_or_path, PROFILES_DIR, "profile")
    return parse_profile(load_toml(path), str(path))


def parse_profile(data: object, source: str) -> LinkProfile:
    top = Table(source, data)
    name = top.string("name")
    description = top.string("description", "", allow_empty=True)
    link = top.table("link", required=True)
    to_ground = link.number("to_ground_kbit_s", min=0.1, max=10_000_000)
    to_station = link.number("to_station_kbit_s", min=0.1, max=10_000_000)
    delay_ms = link.number("one_way_delay_ms", min=0, max=60_000)
    loss_pct = link.number("loss_percent", 0.0, min=0, max=50)
    mss = link.integer("mss_bytes", 1400, min=200, max=65_000)
    buffer_kb = link.number("buffer_kb", 0.0, min=0, max=1_000_000)
    if buffer_kb and buffer_kb * 1000 < 2 * (mss + 40):
        raise link.error(
            "buffer_kb", f"must hold at least two packets ({2 * (mss + 40) / 1000:g} kB), got {buffer_kb:g}"
        )
    link.done()

    los = top.table("loss_of_signal")
    orbit_min = los.number("orbit_min", 0.0, min=0, max=100_000)
    cut_after_s = los.number("cut_after_s", 20.0, min=0, max=86_400)
    windows: list[DarkWindow] = []
    for i, w in enumerate(los.array("windows")):
        wt = Table(source, w, los.name(f"windows[{i}]"))
        start = wt.number("start_min", min=0)
        dur = wt.number("duration_min", min=0, min_exclusive=True)
        wt.done()
        if orbit_min and start + dur > orbit_min:
            raise wt.error(
                "duration_min",
                f"makes the window end at {start + dur:g} min, after the orbit ({orbit_min:g} min)",
            )
        if windows and start * 60 < windows[-1].start_s + windows[-1].duration_s:
            raise wt.error("start_min", "overlaps the previous window; list windows in time order")
        windows.append(DarkWindow(start_s=start * 60, duration_s=dur * 60))
    if windows and not orbit_min:
        raise los.error("orbit_min", "must be > 0 when windows are given (the schedule repeats every orbit)")
    los.done()

    cuts = top.table("cuts")
    per_hour = cuts.number("per_hour", 0.0, min=0, max=3600)
    at_s = cuts.array("at_s")
    if any(isinstance(t, bool) or not isinstance(t, int | float) or t < 0 for t in at_s):
        raise cuts.error("at_s", f"must list times in seconds ≥ 0, got {at_s!r}")
    cuts.done()
    top.done()
    return LinkProfile(
        name=name,
        description=description,
        to_ground_bps=to_ground * 1000,
        to_station_bps=to_station * 1000,
        one_way_delay_s=delay_ms / 1000,
        loss=loss_pct / 100,
        mss_bytes=mss,
        buffer_bytes=int(buffer_kb * 1000),
        orbit_s=orbit_min * 60,
        dark=tuple(windows),
        cut_after_s=cut_after_s,
        cuts_per_hour=per_hour,
        cuts_at_s=tuple(sorted(float(t) for t in at_s)),
    )
