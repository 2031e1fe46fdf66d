"""Strict readers for TOML tables: each wrong field is reported by its dotted name.

Unknown keys are errors too (a typo such as ``delay_ms`` for ``one_way_delay_ms`` must not
silently fall back to a default and give a plausible but wrong simulation).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError


def load_toml(path: Path) -> dict[str, Any]:
    """Parse ``path`` as TOML, turning I/O and syntax errors into ConfigError."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot be read: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "(file)", f"is not valid TOML: {exc}") from exc


class Table:
    """One TOML table being read; remembers which keys were used to flag unknown ones."""

    def __init__(self, source: str, data: Any, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(data, Mapping):
            raise ConfigError(source, prefix or "(top level)", "must be a table")
        self.data = data
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.name(key), problem)

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                near = difflib.get_close_matches(key, [str(k) for k in self.data], n=1, cutoff=0.5)
                hint = f" ('{self.name(near[0])}' is there: misspelt?)" if near else ""
                raise self.error(key, f"is missing{hint}")
            return default
        return self.data[key]

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        min: float | None = None,
        max: float | None = None,
        min_exclusive: bool = False,
    ) -> float:
        """A finite int or float in [min, max] (or (min, max] with ``min_exclusive``)."""
        v = self._get(key, default, default is None)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(key, f"must be a number, got {type(v).__name__} {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise self.error(key, f"must be finite, got {v}")
        if min is not None and (v < min or (min_exclusive and v == min)):
            raise self.error(key, f"must be {'>' if min_exclusive else '>='} {min:g}, got {v:g}")
        if max is not None and v > max:
            raise self.error(key, f"must be <= {max:g}, got {v:g}")
        return v

    def integer(self, key: str, default: int | None = None, *, min: int = 0, max: int | None = None) -> int:
        v = self._get(key, default, default is None)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"must be a whole number, got {type(v).__name__} {v!r}")
        if v < min or (max is not None and v > max):
            raise self.error(key, f"must be in {min}..{max if max is not None else '∞'}, got {v}")
        return v

    def string(self, key: str, default: str | None = None, *, allow_empty: bool = False) -> str:
        v = self._get(key, default, default is None)
        if not isinstance(v, str) or not (allow_empty or v.strip()):
            raise self.error(key, f"must be a non-empty string, got {v!r}")
        return v

    def boolean(self, key: str, default: bool) -> bool:
        v = self._get(key, default, False)
        if not isinstance(v, bool):
            raise self.error(key, f"must be true or false, got {v!r}")
        return v

    def table(self, key: str, *, required: bool = False) -> Table:
        v = self._get(key, {}, required)
        return Table(self.source, v, self.name(key))

    def array(self, key: str, *, required: bool = False) -> list[Any]:
        v = self._get(key, [], required)
        if not isinstance(v, list):
            raise self.error(key, f"must be an array, got {type(v).__name__}")
        return v

    def done(self) -> None:
        """Raise on keys nobody read: a misspelt field is an error, not a silent default."""
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.error(extra[0], "is not a known field (misspelt?)")
