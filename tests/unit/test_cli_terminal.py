"""What the CLI prints cannot control the terminal, and stays bounded (issue 7 item 3)."""

from __future__ import annotations

import io
import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from inferno.client.cli import JsonlSink
from inferno.client.terminal import UNSAFE, clip, json_safe, printable

EVIL = "ok\x1b[2J\x1b[31mFAKE\x1b]0;pwned\x07\nline2"


def test_printable_escapes_escape_sequences_and_newlines() -> None:
    assert printable(EVIL) == "ok\\x1b[2J\\x1b[31mFAKE\\x1b]0;pwned\\x07\\nline2"


def test_printable_escapes_del_c1_bidi_separators_and_surrogates() -> None:
    text = "a\x7fb\x9b31mc\u202egnp.exe\u2066d\u2028e\ud800"
    assert printable(text) == "a\\x7fb\\x9b31mc\\u202egnp.exe\\u2066d\\u2028e\\ud800"
    printable(text).encode("utf-8")  # a lone surrogate would make print() raise
    assert printable("naïve 名前 🙂 tab\tend") == "naïve 名前 🙂 tab\\tend"


@given(st.text())
def test_printable_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) in UNSAFE for c in shown)
    assert not any(unicodedata.category(c) == "Cc" for c in shown)


def test_printable_cuts_to_width_with_an_ellipsis() -> None:
    assert printable("x" * 100_000, 40) == "x" * 39 + "…"
    assert printable("x" * 40, 40) == "x" * 40
    assert printable("\x1b" * 100, 10) == "\\x1b\\x1b\\…"
    assert clip("abc", None) == "abc"


def test_json_safe_keeps_the_data_and_hides_what_terminals_act_on() -> None:
    line = json.dumps({"output": "x\x7f\x9b2J\u202e\u2028y"}, ensure_ascii=False)
    safe = json_safe(line)
    assert not any(ord(c) in UNSAFE for c in safe)
    assert json.loads(safe) == json.loads(line)


def test_jsonl_sink_decodes_characters_split_across_chunks() -> None:
    data = (json.dumps({"output": "名前\x9b"}, ensure_ascii=False) + "\n").encode()
    out = io.StringIO()
    sink = JsonlSink(out)
    for i in range(len(data)):  # one byte at a time: every multi-byte character is split
        sink.write(data[i : i + 1])
    sink.close()
    assert json.loads(out.getvalue()) == {"output": "名前\x9b"}
    assert "\x9b" not in out.getvalue()
