"""Link emulation for tests, benchmarks and the simulator: a throttling, delaying, cutting TCP proxy.

The names are loaded from linkemu.proxy on first use (PEP 562) rather than imported here:
`python -m linkemu.proxy` runs that module as __main__, and a package that had already
imported it would make runpy warn that it runs a second copy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .proxy import Direction, LinkProxy, LossWindow, ProxyError, ProxyStats, TokenBucket

__all__ = ["Direction", "LinkProxy", "LossWindow", "ProxyError", "ProxyStats", "TokenBucket"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".proxy", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
