"""Receipts: ground's signed account of what became of each post (docs/PROTOCOL.md §9).

A receipts document is ``[body, key_id(8), signature(64)]`` where the signature is
ground's Ed25519 signature over ``RECEIPTS_DOMAIN + body`` and body is canonical msgpack::

    [version=2|3|4, issued_ms, [entry, ...]]
    entry = [1, item_id(16), account, state, url|nil, error|nil, seq, remote_id|nil,
             [rendition, ...]?]                                        publication (version 2)
          | [1, item_id(16), account, state, url|nil, error|nil, seq, remote_id|nil,
             [rendition, ...]|nil, [photo, ...]|nil, read_back|nil, ...]  publication (version 3)
          | [2, bundle_sha256(32), bundle_id(16)|nil, accepted, code, message,
             [item_id(16), ...], seq]                                                  bundle
          | [3, account, max_text|nil, max_media|nil, max_media_bytes|nil,
             url_length|nil, max_alt|nil, [media_type, ...]|nil, seq, ...]            account limits
          | [4, astronaut, [account, ...], seq]                                       enrolled accounts
          | [5, command_id(16), target_id(16), outcome, detail, seq]                 cancel/retract

``seq`` is ground's change sequence number (§9): every entry is the *current* state of what
it describes, stamped with the change that last touched it, and a document holds entries in
increasing ``seq``. Version 1 carried a wall-clock ``updated_ms`` there instead, which could
skip a change committed late with an older time; it is no longer produced nor read.

An account-limits entry carries what ground learned from the platform about one account
(a Mastodon instance's ``/api/v2/instance``), so onboard refuses exactly what ground
would; nil means "the platform's default". Fields may be appended to it later: a
decoder reads the ones it knows and ignores the rest (still covered by the signature).

A publication entry gains a 9th field only when ground published a rendition the signed post
allowed (docs/PROTOCOL.md §3.1): ``rendition = [photo, original_sha256(32), sha256(32), recipe,
width, height]``. Only an onboard that can sign such a consent ever receives one (a station
sees its own posts only), so older stations never meet the longer entry.

Version 3 (docs/PROTOCOL.md §9.4) gives every publication entry at least 11 fields: the 9th is
nil without renditions, the 10th says per photo how faithfully the account got it —
``photo = [fidelity, original_sha256(32)]`` with fidelity ``exact``, ``re-encoded`` (by the
platform) or ``rendition`` (the 9th field has both hashes) — and the 11th is what ground found
reading the copy back, in words. Both are nil until the account holds the post, and the 10th
for a post without photos. Fields after the 11th are ignored (still signed). Ground writes
version 3 only to a station that asked for it (``versions`` in its RECEIPTS request, §9.3, or
``ground receipts --version 3``), so an older onboard still gets version 2, which it reads.

Version 4 (docs/PROTOCOL.md §9.5) says what version 3 says in fewer bytes: URL templates
``[6, number, account, url_parts|nil, id_parts|nil, seq, ...]`` (protocol/receipt_templates.py),
and publication entries ``[1, post, account, state, seq, where?, error?, renditions?, photos?,
read_back?, ...]`` — the post as its index in the bundle entry before it (or its id), the
state by number (or its string), ``where`` nil, ``[url|nil, id|nil]`` or ``[template number,
key]``, nils at the end left off. The reader passes the templates it holds to
``verify_receipts`` and gets full URLs back; the compact bytes are what is signed.

The station pins ground's public key when the link is set up and refuses documents signed
by anything else, so receipts read from a file hand-off are as trustworthy as live ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from .canonical import expect, expect_list, pack, unpack
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .ids import ulid_from_bytes, ulid_to_bytes
from .keys import KEY_ID_BYTES, SigningKey, key_id, verify_signature
from .receipt_templates import MAX_KEY_CHARS, Parts, best, check_parts, expand

RECEIPTS_DOMAIN = b"orbitpost/receipts/v1\x00"
RECEIPTS_VERSION = 2
# Version 3 adds photo fidelity to publication entries; written only to a station asking for it.
RECEIPTS_VERSION_FIDELITY = 3
# Version 4 (§9.5) says the same as 3 in fewer bytes: URL templates sent once per account, the
# post named by its place in the bundle entry before it, the state as a number, nils left off.
RECEIPTS_VERSION_COMPACT = 4
RECEIPTS_VERSIONS = frozenset({RECEIPTS_VERSION, RECEIPTS_VERSION_FIDELITY, RECEIPTS_VERSION_COMPACT})
# Version 4's publication states by number (a state not listed goes as its string).
PUBLICATION_STATES = (
    "pending",
    "publishing",
    "scheduled",
    "published",
    "failed",
    "rejected",
    "cancelled",
    "retracting",
    "retracted",
    "retract_failed",
)
_STATE_NUMBER = {s: i for i, s in enumerate(PUBLICATION_STATES)}
# Templates ground may number (one or a few per account; 500+ accounts at one agency).
MAX_TEMPLATE_NUMBER = 2**32
# Ground's words on a read-back are a sentence or two; more is not a read-back note.
MAX_READ_BACK_CHARS = 4096
# Accounts per astronaut in one enrolled-accounts entry (one agency runs 500+ accounts in all).
MAX_ACCOUNTS = 4096
# A document carries at most a few thousand entries; 8 MiB is far above that.
MAX_RECEIPTS_BYTES = 8 * 1024 * 1024
MAX_ENTRIES = 10_000
# A signed checkpoint note is a few hundred characters (protocol/tlog.py).
MAX_CHECKPOINT_CHARS = 16 * 1024


class UnknownTemplateError(RemoteProtocolError):
    """A version-4 publication names a URL template the reader does not hold (§9.5): neither in
    the document nor among the ``templates`` passed in. A live reader asks again without
    version 4 (onboard/receipts.py); a file carries its templates, so there it is malformed."""

    def __init__(self, number: int, account: str) -> None:
        super().__init__(
            ErrorCode.MALFORMED,
            f"publication receipt of {account} names URL template {number}, which this reader was never sent",
        )
        self.number = number
        self.account = account


class EntryKind(IntEnum):
    PUBLICATION = 1
    BUNDLE = 2
    ACCOUNT_LIMITS = 3
    ENROLLED = 4
    COMMAND = 5
    URL_TEMPLATE = 6  # version 4 only


class CommandOutcome(StrEnum):
    """What ground did with a signed cancel or retract (ground/publish.py applies them)."""

    DONE = "done"  # applied: the publications it names moved (their own entries say where)
    REFUSED = "refused"  # not the author's post, or not a post: nothing changed


# Sanity bounds for learned limits: a hostile or broken instance cannot make onboard
# accept anything absurd, and a value outside them is a malformed document.
MAX_LIMIT_VALUE = 2**40
MAX_MEDIA_TYPES = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicationReceipt:
    """One (post, account): ground's publication state, the URL or the exact error."""

    item_id: str
    account: str
    state: str
    url: str | None
    error: str | None
    seq: int
    # The platform's own id for the published post (Bluesky: its at:// URI), or None.
    remote_id: str | None = None
    # Appended: photos sent to this account as a rendition (docs/platforms.md "Renditions").
    renditions: tuple[RenditionNote, ...] = ()
    # Appended (version 3 only; a version-2 document leaves them out): how faithfully each photo
    # reached the account, and what ground found reading the copy back ("" : nothing read).
    photos: tuple[PhotoNote, ...] = ()
    read_back: str = ""


