"""Which results travel in a shard's report, and that they read back byte for byte."""

from __future__ import annotations

import msgspec

from inferno.events import encode
from inferno.events.codec import decode_report
from inferno.events.commands import ShardFinished
from inferno.jetstream.results import inline_payload, jsonl

ROWS = [msgspec.json.encode({"row_index": i, "output": 'é\n"x"'}) for i in range(3)]
SIZE = sum(map(len, ROWS)) + len(ROWS)  # the rows and one separator (or newline) each


def test_rows_that_fit_go_inline_and_read_back_as_the_same_jsonl():
    inline = inline_payload(ROWS, SIZE)
    assert inline is not None
    report = ShardFinished(executor_id="e", pipeline_id=1, shard=0, attempt=1, results=inline)
    decoded = decode_report(encode(report))
    assert isinstance(decoded, ShardFinished)
    assert jsonl(bytes(row) for row in decoded.results) == jsonl(ROWS)


def test_rows_over_the_limit_and_no_rows_go_to_the_object_store():
    assert inline_payload(ROWS, SIZE - 1) is None
    assert inline_payload([], 1 << 20) is None  # a report without results always means an object


def test_a_report_without_results_carries_no_field():
    report = ShardFinished(executor_id="e", pipeline_id=1, shard=0, attempt=1)
    assert b"results" not in encode(report)
