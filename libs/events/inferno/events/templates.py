"""Bounds on prompt templates' format specs (pure), checked by the api and again by the renderer.

A template is `str.format` over a row, and a format spec sets widths and precisions: one
`{question:>5000000}` pads every prompt to 5 MB. The api refuses a literal spec over the bound;
a spec built from row fields (`{question:>{width}}`) is only known per row, so the executor's
renderer checks the spec it is about to apply.
"""

from __future__ import annotations

import re

MAX_FORMAT_WIDTH = 1000
"""The largest width or precision a format spec may set (`{x:>1000}`, `{x:.1000f}`)."""

_NUMBERS = re.compile(r"\d+")


def check_format_spec(spec: str) -> None:
    """Refuse a spec whose width or precision exceeds MAX_FORMAT_WIDTH. Every run of digits in a
    spec is a width or a precision (or a one-digit fill), so the largest run is the bound."""
    for digits in _NUMBERS.findall(spec):
        if len(digits) > len(str(MAX_FORMAT_WIDTH)) or int(digits) > MAX_FORMAT_WIDTH:
            raise ValueError(
                f"format spec {spec!r}: widths and precisions are at most {MAX_FORMAT_WIDTH}"
            )
