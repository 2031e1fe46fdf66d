"""The public transparency log's values: leaf entries, signed checkpoints and cosignatures (§15).

Ground keeps an append-only Merkle log (RFC 9162 tree hashing: leaf ``H(0x00 || entry)``,
node ``H(0x01 || left || right)``) of every key enrolment and revocation, accepted item and
publication outcome. Anyone can check, without trusting ground, that a post is in the log
and that the log only ever grew.

- A **leaf entry** is canonical JSON (UTF-8, sorted keys, no spaces): readable by people and
  by a browser's ``JSON.parse``, and byte-stable so its hash is too.
- A **checkpoint** is the C2SP ``tlog-checkpoint`` text ``<origin>\\n<size>\\n<b64 root>\\n``
  plus one extension line ``time <ms>\\n``, signed by ground's Ed25519 key as a C2SP signed
  note: ``\\n— <name> <b64(key hash(4) || signature(64))>\\n``.
- A **cosignature** is a witness's Ed25519 signature over ``cosignature/v1\\ntime <s>\\n``
  followed by the checkpoint text: it says "I saw this checkpoint, consistent with every
  earlier one I saw" (C2SP ``tlog-cosignature``).

Proofs are built and checked with pymerkle (chosen in docs/TRANSPARENCY.md), never by hand.
Pure code: no I/O, time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pymerkle import ConsistencyProof, InclusionProof, InvalidProof

from .errors import ErrorCode, RemoteProtocolError
from .keys import SigningKey, verify_signature

LEAF_PREFIX = b"\x00"
SIGNATURE_DASH = "\u2014"  # the em dash that starts a signed-note signature line
COSIGNATURE_HEADER = "cosignature/v1\n"
# A checkpoint is a few hundred bytes; anything much larger is not one.
MAX_CHECKPOINT_BYTES = 16 * 1024
# Entries are small JSON objects (hashes, ids, a URL); a bound keeps a hostile log cheap to read.
MAX_ENTRY_BYTES = 64 * 1024


def canonical_entry(entry: dict[str, Any]) -> bytes:
    """The exact bytes of one leaf: canonical JSON (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_entry(data: bytes) -> dict[str, Any]:
    """Decode one leaf entry, refusing anything that is not exactly its canonical form."""
    if len(data) > MAX_ENTRY_BYTES:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"log entry of {len(data)} bytes is too large")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"log entry is not JSON: {exc}") from exc
    if not isinstance(value, dict) or canonical_entry(value) != data:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "log entry is not a canonical JSON object")
    return value


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of a leaf is SHA-256(0x00 || entry)."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def key_hash(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note key hash: first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)."""
    return hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A tree head: the log named ``origin`` had ``size`` leaves with this ``root`` at ``time_ms``."""

    origin: str
    size: int
    root: bytes
    time_ms: int

    def text(self) -> str:
        root = base64.b64encode(self.root).decode()
        return f"{self.origin}\n{self.size}\n{root}\ntime {self.time_ms}\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signatures: tuple[tuple[str, bytes], ...]  # (signer name, key hash(4) + signature(64))

    def note(self) -> str:
        lines = "".join(
            f"{SIGNATURE_DASH} {name} {base64.b64encode(sig).decode()}\n" for name, sig in self.signatures
        )
        return f"{self.checkpoint.text()}\n{lines}"


def sign_checkpoint(key: SigningKey, name: str, cp: Checkpoint) -> SignedCheckpoint:
    """Ground signs ``cp`` as a C2SP signed note under the key name ``name``."""
    sig = key.sign(cp.text().encode())
    return SignedCheckpoint(checkpoint=cp, signatures=((name, key_hash(name, key.public_key) + sig),))


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.MALFORMED, message)


def parse_checkpoint_text(text: str) -> Checkpoint:
    """Parse the checkpoint body (origin, size, root, time) strictly."""
    lines = text.split("\n")
    if len(lines) != 5 or lines[4] != "" or not lines[0] or not lines[3].startswith("time "):
        raise _bad("checkpoint must be four lines: origin, size, base64 root, 'time <ms>'")
    if not lines[1].isdigit() or not lines[3][5:].isdigit():
        raise _bad("checkpoint size and time must be decimal numbers")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except ValueError as exc:
        raise _bad("checkpoint root is not base64") from exc
    if len(root) != 32:
        raise _bad("checkpoint root must be 32 bytes")
    cp = Checkpoint(origin=lines[0], size=int(lines[1]), root=root, time_ms=int(lines[3][5:]))
    if cp.text() != text:
        raise _bad("checkpoint is not in its canonical form")
    return cp


def parse_note(note: str) -> SignedCheckpoint:
    """Split a signed note into its checkpoint and its signature lines (nothing verified yet)."""
    if len(note.encode()) > MAX_CHECKPOINT_BYTES:
        raise _bad("signed checkpoint is too large")
    body, sep, sig_block = note.partition("\n\n")
    if not sep or not sig_block.endswith("\n"):
        raise _bad("signed checkpoint needs a blank line, then signature lines")
    sigs: list[tuple[str, bytes]] = []
    for line in sig_block[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != SIGNATURE_DASH:
            raise _bad(f"bad signature line {line[:80]!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError as exc:
            raise _bad("signature is not base64") from exc
        if len(raw) != 68:
            raise _bad("an Ed25519 note signature is 4 + 64 bytes")
        sigs.append((parts[1], raw))
    return SignedCheckpoint(checkpoint=parse_checkpoint_text(body + "\n"), signatures=tuple(sigs))


def verify_note(note: str, name: str, public_key: bytes) -> Checkpoint:
    """The checkpoint of ``note`` if ``name``/``public_key`` signed it; else RemoteProtocolError."""
    signed = parse_note(note)
    want = key_hash(name, public_key)
    for signer, raw in signed.signatures:
        if signer == name and raw[:4] == want:
            if verify_signature(public_key, raw[4:], signed.checkpoint.text().encode()):
                return signed.checkpoint
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, f"checkpoint signature by {name} is invalid")
    raise RemoteProtocolError(ErrorCode.UNKNOWN_KEY, f"checkpoint carries no signature by {name}")


def cosignature_message(cp: Checkpoint, time_s: int) -> bytes:
    return f"{COSIGNATURE_HEADER}time {time_s}\n{cp.text()}".encode()


def cosign(key: SigningKey, cp: Checkpoint, time_s: int) -> bytes:
    """A witness's signature over ``cp`` at ``time_s`` (seconds, as C2SP counts)."""
    return key.sign(cosignature_message(cp, time_s))


