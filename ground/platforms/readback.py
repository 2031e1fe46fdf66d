"""What reading a published copy back found, in words for the record's ``fidelity_note``.

Every adapter whose platform lets the account read its own post back does so right after
publishing (issue 13) and records the result with these helpers; a read-back that fails never
fails a publication that happened — it is recorded as "not read back" with the reason.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .base import Published


def read_back_note(title: str, sent: str, shown: Any) -> str:
    """Compare the text the platform shows with the exact text sent."""
    if not isinstance(shown, str):
        return "text not read back (the platform did not return it)"
    if shown == sent:
        return "text read back: exact"
    return f"text read back DIFFERS: {title} shows {shown[:200]!r}"


def reencoded_post(*, url: str, remote_id: str, title: str, checked: str, has_media: bool) -> Published:
    """A post on a platform that re-encodes every photo: ``checked`` (the text read-back note,
    or "") and, with photos, that they were sent byte-exact."""
    notes = [checked] if checked else []
    if has_media:
        notes.append(f"photos sent byte-exact; {title} re-encodes every photo it receives")
    return Published(url=url, remote_id=remote_id, fidelity="re-encoded", fidelity_note="; ".join(notes))


def bytes_note(title: str, signed: bytes, served: bytes) -> tuple[bool, str]:
    """Compare a photo served back with the signed one: (identical?, what was found)."""
    want, got = hashlib.sha256(signed).hexdigest(), hashlib.sha256(served).hexdigest()
    if want == got:
        return True, f"read back: sha256 {got[:16]}… matches"
    return False, f"read back differs: signed sha256 {want}, {title} serves {got}"
