"""Bundle format 3's batch signatures: one Ed25519 signature per astronaut over a Merkle tree
root of their item bodies' sha256, so one post is proven by a path of ⌈log₂ n⌉ hashes instead of
a statement of n hashes (docs/PROTOCOL.md §17).

For an astronaut's item bodies ``body₀ … bodyₙ₋₁`` in bundle order:

- leaf entry ``k`` is ``sha256(bodyₖ)``; the tree is RFC 9162 §2.1 over those entries
  (leaf ``SHA-256(0x00 || entry)``, node ``SHA-256(0x01 || left || right)``), the log's tree
  hashing (§15);
- the **batch head** is ``n`` as 8 bytes big-endian followed by the 32-byte root;
- the signature is ``Ed25519-Sign(seed, "orbitpost/batch/v2\\0" || head)``.

The proof of one item (``BatchInclusion``) is its tree size, its leaf index (0-based, as RFC 9162
numbers leaves) and its RFC 9162 audit path. Trees are built and proofs made and checked with
pymerkle, the library the transparency log uses (``tlog.py``), never by hand.
Pure code: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymerkle import BaseMerkleTree, InclusionProof, InvalidProof

# The rule (left/right bits) of an inclusion path follows from the index and size alone; it is
# pymerkle's own layout function, the one InclusionProof.verify checks a proof against (pinned
# to pymerkle 7 in pyproject.toml).
from pymerkle.core import _inclusion_path_layout
from pymerkle.hasher import MerkleHasher

from .canonical import expect, expect_list, pack, unpack
from .errors import ErrorCode, RemoteProtocolError
from .keys import SigningKey, key_id, verify_signature

TREE_DOMAIN = b"orbitpost/batch/v2\x00"
HASH_BYTES = 32
_HEAD = struct.Struct(">Q")
# RFC 9162 hashing with the 0x00 leaf and 0x01 node prefixes (pymerkle's security mode).
_HASHER = MerkleHasher("sha256", security=True)
# A bundle holds at most 10,000 items (§11); a path of 64 hashes covers any 64-bit tree, so
# anything longer is not a proof (pymerkle's own bound is 128).
MAX_PATH_HASHES = 64
# [tree_size, leaf_index, path]: 3 + 2 × 9 + 2 + 64 × 32 bytes at most.
MAX_INCLUSION_BYTES = 2_200


class _LevelTree(BaseMerkleTree):  # type: ignore[misc]
    """A fixed pymerkle tree over a list of entries, every level kept in lists.

    pymerkle's storage interface (``_get_leaf``, ``_get_leaves``, ``_get_size``) plus
    ``_get_subroot``/``_get_root`` that read a subtree's root from its level (or fold it once)
    instead of recomputing it. The root is pymerkle's (``get_root``).

    Level ``h + 1`` pairs the nodes of level ``h`` and carries an odd last node up unchanged,
    so node ``j`` of level ``h`` is the RFC 9162 root of leaves ``j·2ʰ … min((j+1)·2ʰ, n) − 1``
    (a perfect subtree, or the right edge's last one). Leaf ``m``'s audit path is then its
    sibling at each level, where there is one (RFC 9162 §2.1.3's PATH, bottom up): all n paths
    read from the levels (~20 ms for 10,000 items) instead of one pymerkle proof call per
    item (~120 ms). tests/test_batch_tree.py checks roots and every path against
    pymerkle's InmemoryTree for random sizes; verifying stays pymerkle's (root_from_inclusion).
    """

    def __init__(self, entries: Sequence[bytes]) -> None:
        super().__init__("sha256")
        self._edges: dict[tuple[int, int], bytes] = {}
        level = [self.hash_buff(e) for e in entries]
        self.levels = [level]
        while len(level) > 1:
            up = [self.hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])  # no sibling at this level: carried up as it is
            level = up
            self.levels.append(level)

    def path(self, index: int) -> tuple[bytes, ...]:
        """The audit path of leaf ``index`` (0-based), bottom up: its sibling at each level."""
        out = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                out.append(level[sibling])
            index >>= 1
        return tuple(out)

    def paths(self) -> list[tuple[bytes, ...]]:
        """Every leaf's audit path, in leaf order (~20 ms for 10,000 leaves)."""
        return [self.path(i) for i in range(len(self.levels[0]))]

    def _encode_entry(self, data: bytes) -> bytes:
        return data

    def _store_leaf(self, data: bytes, digest: bytes) -> int:
        raise NotImplementedError("a batch tree is built once, from all of the signer's items")

    def _get_leaf(self, index: int) -> bytes:
        leaf: bytes = self.levels[0][index - 1]
        return leaf

    def _get_leaves(self, offset: int, width: int) -> list[bytes]:
        return self.levels[0][offset : offset + width]

    def _get_size(self) -> int:
        return len(self.levels[0])

    def _get_subroot(self, offset: int, width: int) -> bytes:
        height = width.bit_length() - 1  # width is a power of two, offset a multiple of it
        node: bytes = self.levels[height][offset >> height]
        return node

    def _get_root(self, start: int, end: int) -> bytes:
        # Most ranges of an audit path are perfect subtrees, already in a level; the few others
        # (along the right edge) are shared by many paths, so each is folded once.
        width = end - start
        if width and width & (width - 1) == 0 and start % width == 0:
            return self._get_subroot(start, width)
        key = (start, end)
        if key not in self._edges:
            self._edges[key] = super()._get_root(start, end)
        return self._edges[key]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchInclusion:
    """Where one body sits in its signer's batch tree: what, with the signature, proves it."""

    tree_size: int
    leaf_index: int  # 0-based (RFC 9162 §2.1.3); pymerkle counts from 1
    path: tuple[bytes, ...]  # RFC 9162 audit path, bottom up

    def to_bytes(self) -> bytes:
        """Canonical msgpack ``[tree_size, leaf_index, path (bin, 32 bytes per hash)]``."""
        return pack([self.tree_size, self.leaf_index, b"".join(self.path)])

    @classmethod
    def from_bytes(cls, data: bytes) -> BatchInclusion:
        """Parse ``to_bytes`` output strictly; RemoteProtocolError (MALFORMED) otherwise."""
        v = expect_list(
            unpack(data, what="batch proof", max_bytes=MAX_INCLUSION_BYTES, max_array_len=3, max_values=3),
            what="batch proof",
            min_len=3,
            max_len=3,
        )
        size = expect(v[0], int, what="batch tree size")
        index = expect(v[1], int, what="batch leaf index")
        path = expect(v[2], bytes, what="batch audit path")
        if len(path) % HASH_BYTES:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "a batch audit path is a whole number of hashes")
        return cls.make(size, index, [path[i : i + HASH_BYTES] for i in range(0, len(path), HASH_BYTES)])

    @classmethod
    def make(cls, tree_size: int, leaf_index: int, path: Sequence[bytes]) -> BatchInclusion:
        """Check the ranges and hash sizes (not yet the hashes) of a proof from any source."""
        if not 0 <= leaf_index < tree_size < 2**63:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"batch leaf index {leaf_index} is not inside a tree of {tree_size}"
            )
        if len(path) > MAX_PATH_HASHES or any(len(h) != HASH_BYTES for h in path):
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"a batch audit path is at most {MAX_PATH_HASHES} hashes of 32 bytes"
            )
        return cls(tree_size=tree_size, leaf_index=leaf_index, path=tuple(path))

    def to_json(self) -> dict[str, Any]:
        """The form webhook payloads, archive records and proof pages carry: the path as one
        base64 string of the concatenated hashes (as they carry body, signature and statement),
        so a post's record grows by ~43 characters per hash, not 70 as a list of hex strings."""
        path = base64.b64encode(b"".join(self.path)).decode()
        return {"tree_size": self.tree_size, "leaf_index": self.leaf_index, "path": path}

    @classmethod
    def from_json(cls, value: Any) -> BatchInclusion:
        """Parse ``to_json`` output; RemoteProtocolError (MALFORMED) on anything else."""
        try:
            size, index, path = value["tree_size"], value["leaf_index"], value["path"]
            if not (isinstance(size, int) and isinstance(index, int) and isinstance(path, str)):
                raise TypeError("tree_size and leaf_index must be integers, path a base64 string")
            if len(path) > 4 * MAX_PATH_HASHES * HASH_BYTES // 3 + 4:
                raise ValueError("path is longer than any batch tree's")
            raw = base64.b64decode(path, validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"batch proof is malformed: {exc}") from exc
        if len(raw) % HASH_BYTES:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "a batch audit path is a whole number of hashes")
        return cls.make(size, index, [raw[i : i + HASH_BYTES] for i in range(0, len(raw), HASH_BYTES)])


