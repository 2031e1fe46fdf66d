"""Real short texts in many languages, for benchmarks: Debian's fortune cookie collections.

The texts are read at run time from the Debian packages ``fortunes-de``, ``fortunes-es``,
``fortunes-it``, ``fortunes-pl``, ``fortunes-ru``, ``fortunes-bg``, ``fortunes-cs``,
``fortunes-zh``, ``fortunes-br``, ``fortunes-ga`` and ``fortunes-eo`` (installed by .ci/run;
files under /usr/share/games/fortunes/): sayings, proverbs, quotations, poems and jokes
people wrote or collected, one per ``%``-separated entry. They are GPL or public domain
(see /usr/share/doc/fortunes-*/copyright), so they are never copied into this repository.

Only the collections listed in :data:`COLLECTIONS` are used (proverbs, quotations, poems: none
of the packages' offensive sections). Entries longer than :data:`MAX_CHARS` are dropped
(a post, not an essay); terminal colour codes (in the Chinese poems) are removed.

The split is fixed: an entry whose sha256 starts with a byte divisible by 4 is held out.
Nothing in orbitpost is trained on any of them (their licences do not let fragments ship in
a dictionary), so every entry is unseen text: scripts/train_dictionary.py reports text
dictionary v3 on the held-out half and chooses its size on the other half only.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path("/usr/share/games/fortunes")
MAX_CHARS = 280
# language → files under ROOT (UTF-8; symlinked .u8 names where a package has both).
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "de": ("de/sprichworte", "de/zitate", "de/sprueche", "de/wusstensie", "de/kinderzitate"),
    "es": ("es/proverbios.fortunes.u8", "es/refranes.fortunes.u8", "es/sabiduria.fortunes.u8"),
    "it": ("it/italia.u8", "it/leggi.u8", "it/definizioni.u8"),
    "pl": ("pl/seneka", "pl/zen", "pl/haiku", "pl/nauka"),  # UTF-8; their .u8 files are empty
    "ru": ("ru/life.u8", "ru/friendship.u8", "ru/knowledge.u8", "ru/time.u8", "ru/truth.u8"),
    "bg": ("bg/bgproverb.u8", "bg/intproverb.u8"),
    "cs": ("cs/prislovi.u8", "cs/citace.u8"),
    "zh": ("tang300.u8", "chinese.u8"),
    "pt": ("brasil",),
    "ga": ("ga/proverbs.u8",),
    "eo": ("eo/proverbaro.u8",),
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load(root: Path = ROOT) -> list[tuple[str, str]]:
    """(language, text) for every short entry of the installed collections; [] if none is."""
    out: list[tuple[str, str]] = []
    for lang, names in COLLECTIONS.items():
        for name in names:
            path = root / name
            if not path.is_file():
                continue
            raw = path.read_bytes().decode("utf-8", errors="replace")
            for entry in raw.split("\n%\n"):
                text = _ANSI.sub("", entry).strip("\n%").rstrip()
                if text and len(text) <= MAX_CHARS and "\ufffd" not in text:
                    out.append((lang, text))
    return out


def held_out(entry_text: str) -> bool:
    return hashlib.sha256(entry_text.encode()).digest()[0] % 4 == 0


def split(root: Path = ROOT) -> tuple[list[str], list[str], dict[str, int]]:
    """(training texts, held-out texts, held-out count per language), interleaved by language.

    Interleaving (round-robin over languages) makes any prefix multilingual.
    """
    entries = load(root)
    train = [t for _, t in entries if not held_out(t)]
    by_lang: dict[str, list[str]] = {}
    for lang, text in entries:
        if held_out(text):
            by_lang.setdefault(lang, []).append(text)
    mixed: list[str] = []
    queues = [list(v) for v in by_lang.values()]
    while any(queues):
        for q in queues:
            if q:
                mixed.append(q.pop(0))
    return train, mixed, {lang: len(v) for lang, v in by_lang.items()}
