"""Keys the page has unlocked: one astronaut at a time, forgotten after inactivity.

A crew shares the laptop: a passphrase typed once per session unlocks that astronaut's key
in this process's memory only; ``lock_after_s`` without a touch from the person at the
keyboard (the page's own polling does not count) forgets it, and unlocking or selecting
another astronaut forgets the previous one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from protocol import SigningKey


@dataclass(slots=True, kw_only=True)
class KeyRing:
    lock_after_s: float
    _key: tuple[str, SigningKey] | None = None
    _touched: float = field(default_factory=time.monotonic)
    locked_reason: str = ""

    def touch(self) -> None:
        self.expire()
        self._touched = time.monotonic()

    def expire(self) -> None:
        if self._key is not None and time.monotonic() - self._touched > self.lock_after_s:
            self._key = None
            self.locked_reason = f"locked after {self.lock_after_s / 60:g} min without use"

    def unlock(self, name: str, key: SigningKey) -> None:
        self._key = (name, key)
        self._touched = time.monotonic()
        self.locked_reason = ""

    def lock_all(self, reason: str = "") -> None:
        self._key = None
        self.locked_reason = reason

    def unlocked(self) -> str | None:
        return None if self._key is None else self._key[0]

    def key_for(self, name: str) -> SigningKey | None:
        self.expire()
        if self._key is not None and self._key[0] == name:
            return self._key[1]
        return None
