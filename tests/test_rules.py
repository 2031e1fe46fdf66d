"""Per-platform rules (protocol/rules.py) and onboard refusing a post before a byte is sent."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import Cli
from hypothesis import given
from hypothesis import strategies as st

from protocol import MediaRef, Post
from protocol.rules import (
    BLUESKY,
    MASTODON,
    graphemes,
    mastodon_length,
    violations,
    with_limits,
    x_weighted_length,
)

ID = "01JBZZZZZZZZZZZZZZZZZZZZZZ"


def post(text: str = "hi", *, targets: tuple[str, ...] = ("bluesky:alice.test",), media=()) -> Post:  # type: ignore[no-untyped-def]
    return Post(id=ID, author="alice", created_ms=1, text=text, media=tuple(media), targets=targets)


def photo(size: int = 1000, media_type: str = "image/jpeg", alt: str = "") -> MediaRef:
    return MediaRef(
        sha256=hashlib.sha256(str(size).encode()).digest(), size_bytes=size, media_type=media_type, alt=alt
    )


def rules_hit(p: Post, overrides=None) -> list[str]:  # type: ignore[no-untyped-def]
    return [v.rule for v in violations(p, overrides)]


def test_graphemes_count_what_a_reader_sees() -> None:
    assert graphemes("e\u0301") == 1  # NFD accent: two code points, one character
    assert graphemes("👩‍👩‍👧") == 1  # ZWJ family
    assert graphemes("🇫🇷🇯🇵") == 2  # two flags
    assert graphemes("a\r\nb") == 3  # CRLF is one cluster
    assert graphemes("") == 0


def test_bluesky_300_graphemes_exactly() -> None:
    assert rules_hit(post("é" * 300)) == []
    assert rules_hit(post("👩‍👩‍👧" * 300)) == ["bluesky.text_bytes"]  # 300 graphemes but 5,400 bytes
    assert rules_hit(post("x" * 301)) == ["bluesky.text_length"]
    # NFD: 300 visible characters, 600 code points: still fine.
    assert rules_hit(post("e\u0301" * 300)) == []


def test_bluesky_media_rules() -> None:
    ok = [photo(2_000_000, alt="a" * 2000)] * 4
    assert rules_hit(post(media=ok)) == []
    assert rules_hit(post(media=[photo()] * 5)) == ["bluesky.media_count"]
    assert rules_hit(post(media=[photo(2_000_001)])) == ["bluesky.media_bytes"]
    assert rules_hit(post(media=[photo(media_type="image/heic")])) == ["bluesky.media_type"]
    assert rules_hit(post(media=[photo(alt="a" * 2001)])) == ["bluesky.alt_length"]


def test_violation_names_rule_and_account() -> None:
    (v,) = violations(post("x" * 301))
    text = str(v)
    assert text.startswith("bluesky:alice.test: ")
    assert "301 graphemes" in text and "300" in text and "[bluesky.text_length]" in text


def test_mastodon_counts_urls_as_23_and_mentions_without_domain() -> None:
    url = "https://example.org/" + "a" * 200
    assert mastodon_length(url) == 23
    assert mastodon_length("@bob@mastodon.example hi") == len("@bob hi")
    assert mastodon_length("mail me: bob@example.org") == len("mail me: bob@example.org")
    target = ("mastodon:alice@example.social",)
    assert rules_hit(post("x" * 500, targets=target)) == []
    assert rules_hit(post("x" * 501, targets=target)) == ["mastodon.text_length"]
    assert rules_hit(post("x" * 400 + " " + url, targets=target)) == []


def test_mastodon_instance_limits_override_defaults() -> None:
    target = "mastodon:alice@big.example"
    big = with_limits(MASTODON, max_text=5000, max_media=8)
    p = post("x" * 1000, targets=(target,), media=[photo()] * 6)
    assert rules_hit(p) == ["mastodon.text_length", "mastodon.media_count"]
    assert rules_hit(p, {target: big}) == []
    assert rules_hit(p, {"mastodon": big}) == []


def test_x_weighted_length() -> None:
    assert x_weighted_length("a" * 280) == 280
    assert x_weighted_length("日" * 140) == 280
    assert x_weighted_length("😀") == 2
    assert x_weighted_length("👩‍👩‍👧") == 2
    assert x_weighted_length("https://example.org/" + "a" * 100) == 23
    target = ("x:alice",)
    assert rules_hit(post("日" * 140, targets=target)) == []
    assert rules_hit(post("日" * 141, targets=target)) == ["x.text_length"]


def test_every_target_checked_and_unknown_platforms_skipped() -> None:
    p = post("x" * 600, targets=("bluesky:a.test", "mastodon:a@m.example", "archive:a", "myspace:a"))
    assert rules_hit(p) == ["bluesky.text_length", "mastodon.text_length"]


def test_overrides_can_tighten() -> None:
    tight = with_limits(BLUESKY, max_text=10)
    assert rules_hit(post("x" * 11), {"bluesky:alice.test": tight}) == ["bluesky.text_length"]


@given(st.text(max_size=400))
def test_counts_are_never_more_than_code_points(text: str) -> None:
    n = len(text)
    assert 0 <= graphemes(text) <= n
    assert mastodon_length(text) <= max(n, 23 * n)
    assert x_weighted_length(text) <= 2 * n + 23 * n


@given(st.text(max_size=50), st.text(max_size=50))
def test_graphemes_subadditive_and_clusters_never_split_text(a: str, b: str) -> None:
    # Joining can merge clusters at the seam, never create extra ones beyond the sum.
    assert graphemes(a + b) <= graphemes(a) + graphemes(b)


def test_onboard_refuses_over_limit_post_naming_rule_and_account(cli: Cli, photo: Path) -> None:
    cli.onboard("keys", "new", "alice")
    r = cli.onboard("post", "--as", "alice", "--to", "bluesky:alice.test,archive:alice", "x" * 301, ok=False)
    assert r.exit_code != 0
    assert "bluesky:alice.test" in str(r.exception) and "bluesky.text_length" in str(r.exception)
    assert "queue is empty" in cli.onboard("queue").output
    # Nothing was stored for the refused post's photo either.
    r = cli.onboard(
        "post", "--as", "alice", "--to", "bluesky:alice.test", *["--photo", str(photo)] * 5, "hi", ok=False
    )
    assert "bluesky.media_count" in str(r.exception)
    assert not any((cli.onboard_home / "blobs").rglob("*")) if (cli.onboard_home / "blobs").exists() else True
    assert "queue is empty" in cli.onboard("queue").output
    ok = cli.onboard("post", "--as", "alice", "--to", "bluesky:alice.test", "x" * 300)
    assert ok.output.startswith("queued ")


# --- fidelity and the platforms of issue 13 ------------------------------------------------


def test_every_platform_declares_its_media_fidelity() -> None:
    from protocol.rules import DEFAULT_RULES, MediaFidelity, media_fidelity

    exact = {"bluesky", "archive", "webhook", "flickr"}
    reencoded = {"mastodon", "x", "instagram", "threads", "facebook", "linkedin"}
    assert set(DEFAULT_RULES) == exact | reencoded
    for p in exact:
        assert media_fidelity(p) is MediaFidelity.EXACT, p
    for p in reencoded:
        assert media_fidelity(p) is MediaFidelity.RE_ENCODED, p
    # Unknown platforms: never promise exact bytes we cannot vouch for.
    assert media_fidelity("myspace") is MediaFidelity.RE_ENCODED
    for r in DEFAULT_RULES.values():
        assert r.source or r.platform in ("archive", "webhook"), f"{r.platform} cites no documentation"


def test_fidelity_summary_says_who_reencodes() -> None:
    from protocol.rules import fidelity_summary

    said = fidelity_summary(["x:a", "flickr:b", "bluesky:c.test"], photos=1)
    assert said == "x will re-encode this photo; flickr and bluesky keep it exactly"
    assert fidelity_summary(["x:a", "linkedin:b"], photos=2) == "x and linkedin will re-encode these photos"
    assert fidelity_summary(["bluesky:a.test", "archive:a"], photos=1) == ""
    assert fidelity_summary(["x:a"], photos=0) == ""


def test_meta_linkedin_flickr_limits() -> None:
    long = "a" * 2201
    assert "instagram.text_length" in rules_hit(post(long, targets=("instagram:a",), media=[photo()]))
    assert "instagram.media_required" in rules_hit(post("hi", targets=("instagram:a",)))
    assert "instagram.media_type" in rules_hit(
        post("hi", targets=("instagram:a",), media=[photo(media_type="image/png")])
    )
    assert "instagram.media_count" in rules_hit(post("hi", targets=("instagram:a",), media=[photo()] * 11))
    assert "instagram.media_bytes" in rules_hit(
        post("hi", targets=("instagram:a",), media=[photo(8 * 1024 * 1024 + 1)])
    )
    assert rules_hit(post("a" * 3000, targets=("linkedin:a",))) == []
    assert "linkedin.text_length" in rules_hit(post("a" * 3001, targets=("linkedin:a",)))
    assert "flickr.media_required" in rules_hit(post("hi", targets=("flickr:a",)))
    assert rules_hit(post("hi", targets=("flickr:a",), media=[photo(50 * 1024 * 1024)])) == []
    assert "threads.media_count" in rules_hit(post("hi", targets=("threads:a",), media=[photo()] * 21))


def test_threads_counts_emoji_as_utf8_bytes() -> None:
    from protocol.rules import THREADS, text_length, threads_length

    assert threads_length("hello") == 5
    assert threads_length("🚀") == 4
    assert threads_length("🇫🇷") == 8  # a flag: two regional indicators, 4 bytes each
    assert text_length("é" * 500, THREADS) == 500
    assert "threads.text_length" in rules_hit(post("🚀" * 126, targets=("threads:a",)))
    assert rules_hit(post("🚀" * 125, targets=("threads:a",))) == []


@given(st.text(max_size=60))
def test_threads_length_is_at_least_graphemes(text: str) -> None:
    from protocol.rules import threads_length

    assert threads_length(text) >= graphemes(text)
