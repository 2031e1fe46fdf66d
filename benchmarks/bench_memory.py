"""Peak memory of onboard and ground while syncing 12-MP photos over the live link (issue 18).

    python benchmarks/bench_memory.py                  # 1 GB of photos (~300 photos; long)
    python benchmarks/bench_memory.py --total-mb 100   # a shorter run
    python benchmarks/bench_memory.py --total-mb 100 --compare   # Lepton, JPEG XL, as-is: same photos
    python benchmarks/bench_memory.py --total-mb 40 --ground-decodes jxl --encoder-mib 352
    python benchmarks/bench_memory.py --dir /tmp/mem   # keep the homes and photos
    python benchmarks/bench_memory.py --tradeoff 4     # encoder settings: peak vs bytes saved vs time

Workload: distinct 12-MP JPEGs made from scikit-image's sample images (benchmarks/photos.py,
never committed), one photo post each by one astronaut to its archive account, queued on a
fresh onboard home; a real `ground serve` on loopback; then one `onboard sync` (a child
process) sends everything (photos as Lepton or JPEG XL, whichever is smaller and fits the
encoder's bound, rebuilt on ground) and waits until published. ``--ground-decodes`` makes
ground a JPEG-XL-only one (``jxl``: the release before Lepton) or a codec-less one (``none``:
photos as-is); ``--compare`` runs all three on the same photos, one after the other. CPU
seconds are the kernel's (user + system) for `onboard sync` with its encoder children and for
`ground serve` with its decoder children, per MiB of photos.

Sampled every 50 ms from /proc (VmHWM: a process's own peak resident set; VmRSS summed over a
process and its children for the tree): the `onboard sync` process itself, its JPEG XL encoder
children (photocodec/child.py, one photo at a time), the two together at any moment, and the
same for `ground serve` and its decoder children (ground/lepton.py, ground/jxl.py). Floors in
the same run: an idle `onboard` start (the interpreter and its imports) and one 12-MP encode
alone in a fresh process, as Lepton and as JPEG XL. The encoder runs under its memory bound (``--encoder-mib``, else
onboard's default, photocodec/child.py); the bytes `onboard sync` sent, against the photos'
own bytes, show what the bound costs on the link.

``--tradeoff N`` measures instead how each way of encoding N held-out 12-MP photos trades peak
resident memory against bytes saved and time (docs/scale.md): onboard's child with Lepton
(lepton_jpeg_python) and with libjxl (imagecodecs), each with its byte-exact check, and
Debian's ``cjxl`` at several efforts and thread counts. Each peak is the kernel's (wait4) for
that program alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.photos import write_photos  # noqa: E402

MIB = 1024 * 1024
GOAL_RSS_BYTES = 256 * MIB


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid``."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def _not_yet_exec(child: int, parent: int) -> bool:
    """A child caught between fork and exec shares its parent's pages (and reports them as its
    own VmRSS and VmHWM): counting it would add the parent twice (seen: an 81 MiB "encoder")."""
    try:
        return Path(f"/proc/{child}/cmdline").read_bytes() == Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return True


@dataclass
class Peaks:
    """Peaks of one process and its children, sampled until stopped (KiB)."""

    pid: int
    own_kib: int = 0
    child_kib: int = 0
    tree_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Peaks:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.own_kib = max(self.own_kib, _status_kib(self.pid, "VmHWM"))
            tree = _status_kib(self.pid, "VmRSS")
            for c in _children(self.pid):
                if _not_yet_exec(c, self.pid):
                    continue
                self.child_kib = max(self.child_kib, _status_kib(c, "VmHWM"))
                tree += _status_kib(c, "VmRSS")
            self.tree_kib = max(self.tree_kib, tree)

    def stop(self) -> Peaks:
        self.own_kib = max(self.own_kib, _status_kib(self.pid, "VmHWM"))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("ORBITPOST_HOME", None)
    return env


def _cli(app_module: str, home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(
        [sys.executable, "-m", app_module, "--home", str(home), *args],
        capture_output=True,
        text=True,
        env={**_env(), **(env or {})},
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{app_module} {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


# What ground decodes (--ground-decodes): the environment `ground` runs with.
GROUND_MODES = {
    "lepton": {},  # this release: Lepton and JPEG XL
    "jxl": {"ORBITPOST_LEPTON": "none"},  # the release before Lepton
    "none": {"ORBITPOST_LEPTON": "none", "ORBITPOST_JXL": "none"},  # photos as-is
}


def _setup(work: Path, photos: list[Path], ground_env: dict[str, str]) -> tuple[Path, Path, Path]:
    """Onboard and ground homes, alice enrolled, a station token, every photo queued."""
    a, g, token = work / "A", work / "G", work / "T"
    _cli("onboard", a, "init")
    _cli("ground", g, "init")
    _cli("onboard", a, "keys", "new", "alice")
    key = _cli("onboard", a, "keys", "show", "alice").strip()
    _cli("ground", g, "enroll", "alice", "--key", key, "--account", "archive:alice")
    # The token carries ground's capability token: what it decodes decides what onboard sends.
    _cli("ground", g, "station", "add", "iss", "--token-out", str(token), env=ground_env)
    # One `onboard post` per photo would start an interpreter each; queue them in-process.
    from typer.testing import CliRunner

    from onboard.cli import app

    runner = CliRunner()
    for i, p in enumerate(photos):
        r = runner.invoke(app, ["--home", str(a), "post", "--as", "alice", "--to", "archive:alice",
                                "--photo", str(p), "--alt", f"photo {i}", f"12-MP photo {i}"])  # fmt: skip
        if r.exit_code != 0:
            raise RuntimeError(f"onboard post failed: {r.output}")
    return a, g, token


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("ground serve exited early")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/v1/health", timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError("ground serve did not come up within 60 s")


def _floor_idle() -> int:
    """Peak KiB of `onboard --version` (interpreter, CLI and its imports)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onboard", "--version"], env=_env(), stdout=subprocess.DEVNULL
    )
    peaks = Peaks(proc.pid).start()
    proc.wait(60)
    return peaks.stop().own_kib


