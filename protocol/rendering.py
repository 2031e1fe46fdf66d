"""How platforms show a post's text back, and how to compare what they show with what was signed.

Pure functions, shared by ground (its read-back after publishing) and the reader's verifier
(``orbitpost-verify``), so both judge a platform's copy by the same rule:

- **X** (API v2 ``GET /2/tweets/:id``, docs.x.com): the text comes back with ``&``, ``<``, ``>``
  as HTML entities and every URL replaced by a ``https://t.co/…`` link; everything else is ours.
  Its public oEmbed (``publish.twitter.com/oembed``, GET statuses/oembed, no authentication)
  shows the same text as HTML in the embed's ``<p>``: line ends as ``<br>``, links as ``<a>``,
  each photo appended as a ``pic.twitter.com``/``pic.x.com`` link.
- **Mastodon** (``GET /api/v1/statuses/:id``, docs.joinmastodon.org/entities/Status): a reader
  gets only ``content``, the server's HTML rendering (its TextFormatter: the text stripped,
  HTML-escaped, CR LF as LF, paragraphs ``<p>`` on blank lines, ``<br />`` on single line
  ends, links and mentions wrapped in ``<a>``/``<span>``, a mention shown as ``@user``). The
  exact source (``/statuses/:id/source``) needs the author's token: ground reads that one.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from .rules import URL_RE

_MENTION_WITH_DOMAIN = re.compile(r"(?<![\w/@])@(\w+)@[\w.-]+\w", re.ASCII)


def x_text_matches(ours: str, theirs: str) -> bool:
    """Whether X's rendering ``theirs`` (t.co links, HTML entities) is our exact ``ours``."""
    theirs = html.unescape(theirs)
    parts, pos = [], 0
    for m in URL_RE.finditer(ours):
        parts += [re.escape(ours[pos : m.start()]), r"https://t\.co/\w+"]
        pos = m.end()
    pattern = "".join([*parts, re.escape(ours[pos:])])
    return re.fullmatch(pattern, theirs, flags=re.DOTALL) is not None or theirs == ours


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.paragraphs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.out.append("\n")
        elif tag == "p":
            if self.paragraphs:
                self.out.append("\n\n")
            self.paragraphs += 1

    def handle_data(self, data: str) -> None:
        self.out.append(data)


def mastodon_html_text(content: str) -> str:
    """The text a Mastodon status's HTML ``content`` shows (tags dropped, entities decoded)."""
    parser = _Text()
    parser.feed(content)
    parser.close()
    return "".join(parser.out)


def mastodon_shown_form(text: str) -> str:
    """What Mastodon's rendering can show of ``text``: stripped, LF line ends, paragraph breaks
    of exactly one blank line, a mention by its user name only."""
    text = re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n").replace("\r", "\n").strip())
    return _MENTION_WITH_DOMAIN.sub(r"@\1", text)


class _Embed(HTMLParser):
    """The first ``<p>`` of an X embed: its text, and how many photo links end it.

    A photo is a link whose text is ``pic.twitter.com/…`` or ``pic.x.com/…`` among the links
    that end the paragraph; the same words written as text, or a link followed by more text,
    are the post's own."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[tuple[bool, str]] = []  # (is a link, its text)
        self.depth = 0  # inside the <p> (1) or not yet / done (0, -1)
        self.in_link = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p" and self.depth == 0:
            self.depth = 1
        elif tag == "br" and self.depth == 1:
            self.parts.append((False, "\n"))
        elif tag == "a" and self.depth == 1:
            self.in_link = True
            self.parts.append((True, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self.depth == 1:
            self.depth = -1
        elif tag == "a":
            self.in_link = False

    def handle_data(self, data: str) -> None:
        if self.depth != 1:
            return
        if self.in_link:
            self.parts[-1] = (True, self.parts[-1][1] + data)
        else:
            self.parts.append((False, data))

    def shown(self) -> tuple[str, int]:
        """The text with the trailing photo links (and the space X puts before each) removed."""
        parts, photos = list(self.parts), 0
        while parts:
            is_link, text = parts[-1]
            if not (is_link and text.startswith(_PHOTO_LINK)):
                break
            parts.pop()
            photos += 1
            if parts and not parts[-1][0] and parts[-1][1].endswith(" "):
                parts[-1] = (False, parts[-1][1][:-1])
                if not parts[-1][1]:
                    parts.pop()
        return "".join(text for _, text in parts), photos


_PHOTO_LINK = ("pic.twitter.com/", "pic.x.com/")


def x_embed_text(embed_html: str) -> tuple[str, int]:
    """(the post's text as X's oEmbed shows it, how many photos it shows)."""
    parser = _Embed()
    parser.feed(embed_html)
    parser.close()
    return parser.shown()


def x_embed_matches(ours: str, shown: str) -> bool:
    """Whether the text an X embed shows (entities already decoded) is our exact ``ours``."""
    # x_text_matches decodes entities itself: hand it the text as the API would give it.
    return x_text_matches(ours, html.escape(shown, quote=False))
