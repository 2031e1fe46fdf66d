"""A log witness: fetch ground's checkpoint, check it only grew, cosign it (C2SP tlog-witness style).

The witness keeps, in its own state folder, every checkpoint it accepted. It cosigns a new
checkpoint only if ground's pinned key signed it and a consistency proof shows it extends
the last one; two different trees of one size, a log that shrank, or a proof that fails is a
split view and is refused loudly. Readers who trust the witness then trust what it cosigned.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from protocol import ProtocolError, SigningKey, format_public_key, parse_public_key
from protocol.tlog import Checkpoint, check_consistency, cosign, parse_note, verify_note

from .proof import VerificationFailed
from .readback import TIMEOUT_S, fetch


class SplitView(VerificationFailed):
    """Ground showed this witness a log that does not extend what it showed before."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessResult:
    checkpoint: Checkpoint
    previous_size: int
    cosigned: bool


def _state(dir_: Path) -> dict[str, object]:
    path = dir_ / "witness.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(dir_: Path, state: dict[str, object]) -> None:
    dir_.mkdir(parents=True, exist_ok=True)
    tmp = dir_ / ".witness.json.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, dir_ / "witness.json")


def load_key(path: Path) -> SigningKey:
    """The witness's Ed25519 seed (32 raw bytes, mode 0600), made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    return SigningKey.from_seed(path.read_bytes())


def witness_once(
    ground_url: str, state_dir: Path, key: SigningKey, name: str, now_s: int, *, ground_key: str | None = None
) -> WitnessResult:
    """One round: fetch, check against what this witness saw before, cosign, remember."""
    base = ground_url.rstrip("/")
    state = _state(state_dir)
    pinned = str(state.get("ground_key") or ground_key or "")
    head = json.loads(fetch(f"{base}/log/checkpoint"))
    note, origin = str(head["checkpoint"]), str(head["origin"])
    if not pinned:
        raise VerificationFailed("pin ground's log key first: --ground-key ed25519:… (from the operator)")
    try:
        cp = verify_note(note, origin, parse_public_key(pinned))
    except ProtocolError as exc:
        raise VerificationFailed(f"checkpoint from {base}: {exc}") from exc
    raw_seen = state.get("seen", {})
    seen: dict[str, str] = dict(raw_seen) if isinstance(raw_seen, dict) else {}
    if seen.get(str(cp.size), cp.root.hex()) != cp.root.hex():
        raise SplitView(f"split view: two different trees of size {cp.size} from {base}")
    prev_note = state.get("latest")
    prev = parse_note(str(prev_note)).checkpoint if prev_note else None
    if prev is not None:
        proof = None
        if prev.size < cp.size:
            proof = json.loads(fetch(f"{base}/log/proof/consistency?old={prev.size}&new={cp.size}"))["proof"]
        try:
            check_consistency(prev, cp, proof)
        except ProtocolError as exc:
            raise SplitView(f"split view: {exc}") from exc
    signature = cosign(key, cp, now_s)
    body = json.dumps(
        {"witness": name, "size": cp.size, "time_s": now_s, "signature": signature.hex()}
    ).encode()
    req = urllib.request.Request(
        f"{base}/log/cosign", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S):  # noqa: S310
            cosigned = True
    except OSError:
        cosigned = False  # ground may not know this witness yet; the cosignature is kept here anyway
    seen[str(cp.size)] = cp.root.hex()
    _save(
        state_dir,
        {
            "ground_key": pinned,
            "latest": note,
            "seen": seen,
            "witness_key": format_public_key(key.public_key),
        },
    )
    return WitnessResult(checkpoint=cp, previous_size=0 if prev is None else prev.size, cosigned=cosigned)
