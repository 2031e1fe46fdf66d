"""Read a published copy back from its platform and compare it with the signed post.

Where a platform keeps exact bytes (the archive, Bluesky's content-addressed blobs) the
copy must match byte for byte; elsewhere the text is compared where it can be read and the
photo is reported as re-encoded by the platform, as its fidelity says.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from protocol.model import Post

from . import platforms
from .platforms import CopyCheck, Readers
from .proof import VerificationFailed

# A published record or photo is far below this; a hostile server cannot make us read more.
MAX_FETCH_BYTES = 64 * 1024 * 1024
TIMEOUT_S = 20.0


def fetch(url: str, *, limit: int = MAX_FETCH_BYTES, headers: dict[str, str] | None = None) -> bytes:
    """GET ``url`` (http, https or file) with a size limit; VerificationFailed on any error."""
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 (schemes checked by callers)
            data: bytes = resp.read(limit + 1)
    except (OSError, ValueError) as exc:
        raise VerificationFailed(f"could not fetch {url}: {exc}") from exc
    if len(data) > limit:
        raise VerificationFailed(f"{url} is larger than {limit} bytes")
    return data


def expected_photos(post: Post, publication: dict[str, Any]) -> list[bytes]:
    """The sha256 of each photo this copy should hold: the signed one, or the rendition ground
    recorded for it — accepted only where the signed post allows a rendition to this account and
    the record names the signed original (docs/platforms.md, "Renditions")."""
    want = [m.sha256 for m in post.media]
    account = str(publication.get("account", ""))
    for r in publication.get("renditions") or []:
        n = int(r.get("photo", 0))
        if not 1 <= n <= len(want) or r.get("original_sha256") != want[n - 1].hex():
            raise VerificationFailed(f"{account}: a rendition is recorded for a photo the post does not sign")
        if account not in post.renditions:
            raise VerificationFailed(
                f"{account}: ground sent a rendition of photo {n}, but the signed post allows none there"
            )
        want[n - 1] = bytes.fromhex(str(r["sha256"]))
    return want


def _packed_text(pack: Path, post_id: str, url: str) -> bytes:
    """The text of ``post_id``'s record in an archive pack (one JSON record per line)."""
    try:
        lines = pack.read_bytes().splitlines()
    except OSError as exc:
        raise VerificationFailed(f"archive copy at {url} cannot be read: {exc}") from exc
    needle = f'"post_id":"{post_id}"'.encode()
    for line in lines:
        if needle in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("post_id") != post_id:
                continue
            text = record.get("text")
            if isinstance(text, str):
                return text.encode("utf-8")
    raise VerificationFailed(f"archive copy at {url}: the pack holds no record of {post_id}")


def _archive(post: Post, url: str, want: list[bytes]) -> str:
    parts = urllib.parse.urlsplit(url)
    folder = Path(urllib.parse.unquote(parts.path))
    if parts.fragment and folder.is_file():
        # A text post in a pack (archive layout 2): the line whose post id is the fragment.
        text = _packed_text(folder, urllib.parse.unquote(parts.fragment), url)
        if text != post.text.encode("utf-8"):
            raise VerificationFailed(f"archive copy at {url}: text differs from the signed text")
        if want:
            raise VerificationFailed(f"archive copy at {url}: photo bytes differ from the signed photos")
        return f"archive copy at {url}: text and 0 photo(s) byte-identical"
    try:
        text = (folder / "text.txt").read_bytes()
    except OSError as exc:
        raise VerificationFailed(f"archive copy at {url} cannot be read: {exc}") from exc
    if text != post.text.encode("utf-8"):
        raise VerificationFailed(f"archive copy at {url}: text differs from the signed text")
    files = sorted(p for p in folder.glob("media-*"))
    got = [hashlib.sha256(p.read_bytes()).digest() for p in files]
    if got != want:
        raise VerificationFailed(f"archive copy at {url}: photo bytes differ from the signed photos")
    return f"archive copy at {url}: text and {len(got)} photo(s) byte-identical"


def _pds_of(did: str, plc: str) -> str:
    doc = json.loads(fetch(f"{plc.rstrip('/')}/{urllib.parse.quote(did)}"))
    for svc in doc.get("service", []):
        if str(svc.get("id", "")).endswith("#atproto_pds"):
            return str(svc["serviceEndpoint"]).rstrip("/")
    raise VerificationFailed(f"{did} names no PDS in its DID document")


def _bluesky(post: Post, uri: str, pds: str | None, plc: str, want: list[bytes]) -> str:
    parts = uri.removeprefix("at://").split("/")
    if len(parts) != 3:
        raise VerificationFailed(f"{uri} is not an at:// record URI")
    did, collection, rkey = parts
    base = pds or _pds_of(did, plc)
    q = urllib.parse.urlencode({"repo": did, "collection": collection, "rkey": rkey})
    record: dict[str, Any] = json.loads(fetch(f"{base}/xrpc/com.atproto.repo.getRecord?{q}")).get("value", {})
    if record.get("text") != post.text:
        raise VerificationFailed(f"Bluesky record {uri}: text differs from the signed text")
    images = (record.get("embed") or {}).get("images", [])
    got = []
    for img in images:
        cid = img["image"]["ref"]["$link"]
        q = urllib.parse.urlencode({"did": did, "cid": cid})
        got.append(hashlib.sha256(fetch(f"{base}/xrpc/com.atproto.sync.getBlob?{q}")).digest())
    if got != want:
        raise VerificationFailed(f"Bluesky record {uri}: photo blobs differ from the signed photos")
    return f"Bluesky record {uri}: text and {len(got)} photo blob(s) byte-identical"


def read_back(
    post: Post, publication: dict[str, Any], *, pds: str | None, plc: str, readers: Readers | None = None
) -> CopyCheck:
    """Compare one publication with ``post``: what was established, or what could not be checked.

    Raises VerificationFailed if the copy read back differs from what the astronaut signed."""
    readers = readers or Readers()
    platform = str(publication["account"]).partition(":")[0]
    url = str(publication.get("url") or "")
    want = expected_photos(post, publication)
    sent = [str(n) for n, (w, m) in enumerate(zip(want, post.media, strict=True), 1) if w != m.sha256]
    as_rendition = f" (photo {', '.join(sent)} as the rendition the post allows here)" if sent else ""
    if platform == "archive" and url.startswith("file:"):
        return CopyCheck(checked=True, detail=_archive(post, url, want) + as_rendition)
    if platform == "bluesky" and publication.get("uri"):
        return CopyCheck(
            checked=True, detail=_bluesky(post, str(publication["uri"]), pds, plc, want) + as_rendition
        )
    if platform == "mastodon" and url.startswith(("http://", "https://")):
        return platforms.mastodon(post, publication, readers, fetch)
    if platform == "x":
        return platforms.x(post, publication, readers, fetch)
    if platform in platforms.GRAPH:
        return platforms.graph(platform, post, publication, readers, fetch)
    if platform == "flickr":
        return platforms.flickr(post, publication, readers, fetch)
    fidelity = publication.get("media_fidelity")
    photos = (
        ""
        if not post.media
        else (
            "; photos kept exactly by the platform"
            if fidelity == "exact"
            else "; photos re-encoded by the platform"
        )
    )
    return CopyCheck(
        checked=False,
        detail=f"{publication['account']}: not read back (no public read this verifier uses){photos}",
    )
