"""Publishing adapters, one per platform, behind the small interface in ``base``.

The registry: :data:`ADAPTERS` maps a platform name to a factory that builds its adapter from
an :class:`AdapterContext` (the home's credential files, handle store and quota book). A new
platform adds one line here (factories import their module lazily, so an adapter's
dependencies load only when ground uses it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from durable.files import BlobStore

from ..credentials import CredentialStore, store_for
from .archive import ArchivePlatform
from .base import Platform, Published, PublishRequest
from .handles import HandleStore
from .quota import QuotaBook


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterContext:
    """What an adapter may keep state in, all under the ground home."""

    credentials: CredentialStore
    handles: HandleStore
    quotas: QuotaBook
    archive_dir: Path
    home_root: Path  # the Meta adapters grant public media links in the home's database


def _archive(ctx: AdapterContext) -> Platform:
    return ArchivePlatform(ctx.archive_dir, BlobStore(ctx.home_root / "blobs"))


def _bluesky(ctx: AdapterContext) -> Platform:
    from .bluesky import BlueskyPlatform

    return BlueskyPlatform(ctx.credentials)


def _mastodon(ctx: AdapterContext) -> Platform:
    from .mastodon import MastodonPlatform

    return MastodonPlatform(ctx.credentials)


def _webhook(ctx: AdapterContext) -> Platform:
    from .webhook import WebhookPlatform

    return WebhookPlatform(ctx.credentials)


def _x(ctx: AdapterContext) -> Platform:
    from .x import XPlatform

    return XPlatform(ctx.credentials, ctx.handles, ctx.quotas)


def _linkedin(ctx: AdapterContext) -> Platform:
    from .linkedin import LinkedInPlatform

    return LinkedInPlatform(ctx.credentials, ctx.handles, ctx.quotas)


def _flickr(ctx: AdapterContext) -> Platform:
    from .flickr import FlickrPlatform

    return FlickrPlatform(ctx.credentials, ctx.handles, ctx.quotas)


def _instagram(ctx: AdapterContext) -> Platform:
    from .instagram import InstagramPlatform

    return InstagramPlatform(ctx.credentials, ctx.handles, ctx.quotas, ctx.home_root)


def _threads(ctx: AdapterContext) -> Platform:
    from .threads import ThreadsPlatform

    return ThreadsPlatform(ctx.credentials, ctx.handles, ctx.quotas, ctx.home_root)


def _facebook(ctx: AdapterContext) -> Platform:
    from .facebook import FacebookPlatform

    return FacebookPlatform(ctx.credentials, ctx.handles, ctx.quotas)


ADAPTERS: dict[str, Callable[[AdapterContext], Platform]] = {
    "archive": _archive,
    "bluesky": _bluesky,
    "mastodon": _mastodon,
    "webhook": _webhook,
    "x": _x,
    "linkedin": _linkedin,
    "flickr": _flickr,
    "instagram": _instagram,
    "threads": _threads,
    "facebook": _facebook,
}


def context_for(home_root: Path, archive_dir: Path) -> AdapterContext:
    return AdapterContext(
        credentials=store_for(home_root),
        handles=HandleStore(home_root / "platform-state"),
        quotas=QuotaBook(home_root / "platform-state" / "quotas.json"),
        archive_dir=archive_dir,
        home_root=home_root,
    )


def build_platforms(
    home_root: Path, archive_dir: Path, only: Collection[str] | None = None
) -> dict[str, Platform]:
    """Every registered adapter (or those named in ``only``), wired to one ground home's files."""
    ctx = context_for(home_root, archive_dir)
    return {name: factory(ctx) for name, factory in ADAPTERS.items() if only is None or name in only}


__all__ = [
    "ADAPTERS",
    "AdapterContext",
    "ArchivePlatform",
    "Platform",
    "PublishRequest",
    "Published",
    "build_platforms",
    "context_for",
]
