"""Secrets in requests go to INFERNO_SECRETS, never into the log (DESIGN §9).

Before a command is appended, the value of every secret-named key (`is_secret_key`: api_key,
token, password, authorization, ...) in a pipeline's model_config, sampling_params or
client_config, at any depth, is stored in the SECRETS bucket under a fresh ref, and the key is
replaced by `<key>_ref: <ref>`. Executors resolve refs when a shard runs
(`inferno.executor.secrets`). The log, the projection and every response hold only the ref,
which is safe to show.

Inside a `*headers` mapping (`default_headers`) the wider header rule applies
(`is_secret_param`: `Ocp-Apim-Subscription-Key` too). Credentials inside a URL-valued string (its
userinfo, and secret-named query parameters such as `?api-key=`) are stored the same way, each
replaced in the string by a placeholder `{{<ref>}}` (`inferno.secrets.urls`).

- `api_key: null` becomes `api_key_ref: null`: in a clone it drops the key the parent had.
- `<key>_ref` in a request, and a placeholder in a string, must name a stored secret (a ref a
  pipeline shows): 400 otherwise.
- `api_key_env: NAME` is not a secret (it names a variable on the executors) and passes through.

A secret is stored before its command is appended; if the append fails, or a retry's command is
dropped as a duplicate, that secret is referenced by nothing (harmless, and never shown).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.js.errors import KeyNotFoundError

from inferno.api.deps import Gateway
from inferno.api.errors import bad_field
from inferno.events.commands import AnyCommand, CloneIntoContext, ClonePipeline, CreateExperiment
from inferno.events.model import PipelineChanges, PipelineSpec
from inferno.secrets.masking import is_headers, is_secret_name
from inferno.secrets.urls import refs_in, take_out

REF_SUFFIX = "_ref"
KNOBS = ("model_config", "sampling_params", "client_config")
"""The spec fields that may carry secrets."""
_REF = re.compile(r"^sec-[0-9a-f]{32}$")


def new_ref() -> str:
    """A KV key naming one stored secret (KV keys allow `-`)."""
    return f"sec-{uuid.uuid4().hex}"


def is_ref_key(key: object, headers: bool = False) -> bool:
    """`api_key_ref`: a key that holds the ref of a secret-named key's value."""
    return (
        isinstance(key, str)
        and key.endswith(REF_SUFFIX)
        and is_secret_name(key[: -len(REF_SUFFIX)], headers)
    )


@dataclass
class Found:
    """What `extract` took out of a request: values to store, and refs the request named."""

    make_ref: Callable[[], str] = new_ref
    secrets: dict[str, bytes] = field(default_factory=dict)  # ref -> JSON of the value
    named: dict[str, str] = field(default_factory=dict)  # ref given -> its field path


def extract(value: Any, where: str, found: Found, headers: bool = False) -> Any:
    """`value` with every secret-named key's value, and every credential inside a URL, replaced
    by a ref (pure but for `found`); `headers`: `value` maps header names to values."""
    if isinstance(value, str):
        for ref in refs_in(value):
            found.named.setdefault(ref, where)
        safe, parts = take_out(value, found.make_ref)
        found.secrets.update((ref, msgspec.json.encode(part)) for ref, part in parts.items())
        return safe
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            path = f"{where}.{key}"
            if is_secret_name(key, headers):
                ref_key = f"{key}{REF_SUFFIX}"
                if ref_key in value:
                    raise bad_field(path, f"give {key} or {ref_key}, not both")
                if item is None:
                    out[ref_key] = None
                else:
                    ref = found.make_ref()
                    found.secrets[ref] = msgspec.json.encode(item)
                    out[ref_key] = ref
            elif is_ref_key(key, headers):
                if item is not None:
                    if not isinstance(item, str) or not _REF.match(item):
                        raise bad_field(path, "must be a secret ref (sec-<32 hex digits>) or null")
                    found.named.setdefault(item, path)
                out[key] = item
            else:
                out[key] = extract(item, path, found, is_headers(key))
        return out
    if isinstance(value, list):
        return [extract(item, f"{where}.{i}", found) for i, item in enumerate(value)]
    return value


def _knobs(
    spec: PipelineSpec | PipelineChanges, where: str, found: Found
) -> PipelineSpec | PipelineChanges:
    prefix = f"{where}." if where else ""
    changed = {
        knob: extract(config, prefix + knob, found)
        for knob in KNOBS
        if (config := getattr(spec, knob)) is not None
    }
    return msgspec.structs.replace(spec, **changed)


def without_secrets(command: AnyCommand, found: Found) -> AnyCommand:
    """The command as it may be appended: its pipelines' secrets replaced by refs (pure but for
    `found`, which collects what to store and check)."""
    if isinstance(command, CreateExperiment):
        pipelines = [_knobs(p, f"pipelines.{i}", found) for i, p in enumerate(command.pipelines)]
        return msgspec.structs.replace(command, pipelines=pipelines)
    if isinstance(command, ClonePipeline):
        return msgspec.structs.replace(command, changes=_knobs(command.changes, "", found))
    if isinstance(command, CloneIntoContext):
        return msgspec.structs.replace(command, spec=_knobs(command.spec, "", found))
    return command


async def protect(gw: Gateway, command: AnyCommand) -> AnyCommand:
    """Store the command's secrets in INFERNO_SECRETS and return it with refs in their place;
    a 400 naming the field for a ref that names no stored secret."""
    found = Found()
    safe = without_secrets(command, found)
    if not found.secrets and not found.named:
        return safe  # nothing to store or check (a null key still became a null ref)
    kv = await gw.js.key_value(gw.names.secrets_bucket)
    for ref, path in found.named.items():
        try:
            await kv.get(ref)
        except KeyNotFoundError:  # deleted keys too
            raise bad_field(path, f"no secret {ref} is stored") from None
    for ref, value in found.secrets.items():
        await kv.create(ref, value)
    return safe