class PhotoFidelity(StrEnum):
    """What the account holds of one photo (protocol.rules.MediaFidelity, plus renditions)."""

    EXACT = "exact"  # the astronaut's exact bytes (Bluesky blob, Flickr original, archive)
    RE_ENCODED = "re-encoded"  # the platform re-encoded the signed original it was given
    RENDITION = "rendition"  # ground sent a rendition the signed post allowed (see renditions)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhotoNote:
    """One photo of a published post on one account: its fidelity and the signed original's sha256."""

    fidelity: PhotoFidelity
    original_sha256: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RenditionNote:
    """One photo ground published as a rendition: both hashes, the recipe, the size sent."""

    photo: int  # 1-based
    original_sha256: bytes
    sha256: bytes
    recipe: str
    width: int
    height: int

    def describe(self) -> str:
        return (
            f"photo {self.photo} sent as a rendition ({self.recipe}, {self.width}×{self.height} JPEG, "
            f"sha256 {self.sha256.hex()[:16]}…; signed original {self.original_sha256.hex()[:16]}…), as allowed"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleReceipt:
    """A bundle ground accepted (with its item ids) or rejected (with the protocol code)."""

    bundle_sha256: bytes
    bundle_id: str | None
    accepted: bool
    code: str
    message: str
    item_ids: tuple[str, ...]
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountLimitsReceipt:
    """Limits ground knows for one ``platform:account``; ``None`` keeps the platform default."""

    account: str
    max_text: int | None = None
    max_media: int | None = None
    max_media_bytes: int | None = None
    url_length: int | None = None
    max_alt: int | None = None
    media_types: tuple[str, ...] | None = None
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolledReceipt:
    """The accounts an astronaut may post to, as ground has them enrolled (all of them)."""

    astronaut: str
    accounts: tuple[str, ...]
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReceipt:
    """What ground did with a cancel or retract item: ``outcome`` and a plain-words ``detail``."""

    command_id: str
    target_id: str
    outcome: CommandOutcome
    detail: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UrlTemplateReceipt:
    """One account's URL template (version 4, §9.5): ``number`` is ground's, never reused for
    other parts; ``url`` / ``remote_id`` are the parts (protocol/receipt_templates.py), None: none."""

    number: int
    account: str
    url: Parts | None
    remote_id: Parts | None
    seq: int


Receipt = (
    PublicationReceipt
    | BundleReceipt
    | AccountLimitsReceipt
    | EnrolledReceipt
    | CommandReceipt
    | UrlTemplateReceipt
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptDocument:
    issued_ms: int
    receipts: tuple[Receipt, ...]
    # Ground's latest signed transparency-log checkpoint (§15) when the document was made, or "":
    # the crew keeps it to check later that what ground shows the public is what it told them.
    checkpoint: str = ""
    # The body's version: 3 carries photo fidelity (§9.4); a version-2 document has none.
    version: int = RECEIPTS_VERSION


def _renditions_wire(r: PublicationReceipt) -> list[list[Any]]:
    return [[n.photo, n.original_sha256, n.sha256, n.recipe, n.width, n.height] for n in r.renditions]


def _entry(r: Receipt, version: int) -> list[Any]:
    if isinstance(r, PublicationReceipt):
        head = [
            EntryKind.PUBLICATION,
            ulid_to_bytes(r.item_id),
            r.account,
            r.state,
            r.url,
            r.error,
            r.seq,
            r.remote_id,
        ]
        if version >= RECEIPTS_VERSION_FIDELITY:
            return [
                *head,
                _renditions_wire(r) or None,
                [[str(p.fidelity), p.original_sha256] for p in r.photos] or None,
                r.read_back or None,
            ]
        # Version 2 ends at the 8th field unless the 9th (renditions) has something to say.
        return [*head, *([_renditions_wire(r)] if r.renditions else [])]
    if isinstance(r, AccountLimitsReceipt):
        return [
            EntryKind.ACCOUNT_LIMITS,
            r.account,
            r.max_text,
            r.max_media,
            r.max_media_bytes,
            r.url_length,
            r.max_alt,
            None if r.media_types is None else list(r.media_types),
            r.seq,
        ]
    if isinstance(r, EnrolledReceipt):
        return [EntryKind.ENROLLED, r.astronaut, list(r.accounts), r.seq]
    if isinstance(r, CommandReceipt):
        return [
            EntryKind.COMMAND,
            ulid_to_bytes(r.command_id),
            ulid_to_bytes(r.target_id),
            str(r.outcome),
            r.detail,
            r.seq,
        ]
    assert isinstance(r, BundleReceipt), r  # templates are written by _encode_entries (version 4)
    return [
        EntryKind.BUNDLE,
        r.bundle_sha256,
        None if r.bundle_id is None else ulid_to_bytes(r.bundle_id),
        r.accepted,
        r.code,
        r.message,
        [ulid_to_bytes(i) for i in r.item_ids],
        r.seq,
    ]


def _compact_publication(
    r: PublicationReceipt, bundle_items: list[str], templates: Sequence[UrlTemplateReceipt]
) -> list[Any]:
    """A version-4 publication entry (§9.5): the post by its place in the bundle entry before
    it, the state by number, URL and id by template and key when one fits, nils at the end left off."""
    item: Any = bundle_items.index(r.item_id) if r.item_id in bundle_items else ulid_to_bytes(r.item_id)
    where: list[Any] | None = None
    if r.url is not None or r.remote_id is not None:
        mine = [(t.number, t.url, t.remote_id) for t in templates if t.account == r.account]
        found = best(mine, r.item_id, r.url, r.remote_id)
        where = list(found) if found is not None else [r.url, r.remote_id]
    fields = [
        EntryKind.PUBLICATION,
        item,
        r.account,
        _STATE_NUMBER.get(r.state, r.state),
        r.seq,
        where,
        r.error,
        _renditions_wire(r) or None,
        [[str(p.fidelity), p.original_sha256] for p in r.photos] or None,
        r.read_back or None,
    ]
    while fields[-1] is None:
        fields.pop()
    return fields


def _encode_entries(
    receipts: Sequence[Receipt], version: int, held: Sequence[UrlTemplateReceipt]
) -> list[list[Any]]:
    if version < RECEIPTS_VERSION_COMPACT:
        return [_entry(r, version) for r in receipts if not isinstance(r, UrlTemplateReceipt)]
    templates = [*held, *(r for r in receipts if isinstance(r, UrlTemplateReceipt))]
    templates.sort(key=lambda t: -t.number)  # the newest first where two give the same key
    out: list[list[Any]] = []
    bundle_items: list[str] = []
    for r in receipts:
        if isinstance(r, UrlTemplateReceipt):
            out.append(
                [
                    EntryKind.URL_TEMPLATE,
                    r.number,
                    r.account,
                    None if r.url is None else list(r.url),
                    None if r.remote_id is None else list(r.remote_id),
                    r.seq,
                ]
            )
        elif isinstance(r, PublicationReceipt):
            out.append(_compact_publication(r, bundle_items, templates))
        else:
            if isinstance(r, BundleReceipt):
                bundle_items = list(r.item_ids)
            out.append(_entry(r, version))
    return out


def answer_version(asked: Iterable[int]) -> int:
    """The version to write for a station that listed ``asked`` (§9.3): the newest both sides
    know, else 2 (a station that listed nothing is one that reads only 2)."""
    return max(set(asked) & RECEIPTS_VERSIONS, default=RECEIPTS_VERSION)


def sign_receipts(
    key: SigningKey,
    issued_ms: int,
    receipts: Iterable[Receipt],
    *,
    checkpoint: str = "",
    version: int = RECEIPTS_VERSION,
    held_templates: Iterable[UrlTemplateReceipt] = (),
) -> bytes:
    """Encode and sign a receipts document with ground's key (``checkpoint``: its latest log head).

    ``version`` 2 (what every onboard reads) leaves out each publication's ``photos`` and
    ``read_back``; 3 carries them; 4 says the same as 3 compactly (§9.5) — write 3 or 4 only to a
    station that asked for it (§9.3). Version 4 names a URL by a template in the document or in
    ``held_templates`` (those the reader already holds); versions 2 and 3 leave templates out.
    Template entries go first in a version-4 document (the decoder reads them before the rest).
    """
    if version not in RECEIPTS_VERSIONS:
        raise LocalProtocolError(f"receipts version {version} is not one this side writes")
    rs = list(receipts)
    if version >= RECEIPTS_VERSION_COMPACT:
        rs.sort(key=lambda r: not isinstance(r, UrlTemplateReceipt))  # stable: the rest keep their order
    fields: list[Any] = [version, issued_ms, _encode_entries(rs, version, list(held_templates))]
    if checkpoint:
        fields.append(checkpoint)
    body = pack(fields)
    return pack([body, key_id(key.public_key), key.sign(RECEIPTS_DOMAIN + body)])


def _opt_str(v: Any, what: str) -> str | None:
    return None if v is None else str(expect(v, str, what=what))


def _id(v: Any, what: str) -> str:
    raw = expect(v, bytes, what=what)
    if len(raw) != 16:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} must be 16 bytes")
    return ulid_from_bytes(raw)


def _decode_entry(v: Any, version: int) -> Receipt:
    e = expect_list(v, what="receipt entry", min_len=1)
    kind = expect(e[0], int, what="receipt kind")
    if kind == EntryKind.PUBLICATION and version >= RECEIPTS_VERSION_FIDELITY:
        # min_len only: fields appended by a later ground are ignored (see the module doc).
        expect_list(e, what="publication receipt", min_len=11)
        return PublicationReceipt(
            item_id=_id(e[1], "receipt item id"),
            account=expect(e[2], str, what="receipt account"),
            state=expect(e[3], str, what="receipt state"),
            url=_opt_str(e[4], "receipt url"),
            error=_opt_str(e[5], "receipt error"),
            seq=_seq(e[6]),
            remote_id=_opt_str(e[7], "receipt remote id"),
            renditions=() if e[8] is None else _renditions(e[8]),
            photos=() if e[9] is None else _photos(e[9]),
            read_back=_read_back(e[10]),
        )
    if kind == EntryKind.PUBLICATION:
        expect_list(e, what="publication receipt", min_len=8, max_len=9)
        return PublicationReceipt(
            item_id=_id(e[1], "receipt item id"),
            account=expect(e[2], str, what="receipt account"),
            state=expect(e[3], str, what="receipt state"),
            url=_opt_str(e[4], "receipt url"),
            error=_opt_str(e[5], "receipt error"),
            seq=_seq(e[6]),
            remote_id=_opt_str(e[7], "receipt remote id"),
            renditions=_renditions(e[8]) if len(e) == 9 else (),
        )
    if kind == EntryKind.BUNDLE:
        expect_list(e, what="bundle receipt", min_len=8, max_len=8)
        sha = expect(e[1], bytes, what="bundle sha256")
        if len(sha) != 32:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "bundle sha256 must be 32 bytes")
        ids = expect_list(e[6], what="bundle item ids", min_len=0, max_len=MAX_ENTRIES)
        return BundleReceipt(
            bundle_sha256=sha,
            bundle_id=None if e[2] is None else _id(e[2], "bundle id"),
            accepted=expect(e[3], bool, what="accepted flag"),
            code=expect(e[4], str, what="rejection code"),
            message=expect(e[5], str, what="rejection message"),
            item_ids=tuple(_id(i, "bundle item id") for i in ids),
            seq=_seq(e[7]),
        )
    if kind == EntryKind.ACCOUNT_LIMITS:
        # min_len only: fields appended by a later ground are ignored (see the module doc).
        expect_list(e, what="account limits receipt", min_len=9)
        types = None
        if e[7] is not None:
            raw = expect_list(e[7], what="account media types", min_len=0, max_len=MAX_MEDIA_TYPES)
            types = tuple(expect(t, str, what="account media type") for t in raw)
        return AccountLimitsReceipt(
            account=expect(e[1], str, what="limits account"),
            max_text=_opt_limit(e[2], "max_text"),
            max_media=_opt_limit(e[3], "max_media"),
            max_media_bytes=_opt_limit(e[4], "max_media_bytes"),
            url_length=_opt_limit(e[5], "url_length"),
            max_alt=_opt_limit(e[6], "max_alt"),
            media_types=types,
            seq=_seq(e[8]),
        )
    if kind == EntryKind.ENROLLED:
        expect_list(e, what="enrolled accounts receipt", min_len=4, max_len=4)
        accounts = expect_list(e[2], what="enrolled accounts", min_len=0, max_len=MAX_ACCOUNTS)
        return EnrolledReceipt(
            astronaut=expect(e[1], str, what="enrolled astronaut"),
            accounts=tuple(expect(a, str, what="enrolled account") for a in accounts),
            seq=_seq(e[3]),
        )
    if kind == EntryKind.COMMAND:
        expect_list(e, what="command receipt", min_len=6, max_len=6)
        outcome = expect(e[3], str, what="command outcome")
        if outcome not in {str(o) for o in CommandOutcome}:
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown command outcome {outcome!r}")
        return CommandReceipt(
            command_id=_id(e[1], "command id"),
            target_id=_id(e[2], "command target id"),
            outcome=CommandOutcome(outcome),
            detail=expect(e[4], str, what="command detail"),
            seq=_seq(e[5]),
        )
    raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown receipt kind {kind}")


