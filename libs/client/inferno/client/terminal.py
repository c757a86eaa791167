"""Text from the api made safe to show on a terminal: control characters escaped, length capped.

Names, errors and results come from a log anyone who could reach the api wrote to (and old logs
may hold names longer than today's limit), so nothing the CLI prints may move the cursor, clear
the screen, retitle the window, start a fake line, reorder a line (bidi overrides) or flood the
terminal. Every line the CLI prints goes through `printable`; JSONL it passes on goes through
`json_safe`, which escapes the same characters the JSON way so the data stays the same.
"""

from __future__ import annotations

ELLIPSIS = "…"
UNSAFE = frozenset(
    [
        *range(0x20),  # C0: ESC, BEL, CR, LF, TAB, ...
        *range(0x7F, 0xA0),  # DEL and C1 (0x9B is a one-byte CSI on some terminals)
        0x061C,  # arabic letter mark
        0x200E,  # left-to-right and right-to-left marks
        0x200F,
        *range(0x202A, 0x202F),  # bidi embeddings and overrides
        *range(0x2066, 0x206A),  # bidi isolates
        0x2028,  # line and paragraph separators
        0x2029,
        *range(0xD800, 0xE000),  # lone surrogates: printing one would raise
    ]
)
_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_DISPLAY = {c: _SHORT.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in UNSAFE}
_JSON = {c: f"\\u{c:04x}" for c in UNSAFE if c >= 0x7F}  # JSON encoders escape C0 already


def printable(text: object, width: int | None = None) -> str:
    """`text` as one line that cannot control the terminal (unsafe characters shown as `\\x1b`,
    `\\n`, `\\u202e`), cut to `width` characters with … when it is longer."""
    raw = str(text)
    if width is not None:
        raw = raw[: width + 1]  # escaping only lengthens: never escape what will not be shown
    return clip(raw.translate(_DISPLAY), width)


def clip(text: str, width: int | None) -> str:
    """`text`, or its first `width - 1` characters and … when it is longer than `width`."""
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS


def json_safe(text: str) -> str:
    """JSON text with DEL, C1, bidi controls and line separators as `\\u` escapes: the same
    data, but nothing a terminal acts on. (Outside strings JSON holds only ASCII structure.)"""
    return text.translate(_JSON)
