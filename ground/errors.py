"""Ground's exception hierarchy.

GroundError
├── EnrollError      bad key line, name clash, unknown astronaut
├── BundleRejected   a bundle failed verification or policy; carries the protocol code
├── PublishError     a platform refused or failed; says whether a retry can help
│   ├── QuotaWait        the post would exceed a platform quota: it waits (not a failure)
│   └── ReconnectNeeded  the account's authorisation is gone: an operator must reconnect it
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


class QuotaWait(PublishError):
    """Publishing now would exceed a platform quota or rate limit whose reset is known.

    Nothing was sent. The engine keeps the post queued until ``retry_after_s`` has passed,
    without counting an attempt, and shows this message as the reason it waits.
    """

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retryable=True, retry_after_s=retry_after_s)


class ReconnectNeeded(PublishError):
    """The platform no longer accepts this account's tokens (revoked, expired refresh token).

    Permanent until an operator runs `ground account add` again with fresh tokens; the message
    always says "reconnect this account", never fails silently.
    """

    def __init__(self, target: str, detail: str) -> None:
        super().__init__(
            f"reconnect this account: {target}: {detail} (get new tokens, then "
            f"`ground account add {target} --token-file FILE` and `ground retry`)",
            retryable=False,
        )
        self.target = target
