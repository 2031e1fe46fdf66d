"""Every size and count the decoder accepts, with the reason for its default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    # A whole bundle file: a day of photos from several astronauts fits easily.
    max_bundle_bytes: int = 2 * 1024**3
    # The header lists blobs; 64 KiB holds ~1,000 blob entries, far more than a bundle needs.
    max_header_bytes: int = 64 * 1024
    # Signed items are text and metadata only; 16 MiB is thousands of long posts.
    max_items_bytes: int = 16 * 1024**2
    max_items: int = 10_000
    max_blobs: int = 1_000
    # One photo or short video; the largest platform limit we know is 40 MB (Mastodon video).
    max_blob_bytes: int = 64 * 1024**2
    # Longest platform text is a few thousand bytes; 64 KiB leaves room without letting one
    # item monopolise the items section.
    max_text_bytes: int = 64 * 1024
    max_media_per_post: int = 16
    max_targets_per_post: int = 64
    max_alt_bytes: int = 8 * 1024
    max_name_bytes: int = 256
    # Everything a bundle decodes to (items section plus every blob), checked from the header
    # before anything is inflated: 8 × onboard's 64 MiB export batch (onboard/export.py).
    # Without it, 1,000 blobs of 64 MiB each could be asked of ground by a ~2 MB bundle.
    max_decoded_bytes: int = 512 * 1024**2


DEFAULT_LIMITS = Limits()
