"""`ground serve`'s log: one line per event, as text or JSON, and never a credential.

Every line goes through one handler on the root logger whose formatter redacts secrets
from the *finished* line (message, arguments and traceback alike), so aiohttp's own loggers
(``aiohttp.server``, ``aiohttp.access``, ``aiohttp.web``), asyncio's and ours are all covered;
:class:`RedactingStream` does the same for anything written straight to stderr.

What is redacted (docs/logging.md):

- header values that carry credentials (``Authorization``, ``Cookie``, ``Set-Cookie``,
  ``X-CSRF-Token``, ``Proxy-Authorization``), however they are quoted or escaped — aiohttp's
  HTTP parser error echoes ``Authorization: Bearer <token>\\x00`` whole;
- ``Bearer <token>`` anywhere;
- ``password=…``, ``"secret": "…"`` and similar key/value pairs;
- the strings ground generates as credentials (``secrets.token_urlsafe(32)``: station tokens,
  operator session and API tokens), wherever they appear;
- every secret registered with :func:`register_secret` (platform app passwords, tokens and
  HMAC keys are registered when `ground serve` starts).

Events ground logs (``event`` in JSON): ``listening``, ``bundle_accepted``, ``bundle_rejected``,
``photo_rejected``, ``publication``, ``credential_refused``, ``no_operator``, ``shutdown``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
from typing import Any, TextIO

from termtext import visible

LOGGER_NAME = "ground.serve"
log = logging.getLogger(LOGGER_NAME)

REDACTED = "[redacted]"
_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-csrf-token)(\s*[:=]\s*)[^\r\n'\"]*"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]+")
_KEY_VALUE = re.compile(
    r"(?i)([\"']?\b(?:password|passwd|secret|app_password|access_token|refresh_token|accessJwt|refreshJwt"
    r"|token|api_key|csrf)\b[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&}]+)"
)
# secrets.token_urlsafe(32): 43 characters; mixed case tells it from hex digests and CIDs.
_GENERATED = re.compile(
    r"(?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]*[a-z])(?=[A-Za-z0-9_\-]*[A-Z])[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])"
)
_MIN_REGISTERED = 6  # shorter "secrets" would redact ordinary words

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Redact ``secret`` from every later log line (and its escaped forms, as reprs show them)."""
    s = secret.strip()
    if len(s) < _MIN_REGISTERED:
        return
    with _lock:
        _registered.add(s)
        _registered.add(s.encode("unicode_escape").decode("ascii"))


def redact(text: str) -> str:
    """``text`` with every credential this module knows of replaced by ``[redacted]``."""
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _KEY_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
    return _GENERATED.sub(REDACTED, text)


class RedactSecrets(logging.Filter):
    """A filter for handlers that format records themselves: redacts the message in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


# Attributes every LogRecord has; anything else came in through ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """``2026-12-02T04:20:00.123Z info  ground.serve: message``, one line, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname.lower():<5} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        # One line per event, whatever the message holds; user text cannot drive the terminal.
        return visible(redact(line).replace("\n", " | "), tabs=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None),
            "message": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and k not in doc:
                doc[k] = v if isinstance(v, int | float | bool | None) else str(v)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        # Every string redacted before serialising, so the line stays valid JSON.
        clean = {k: redact(v) if isinstance(v, str) else v for k, v in doc.items()}
        return json.dumps(clean, ensure_ascii=True)


class RedactingStream(io.TextIOBase):
    """A text stream that writes whole lines to ``target`` with credentials redacted."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        if "\n" in self._buf:
            done, _, self._buf = self._buf.rpartition("\n")
            self.target.write(redact(done) + "\n")
            self.target.flush()
        return len(s)

    def flush(self) -> None:
        if self._buf:
            self.target.write(redact(self._buf))
            self._buf = ""
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()


def setup(fmt: str = "text", stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send every logger's records (aiohttp's and asyncio's too) to ``stream`` as ``fmt`` lines.

    ``fmt`` is "text" or "json". Replaces any handler an earlier setup() installed; returns the new one.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # The formatter redacts the finished line; the filter too, so a formatter swapped in
    # later (or a handler sharing these records) still never sees a credential.
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_orbitpost", False):
            root.removeHandler(h)
    handler._orbitpost = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Per-request access lines would drown the events; aiohttp's errors still come through.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


def event(name: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event line; ``fields`` become JSON keys (and stay out of the text line)."""
    log.log(level, message, extra={"event": name, **fields})