def _floor_encode(photo: Path, codec: int) -> int:
    """Peak KiB of one transcode of ``photo`` alone with ``codec`` (photocodec/child.py, no bound)."""
    with tempfile.TemporaryDirectory() as d:
        argv = [
            sys.executable,
            "-m",
            "photocodec.child",
            str(photo),
            str(Path(d) / "o"),
            str(1 << 40),
            str(codec),
        ]
        kib, _ = _peak_of(argv)
        return kib


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process and the children it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# Runs one program and reports the kernel's peak resident set for it (wait4). A small
# interpreter forks it, not this process: a child's ru_maxrss also counts the pages of the
# process it was forked from, which here would be this benchmark with its photos.
_PEAK_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def _peak_of(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, int]:
    """(peak KiB, exit code) of running ``argv``."""
    r = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, *argv],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=900,
        check=True,
    )
    kib, code = r.stdout.split()[-2:]
    return int(kib), int(code)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    ground_decodes: str
    photos: int
    photo_bytes: int
    sent_bytes: int
    encoder_mib: int
    sync_s: float
    onboard: Peaks
    ground: Peaks
    onboard_cpu_s: float
    ground_cpu_s: float
    idle_kib: int
    encode_kib: int  # one 12-MP photo alone, as JPEG XL
    lepton_kib: int  # the same, as Lepton
    published: int


def _photos(work: Path, total_bytes: int) -> list[Path]:
    """The first photos (0, 1, ...) up to ``total_bytes``: reused from an earlier run in ``work``."""
    folder = work / "photos"
    chosen, size = [], 0
    for p in sorted(folder.glob("photo-*.jpg")) if folder.is_dir() else []:
        if size >= total_bytes:
            return chosen
        chosen.append(p)
        size += p.stat().st_size
    if size >= total_bytes:
        return chosen
    print(f"making {total_bytes / MIB:,.0f} MiB of 12-MP photos from scikit-image's samples…", flush=True)
    return list(write_photos(folder, total_bytes))


