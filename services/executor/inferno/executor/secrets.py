"""Secret refs in a pipeline's spec, resolved when a shard runs (DESIGN §9).

The api stores every secret a request carries in INFERNO_SECRETS and leaves `<key>_ref: <ref>`
in its place (`inferno.api.secrets`). Here a shard's spec gets the values back just before its
engine opens: `<key>_ref` becomes `<key>` (a null ref is dropped), at any depth of model_config,
sampling_params and client_config (inside a `*headers` mapping, the wider header rule:
`Ocp-Apim-Subscription-Key_ref` too), and every placeholder `{{<ref>}}` in a string (a URL's
credentials, `inferno.secrets.urls`) becomes the value stored under its ref, so the URL is
the one the request gave. Only the engine sees the resolved spec; the work order, the
engine cache's key, reports and logs keep the refs. Each value is fetched once per process (a
ref never changes its value: a new key gets a new ref) and given to the log masks
(`remember_secret`), so an error text or traceback that quotes it shows *** instead.

`api_key_env: NAME` is left alone: the backend reads the executor's environment itself.
A ref that names nothing stored fails the shard for good (`SecretError`): retrying cannot make
it appear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from nats.js.errors import InvalidKeyError, KeyNotFoundError
from nats.js.kv import KeyValue

from inferno.events.model import PipelineSpec
from inferno.secrets.masking import is_headers, is_secret_name, remember_secret
from inferno.secrets.urls import put_back, refs_in

REF_SUFFIX = "_ref"
KNOBS = ("model_config", "sampling_params", "client_config")


class SecretError(ValueError):
    """A secret ref names nothing in INFERNO_SECRETS; retrying would fail the same way."""


def _secret_name(key: object, headers: bool = False) -> str | None:
    """`api_key` for `api_key_ref`; None for keys that are not secret refs. `headers`: the key
    names an HTTP header (`is_secret_name`, the api's rule)."""
    if isinstance(key, str) and key.endswith(REF_SUFFIX):
        name = key[: -len(REF_SUFFIX)]
        if is_secret_name(name, headers):
            return name
    return None


def has_refs(value: Any, headers: bool = False) -> bool:
    if isinstance(value, str):
        return bool(refs_in(value))
    if isinstance(value, Mapping):
        return any(
            _secret_name(k, headers) is not None or has_refs(v, is_headers(k))
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(has_refs(v) for v in value)
    return False


class Secrets:
    """INFERNO_SECRETS read through a per-ref cache."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._values: dict[str, Any] = {}

    async def value(self, ref: str, where: str) -> Any:
        if ref not in self._values:
            try:
                entry = await self._kv.get(ref)
                value = msgspec.json.decode(entry.value or b"")
            except (KeyNotFoundError, InvalidKeyError, msgspec.DecodeError):  # deleted keys too
                raise SecretError(
                    f"{where}: no secret is stored under ref {ref!r}; "
                    "clone the pipeline with the key again"
                ) from None
            remember_secret(value)
            self._values[ref] = value
        return self._values[ref]

    async def resolve(self, config: Any, where: str, headers: bool = False) -> Any:
        """`config` with `<key>_ref: ref` replaced by `<key>: value` (null refs dropped) and
        placeholders in strings by their values."""
        if isinstance(config, str):
            values = {}
            for ref in refs_in(config):
                value = await self.value(ref, where)
                if not isinstance(value, str):
                    raise SecretError(f"{where}: the secret under ref {ref!r} is not a string")
                values[ref] = value
            return put_back(config, values) if values else config
        if isinstance(config, Mapping):
            out: dict[str, Any] = {}
            for key, item in config.items():
                path = f"{where}.{key}"
                name = _secret_name(key, headers)
                if name is None:
                    out[key] = await self.resolve(item, path, is_headers(key))
                elif item is not None:
                    if not isinstance(item, str):
                        raise SecretError(f"{path}: a secret ref is a string, not {item!r}")
                    out[name] = await self.value(item, path)
            return out
        if isinstance(config, list):
            return [await self.resolve(item, f"{where}.{i}") for i, item in enumerate(config)]
        return config

    async def resolve_spec(self, spec: PipelineSpec) -> PipelineSpec:
        """The spec an engine opens with; `spec` itself when it holds no refs."""
        changed = {
            knob: await self.resolve(getattr(spec, knob), knob)
            for knob in KNOBS
            if has_refs(getattr(spec, knob))
        }
        return msgspec.structs.replace(spec, **changed) if changed else spec


async def resolve_secrets(client_config: Mapping[str, Any], kv: KeyValue | Secrets) -> dict:
    """`client_config` with its secret refs resolved from the SECRETS bucket `kv` (or through a
    `Secrets` cache)."""
    secrets = kv if isinstance(kv, Secrets) else Secrets(kv)
    return await secrets.resolve(client_config, "client_config")
