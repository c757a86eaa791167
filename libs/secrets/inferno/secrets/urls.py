"""Credentials inside URLs, taken out and put back (pure; DESIGN §9, docs/secrets.md).

A URL given in a pipeline's config may carry secrets in two places: its userinfo (`user:pw@`,
always a secret) and the value of each query parameter whose name looks secret
(`inferno.runtime.logs.is_secret_param`: `api-key`, `key`, `token`, `access_token`, `sig`, ...).
The api stores each such part in INFERNO_SECRETS and writes a placeholder `{{<ref>}}` in its
place (`take_out`), so the log holds `http://{{sec-…}}@host/v1?api-version=1&key={{sec-…}}`;
an executor puts the values back (`put_back`) just before an engine opens. Everything else in
the URL is kept byte for byte, so the URL an engine gets is the one the request gave.

A part that already is a placeholder is a reference (a URL copied from a response), not a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import unquote_plus

from inferno.secrets.masking import PLACEHOLDER, is_secret_param

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def placeholder(ref: str) -> str:
    return f"{{{{{ref}}}}}"


def refs_in(text: str) -> list[str]:
    """The refs of the placeholders in `text`, in order."""
    return PLACEHOLDER.findall(text)


def secret_spans(url: str) -> list[tuple[int, int]]:
    """(start, end) of the userinfo and of each secret-named query parameter's value in `url`;
    none for a string that is not an absolute URL, nor for parts that are placeholders."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return []
    start = scheme.end()
    hash_at = url.find("#", start)
    end = len(url) if hash_at == -1 else hash_at  # a fragment is never sent
    authority_end = min((i for c in "/?" if (i := url.find(c, start, end)) != -1), default=end)
    spans = []
    at = url.rfind("@", start, authority_end)
    if at > start:
        spans.append((start, at))
    query_at = url.find("?", start, end)
    if query_at != -1:
        pos = query_at + 1
        for pair in url[pos:end].split("&"):
            name, equals, value = pair.partition("=")
            if equals and value and is_secret_param(unquote_plus(name)):
                spans.append((pos + len(name) + 1, pos + len(pair)))
            pos += len(pair) + 1
    return [(a, b) for a, b in spans if not PLACEHOLDER.fullmatch(url[a:b])]


def take_out(url: str, make_ref: Callable[[], str]) -> tuple[str, dict[str, str]]:
    """`url` with each secret part replaced by a placeholder for a fresh ref, and ref -> part."""
    spans = [(make_ref(), start, end) for start, end in secret_spans(url)]
    secrets = {ref: url[start:end] for ref, start, end in spans}
    for ref, start, end in reversed(spans):  # from the end, so earlier spans stay in place
        url = url[:start] + placeholder(ref) + url[end:]
    return url, secrets


def put_back(text: str, values: Mapping[str, str]) -> str:
    """`text` with every placeholder replaced by the value of its ref (all must be in `values`)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
