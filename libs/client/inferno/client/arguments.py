"""What a person types, turned into what the api takes: `--set` paths into clone changes, ids
or unique name prefixes into ids. Pure (no I/O), so each rule is unit-tested; errors are
`UsageError` (exit 2) and list a few of the candidates, never all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from inferno.client.tables import CELL_WIDTH, field
from inferno.client.terminal import ELLIPSIS, clip, printable

CLONE_FIELDS = (
    "pipeline_name",
    "pipeline_type",
    "model_config",
    "sampling_params",
    "client_config",
    "rpm_limit",
    "tpm_limit",
    "resources",
    "endpoint_limit",
)
LISTED = 5  # names an error lists before it says "e.g."


class UsageError(Exception):
    """Bad input from the person at the terminal: exit 2."""


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """`["sampling_params.temperature=0.7", "pipeline_name=x"]` → nested clone changes. Values
    are JSON when they parse as JSON (0.7, true, null, {"a": 1}), strings otherwise."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. sampling_params.top_p=0.9")
        if path[0] not in CLONE_FIELDS:
            raise UsageError(f"--set {item!r}: {path[0]!r} is not one of {', '.join(CLONE_FIELDS)}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = changes
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {item!r}: {part!r} was already set to a value")
            node = child
        node[path[-1]] = value
    return changes


def clone_changes(
    name: str | None,
    sets: Iterable[str],
    model_config: str | None = None,
    sampling_params: str | None = None,
) -> dict[str, Any]:
    """The clone body: --model-config/--sampling-params JSON objects, then --set on top."""
    changes: dict[str, Any] = {}
    for flag, raw in (("model-config", model_config), ("sampling-params", sampling_params)):
        if raw is None:
            continue
        try:
            value = json.loads(raw)
        except ValueError as error:
            raise UsageError(f"--{flag}: not valid JSON ({error})") from None
        if not isinstance(value, dict):
            raise UsageError(f"--{flag}: must be a JSON object")
        changes[flag.replace("-", "_")] = value
    for key, value in parse_set(sets).items():
        if isinstance(value, dict) and isinstance(changes.get(key), dict):
            changes[key] = {**changes[key], **value}
        else:
            changes[key] = value
    if name:
        changes["pipeline_name"] = name
    return changes


def resolve_pipeline(token: str, pipelines: Sequence[dict[str, Any]]) -> int:
    """A pipeline id, or the one live pipeline whose name is `token` or starts with it."""
    if token.isdigit():
        return int(token)
    live = [p for p in pipelines if p.get("status") != "deleted"]
    exact = [p for p in live if field(p, "pipeline_name") == token]
    matches = exact or [p for p in live if str(field(p, "pipeline_name", "")).startswith(token)]
    if len(matches) == 1:
        return int(matches[0]["pipeline_id"])
    if not matches:
        listed = listing("pipeline", [_label(p) for p in live])
        raise UsageError(f"no pipeline id or name prefix matches {_quote(token)} ({listed})")
    raise UsageError(
        f"{_quote(token)} matches {listing('pipeline', [_label(p) for p in matches])};"
        " give more of the name, or the id"
    )


def listing(what: str, labels: Sequence[str]) -> str:
    """`2 pipelines: 1 (a), 2 (b)`; past LISTED labels `2,345 pipelines, e.g. 1 (a), …`, so an
    error stays one short line however many there are."""
    count = f"{len(labels):,} {what}{'' if len(labels) == 1 else 's'}"
    if not labels:
        return f"no {what}s"
    if len(labels) <= LISTED:
        return f"{count}: {', '.join(labels)}"
    return f"{count}, e.g. {', '.join(labels[:LISTED])}, {ELLIPSIS}"


def _quote(token: str) -> str:
    return repr(clip(token, CELL_WIDTH))


def _label(pipeline: dict[str, Any]) -> str:
    return f"{pipeline['pipeline_id']} ({shown_name(pipeline)})"


def shown_name(pipeline: dict[str, Any]) -> str:
    """The name as the tables show it: escaped and cut to CELL_WIDTH."""
    return printable(field(pipeline, "pipeline_name", "?"), CELL_WIDTH)


def resolve_experiment(token: str, experiments: Sequence[dict[str, Any]]) -> str:
    """An experiment id, or the one experiment whose name is `token` or starts with it."""
    if any(e.get("experiment_id") == token for e in experiments):
        return token
    exact = [e for e in experiments if e.get("experiment_name") == token]
    matches = exact or [e for e in experiments if str(e.get("experiment_name")).startswith(token)]
    if len(matches) == 1:
        return str(matches[0]["experiment_id"])
    if not matches:
        listed = listing("experiment", [_experiment_label(e) for e in experiments])
        raise UsageError(f"no experiment id or name prefix matches {_quote(token)} ({listed})")
    listed = listing("experiment", [_experiment_label(e) for e in matches])
    raise UsageError(f"{_quote(token)} matches {listed}; give its id")


def _experiment_label(experiment: dict[str, Any]) -> str:
    name = clip(str(experiment.get("experiment_name")), CELL_WIDTH)
    return f"{clip(str(experiment['experiment_id']), CELL_WIDTH)} ({name})"
