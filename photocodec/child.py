"""Transcode one photo in a child process, under a memory bound (issue 18, docs/scale.md).

The child tries each photo codec the receiving ground decodes whose predicted peak fits the
bound (photocodec/transport.py: Lepton, ~55 MiB for a 12-MP photo; JPEG XL, below) and keeps
the smallest proven form. libjxl's lossless JPEG recompression (the only JPEG XL mode that rebuilds the original bytes)
holds the whole frame's DCT coefficients as 32-bit integers plus its tokens: measured here
(libjxl 0.11.2 through imagecodecs) a child needs about 45 MiB + 14.6 bytes a pixel + 34 bytes
a JPEG byte — 320–327 MiB for a 12-MP photo — whatever the effort or thread count. No libjxl
setting lowers it: its chunked/streaming encoder (``--streaming_input``, buffering, libjxl
≥ 0.10) refuses JPEG frames (``CanDoStreamingEncoding`` returns false for them), and encoding
from pixels, which could stream, cannot give the astronaut's bytes back.

So the bound is on *which* photos are encoded, and it is enforced:

- ``encoder_memory_bytes()`` is the bound (``ORBITPOST_ENCODER_MEMORY_MIB``, default
  ``DEFAULT_MEMORY_MIB``), chosen so that ``onboard sync`` plus this child stays within the
  laptop's 256 MiB;
- before starting, ``predicted_peak_bytes`` (the model above, from the photo's header) says
  whether the photo can fit; one that cannot travels as-is without an attempt;
- while the child runs, the parent samples its resident set (and any program it runs) every
  ``POLL_S`` and kills its process group past the bound: the photo then travels as-is. The
  child also caps its own address space (``RLIMIT_AS``, ``address_space_cap``) against a
  runaway — not at the bound itself: libjxl maps ~2.6× what it touches (829 MiB of address
  space for 318 MiB resident on a 12-MP photo), so an address-space cap at the bound would
  refuse photos whose memory fits.

``python -m photocodec.child SRC DST MEMORY_BYTES [CODECS [FRAMED]]`` reads SRC, transcodes it
with each codec in CODECS (ids, comma-separated, default JPEG XL) with the same proof as
:func:`photocodec.jxl.transcode` (a byte-exact round trip), writes the smallest form to DST
(synced; preceded by the live link's CODED_BLOB header when FRAMED is 1), says ``codec N`` on
stderr, then exits, returning every page. One photo at a time. The parent never reads the
photo, and with :func:`encode_file` never holds the result either.

Exit codes: 0 written; 1 no gain or not provable (send as-is); 2 the file is unreadable.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from photocodec.transport import JPEG_XL, coded_header

_EXIT_AS_IS = 1
_EXIT_UNREADABLE = 2
# Start-up (~0.3 s) plus libjxl's ~1 s per 12-MP photo there and back, with room for a busy machine.
TIMEOUT_S = 300.0

MIB = 1024 * 1024
ENV_MEMORY = "ORBITPOST_ENCODER_MEMORY_MIB"
# 256 MiB for the laptop client, less `onboard sync`'s own peak (at most 108 MiB in every
# run, docs/scale.md): photos up to ~4 MP (quality 92) are encoded, a 12-MP photo
# (which needs ~330 MiB) travels as-is. A laptop with memory to spare sets 352 to encode
# 12-MP photos again (22 % fewer bytes on the link); docs/scale.md has the trade-off.
DEFAULT_MEMORY_MIB = 144
# Below this the interpreter and codec alone (~27 MiB resident) leave nothing to encode with.
MIN_MEMORY_MIB = 48
# How often the parent samples the child's resident set: measured here, a kill lands 0.5-4 MiB
# past the bound (docs/scale.md); reading two small /proc files 200 times a second costs little.
POLL_S = 0.005

# The encoder's measured peak (docs/scale.md: one photo resized to 2-24 MP and seven 12-MP
# photos, libjxl 0.11.2 through imagecodecs): a fixed
# part (interpreter, imagecodecs, numpy), the coefficient planes (int32, every pixel), and
# the tokens and buffers that grow with the JPEG's entropy-coded size. Fitted, then rounded
# up so it over-predicts every measured photo (by 3-19 MiB, held-out ones included).
_PEAK_FIXED_BYTES = 52 * MIB
_PEAK_BYTES_PER_PIXEL = 15
_PEAK_BYTES_PER_JPEG_BYTE = 34
# What a codec tried after another on the same photo may find still resident from the first
# (the JPEG, the first's result, library state): measured 1-2 MiB with _child_env's malloc settings.
_AFTER_ANOTHER_BYTES = 4 * MIB


@dataclass(frozen=True, slots=True, kw_only=True)
class Encoded:
    """What one encode attempt gave: ``written`` (DST holds PREFIX + JPEG XL), else ``reason``
    says why the photo travels as-is; ``peak_bytes`` is the child's peak resident set (0 when
    no child was started)."""

    written: bool
    reason: str
    peak_bytes: int
    memory_bytes: int
    codec: int = 0  # the codec id of what DST holds (protocol.codecs.Codec) when ``written``


class EncoderConfigError(ValueError):
    """``ORBITPOST_ENCODER_MEMORY_MIB`` is not a usable number of MiB."""


def encoder_memory_bytes() -> int:
    """The encoder child's memory bound in bytes (``ORBITPOST_ENCODER_MEMORY_MIB``, else the default).

    Raises EncoderConfigError for a value that is not a whole number of MiB ≥ MIN_MEMORY_MIB.
    """
    raw = os.environ.get(ENV_MEMORY, "").strip()
    if not raw:
        return DEFAULT_MEMORY_MIB * MIB
    try:
        mib = int(raw)
    except ValueError:
        raise EncoderConfigError(f"{ENV_MEMORY}={raw!r} is not a whole number of MiB") from None
    if mib < MIN_MEMORY_MIB:
        raise EncoderConfigError(
            f"{ENV_MEMORY}={mib} is below the {MIN_MEMORY_MIB} MiB the encoder itself needs"
        )
    return mib * MIB


def predicted_peak_bytes(pixels: int, size_bytes: int) -> int:
    """The encoder child's peak resident set for a JPEG of ``pixels`` and ``size_bytes`` (an upper estimate)."""
    return _PEAK_FIXED_BYTES + _PEAK_BYTES_PER_PIXEL * pixels + _PEAK_BYTES_PER_JPEG_BYTE * size_bytes


