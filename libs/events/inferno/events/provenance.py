"""Who issued a command and why, as the audit trail records it (pure).

The same rules serve the api (which refuses what breaks them with a 400) and the clients (the
CLI checks `--reason` and the SDK its `actor` before sending). An actor is a short line of
printable ASCII, since it travels in an HTTP header; anything else is refused. A reason is a
sentence or two of free text from a person: one that is too long is refused, and its control
and format characters are taken out rather than refused (line breaks and tabs become spaces),
since a newline, an escape sequence or a bidi override would forge lines in a terminal or a
log reader, while a pasted line break is no reason to fail a stop. Neither is ever used to
decide what a caller may do.
"""

from __future__ import annotations

import re
import unicodedata

from inferno.events.commands import MAX_REASON_LENGTH

MAX_ACTOR_LENGTH = 200
"""`user@host`, or an identity and what its client says (`alice (alice@laptop)`)."""


_LINE_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")


def check_actor(text: str) -> str | None:
    """`text` stripped, if it can be an actor (None when blank: no actor); ValueError saying
    why not."""
    actor = text.strip()
    if not actor:
        return None
    if len(actor) > MAX_ACTOR_LENGTH:
        raise ValueError(f"must be at most {MAX_ACTOR_LENGTH} characters, not {len(actor)}")
    if not all(" " <= c <= "~" for c in actor):
        raise ValueError("must be printable ASCII (no control characters)")
    return actor


def check_reason(text: str | None) -> str | None:
    """`text` on one line: line breaks and tabs as one space, other control and format
    characters (Unicode categories C*, escapes and bidi overrides among them) left out,
    stripped; None when nothing is left. ValueError when `text` is over MAX_REASON_LENGTH."""
    if text is None:
        return None
    if len(text) > MAX_REASON_LENGTH:
        raise ValueError(f"must be at most {MAX_REASON_LENGTH} characters, not {len(text)}")
    one_line = _LINE_BREAKS.sub(" ", text)
    kept = "".join(c for c in one_line if unicodedata.category(c)[0] != "C")
    return kept.strip() or None


def as_actor(text: str) -> str | None:
    """`text` made into a valid actor, for names a client did not choose (the OS user and host):
    accents dropped (José -> Jose), other non-ASCII and control characters left out, cut to
    MAX_ACTOR_LENGTH. None when nothing is left."""
    ascii_only = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    kept = "".join(c for c in ascii_only if " " <= c <= "~").strip()
    return kept[:MAX_ACTOR_LENGTH].strip() or None


def recorded_actor(identity: str | None, claim: str | None) -> str | None:
    """The actor a command records. Behind a token, the token's identity comes first, and what
    the client says follows in parentheses when it says something else (`INFERNO_TOKEN
    (bob@ci)`): the verified part is everything before the first space, since identity names
    hold none. Without a token, the claim alone."""
    if identity is None:
        return claim
    if claim is None or claim == identity:
        return identity
    return f"{identity} ({claim})"[:MAX_ACTOR_LENGTH]


def verified_part(actor: str) -> str:
    """The identity of a `recorded_actor` (`alice` of `alice (alice@laptop)`), so a filter by
    identity finds every command behind that token whatever its client said."""
    return actor.split(" (", 1)[0]