def _decode_template(e: list[Any]) -> UrlTemplateReceipt:
    expect_list(e, what="URL template receipt", min_len=6)  # later fields ignored (still signed)
    number = expect(e[1], int, what="URL template number")
    if not 0 <= number < MAX_TEMPLATE_NUMBER:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"URL template number {number} is out of range")
    return UrlTemplateReceipt(
        number=number,
        account=expect(e[2], str, what="URL template account"),
        url=check_parts(e[3], "URL template"),
        remote_id=check_parts(e[4], "platform id template"),
        seq=_seq(e[5]),
    )


def _decode_compact_publication(
    e: list[Any], bundle_items: tuple[str, ...], templates: Mapping[int, UrlTemplateReceipt]
) -> PublicationReceipt:
    """A version-4 publication entry (§9.5), its URL and platform id rebuilt from the template."""
    expect_list(e, what="publication receipt", min_len=5)  # later fields ignored (still signed)
    f = [*e, *[None] * (10 - len(e))]
    if isinstance(f[1], int) and not isinstance(f[1], bool):
        if not 0 <= f[1] < len(bundle_items):
            raise RemoteProtocolError(
                ErrorCode.MALFORMED,
                f"publication receipt names post {f[1]} of a bundle entry that has no such post",
            )
        item_id = bundle_items[f[1]]
    else:
        item_id = _id(f[1], "receipt item id")
    account = expect(f[2], str, what="receipt account")
    state = f[3]
    if isinstance(state, int) and not isinstance(state, bool):
        if not 0 <= state < len(PUBLICATION_STATES):
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"publication state number {state} is unknown")
        state = PUBLICATION_STATES[state]
    url, remote_id = _where(f[5], item_id, account, templates)
    return PublicationReceipt(
        item_id=item_id,
        account=account,
        state=expect(state, str, what="receipt state"),
        url=url,
        error=_opt_str(f[6], "receipt error"),
        seq=_seq(f[4]),
        remote_id=remote_id,
        renditions=() if f[7] is None else _renditions(f[7]),
        photos=() if f[8] is None else _photos(f[8]),
        read_back=_read_back(f[9]),
    )