def address_space_cap(memory_bytes: int) -> int:
    """The child's RLIMIT_AS: room for what libjxl maps but never touches (~2.6× its resident
    set, plus ~150 MiB of libraries), so it only stops a runaway, never an encode within the bound."""
    return 3 * memory_bytes + 256 * MIB


def _as_is(reason: str, memory_bytes: int, peak_bytes: int = 0) -> Encoded:
    return Encoded(written=False, reason=reason, peak_bytes=peak_bytes, memory_bytes=memory_bytes)


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def fits(pixels: int, size_bytes: int, memory_bytes: int) -> str | None:
    """None if a JPEG of ``pixels`` and ``size_bytes`` can be encoded within ``memory_bytes``,
    else the reason it travels as-is (for the astronaut: what, how much, which setting)."""
    need = predicted_peak_bytes(pixels, size_bytes)
    return None if need <= memory_bytes else _over_bound(pixels, need, "JPEG XL", memory_bytes)


def _over_bound(pixels: int, need: int, codec_name: str, memory_bytes: int) -> str:
    """Why a photo travels as-is, for the astronaut: what, how much, which setting."""
    return (
        f"a {pixels / 1e6:.1f}-megapixel photo needs about {_mib(need)} to encode as {codec_name}, "
        f"over the encoder's {_mib(memory_bytes)} bound ({ENV_MEMORY}); it travels as it is"
    )