def run(
    work: Path, total_bytes: int, encoder_mib: int | None = None, ground_decodes: str = "lepton"
) -> Result:
    from photocodec.child import DEFAULT_MEMORY_MIB, ENV_MEMORY
    from protocol.codecs import Codec

    ground_env = GROUND_MODES[ground_decodes]
    photos = _photos(work, total_bytes)
    photo_bytes = sum(p.stat().st_size for p in photos)
    print(
        f"  {len(photos)} photos, {photo_bytes / MIB:,.0f} MiB; ground decodes: {ground_decodes}", flush=True
    )
    work = work / ground_decodes
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    a, g, token = _setup(work, photos, ground_env)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ground",
            "--home",
            str(g),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**_env(), **ground_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sync_env = _env()
    if encoder_mib is not None:
        sync_env[ENV_MEMORY] = str(encoder_mib)
    try:
        _wait_healthy(url, server)
        ground = Peaks(server.pid).start()
        _cli("onboard", a, "link", "add", "--ground", url, "--token-file", str(token))
        print("  syncing…", flush=True)
        cpu0 = _children_cpu_s()
        t0 = time.monotonic()
        sync = subprocess.Popen(
            [sys.executable, "-m", "onboard", "--home", str(a), "sync", "--json"],
            env=sync_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        onboard = Peaks(sync.pid).start()
        out, err = sync.communicate(timeout=4 * 3600)
        onboard.stop()
        sync_s = time.monotonic() - t0
        onboard_cpu_s = _children_cpu_s() - cpu0
        if sync.returncode != 0:
            raise RuntimeError(f"onboard sync exited {sync.returncode}: {err.decode()[-2000:]}")
        ground.stop()
        ground_cpu_s = _cpu_s(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    published = sum(1 for _ in (g / "archive" / "alice").glob("*/media-1.jpg"))
    sent = json.loads(out)["request_bytes"] if out.strip() else 0
    return Result(
        ground_decodes=ground_decodes,
        photos=len(photos),
        photo_bytes=photo_bytes,
        sent_bytes=int(sent),
        encoder_mib=encoder_mib if encoder_mib is not None else DEFAULT_MEMORY_MIB,
        sync_s=sync_s,
        onboard=onboard,
        ground=ground,
        onboard_cpu_s=onboard_cpu_s,
        ground_cpu_s=ground_cpu_s,
        idle_kib=_floor_idle(),
        encode_kib=_floor_encode(photos[0], Codec.JPEG_XL),
        lepton_kib=_floor_encode(photos[0], Codec.LEPTON),
        published=published,
    )


def report(results: list[Result]) -> list[str]:
    def mib(kib: int) -> str:
        return f"{kib / 1024:,.0f} MiB"

    rows = [
        "| ground decodes | photos | encoder bound | synced | sent / photo bytes | `onboard sync` own peak "
        "| its encoder child (peak) | onboard tree (peak) "
        "| `ground serve` own peak | its decoder children (peak) | ground tree (peak) "
        "| CPU s/MiB onboard | CPU s/MiB ground "
        "| floor: idle `onboard` | floor: one 12-MP encode alone, Lepton / JPEG XL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per_mib = r.photo_bytes / MIB
        rows.append(
            f"| {r.ground_decodes} | {r.photos} ({r.photo_bytes / MIB:,.0f} MiB) | {r.encoder_mib} MiB "
            f"| {r.published} in {r.sync_s:,.0f} s | {r.sent_bytes / r.photo_bytes:.3f} "
            f"| {mib(r.onboard.own_kib)} | {mib(r.onboard.child_kib)} | {mib(r.onboard.tree_kib)} "
            f"| {mib(r.ground.own_kib)} | {mib(r.ground.child_kib)} | {mib(r.ground.tree_kib)} "
            f"| {r.onboard_cpu_s / per_mib:.2f} | {r.ground_cpu_s / per_mib:.2f} "
            f"| {mib(r.idle_kib)} | {mib(r.lepton_kib)} / {mib(r.encode_kib)} |"
        )
    return rows


# -- how to encode: peak memory vs bytes saved vs time (--tradeoff) ---------------------

# Held-out photos for the trade-off: indices far from those the sync run and the memory models
# used (0-330 and 700-706 for JPEG XL; 5000-5002, resized, for Lepton), so no setting is judged
# on a photo it was tuned on.
TRADEOFF_FIRST_PHOTO = 6000


@dataclass(frozen=True, slots=True, kw_only=True)
class Way:
    name: str
    argv: list[str]  # with {src} and {dst}
    env: dict[str, str] | None = None


def _ways() -> list[Way]:
    import shutil

    child = [sys.executable, "-m", "photocodec.child", "{src}", "{dst}", str(1 << 40)]
    ways = [
        Way(name="onboard's child: Lepton (lepton_jpeg_python 0.5, one thread), encode + exact check", argv=[*child, "4"]),
        Way(name="onboard's child: libjxl 0.11 (imagecodecs), encode + exact check", argv=[*child, "3"]),
        Way(name="onboard's child: both, the smaller kept (a ground of this release)", argv=[*child, "4,3"]),
    ]  # fmt: skip
    cjxl = shutil.which("cjxl")
    if cjxl:
        version = subprocess.run([cjxl, "--version"], capture_output=True, text=True).stdout.split()
        tag = version[1] if len(version) > 1 else "?"  # "cjxl v0.7.0 [AVX2,...]"
        for effort, threads in ((7, -1), (7, 0), (3, 0), (1, 0)):
            ways.append(
                Way(
                    name=f"`cjxl` {tag} -e {effort} --num_threads={threads} (encode only)",
                    argv=[cjxl, "{src}", "{dst}", "--lossless_jpeg=1", f"--effort={effort}", f"--num_threads={threads}", "--quiet"],
                )
            )  # fmt: skip
    return ways


def tradeoff(work: Path, count: int) -> list[str]:
    from benchmarks.photos import photo

    folder = work / "tradeoff"
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(TRADEOFF_FIRST_PHOTO, TRADEOFF_FIRST_PHOTO + count):
        p = folder / f"held-out-{i}.jpg"
        p.write_bytes(photo(i))
        photos.append(p)
    total = sum(p.stat().st_size for p in photos)
    rows = [
        f"{count} held-out 12-MP photos, {total / MIB:,.1f} MiB",
        "| how | peak resident (max over photos) | bytes saved | seconds per photo (wall) |",
        "|---|---:|---:|---:|",
    ]
    for way in _ways():
        peak_kib, out_bytes, seconds, failed = 0, 0, 0.0, 0
        for p in photos:
            dst = folder / "out.bin"
            dst.unlink(missing_ok=True)
            argv = [a.format(src=p, dst=dst) for a in way.argv]
            t0 = time.monotonic()
            kib, code = _peak_of(argv)
            seconds += time.monotonic() - t0
            peak_kib = max(peak_kib, kib)
            if code != 0 or not dst.exists():
                failed += 1
                out_bytes += p.stat().st_size
            else:
                out_bytes += dst.stat().st_size
        note = f" ({failed} failed)" if failed else ""
        rows.append(
            f"| {way.name}{note} | {peak_kib / 1024:,.0f} MiB | {1 - out_bytes / total:.1%} | {seconds / count:.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total-mb", type=float, default=1024.0, help="MiB of photos to sync (default 1024)")
    ap.add_argument(
        "--encoder-mib", type=int, help="the encoder child's memory bound (default: onboard's own)"
    )
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    ap.add_argument(
        "--tradeoff", type=int, metavar="N", help="only compare ways of encoding N held-out photos"
    )
    ap.add_argument(
        "--ground-decodes", choices=sorted(GROUND_MODES), default="lepton",
        help="what ground decodes: lepton (this release, and JPEG XL), jxl (the release before), none",
    )  # fmt: skip
    ap.add_argument("--compare", action="store_true", help="run lepton, jxl and none on the same photos")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-memory-")))
        work.mkdir(parents=True, exist_ok=True)
        if args.tradeoff:
            print("\n".join(tradeoff(work, args.tradeoff)))
            return 0
        modes = ["lepton", "jxl", "none"] if args.compare else [args.ground_decodes]
        results = [run(work, int(args.total_mb * MIB), args.encoder_mib, m) for m in modes]
    print("\n".join(report(results)))
    r = results[0]
    ok = r.onboard.tree_kib * 1024 <= GOAL_RSS_BYTES
    print(
        f"goal: `onboard sync` and its encoder together ≤ {GOAL_RSS_BYTES // MIB} MiB — "
        + ("met" if ok else "MISSED")
    )
    if args.json:
        print(
            json.dumps(
                {
                    "ground_decodes": r.ground_decodes,
                    "onboard_cpu_s": r.onboard_cpu_s,
                    "ground_cpu_s": r.ground_cpu_s,
                    "lepton_kib": r.lepton_kib,
                    "photos": r.photos,
                    "photo_bytes": r.photo_bytes,
                    "sent_bytes": r.sent_bytes,
                    "encoder_mib": r.encoder_mib,
                    "published": r.published,
                    "onboard_kib": r.onboard.own_kib,
                    "onboard_child_kib": r.onboard.child_kib,
                    "onboard_tree_kib": r.onboard.tree_kib,
                    "ground_kib": r.ground.own_kib,
                    "ground_child_kib": r.ground.child_kib,
                    "ground_tree_kib": r.ground.tree_kib,
                    "idle_kib": r.idle_kib,
                    "encode_kib": r.encode_kib,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
