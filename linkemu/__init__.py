"""Link emulation for tests, benchmarks and the simulator: a throttling, delaying, cutting TCP proxy."""

from .proxy import Direction, LinkProxy, LossWindow, ProxyError, ProxyStats, TokenBucket

__all__ = ["Direction", "LinkProxy", "LossWindow", "ProxyError", "ProxyStats", "TokenBucket"]