def leaf_entry(body: bytes) -> bytes:
    """A body's leaf entry in its batch tree: its sha256 (the leaf hash is H(0x00 || this))."""
    return hashlib.sha256(body).digest()


def batch_head(tree_size: int, root: bytes) -> bytes:
    """What a format-3 batch signature covers after TREE_DOMAIN: size (u64 BE) || root."""
    return _HEAD.pack(tree_size) + root


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchTree:
    """One signer's batch: the tree root over their bodies and each body's inclusion proof."""

    root: bytes
    size: int
    _tree: _LevelTree

    @classmethod
    def of(cls, bodies: Sequence[bytes]) -> BatchTree:
        if not bodies:
            raise ValueError("a batch tree needs at least one body")
        tree = _LevelTree([leaf_entry(b) for b in bodies])
        root: bytes = tree.get_root()
        if tree.levels[-1][0] != root:  # the levels the paths are read from are pymerkle's tree
            raise AssertionError("batch tree levels disagree with pymerkle's root")
        return cls(root=root, size=len(bodies), _tree=tree)

    @property
    def head(self) -> bytes:
        return batch_head(self.size, self.root)

    def inclusion(self, leaf_index: int) -> BatchInclusion:
        """The audit path of body ``leaf_index`` (0-based) in this tree."""
        if not 0 <= leaf_index < self.size:
            raise IndexError(f"leaf {leaf_index} is not in a tree of {self.size}")
        return BatchInclusion(tree_size=self.size, leaf_index=leaf_index, path=self._tree.path(leaf_index))

    def inclusions(self) -> list[BatchInclusion]:
        """Every body's inclusion proof, in order (one pass over the tree's levels)."""
        size = self.size
        return [
            BatchInclusion(tree_size=size, leaf_index=i, path=path)
            for i, path in enumerate(self._tree.paths())
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedTree:
    """A format-3 batch signature and the tree it covers."""

    key_id: bytes
    signature: bytes
    tree: BatchTree


def sign_tree(key: SigningKey, bodies: Sequence[bytes]) -> SignedTree:
    """One signature by ``key`` over the batch head of ``bodies`` (in bundle order)."""
    tree = BatchTree.of(bodies)
    return SignedTree(key_id=key_id(key.public_key), signature=key.sign(TREE_DOMAIN + tree.head), tree=tree)


def verify_tree_signature(public_key: bytes, signature: bytes, tree_size: int, root: bytes) -> bool:
    """Whether ``signature`` is the key's format-3 batch signature over (``tree_size``, ``root``)."""
    return verify_signature(public_key, signature, TREE_DOMAIN + batch_head(tree_size, root))


def root_from_inclusion(body: bytes, inclusion: BatchInclusion) -> bytes:
    """The root ``inclusion`` leads to from ``body``, checked against pymerkle's proof layout.

    Raises RemoteProtocolError (BAD_SIGNATURE) if the path has the wrong length for its index
    and size; any changed hash instead leads to another root, which the signature then refuses.
    """
    leaf: bytes = _HASHER.hash_buff(leaf_entry(body))
    rule, _ = _inclusion_path_layout(inclusion.leaf_index + 1, inclusion.tree_size)
    proof = InclusionProof(
        "sha256", True, inclusion.tree_size, inclusion.leaf_index + 1, rule, [leaf, *inclusion.path]
    )
    try:
        root: bytes = proof.compute_root()
        proof.verify(leaf, root, index=inclusion.leaf_index + 1, size=inclusion.tree_size, algorithm="sha256")
    except (InvalidProof, ValueError) as exc:
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE,
            f"batch audit path does not fit leaf {inclusion.leaf_index} of a tree of {inclusion.tree_size}",
        ) from exc
    return root


def check_inclusion(public_key: bytes, signature: bytes, body: bytes, inclusion: BatchInclusion) -> bool:
    """Whether ``body`` is proven by ``inclusion`` and the key's format-3 batch signature."""
    try:
        root = root_from_inclusion(body, inclusion)
    except RemoteProtocolError:
        return False
    return verify_tree_signature(public_key, signature, inclusion.tree_size, root)