def _where(
    v: Any, item_id: str, account: str, templates: Mapping[int, UrlTemplateReceipt]
) -> tuple[str | None, str | None]:
    """A publication's (url, remote_id): spelled out, or rebuilt from a template and its key."""
    if v is None:
        return None, None
    w = expect_list(v, what="publication URL", min_len=2, max_len=2)
    if not isinstance(w[0], int) or isinstance(w[0], bool):
        return _opt_str(w[0], "receipt url"), _opt_str(w[1], "receipt remote id")
    t = templates.get(w[0])
    if t is None:
        raise UnknownTemplateError(w[0], account)
    if t.account != account:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"URL template {w[0]} is {t.account}'s, not {account}'s"
        )
    key = expect(w[1], str, what="publication URL key")
    if len(key) > MAX_KEY_CHARS:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"publication URL key is over {MAX_KEY_CHARS} characters"
        )
    return expand(t.url, item_id, key), expand(t.remote_id, item_id, key)


def _decode_compact(entries: list[Any], known: Mapping[int, UrlTemplateReceipt]) -> tuple[Receipt, ...]:
    """Version 4's entries: its templates first (with those the reader holds), then the rest in order."""
    templates = dict(known)
    out: list[Receipt] = []
    bundle_items: tuple[str, ...] = ()
    for v in entries:
        e = expect_list(v, what="receipt entry", min_len=1)
        kind = expect(e[0], int, what="receipt kind")
        if kind == EntryKind.URL_TEMPLATE:
            t = _decode_template(e)
            templates[t.number] = t
    for v in entries:
        e = v
        kind = e[0]
        if kind == EntryKind.URL_TEMPLATE:
            out.append(_decode_template(e))
        elif kind == EntryKind.PUBLICATION:
            out.append(_decode_compact_publication(e, bundle_items, templates))
        else:
            r = _decode_entry(e, RECEIPTS_VERSION_FIDELITY)
            if isinstance(r, BundleReceipt):
                bundle_items = r.item_ids
            out.append(r)
    return tuple(out)


