"""protocol/rendering.py: how Mastodon and X show a text, and the comparison both ground and
the reader's verifier make (examples, then properties against the fakes' renderers)."""

from __future__ import annotations

from fake_mastodon import render_html
from fake_x import FakeX
from hypothesis import given
from hypothesis import strategies as st

from protocol.rendering import (
    mastodon_html_text,
    mastodon_shown_form,
    x_embed_matches,
    x_embed_text,
    x_text_matches,
)


def test_mastodon_shows_lf_paragraphs_and_no_outer_spaces() -> None:
    html = render_html(
        "  Dawn\r\nover the Pacific\n\n\n\nsee https://example.org/a/very/long/path?q=1 & <3  "
    )
    assert html.startswith("<p>Dawn<br />over the Pacific</p><p>see <a href=")
    shown = mastodon_html_text(html)
    assert shown == "Dawn\nover the Pacific\n\nsee https://example.org/a/very/long/path?q=1 & <3"
    assert shown == mastodon_shown_form(
        "  Dawn\r\nover the Pacific\n\n\n\nsee https://example.org/a/very/long/path?q=1 & <3  "
    )


def test_mastodon_shows_a_remote_mention_by_its_user_name() -> None:
    assert mastodon_shown_form("hi @bob@other.example and @carol") == "hi @bob and @carol"
    assert mastodon_shown_form("mail me: a@b.example") == "mail me: a@b.example"


def test_a_changed_character_is_never_the_shown_form() -> None:
    html = render_html("Dawn over the Pacific")
    assert mastodon_html_text(html) != mastodon_shown_form("Dawn over the Pacifik")


TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=120)


@given(TEXT)
def test_what_mastodon_renders_reads_back_as_the_shown_form(text: str) -> None:
    assert mastodon_html_text(render_html(text)) == mastodon_shown_form(text)


@given(TEXT, TEXT)
def test_x_rendering_matches_its_own_text_only(text: str, other: str) -> None:
    assert x_text_matches(text, FakeX.rendered(text))
    if other != text and "http" not in text + other:
        assert not x_text_matches(other, FakeX.rendered(text))


@given(TEXT, st.integers(0, 4))
def test_x_embed_shows_its_own_text_and_photo_count(text: str, photos: int) -> None:
    tweet = {"id": "1", "text": text, "media_ids": [str(i) for i in range(photos)], "created": 0}
    shown, n = x_embed_text(FakeX().embed_html(tweet))
    assert n == photos
    assert x_embed_matches(text, shown)
    assert not x_embed_matches(text + "!", shown)


def test_x_embed_counts_only_the_photo_links_that_end_it() -> None:
    # Words that look like a photo link are the post's own unless they are a link ending the <p>.
    for text in ["pic.twitter.com/", "see pic.x.com/abc here", "", "two  spaces "]:
        for photos in range(3):
            tweet = {"id": "1", "text": text, "media_ids": [str(i) for i in range(photos)], "created": 0}
            assert x_embed_text(FakeX().embed_html(tweet)) == (text, photos)
    early = '<p>a <a href="https://t.co/P">pic.x.com/P</a> b</p>'
    assert x_embed_text(early) == ("a pic.x.com/P b", 0)
