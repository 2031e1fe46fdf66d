"""The adapter interface every platform implements.

Adapters are given the exact signed post and the exact media bytes; they never build
content of their own. An adapter raises ``PublishError(retryable=..., ambiguous=...)`` on
failure. Optional extras the engine uses when present:

- ``async rules(target, session) -> PlatformRules | None``: limits learned from the
  platform (a Mastodon instance's configuration), re-checked before publishing;
- ``idempotency_window_s: float``: how long the platform remembers an idempotency key; a
  post left ambiguous for longer cannot be retried blindly and is failed for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from protocol import MediaRef, Post
from protocol.batch_tree import BatchInclusion

from ..credentials import Credential, CredentialStore
from ..errors import PublishError


def require_credential(credentials: CredentialStore, target: str) -> Credential:
    """The stored credential for ``target``; any failure but a PublishError becomes a permanent one."""
    try:
        return credentials.require(target)
    except PublishError:
        raise
    except Exception as exc:
        raise PublishError(str(exc), retryable=False) from exc


def lookup_exhausted(post_id: str, target: str, newer: str) -> PublishError:
    """The permanent error of a lookup that read ``newer`` (say "500 newer posts") without
    getting back to the uncertain attempt: an operator checks the account by hand."""
    return PublishError(
        f"cannot tell whether post {post_id} reached {target}: more than {newer}; "
        "check the account, then `ground retry`",
        retryable=False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishRequest:
    post: Post
    account: str  # the part after "platform:"
    media: tuple[tuple[MediaRef, bytes], ...]
    signer_fingerprint: str
    signature: bytes
    body: bytes
    # Empty: ``signature`` is over ``body`` alone. Otherwise the astronaut's batch statement
    # that ``signature`` covers, listing sha256(body) (docs/PROTOCOL.md §14).
    statement: bytes = b""
    # Set (bundle format 3, docs/PROTOCOL.md §17) when ``signature`` is over a Merkle root of
    # the signer's body hashes: this body's tree size, leaf index and audit path.
    inclusion: BatchInclusion | None = None
    # Set when an earlier attempt may have reached the platform (crash, timeout): when that
    # attempt began, and the engine's clock now — so ``lookup`` knows how far back to look
    # and whether an idempotency key is still remembered.
    ambiguous_since_ms: int | None = None
    now_ms: int | None = None
    # Appended (renditions, docs/platforms.md): ``media`` holds, for these photos, the rendition
    # ground made with the astronaut's signed consent instead of the signed original (each a
    # ground.renditions.Record: photo number, both sha256, recipe). Empty: every photo as signed.
    renditions: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    url: str
    remote_id: str
    # Appended (issue 13): what became of the photo bytes on this platform. ``fidelity`` is a
    # protocol.rules.MediaFidelity value ('' = the platform's declared one); ``fidelity_note``
    # what a read-back found, e.g. "original read back: sha256 matches".
    fidelity: str = ""
    fidelity_note: str = ""


class Platform(Protocol):
    name: str

    async def publish(self, req: PublishRequest, session: Any) -> Published:
        """Publish once; must be safe to call again for the same post (idempotent or reconciled)."""
        ...

    async def lookup(self, req: PublishRequest, session: Any) -> Published | None:
        """Find an earlier publication of this post (after a crash or ambiguous timeout)."""
        ...

    async def delete(self, account: str, remote_id: str, session: Any) -> None:
        """Remove a published post (retract)."""
        ...
