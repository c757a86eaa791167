"""Inferno: steer LLM evaluation and batch-inference experiments while they run.

`from inferno import Experiment` (or `Client`, the SDK; `AsyncClient` for services) is all a
notebook needs. The rest of `inferno` is one namespace spread over the repository's folders
(docs/architecture.md, "Layout"); `extend_path` keeps it one, whichever folder's `inferno/`
Python meets first.
"""

from pkgutil import extend_path
from typing import Any

__path__ = extend_path(__path__, __name__)

_EXPORTS = {
    "Client": "inferno.client.sdk",
    "AsyncClient": "inferno.client.aio",
    "Experiment": "inferno.client.experiment",
}


def __getattr__(name: str) -> Any:
    """Imported on first use, so a service importing `inferno.api` does not load the SDK."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'inferno' has no attribute {name!r}")