# A post has at most 16 photos (docs/PROTOCOL.md §11).
MAX_RENDITIONS = 16


def _renditions(v: Any) -> tuple[RenditionNote, ...]:
    notes = []
    for n in expect_list(v, what="receipt renditions", min_len=1, max_len=MAX_RENDITIONS):
        f = expect_list(n, what="receipt rendition", min_len=6, max_len=6)
        orig, sha = (
            expect(f[1], bytes, what="rendition original"),
            expect(f[2], bytes, what="rendition sha256"),
        )
        photo, width, height = (expect(f[i], int, what="rendition size") for i in (0, 4, 5))
        if len(orig) != 32 or len(sha) != 32 or not 1 <= photo <= MAX_RENDITIONS:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "receipt rendition: bad photo number or sha256")
        if not (0 < width <= MAX_LIMIT_VALUE and 0 < height <= MAX_LIMIT_VALUE):
            raise RemoteProtocolError(ErrorCode.MALFORMED, "receipt rendition: bad size")
        recipe = expect(f[3], str, what="rendition recipe")
        notes.append(
            RenditionNote(
                photo=photo, original_sha256=orig, sha256=sha, recipe=recipe, width=width, height=height
            )
        )
    return tuple(notes)


_FIDELITIES = {str(f): f for f in PhotoFidelity}


