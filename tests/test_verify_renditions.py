"""The verifier accepts a platform copy holding a rendition only where the signed post allows one
(docs/platforms.md, "Renditions"): a rendition ground was not allowed to make fails the copy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from protocol.model import MediaRef, Post
from verifier.proof import VerificationFailed
from verifier.readback import expected_photos, read_back

ORIGINAL = b"\xff\xd8 the astronaut's exact photo"
RENDITION = b"\xff\xd8 ground's rendition/v1 of it"


def _post(renditions: tuple[str, ...]) -> Post:
    ref = MediaRef(
        sha256=hashlib.sha256(ORIGINAL).digest(), size_bytes=len(ORIGINAL), media_type="image/jpeg"
    )
    return Post(
        id="01M3250V000000000000000000",
        author="alice",
        created_ms=1_790_000_000_000,
        text="Panorama",
        media=(ref,),
        targets=("archive:alice", "x:alice"),
        renditions=renditions,
    )


def _publication(account: str, url: str, original: bytes = ORIGINAL) -> dict[str, object]:
    return {
        "account": account,
        "url": url,
        "renditions": [
            {
                "photo": 1,
                "original_sha256": hashlib.sha256(original).hexdigest(),
                "sha256": hashlib.sha256(RENDITION).hexdigest(),
                "recipe": "rendition/v1",
            }
        ],
    }


def _archive_copy(tmp_path: Path, photo: bytes) -> str:
    (tmp_path / "text.txt").write_bytes(b"Panorama")
    (tmp_path / "media-1.jpg").write_bytes(photo)
    return tmp_path.as_uri()


def test_a_consented_rendition_verifies_and_is_named(tmp_path: Path) -> None:
    post = _post(("archive:alice",))
    check = read_back(
        post, _publication("archive:alice", _archive_copy(tmp_path, RENDITION)), pds=None, plc=""
    )
    assert check.checked and "photo 1 as the rendition the post allows here" in check.detail


def test_a_rendition_the_post_does_not_allow_fails(tmp_path: Path) -> None:
    post = _post(("x:alice",))  # consent for X only, yet the archive got a rendition
    with pytest.raises(VerificationFailed, match="allows none there"):
        read_back(post, _publication("archive:alice", _archive_copy(tmp_path, RENDITION)), pds=None, plc="")


def test_a_rendition_of_another_photo_fails() -> None:
    with pytest.raises(VerificationFailed, match="does not sign"):
        expected_photos(_post(("archive:alice",)), _publication("archive:alice", "", original=b"another"))


def test_the_original_is_still_required_where_no_rendition_is_recorded(tmp_path: Path) -> None:
    post = _post(("archive:alice",))
    publication = {"account": "archive:alice", "url": _archive_copy(tmp_path, RENDITION), "renditions": []}
    with pytest.raises(VerificationFailed, match="photo bytes differ"):
        read_back(post, publication, pds=None, plc="")
