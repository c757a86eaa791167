"""What the api and executors agree on about scorers: the names, their options, the allow-list.

Pure. The api checks a request's scorers with `check_scorer` before anything reaches the log;
executors check again (their allow-list may differ) and run them (`inferno.executor.evaluation`).

Built-in scorers score a row 0 or 1, so their metrics default to the Wilson interval. A user
scorer is `module:function`; it runs only where `module` is in INFERNO_SCORER_MODULES (exact
module names, comma-separated), so a request can never name arbitrary code.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from inferno.events.model import Scorer

BUILTIN_SCORERS: tuple[str, ...] = ("exact_match", "contains", "regex", "numeric")
BINARY_SCORERS: frozenset[str] = frozenset(BUILTIN_SCORERS)
"""Scorers whose every score is 0 or 1 (a pass rate): Wilson by default, [0, 1] for Hoeffding."""
NEEDS_TARGET: frozenset[str] = frozenset({"exact_match", "contains", "numeric"})
"""Scorers that compare with a row field, named by the scorer's `target`."""

# text normalisation, applied to output and target alike (regex: to the output only)
TEXT_OPTIONS: dict[str, type] = {
    "normalize": bool,  # false: exact text (ignore_case and normalize_whitespace default off)
    "ignore_case": bool,
    "normalize_whitespace": bool,  # trim, and runs of whitespace -> one space
    "strip_punctuation": bool,  # drop every Unicode punctuation character
    "strip_articles": bool,  # drop the English words a, an, the
}
_TEXT_DEFAULTS = {"ignore_case": True, "normalize_whitespace": True}

OPTIONS: dict[str, dict[str, Any]] = {
    "exact_match": TEXT_OPTIONS,
    "contains": TEXT_OPTIONS,
    "regex": {**TEXT_OPTIONS, "pattern": str, "match": ("search", "full")},
    "numeric": {"tolerance": float, "relative": bool, "pick": ("first", "last")},
}
"""Options each built-in scorer takes: a type, or a tuple of the allowed string values."""

_USER = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)$")


class ScorerError(ValueError):
    """A scorer that cannot run; the message names it."""


def user_scorer(name: str) -> tuple[str, str] | None:
    """`pkg.mod:fn` -> ("pkg.mod", "fn"); None for any other name."""
    match = _USER.match(name)
    return (match["module"], match["function"]) if match else None


def text_options(options: Mapping[str, Any], *, defaults: bool = True) -> dict[str, bool]:
    """The four normalisation switches with their defaults filled in. `normalize: false` turns
    the defaults off; an explicit switch always wins. `defaults=False` (regex): all off."""
    on = defaults and options.get("normalize", True)
    return {
        key: bool(options.get(key, on and _TEXT_DEFAULTS.get(key, False)))
        for key in ("ignore_case", "normalize_whitespace", "strip_punctuation", "strip_articles")
    }


def check_scorer(scorer: Scorer, allowed_modules: Collection[str]) -> None:
    """Raise `ScorerError` unless `scorer` can run with this allow-list."""
    name = scorer.name
    if name not in OPTIONS:
        user = user_scorer(name)
        if user is None:
            raise ScorerError(
                f"unknown scorer {name!r}: use one of {', '.join(BUILTIN_SCORERS)},"
                " or a user scorer named module:function"
            )
        if user[0] not in allowed_modules:
            allowed = ", ".join(sorted(allowed_modules)) or "none"
            raise ScorerError(
                f"scorer {name!r}: module {user[0]!r} is not in INFERNO_SCORER_MODULES"
                f" (allowed: {allowed})"
            )
        return
    if name in NEEDS_TARGET and not scorer.target:
        raise ScorerError(f"{name} needs a 'target': the row field to compare with")
    if name == "regex" and scorer.target:
        raise ScorerError("scorer regex takes its pattern from options.pattern, not a target")
    _check_options(name, scorer.options)


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    known = OPTIONS[name]
    for key, value in options.items():
        kind = known.get(key)
        if kind is None:
            raise ScorerError(
                f"scorer {name}: unknown option {key!r} (known: {', '.join(sorted(known))})"
            )
        if isinstance(kind, tuple):
            ok = value in kind
            expected = " or ".join(repr(v) for v in kind)
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            expected = "a number >= 0"
        else:
            ok = isinstance(value, kind)
            expected = "true or false" if kind is bool else "a string"
        if not ok:
            raise ScorerError(f"scorer {name}: option {key!r} must be {expected}, not {value!r}")
    if name == "regex":
        pattern = options.get("pattern")
        if not pattern:
            raise ScorerError("scorer regex needs options.pattern (a regular expression)")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ScorerError(f"scorer regex: options.pattern is invalid: {error}") from None
