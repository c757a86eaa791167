"""Datasets in INFERNO_DATA: stored once under their content digest, read back to validate."""

from __future__ import annotations

from typing import Any

from nats.js.errors import NotFoundError

from inferno.api.deps import Gateway
from inferno.api.errors import bad_field
from inferno.events.datasets import dataset_ref, from_jsonl, to_jsonl


async def store_rows(gw: Gateway, rows: list[dict[str, Any]]) -> str:
    """Put the rows as canonical JSONL unless that exact content is already stored; its ref."""
    jsonl = to_jsonl(rows)
    ref = dataset_ref(jsonl)
    store = await gw.js.object_store(gw.names.data_store)
    try:
        await store.get_info(ref)
    except NotFoundError:
        await store.put(ref, jsonl)
    return ref


async def load_rows(gw: Gateway, ref: str, field: str) -> list[dict[str, Any]]:
    """The rows stored under `ref`; a 400 naming `field` when there are none."""
    store = await gw.js.object_store(gw.names.data_store)
    try:
        rows = from_jsonl((await store.get(ref)).data or b"")
    except NotFoundError:
        raise bad_field(
            field, f"no dataset {ref!r} is stored; upload it with POST /datasets"
        ) from None
    if not rows:
        raise bad_field(field, f"dataset {ref!r} has no rows")
    return rows
