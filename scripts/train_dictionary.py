"""Train the shipped zstd text dictionary (docs/PROTOCOL.md §5) and report how it does.

    python scripts/train_dictionary.py            # evaluate candidate sizes on held-out posts
    python scripts/train_dictionary.py --write    # (re)write protocol/data/posts-v2.zdict

v2 (current): samples are bundle-format-2 items sections (docs/PROTOCOL.md §14: columns,
then every post's text back to back) of 10 posts by a crew of three, built from the
training split of the real tweet corpus (benchmarks/corpus.py), so the dictionary learns
English short-post text and the section's own framing. v1 (32 KiB, format-1 items
``[body, key_id, signature]``) was trained by this script's earlier revision (git history).
Training is deterministic for a given corpus, zstandard version and parameters; shipped
files are pinned by sha256 anyway, so retraining never silently changes one.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.corpus import ASTRONAUTS, astronaut_key, make_posts, split  # noqa: E402
from protocol.compact_items import encode_compact_items  # noqa: E402
from protocol.dictionary import DICT_V2_ID  # noqa: E402

OUT = ROOT / "protocol" / "data" / "posts-v2.zdict"
SIZES = (32 * 1024, 64 * 1024, 110 * 1024)
# zstd's own default size; about 40 % of the training text, and measured best of SIZES on
# held-out posts at every batch size (run without --write to see the table).
DEFAULT_SIZE = 110 * 1024
TRAIN_BATCH = 10


# Training authors and accounts are disjoint from the ones benchmarks and tests use
# (benchmarks/corpus.py ASTRONAUTS), so held-out figures are not flattered by a dictionary
# that memorised the very names it is measured on. It learns the shape ("mastodon:",
# ".bsky.social", msgpack framing) and English short-post text instead.
TRAINING_ASTRONAUTS = (
    "nova", "kai", "mira", "tomas", "yuki", "ade", "lena", "omar", "sofia", "ravi", "ines", "jonas",
    "mei", "pavel", "zara", "luca", "anya", "femi", "hugo", "noor", "ivan", "keiko", "sam", "elif",
)  # fmt: skip


def sections(texts: list[str], crews: list[tuple[str, ...]], batch: int, seed: int) -> list[bytes]:
    """Format-2 items sections of ``batch`` posts each, crew after crew, every 5th with a photo."""
    out = []
    for k, i in enumerate(range(0, len(texts), batch)):
        crew = crews[k % len(crews)]
        posts = make_posts(
            texts[i : i + batch], seed=seed + k, photo_every=5, alts=texts[::-1], astronauts=crew
        )
        out.append(encode_compact_items(posts, {a: astronaut_key(a) for a in crew}))
    return out


def train(size: int, train_texts: list[str]) -> zstandard.ZstdCompressionDict:
    crews = [TRAINING_ASTRONAUTS[i : i + 3] for i in range(0, len(TRAINING_ASTRONAUTS), 3)]
    return zstandard.train_dictionary(
        size, sections(train_texts, crews, TRAIN_BATCH, seed=1), dict_id=DICT_V2_ID, level=19, threads=1
    )


def evaluate(d: zstandard.ZstdCompressionDict | None, held_out: list[str], batch: int) -> float:
    """Average stored bytes per post for items sections of ``batch`` held-out posts
    (by the benchmark's astronauts, whom training never saw)."""
    secs = sections(held_out[: len(held_out) // batch * batch], [ASTRONAUTS], batch, seed=7)
    kw = {"dict_data": d, "write_dict_id": True} if d is not None else {}
    c = zstandard.ZstdCompressor(level=19, write_checksum=True, **kw)
    return sum(len(c.compress(raw)) for raw in secs) / (len(held_out) // batch * batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE)
    args = ap.parse_args()
    train_texts, held_out = split()
    print(f"corpus: {len(train_texts)} training posts, {len(held_out)} held out")
    sizes = (args.size,) if args.write else SIZES
    batches = (1, 10, 50, 200)
    print(
        "  no dictionary -> " + ", ".join(f"batch {b}: {evaluate(None, held_out, b):6.1f}" for b in batches)
    )
    for size in sizes:
        d = train(size, train_texts)
        figures = ", ".join(f"batch {b}: {evaluate(d, held_out, b):6.1f}" for b in batches)
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