def verify_cosignature(public_key: bytes, cp: Checkpoint, time_s: int, signature: bytes) -> bool:
    return verify_signature(public_key, signature, cosignature_message(cp, time_s))


def check_inclusion(entry: bytes, index: int, cp: Checkpoint, proof: dict[str, Any]) -> None:
    """Raise RemoteProtocolError unless ``entry`` is leaf ``index`` (1-based) of the tree in ``cp``."""
    try:
        parsed = InclusionProof.deserialize(proof)
        parsed.verify(leaf_hash(entry), cp.root, index=index, size=cp.size, algorithm="sha256")
    except InvalidProof as exc:
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE, f"entry {index} is not in the log of size {cp.size}: {exc}"
        ) from exc


def check_consistency(old: Checkpoint, new: Checkpoint, proof: dict[str, Any] | None) -> None:
    """Raise RemoteProtocolError unless the tree in ``new`` extends the tree in ``old``."""
    if new.size < old.size:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"log shrank from {old.size} to {new.size} leaves")
    if new.size == old.size:
        if new.root != old.root:
            raise RemoteProtocolError(
                ErrorCode.BAD_SIGNATURE, f"two different trees of size {new.size}: the log was forked"
            )
        return
    if old.size == 0:
        return
    try:
        parsed = ConsistencyProof.deserialize(proof or {})
        parsed.verify(old.root, new.root, prior_size=old.size, later_size=new.size, algorithm="sha256")
    except InvalidProof as exc:
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE,
            f"log of size {new.size} does not extend the one of size {old.size}: {exc}",
        ) from exc
