"""linkemu's exceptions.

LinkEmuError
├── ScheduleError     a packet schedule's configuration is invalid (packet_schedule.py)
└── PacketLinkError   the packet emulator cannot run here: not root, no /dev/net/tun,
                      `ip netns` failed (packet.py); tests skip with its message
"""

from __future__ import annotations


class LinkEmuError(Exception):
    """Base of linkemu's errors."""


class ScheduleError(LinkEmuError, ValueError):
    """A packet schedule was configured with an impossible value (negative delay, loss > 1, ...)."""


class PacketLinkError(LinkEmuError):
    """The packet link could not be set up or torn down (privileges, TUN, network namespaces)."""
