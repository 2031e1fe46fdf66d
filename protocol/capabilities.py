"""What a side can decode, as one short token both a file hand-off and HTTP can carry.

Onboard only writes a codec (and a text dictionary) the receiving ground says it decodes;
anything else travels in a form every side reads (zstd or as-is). The codec of every
section is also marked in the bundle header, so a bundle is self-describing either way
(docs/PROTOCOL.md §5, §10).

Token form:
``codecs=0,1,2,3;dicts=6f700001,6f700002,6f700003;formats=1,2;bodies=1,2;compact_bodies=1,2;receipts=2,3;link=1,2``
— codec ids in decimal, dictionary ids in hex, bundle format versions, item body versions,
receipts versions and live-link versions in decimal (a token without ``formats`` means format 1
only, without ``bodies`` body version 1 only, without ``compact_bodies`` that the compact items
section of formats 2 and 3 carries body version 1 only, without ``receipts`` receipts version 2
only, without ``link`` link version 1 only).
Unknown ``key=value`` parts are ignored so later versions can add keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codecs import Codec
from .errors import ErrorCode, RemoteProtocolError

# The longest token we parse; a peer's token is tiny, and anything bigger is not one.
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """Codec ids a side decodes and the text dictionary ids it has."""

    codecs: frozenset[int]
    dictionaries: frozenset[int] = frozenset()
    formats: frozenset[int] = frozenset({1})
    # Item body versions (docs/PROTOCOL.md §3, §3.1): onboard writes a version-2 body (a
    # rendition consent) only to a ground that lists 2 here.
    bodies: frozenset[int] = frozenset({1})
    # Item body versions the compact items section (formats 2 and 3) may carry (docs §14.8): a
    # ground of the release that added the rendition column lists 2; an older one refuses it.
    compact_bodies: frozenset[int] = frozenset({1})
    # Receipts document versions ground writes on request (docs §9.4): with 3 listed, onboard
    # asks for version 3 (photo fidelity per account); otherwise it asks as before, for 2.
    receipts: frozenset[int] = frozenset({2})
    # Live-link versions (docs/PROTOCOL.md §8.2): 2 = an OPEN may carry a receipts cursor,
    # answered with the receipts inside its STATUS. Onboard asks so only of a ground listing 2.
    link: frozenset[int] = frozenset({1})

    def compact_carries(self, version: int) -> bool:
        return version in self.compact_bodies

    def writes_receipts(self, version: int) -> bool:
        return version in self.receipts

    def speaks_link(self, version: int) -> bool:
        return version in self.link

    def reads_body(self, version: int) -> bool:
        return version in self.bodies

    def decodes(self, codec: int) -> bool:
        return codec in self.codecs

    def reads_format(self, version: int) -> bool:
        return version in self.formats

    def has_dictionary(self, dict_id: int) -> bool:
        return Codec.ZSTD_DICT in self.codecs and dict_id in self.dictionaries

    def to_token(self) -> str:
        """The one-line form, e.g. for an HTTP header or a file next to the bundles."""
        codecs = ",".join(str(c) for c in sorted(self.codecs))
        dicts = ",".join(f"{d:x}" for d in sorted(self.dictionaries))
        formats = ",".join(str(f) for f in sorted(self.formats))
        token = f"codecs={codecs};dicts={dicts};formats={formats}"
        if self.bodies != {1}:
            # Left out when it says nothing new, so a token stays what older grounds compared.
            token += ";bodies=" + ",".join(str(b) for b in sorted(self.bodies))
        if self.compact_bodies != {1}:
            token += ";compact_bodies=" + ",".join(str(b) for b in sorted(self.compact_bodies))
        if self.receipts != {2}:
            token += ";receipts=" + ",".join(str(b) for b in sorted(self.receipts))
        if self.link != {1}:
            token += ";link=" + ",".join(str(v) for v in sorted(self.link))
        return token

    @classmethod
    def from_token(cls, token: str) -> Capabilities:
        """Parse a peer's token; RemoteProtocolError (MALFORMED) saying what is wrong."""
        if len(token) > MAX_TOKEN_CHARS:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"capability token is {len(token)} characters, limit {MAX_TOKEN_CHARS}"
            )
        fields: dict[str, str] = {}
        for part in token.strip().split(";"):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise RemoteProtocolError(
                    ErrorCode.MALFORMED, f"capability token part {part!r} is not key=value"
                )
            fields[key.strip()] = value.strip()
        if "codecs" not in fields:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "capability token has no codecs=… part")
        return cls(
            codecs=_ints(fields["codecs"], 10, "codec id"),
            dictionaries=_ints(fields.get("dicts", ""), 16, "dictionary id"),
            formats=_ints(fields.get("formats", "1"), 10, "bundle format") or frozenset({1}),
            bodies=_ints(fields.get("bodies", "1"), 10, "body version") or frozenset({1}),
            compact_bodies=_ints(fields.get("compact_bodies", "1"), 10, "compact body version")
            or frozenset({1}),
            receipts=_ints(fields.get("receipts", "2"), 10, "receipts version") or frozenset({2}),
            link=_ints(fields.get("link", "1"), 10, "link version") or frozenset({1}),
        )


def _ints(text: str, base: int, what: str) -> frozenset[int]:
    out = set()
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if len(piece) > 10 or not piece.isascii() or not piece.isalnum():
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"capability {what} {piece!r} is not a number")
        try:
            out.add(int(piece, base))
        except ValueError:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"capability {what} {piece!r} is not a number"
            ) from None
    return frozenset(out)


# What every orbitpost side has always decoded: assume no more of a peer that says nothing.
BASELINE = Capabilities(codecs=frozenset({Codec.IDENTITY, Codec.ZSTD}))
