"""The dictionary's training and evaluation text (benchmarks/text_sources.py): cleaning, splits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from benchmarks import multilingual, text_sources
from benchmarks.text_sources import MAX_CHARS, UNSEEN_LANGUAGES, Text, clean_tweet, post_sized


def test_tweets_lose_the_corpus_stand_ins() -> None:
    assert clean_tweet("@anonymous thanks! url_removed") == "thanks!"
    assert clean_tweet("@anonymous: so good url_removed  url_removed") == "so good"
    assert clean_tweet("so  good @anonymous @anonymous now") == "so good now"
    assert clean_tweet("@anonymousX stays") == "@anonymousX stays"  # only the whole token goes
    texts = text_sources.tweets()
    assert len(texts) > 4000 and all(t.text and t.lang == "en" for t in texts)
    assert not any("@anonymous" in t.text.split() or "url_removed" in t.text for t in texts)


@given(st.lists(st.text(min_size=1, max_size=120), min_size=1, max_size=8))
def test_long_paragraphs_become_posts(sentences: list[str]) -> None:
    paragraph = ". ".join(sentences)
    pieces = list(post_sized(paragraph))
    assert all(len(p) <= MAX_CHARS for p in pieces)
    if len(paragraph) <= MAX_CHARS:
        assert pieces == [paragraph]


def test_the_split_matches_the_fortunes_and_unseen_languages_are_never_trained() -> None:
    for text in ("Hello from orbit", "Привет", "軌道", "x" * 50):
        assert text_sources.held_out(text) == multilingual.held_out(text)
    kept = next(t for t in ("a", "b", "c", "d", "e", "f") if not text_sources.held_out(t))
    assert text_sources.trainable(Text("udhr", "de", kept))
    for lang in UNSEEN_LANGUAGES:
        assert not text_sources.trainable(Text("udhr", lang, kept))
