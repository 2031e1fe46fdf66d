"""Canonical msgpack: the one byte form every value has (docs/PROTOCOL.md §2).

Values are positional arrays, strings are UTF-8 ``str``, bytes are ``bin``, integers use
msgpack's shortest form. The decoder rejects anything that would not re-encode to the very
same bytes, so one post has exactly one signed form (no malleability).
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import ErrorCode, RemoteProtocolError


def pack(value: Any) -> bytes:
    """Encode ``value`` canonically."""
    return msgpack.packb(value, use_bin_type=True, strict_types=False)  # type: ignore[no-any-return]


class _TooManyValues(Exception):
    """Raised inside msgpack's hooks to stop a decode that outgrew its element budget."""


def unpack(
    data: bytes,
    *,
    what: str,
    max_bytes: int,
    max_array_len: int | None = None,
    max_values: int | None = None,
) -> Any:
    """Decode one canonical value or raise RemoteProtocolError naming ``what``.

    Bounded before anything is built (docs/PROTOCOL.md §2): ``max_array_len`` caps every
    array and map (msgpack refuses a longer one from its length prefix, allocating nothing),
    and ``max_values`` caps the values inside all arrays and maps together, so a few KiB of
    nested empty arrays cannot become hundreds of MiB of Python objects. Callers derive
    both from what the enclosing header declares (item count, blob count). Strings and
    bytes are bounded by ``data`` itself.
    """
    if len(data) > max_bytes:
        raise RemoteProtocolError(ErrorCode.LIMIT_EXCEEDED, f"{what} is {len(data)} bytes, limit {max_bytes}")
    n = len(data)
    array_len = n if max_array_len is None else min(n, max_array_len)
    budget = [n if max_values is None else max_values]

    def count(container: Any) -> Any:
        budget[0] -= len(container)
        if budget[0] < 0:
            raise _TooManyValues
        return container

    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=array_len,
            max_map_len=array_len,
            max_ext_len=0,
            list_hook=None if max_values is None else count,
            object_hook=None if max_values is None else count,
        )
    except msgpack.ExtraData as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} has trailing bytes after its value") from exc
    except _TooManyValues as exc:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"{what} holds more than the {max_values} values its header allows"
        ) from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # msgpack raises UnicodeDecodeError (a ValueError), FormatError, StackError, and
        # ValueError for an array or map longer than max_array_len...
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"{what} is not valid msgpack: {exc or type(exc).__name__}"
        ) from exc
    if pack(value) != bytes(data):
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} is not in canonical form")
    return value


def expect_list(value: Any, *, what: str, min_len: int, max_len: int | None = None) -> list[Any]:
    """Check ``value`` is an array of the allowed length."""
    if not isinstance(value, list) or len(value) < min_len or (max_len is not None and len(value) > max_len):
        n = len(value) if isinstance(value, list) else type(value).__name__
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"{what} must be an array of {min_len}..{max_len} fields, got {n}"
        )
    return value


def expect(value: Any, kind: type | tuple[type, ...], *, what: str) -> Any:
    """Check ``value`` has Python type ``kind`` (bool is not an int here)."""
    if isinstance(value, bool) and kind is not bool:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} must not be a boolean")
    if not isinstance(value, kind):
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"{what} has type {type(value).__name__}, expected {kind}"
        )
    return value
