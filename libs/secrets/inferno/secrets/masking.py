"""What counts as a secret, and masking it wherever text leaves a process (DESIGN §9).

Shared by every service and the CLI: log lines (`inferno.runtime.logs`), api responses, the
events API and anything printed. Values of secret-looking keys (api_key, token, password,
secret, authorization, ...) become "***" at any depth; `sk-...` keys, bearer tokens and URL
credentials (the userinfo, and the value of a query parameter whose name looks secret) are
masked inside any string, as is any secret the process was told of with `remember_secret`. A
placeholder `{{sec-<32 hex>}}` (`inferno.secrets.urls`) is a reference, not a secret, and stays.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"

# scheme://<credentials>@host -> scheme://***@host; also inside comma-separated server lists
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^@/\s,]+@")


def mask_url(url: str) -> str:
    """Hide the credentials part of every URL in `url`: nats://user:pass@h -> nats://***@h."""
    return _URL_CREDENTIALS.sub(rf"\g<scheme>{MASK}@", url)


# key names (lower-cased, '-' as '_') whose values are secrets; matched on the key's end, so
# `openai_api_key` and `access_token` are masked while `max_tokens` and `secret_ref` are not
_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|token|password|passwd|secret|secret_key|access_key|private_key"
    r"|authorization|credentials|cookie)$"
)
# query parameter names (lower-cased, '-' and '.' as '_') whose values are secrets, beyond the
# secret key names: `?key=`, `?sig=` (Azure SAS), `X-Amz-Signature`, `subscription-key`, ...
_SECRET_PARAM = re.compile(r"(^|_)(key|sig|signature|auth|credential|pass|pwd|jwt|session)$")
PLACEHOLDER = re.compile(r"\{\{(sec-[0-9a-f]{32})\}\}")
"""Where a secret taken out of a string (a URL's credentials) was: `{{<its ref>}}`."""
_SECRET_TEXT = [  # (what a match must contain, lower-cased; the pattern; its replacement)
    ("sk-", re.compile(r"sk-[A-Za-z0-9_-]{8,}"), MASK),
    ("bearer", re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {MASK}"),
    (
        "://",
        re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(?!\{\{sec-[0-9a-f]{32}\}\}@)[^@/\s,]+@"),
        rf"\1{MASK}@",
    ),
]
_QUERY_PARAM = re.compile(r"([?&])([^=&#?\s\"'<>]+)=([^&#\s\"'<>,]+)")
_MIN_KNOWN_SECRET = 8  # shorter strings would mask innocent text everywhere
_known_secrets: tuple[str, ...] = ()  # replaced, never mutated: loggers in threads iterate it


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _is_secret_key_name(key)


@functools.lru_cache(maxsize=4096)
def _is_secret_key_name(key: str) -> bool:
    """Cached: every log line asks it of the same few keys."""
    return bool(_SECRET_KEY.search(key.lower().replace("-", "_")))


def is_secret_param(name: str) -> bool:
    """Whether a URL query parameter (percent-decoded) or an HTTP header carries a secret: a
    secret key name, or one ending in key, sig, signature, auth, credential, pass, pwd, jwt or
    session. Wider than `is_secret_key`, since on the wire these names mean credentials."""
    normal = name.lower().replace("-", "_").replace(".", "_")
    return is_secret_key(normal) or bool(_SECRET_PARAM.search(normal))


def is_headers(key: object) -> bool:
    """`default_headers`: a key whose value maps HTTP header names to values."""
    return isinstance(key, str) and key.lower().endswith("headers")


def is_secret_name(key: object, headers: bool = False) -> bool:
    """Whether a config key's value is a secret; `headers`: the key is a header's name (inside
    an `is_headers` mapping), where the wider `is_secret_param` rule applies."""
    return is_secret_key(key) or (headers and isinstance(key, str) and is_secret_param(key))


def remember_secret(value: Any) -> None:
    """Mask the strings in `value` wherever they appear from now on, in this process: for
    secrets it fetched (an executor resolving refs), which no pattern might match."""
    global _known_secrets
    if isinstance(value, str):
        if len(value) >= _MIN_KNOWN_SECRET and value not in _known_secrets:
            _known_secrets = (*_known_secrets, value)
    elif isinstance(value, Mapping):
        for item in value.values():
            remember_secret(item)
    elif isinstance(value, list | tuple):
        for item in value:
            remember_secret(item)


def mask_text(text: str) -> str:
    """Each pattern runs only where the text holds what any match of it must contain: every
    log line is masked, and most hold none of them."""
    for known in _known_secrets:
        if known in text:
            text = text.replace(known, MASK)
    lowered = text.lower()
    for needle, pattern, replacement in _SECRET_TEXT:
        if needle in lowered:
            text = pattern.sub(replacement, text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_mask_param, text)
    return text


def _mask_param(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if PLACEHOLDER.fullmatch(value) or not is_secret_param(unquote_plus(name)):
        return match.group(0)
    return f"{separator}{name}={MASK}"


def mask_value(value: Any) -> Any:
    """`value` with secrets masked: secret-named keys of mappings, and secrets inside strings."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {
            k: (MASK if v is not None else None) if is_secret_key(k) else mask_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v) for v in value]
    return value
