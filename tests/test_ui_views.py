"""What the compose page shows, computed from the laptop's own tables (no byte to ground)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onboard import link_status, queue, receipts
from onboard.compose import PhotoInput, compose_post
from onboard.home import Home
from onboard.keystore import new_key
from onboard.ui import views
from onboard.ui.drafts import DraftStore, draft_from_json


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "A").ensure()
    new_key(h, "alice")
    return h


def test_link_status_recorded_by_sync_gives_the_page_an_estimate(
    home: Home, sample_jpegs: list[Path]
) -> None:
    conn = queue.connect(home.db_path)
    assert views.link_view(home, conn)["up"] is None  # no sync ever ran: said so, not guessed
    compose_post(
        home,
        conn,
        author="alice",
        text="waiting",
        targets=["archive:alice"],
        photos=[PhotoInput(path=sample_jpegs[1], alt="retina")],
    )
    rec = link_status.Recorder(conn)
    rec.contact()
    rec.acked(0)  # the first acknowledgement opens the measuring window
    rec._window_start = time.monotonic() - 4.0  # as if four seconds had passed
    rec.acked(40_000)
    rec.link(False, "ConnectionRefusedError")
    rec.flush(force=True)
    v = views.link_view(home, conn)
    assert v["up"] is False and v["reason"] == "ConnectionRefusedError"
    assert v["last_contact_ms"] is not None and abs(v["last_contact_ms"] - time.time() * 1000) < 60_000
    assert 9_000 < v["rate_bps"] < 10_500
    photo = sample_jpegs[1].stat().st_size
    assert photo < v["bytes_waiting"] < photo + 1_000  # the photo once, plus the signed body
    assert v["eta_s"] == pytest.approx(v["bytes_waiting"] / v["rate_bps"])
    # The next sync starts from what this one saw: until it reaches ground, nothing is erased.
    again = link_status.Recorder(conn)
    again.flush(force=True)
    assert views.link_view(home, conn)["last_contact_ms"] == v["last_contact_ms"]
    assert again.up is False and again.rate_bps == v["rate_bps"]
    again.contact()
    again.flush(force=True)
    assert views.link_view(home, conn)["up"] is True
    conn.close()


def test_accounts_come_from_ground_when_known_else_past_posts_unconfirmed(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = queue.connect(home.db_path)
    assert views.accounts_for(conn, "alice") == ([], False)
    compose_post(home, conn, author="alice", text="hi", targets=["archive:alice", "x:alice"], photos=[])
    assert views.accounts_for(conn, "alice") == (["archive:alice", "x:alice"], False)
    assert views.accounts_for(conn, "bob") == ([], False)
    # Once the receipts module can say what ground enrolled (another change adds it), that wins.
    monkeypatch.setattr(receipts, "enrolled_accounts", lambda c, who: None, raising=False)
    assert views.accounts_for(conn, "alice") == (["archive:alice", "x:alice"], False)
    monkeypatch.setattr(receipts, "enrolled_accounts", lambda c, who: ("bluesky:alice.test",), raising=False)
    assert views.accounts_for(conn, "alice") == (["bluesky:alice.test"], True)
    # An account typed by hand that ground did not enroll is refused before anything is queued.
    d = draft_from_json("0123456789abcdef", {"author": "alice", "text": "hi", "targets": ["archive:alice"]})
    (t,) = views.check(conn, DraftStore(home), d)["targets"]
    assert not t["ok"] and "has not enrolled archive:alice" in t["problems"][0]
    conn.close()


def test_counters_are_protocol_rules_counts(home: Home) -> None:
    conn = queue.connect(home.db_path)
    store = DraftStore(home)
    text = "👩‍👩‍👧‍👦 " * 150 + "https://example.org/" + "a" * 60  # ZWJ families count once each
    d = draft_from_json(
        "0123456789abcdef",
        {
            "author": "alice",
            "text": text,
            "targets": ["bluesky:a.test", "x:a", "mastodon:a@m.social", "nope"],
        },
    )
    from protocol.rules import BLUESKY, MASTODON, X, text_length

    got = {t["target"]: t for t in views.check(conn, store, d)["targets"]}
    assert got["bluesky:a.test"]["count"] == text_length(text, BLUESKY) == 380  # 150 × (family + space) + 80
    assert got["x:a"]["count"] == text_length(text, X)
    assert got["mastodon:a@m.social"]["count"] == text_length(text, MASTODON)
    assert not got["bluesky:a.test"]["ok"] and not got["x:a"]["ok"]
    assert not got["nope"]["ok"] and "platform:account" in got["nope"]["problems"][0]
    assert got["bluesky:a.test"]["photo_fidelity"] == "photos kept byte for byte"  # protocol.rules says
    assert got["x:a"]["photo_fidelity"] == "photos re-encoded by X"
    conn.close()


def test_queue_words_each_accounts_state_with_progress_reason_and_what_to_do(home: Home) -> None:
    conn = queue.connect(home.db_path)
    p = compose_post(
        home, conn, author="alice", text="hi", targets=["archive:alice", "bluesky:a.test"], photos=[]
    )
    from onboard import link

    link.ensure_schema(conn)
    conn.execute(
        "INSERT INTO link_transfers (name, kind, sha256, size_bytes, owner, state, acked_bytes, created_ms, "
        "updated_ms) VALUES ('bundle:x', 'bundle', x'00', 1000, 'alice', 'sending', 420, 0, 0)"
    )
    conn.execute("INSERT INTO link_transfer_items VALUES ('bundle:x', ?)", (p.id,))
    conn.execute("UPDATE deliveries SET state = 'sending' WHERE target = 'archive:alice'")
    conn.execute(
        "UPDATE deliveries SET state = 'failed', detail = 'Bluesky said: rate limited' "
        "WHERE target = 'bluesky:a.test'"
    )
    (item,) = views.queue_view(conn)
    got = {a["target"]: a for a in item["accounts"]}
    assert got["archive:alice"]["label"] == "sending 42 %"
    assert got["bluesky:a.test"]["reason"] == "Bluesky said: rate limited"
    assert "retry" in got["bluesky:a.test"]["hint"]
    conn.execute(
        "UPDATE deliveries SET state = 'published', url = 'https://bsky.app/profile/a.test/post/1' "
        "WHERE target = 'bluesky:a.test'"
    )
    conn.execute(
        "UPDATE deliveries SET state = 'published', url = 'javascript:alert(1)' WHERE target = 'archive:alice'"
    )
    (item,) = views.queue_view(conn)
    got = {a["target"]: a for a in item["accounts"]}
    assert got["bluesky:a.test"]["url"].startswith("https://")
    assert (
        "url" not in got["archive:alice"] and got["archive:alice"]["where"] == "javascript:alert(1)"
    )  # never a link
    conn.close()