def _fitting(
    head: bytes, size: int, codecs: tuple[int, ...], memory_bytes: int
) -> tuple[tuple[int, ...], str]:
    """The codecs predicted to fit ``memory_bytes`` for this photo, and why the others do not."""
    from photocodec import jxl, transport

    keep: list[int] = []
    why: list[str] = []
    for codec in codecs:
        need = transport.predicted_peak_bytes(codec, head, size)
        if need is not None and keep:
            need += _AFTER_ANOTHER_BYTES
        if need is None or need <= memory_bytes:
            keep.append(codec)  # unknown: try it; the watchdog still holds the bound
            continue
        pixels = jxl.pixel_count(head) or 0
        why.append(_over_bound(pixels, need, transport.NAMES.get(codec, str(codec)), memory_bytes))
    return tuple(keep), "; ".join(why)


def encode_file(
    src: Path,
    dst: Path,
    *,
    codecs: tuple[int, ...] = (JPEG_XL,),
    framed: bool = False,
    memory_bytes: int | None = None,
    timeout_s: float = TIMEOUT_S,
    predict: bool = True,
) -> Encoded:
    """Write the smallest form among ``codecs`` proven to rebuild the file ``src`` exactly to
    ``dst`` (after the CODED_BLOB header when ``framed``), made in a child whose resident set
    stays within ``memory_bytes`` (default: the configured bound).

    Returns Encoded (``codec`` says which); ``written`` False means "send it as-is" and
    ``reason`` says why (not a JPEG, no gain, too large for the bound — predicted from its
    header when ``predict``, or the child went over and was killed —, no codec, failed or timed
    out). ``dst`` then does not exist.
    """
    from photocodec import jxl

    if not codecs:
        return _as_is("no photo codec both here and on ground; it travels as it is", memory_bytes or 0)
    if memory_bytes is None:
        try:
            memory_bytes = encoder_memory_bytes()
        except EncoderConfigError as exc:
            return _as_is(f"{exc}; photos travel as they are", 0)
    if predict:
        try:
            with src.open("rb") as f:
                head = f.read(jxl.HEAD_BYTES)
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            return _as_is(f"cannot read the photo: {exc}", memory_bytes)
        codecs, why = _fitting(head, size, codecs, memory_bytes)
        if not codecs:
            return _as_is(why, memory_bytes)
    return _run_child(src, dst, codecs, framed, memory_bytes, timeout_s)