def _photos(v: Any) -> tuple[PhotoNote, ...]:
    notes = []
    for n in expect_list(v, what="receipt photos", min_len=1, max_len=MAX_RENDITIONS):
        f = expect_list(n, what="receipt photo", min_len=2, max_len=2)
        fidelity = _FIDELITIES.get(expect(f[0], str, what="photo fidelity"))
        if fidelity is None:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"receipt photo fidelity {f[0]!r} is not one of {', '.join(_FIDELITIES)}"
            )
        sha = expect(f[1], bytes, what="photo original sha256")
        if len(sha) != 32:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "receipt photo: original sha256 must be 32 bytes")
        notes.append(PhotoNote(fidelity=fidelity, original_sha256=sha))
    return tuple(notes)


def _read_back(v: Any) -> str:
    if v is None:
        return ""
    text = str(expect(v, str, what="read-back note"))
    if not text or len(text) > MAX_READ_BACK_CHARS:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"read-back note must be 1..{MAX_READ_BACK_CHARS} characters (nil for none)"
        )
    return text


def _seq(v: Any) -> int:
    n = expect(v, int, what="receipt seq")
    if n < 0:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"receipt seq {n} is negative")
    return int(n)


def _opt_limit(v: Any, what: str) -> int | None:
    if v is None:
        return None
    n = expect(v, int, what=f"account limit {what}")
    if not 0 <= n <= MAX_LIMIT_VALUE:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"account limit {what} {n} is out of range")
    return int(n)


