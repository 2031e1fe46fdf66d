"""Publishing adapters, one per platform, behind the small interface in ``base``."""

from .archive import ArchivePlatform
from .base import Platform, Published, PublishRequest

__all__ = ["ArchivePlatform", "Platform", "PublishRequest", "Published"]
