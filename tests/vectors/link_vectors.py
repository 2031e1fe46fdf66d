"""Golden live-link request frames (docs/PROTOCOL.md §8.2), written by make_vectors.py.

Link version 3's OPEN carrying its upload's first chunk (with and without link version 2's
receipts cursor), the forms before it (a whole small upload inline, a CHUNK), one such OPEN
cut mid-body (what ground salvages of it, §8.4) and one refused (its data runs past the
upload's end). Each manifest entry (``link_frames``) gives the file, its sha256 and what a
receiver must get out of it: the request's fields and the byte range ground stores, the range
a cut prefix leaves stored, or the error code.
"""

from __future__ import annotations

import hashlib
from typing import Any

from file_vector import FileVector

from protocol.transfer_wire import Chunk, Open, Request, TransferKey, TransferKind, encode_request

PHOTO = bytes((i * 7 + 3) % 251 for i in range(100_000))
PHOTO_KEY = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(PHOTO).digest())
TEXT = b"a small text bundle, whole inside its OPEN"
TEXT_KEY = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(TEXT).digest())
FIRST = 4096  # the first chunk's length


LinkVector = FileVector


def _fields(req: Request, link: int) -> dict[str, Any]:
    """What a receiver must decode of ``req`` and the range it stores."""
    assert isinstance(req, Open | Chunk)
    offset = req.offset if isinstance(req, Chunk) else 0
    out: dict[str, Any] = {
        "ok": True,
        "type": "chunk" if isinstance(req, Chunk) else "open",
        "seq": req.seq,
        "kind": int(req.key.kind),
        "sha256": req.key.sha256.hex(),
        "data_sha256": hashlib.sha256(req.data).hexdigest(),
        "stores": [offset, offset + len(req.data)] if req.data else None,
        "link_version": link,
    }
    if isinstance(req, Open):
        out |= {"size_bytes": req.size_bytes, "owner": req.owner, "receipts_since": req.receipts_since}
    return out


def link_vectors() -> list[LinkVector]:
    first = Open(seq=5, key=PHOTO_KEY, size_bytes=len(PHOTO), owner="alice", data=PHOTO[:FIRST])
    first_rc = Open(
        seq=6, key=PHOTO_KEY, size_bytes=len(PHOTO), owner="bob", data=PHOTO[:FIRST], receipts_since=42
    )
    whole = Open(seq=7, key=TEXT_KEY, size_bytes=len(TEXT), owner="alice", data=TEXT)
    chunk = Chunk(seq=8, key=PHOTO_KEY, offset=FIRST, data=PHOTO[FIRST : 2 * FIRST])
    cut_frame = encode_request(first_rc)
    cut_at = len(cut_frame) - 1 - 1000  # the last 1,000 data bytes and the cursor still in the network
    past_end = Open(seq=9, key=TEXT_KEY, size_bytes=len(TEXT) - 1, owner="alice", data=TEXT)
    return [
        LinkVector(
            "link-open-first-chunk",
            "link version 3: an OPEN carrying its upload's first chunk (shorter than the upload)",
            encode_request(first),
            _fields(first, 3),
        ),
        LinkVector(
            "link-open-first-chunk-receipts",
            "link versions 2 and 3: the first chunk and the receipts cursor",
            cut_frame,
            _fields(first_rc, 3),
        ),
        LinkVector(
            "link-open-whole-inline",
            "link version 1: a small upload whole inside its OPEN",
            encode_request(whole),
            _fields(whole, 1),
        ),
        LinkVector("link-chunk", "link version 1: a CHUNK", encode_request(chunk), _fields(chunk, 1)),
        LinkVector(
            "link-cut-open-first-chunk",
            "link-open-first-chunk-receipts cut mid-body: ground stores the data bytes that arrived",
            cut_frame[:cut_at],
            {"ok": False, "salvage": [0, FIRST - 1000]},
        ),
        LinkVector(
            "link-err-open-data-past-end",
            "an OPEN whose data is longer than the upload it declares: refused, nothing stored",
            encode_request(past_end),
            {**_fields(past_end, 1), "ok": False, "code": "bad_offset", "stores": None},
        ),
    ]


def manifest_part(vectors: list[LinkVector]) -> dict[str, Any]:
    return {"link_frames": [v.manifest_entry() for v in vectors]}