def _run_child(
    src: Path, dst: Path, codecs: tuple[int, ...], framed: bool, memory_bytes: int, timeout_s: float
) -> Encoded:
    argv = [
        sys.executable, "-m", "photocodec.child", str(src), str(dst), str(memory_bytes),
        ",".join(str(int(c)) for c in codecs), "1" if framed else "0",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as err:
        try:
            # A session of its own, so a kill takes the child's whole group (the CLI backend
            # runs cjxl/djxl as grandchildren), not just the Python process.
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=_child_env(), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            return _as_is(f"cannot start the encoder: {exc}", memory_bytes)
        over, sampled = _watch(proc, memory_bytes, timeout_s)
        err.seek(0)
        said = err.read().decode("utf-8", "replace")
    peak = max(sampled, _reported_peak(said))
    detail = "\n".join(
        line for line in said.strip().splitlines() if not line.startswith(("peak_kib ", "codec "))
    )[-300:]
    if over is not None or proc.returncode != 0:
        dst.unlink(missing_ok=True)
        why = over or _exit_reason(proc.returncode, detail)
        return _as_is(why, memory_bytes, peak)
    codec = _reported("codec", said)
    if not dst.exists() or codec not in codecs:
        dst.unlink(missing_ok=True)
        return _as_is("the encoder wrote nothing", memory_bytes, peak)
    return Encoded(written=True, reason="", peak_bytes=peak, memory_bytes=memory_bytes, codec=codec)


def _exit_reason(code: int | None, detail: str) -> str:
    if code == _EXIT_AS_IS:
        return "no codec would make it smaller, or rebuild it exactly; it travels as it is"
    if code == _EXIT_UNREADABLE:
        return f"the encoder could not read the photo: {detail}"
    return f"the encoder stopped (exit {code}): {detail or 'no message'}; the photo travels as it is"


def _watch(proc: subprocess.Popen[bytes], memory_bytes: int, timeout_s: float) -> tuple[str | None, int]:
    """Sample the child's group until it exits; kill it past the bound or the deadline.

    Returns (why it was stopped, or None; the highest resident set sampled). Reaps the child.
    """
    deadline = time.monotonic() + timeout_s
    why: str | None = None
    peak = 0
    while proc.poll() is None:
        rss = _group_rss(proc.pid)
        peak = max(peak, rss)
        if rss > memory_bytes:
            why = (
                f"the encoder went over its {_mib(memory_bytes)} bound ({ENV_MEMORY}) and was stopped; "
                "the photo travels as it is"
            )
        elif time.monotonic() > deadline:
            why = f"the encoder took more than {timeout_s:.0f} s and was stopped; the photo travels as it is"
        if why is not None:
            _kill_group(proc)
            proc.wait()
            break
        time.sleep(POLL_S)
    return why, peak


def _reported_peak(stderr: str) -> int:
    """The child's own peak resident set (VmHWM), from its last ``peak_kib N`` line; 0 if none.

    Not wait4's ru_maxrss: for a child started by vfork (as subprocess does) that figure also
    counts the parent's resident set at the moment of exec.
    """
    return _reported("peak_kib", stderr) * 1024


def _reported(key: str, stderr: str) -> int:
    """N from the child's last ``KEY N`` line on stderr; 0 if none."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(key + " "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return 0
    return 0


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _group_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and the programs it runs (one level: cjxl/djxl under the child)."""
    total = 0
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for p in (pid, *map(int, kids)):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue  # it just exited
    return total


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def transcode_file(
    src: Path, *, codecs: tuple[int, ...] = (JPEG_XL,), timeout_s: float = TIMEOUT_S
) -> tuple[int, bytes] | None:
    """(codec, bytes) proven to rebuild the file ``src`` exactly, made in a bounded child; else None.

    None means "send it as-is" (see encode_file). For callers that need the bytes in memory
    (a file hand-off builds its bundle there); the live link uses encode_file and never reads them.
    """
    with tempfile.TemporaryDirectory(prefix="orbitpost-photo-") as d:
        dst = Path(d) / "out.coded"
        done = encode_file(src, dst, codecs=codecs, timeout_s=timeout_s)
        if not done.written:
            return None
        return done.codec, dst.read_bytes()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child imports this very checkout's code, whatever the working directory.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Fewer malloc arenas: less address space reserved per libjxl thread (not less resident).
    env.setdefault("MALLOC_ARENA_MAX", "2")
    # A fixed mmap threshold: every large buffer is mapped and given back when freed. glibc's
    # default threshold grows after the first such free, so what Lepton freed stayed resident
    # (+9-11 MiB) under JPEG XL's peak when both are tried on one photo; now +1-2 MiB.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    return env


def _own_peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _main(argv: list[str]) -> int:
    try:
        return _encode(argv)
    finally:
        sys.stderr.write(f"peak_kib {_own_peak_kib()}\n")


def _encode(argv: list[str]) -> int:
    src, dst = Path(argv[0]), Path(argv[1])
    memory_bytes = int(argv[2]) if len(argv) > 2 else DEFAULT_MEMORY_MIB * MIB
    codecs = tuple(int(c) for c in argv[3].split(",") if c) if len(argv) > 3 else (JPEG_XL,)
    framed = len(argv) > 4 and argv[4] == "1"
    cap = address_space_cap(memory_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    from photocodec.transport import best

    try:
        jpeg = src.read_bytes()
    except OSError as exc:
        sys.stderr.write(f"cannot read {src}: {exc}\n")
        return _EXIT_UNREADABLE
    try:
        found = best(jpeg, codecs)
    except MemoryError:
        sys.stderr.write("out of address space (RLIMIT_AS) while encoding\n")
        return _EXIT_AS_IS
    if found is None:
        return _EXIT_AS_IS
    codec, coded = found
    prefix = coded_header(codec, len(jpeg)) if framed else b""
    del jpeg
    # Private like every file onboard writes (the photo may be embargoed).
    with open(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(prefix)
        f.write(coded)
        f.flush()
        os.fsync(f.fileno())
    sys.stderr.write(f"codec {codec}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
