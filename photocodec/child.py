"""Transcode one photo in a child process, so its memory goes back to the system (issue 18).

libjxl's lossless JPEG recompression (the only JPEG XL mode that rebuilds the original bytes)
holds every DCT coefficient and its own buffers: ~270–290 MB for a 12-MP photo, whatever the
effort or thread count (measured, docs/scale.md), and no libjxl setting bounds it — the
chunked/streaming encoder options of libjxl ≥ 0.10 apply to pixel input, not to JPEG
recompression. Run in the laptop client's own process, that peak stays as its resident set
(glibc keeps freed arenas), and the client also held the photo. Here the client names the
photo's file; ``python -m photocodec.child SRC DST`` reads it, transcodes it with the same
proof as :func:`photocodec.jxl.transcode` (a byte-exact round trip) and writes the JPEG XL
bytes to DST, then exits, returning every page. One photo at a time.

Exit codes: 0 written; 1 no gain or not provable (send as-is); 2 the file is unreadable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

_EXIT_AS_IS = 1
_EXIT_UNREADABLE = 2
# Start-up (~0.3 s) plus libjxl's ~1 s per 12-MP photo there and back, with room for a busy machine.
TIMEOUT_S = 300.0


def transcode_file(src: Path, *, timeout_s: float = TIMEOUT_S) -> bytes | None:
    """JPEG XL bytes proven to rebuild the file ``src`` exactly, made in a child; else None.

    None means "send it as-is" (not a JPEG, no gain, no codec, the child failed or timed out).
    This process never reads the photo; it holds only the (smaller) JPEG XL result.
    """
    with tempfile.TemporaryDirectory(prefix="orbitpost-jxl-") as d:
        dst = Path(d) / "out.jxl"
        try:
            r = subprocess.run(
                [sys.executable, "-m", "photocodec.child", str(src), str(dst)],
                capture_output=True,
                timeout=timeout_s,
                env=_child_env(),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode != 0 or not dst.exists():
            return None
        return dst.read_bytes()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child imports this very checkout's code, whatever the working directory.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _main(argv: list[str]) -> int:
    from photocodec.jxl import transcode

    src, dst = Path(argv[0]), Path(argv[1])
    try:
        jpeg = src.read_bytes()
    except OSError as exc:
        sys.stderr.write(f"cannot read {src}: {exc}\n")
        return _EXIT_UNREADABLE
    coded = transcode(jpeg)
    if coded is None:
        return _EXIT_AS_IS
    dst.write_bytes(coded)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
