"""Items decoded once per process: what accepting a bundle decoded, publishing reuses (issue 18).

`ground ingest` and `ground serve` accept a bundle and then publish its posts in the same
process; decoding each body again (canonical msgpack, ids, checks) and parsing each stored
audit path again was a third of publishing's time per post. This is a memo of two pure
functions keyed by the exact bytes they decode, so what it returns is what decoding those
bytes gives; it is bounded, and an entry is dropped once used.
"""

from __future__ import annotations

from protocol import Item, decode_item
from protocol.batch_tree import BatchInclusion

# Bodies kept at most (a decoded item takes about twice its body): two of the largest
# bundles of short posts (Limits.max_items is 10,000), a few of long ones. Past it the memo
# starts again empty: posts accepted but not yet due (scheduled) are simply decoded later.
MAX_BODY_BYTES = 16 * 1024 * 1024

_items: dict[bytes, Item] = {}
_proofs: dict[bytes, BatchInclusion] = {}
_held = [0]  # bytes of the bodies in _items


def remember(body: bytes, item: Item, proof: bytes | None, inclusion: BatchInclusion | None) -> None:
    """Note that ``body`` decodes to ``item`` (and ``proof`` parses to ``inclusion``)."""
    if _held[0] + len(body) > MAX_BODY_BYTES:
        _items.clear()
        _proofs.clear()
        _held[0] = 0
    _held[0] += len(body)
    _items[body] = item
    if proof is not None and inclusion is not None:
        _proofs[proof] = inclusion


def item(body: bytes) -> Item:
    """``decode_item(body)``; raises as it does."""
    found = _items.pop(body, None)
    if found is None:
        return decode_item(body)
    _held[0] -= len(body)
    return found


def inclusion(proof: bytes) -> BatchInclusion:
    """``BatchInclusion.from_bytes(proof)``; raises as it does."""
    found = _proofs.pop(proof, None)
    return found if found is not None else BatchInclusion.from_bytes(proof)
