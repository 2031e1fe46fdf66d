"""Train the shipped zstd text dictionary (docs/PROTOCOL.md §5) and report how it does.

    python scripts/train_dictionary.py            # evaluate candidate sizes on held-out posts
    python scripts/train_dictionary.py --write    # (re)write protocol/data/posts-v1.zdict

Samples are signed items exactly as the items section carries them (msgpack
``[body, key_id, signature]``), built from the training split of the real tweet corpus
(benchmarks/corpus.py), so the dictionary learns both English short-post text and our own
framing. Training is deterministic for a given corpus, zstandard version and parameters;
the shipped file is pinned by sha256 anyway, so retraining never silently changes v1.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.corpus import make_items, split  # noqa: E402
from protocol.canonical import pack  # noqa: E402
from protocol.dictionary import DICT_V1_ID  # noqa: E402

OUT = ROOT / "protocol" / "data" / "posts-v1.zdict"
SIZES = (8 * 1024, 16 * 1024, 32 * 1024, 64 * 1024, 112 * 1024)
DEFAULT_SIZE = 32 * 1024


# Training authors and accounts are disjoint from the ones benchmarks and tests use
# (benchmarks/corpus.py ASTRONAUTS), so held-out figures are not flattered by a dictionary
# that memorised the very names it is measured on. It learns the shape ("mastodon:",
# ".bsky.social", msgpack framing) and English short-post text instead.
TRAINING_ASTRONAUTS = (
    "nova", "kai", "mira", "tomas", "yuki", "ade", "lena", "omar", "sofia", "ravi", "ines", "jonas",
    "mei", "pavel", "zara", "luca", "anya", "femi", "hugo", "noor", "ivan", "keiko", "sam", "elif",
)  # fmt: skip


def samples(texts: list[str], seed: int) -> list[bytes]:
    items = make_items(texts, seed=seed, photo_every=5, alts=texts[::-1], astronauts=TRAINING_ASTRONAUTS)
    return [pack(s.to_wire()) for s in items]


def train(size: int, train_texts: list[str]) -> zstandard.ZstdCompressionDict:
    return zstandard.train_dictionary(
        size, samples(train_texts, seed=1), dict_id=DICT_V1_ID, level=19, k=200, d=8, threads=1
    )


def evaluate(d: zstandard.ZstdCompressionDict | None, held_out: list[str], batch: int) -> float:
    """Average stored bytes per post for items sections of ``batch`` held-out posts
    (by the benchmark's astronauts, whom training never saw)."""
    items = make_items(held_out, seed=7, photo_every=5, alts=held_out[::-1])
    total = 0
    for i in range(0, len(items) - batch + 1, batch):
        raw = pack([s.to_wire() for s in items[i : i + batch]])
        kw = {"dict_data": d, "write_dict_id": True} if d is not None else {}
        total += len(zstandard.ZstdCompressor(level=19, write_checksum=True, **kw).compress(raw))
    return total / (len(items) // batch * batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE)
    args = ap.parse_args()
    train_texts, held_out = split()
    print(f"corpus: {len(train_texts)} training posts, {len(held_out)} held out")
    sizes = (args.size,) if args.write else SIZES
    for batch in (1, 10, 50):
        print(f"  batch {batch:3}: no dictionary {evaluate(None, held_out, batch):6.1f} B/post")
    for size in sizes:
        d = train(size, train_texts)
        figures = ", ".join(f"batch {b}: {evaluate(d, held_out, b):6.1f}" for b in (1, 10, 50))
        print(f"  dict {size // 1024:4} KiB -> {figures} B/post")
        if args.write:
            data = d.as_bytes()
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_bytes(data)
            print(
                f"wrote {OUT} ({len(data)} bytes, id {d.dict_id():#x}, sha256 {hashlib.sha256(data).hexdigest()})"
            )


if __name__ == "__main__":
    main()
