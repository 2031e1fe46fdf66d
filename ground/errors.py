"""Ground's exception hierarchy.

GroundError
├── EnrollError      bad key line, name clash, unknown astronaut
├── BundleRejected   a bundle failed verification or policy; carries the protocol code
├── PublishError     a platform refused or failed; says whether a retry can help
├── OperatorError    (ground/operators.py) bad operator name, role or password
└── ActionError      (ground/dashboard/actions.py) an operator action not possible: 404 / 409
"""

from __future__ import annotations

from protocol import ErrorCode


class GroundError(Exception):
    """Base of ground errors; the CLI prints the message and exits 1."""


class EnrollError(GroundError):
    pass


class BundleRejected(GroundError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PublishError(GroundError):
    """``retryable``: trying again may help. ``ambiguous``: the platform may have acted on the
    request (timeout after sending), so look it up before any retry. ``retry_after_s``: what
    the platform asked us to wait (429/503 Retry-After)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.ambiguous = ambiguous