def verify_receipts(
    data: bytes,
    ground_public_key: bytes,
    *,
    max_bytes: int = MAX_RECEIPTS_BYTES,
    templates: Mapping[int, UrlTemplateReceipt] | None = None,
) -> ReceiptDocument:
    """Check the signature by the pinned ground key first, then decode the entries.

    ``templates``: the URL templates the reader holds from earlier documents (version 4, §9.5),
    by number; the document's publications come back with their URL and id rebuilt.
    Raises RemoteProtocolError (BAD_SIGNATURE, UNKNOWN_KEY or a decoding code).
    """
    outer = expect_list(
        unpack(data, what="receipts document", max_bytes=max_bytes),
        what="receipts document",
        min_len=3,
        max_len=3,
    )
    body = expect(outer[0], bytes, what="receipts body")
    kid = expect(outer[1], bytes, what="receipts key id")
    sig = expect(outer[2], bytes, what="receipts signature")
    if len(kid) != KEY_ID_BYTES or len(sig) != 64:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "receipts key id must be 8 bytes and signature 64")
    if kid != key_id(ground_public_key):
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_KEY,
            f"receipts signed by key {kid.hex()}, not the pinned ground key {key_id(ground_public_key).hex()}; "
            "re-run `onboard link add` with a token file from this ground",
        )
    if not verify_signature(ground_public_key, sig, RECEIPTS_DOMAIN + body):
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE, "receipts signature is invalid: the document was altered"
        )
    v = expect_list(
        unpack(body, what="receipts body", max_bytes=max_bytes), what="receipts body", min_len=3, max_len=4
    )
    version = expect(v[0], int, what="receipts version")
    if version not in RECEIPTS_VERSIONS:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"receipts version {version} is not supported (this onboard reads versions "
            f"{', '.join(map(str, sorted(RECEIPTS_VERSIONS)))}; "
            "ask ground for a new document with `ground receipts --out F`, or upgrade the side that is older)",
        )
    entries = expect_list(v[2], what="receipt entries", min_len=0, max_len=MAX_ENTRIES)
    checkpoint = expect(v[3], str, what="log checkpoint") if len(v) == 4 else ""
    if len(checkpoint) > MAX_CHECKPOINT_CHARS:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "log checkpoint in receipts is too long")
    return ReceiptDocument(
        issued_ms=expect(v[1], int, what="issued time"),
        receipts=_decode_compact(entries, templates or {})
        if version >= RECEIPTS_VERSION_COMPACT
        else tuple(_decode_entry(e, version) for e in entries),
        checkpoint=checkpoint,
        version=version,
    )
