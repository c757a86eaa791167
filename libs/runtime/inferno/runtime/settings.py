"""Configuration from the environment (DESIGN §8), read and validated in one place.

Pure: `Settings.from_env` reads only the mapping it is given (default `os.environ`), so it is
trivial to test and does no other I/O. Every invalid value raises `ConfigError` naming the
variable and the value (a token's or password's value as ***). An empty variable counts as
unset.

`log_format` stays ``"auto"`` here; whether stdout is a terminal is decided where logging is
configured (`inferno.runtime.logs`), since asking is I/O.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from inferno.events.names import check_token
from inferno.events.resources import SLOTS, parse_resources
from inferno.secrets.masking import MASK, mask_url

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
RATE_LIMIT_SCOPES = ("fleet", "executor")  # INFERNO_RATE_LIMITS: where rpm/tpm limits hold


METRICS_PORTS = {"scheduler": 9852, "executor": 9853}
"""Each service's default INFERNO_METRICS_PORT (the api serves /metrics on INFERNO_API_PORT)."""

SHARED_TOKEN_IDENTITY = "INFERNO_TOKEN"
"""The actor behind the single INFERNO_TOKEN: whoever holds it (docs/security.md)."""
MAX_IDENTITY_LENGTH = 64
_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


class ConfigError(ValueError):
    """An environment variable holds a value Inferno cannot use."""


@dataclass(frozen=True, slots=True)
class Credential:
    """A bearer token the api accepts, and the identity it stands for (the commands' actor)."""

    identity: str
    token: str = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    namespace: str = "inferno"
    token: str | None = None
    tokens: tuple[Credential, ...] = ()  # INFERNO_TOKENS: one identity per token
    api_host: str = "127.0.0.1"
    api_port: int = 8851
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # Host names served beside loopback and api_host; "*": any
    max_command_bytes: int = 1 << 20  # request body of every route but the dataset upload
    max_upload_bytes: int = 256 << 20  # request body of POST /api/v1/datasets
    replicas: int = 1
    heartbeat_ttl_s: float = 10.0
    lease_ttl_s: float = 5.0
    executor_id: str | None = None
    executor_slots: int = 2  # shards an executor runs at once
    executor_queue: int | None = None  # orders held beyond its slots (None: by shard length)
    # INFERNO_EXECUTOR_RESOURCES less `slots` (which sets executor_slots), sorted by name
    executor_resources: tuple[tuple[str, float], ...] = ()
    rate_limits: str = "fleet"  # rpm/tpm held across the fleet, or per executor (as before)
    log_level: str = "info"
    log_format: str = "auto"
    scorer_modules: tuple[str, ...] = ()  # modules user scorers (module:function) may come from
    snapshot_every_events: int = 100_000  # snapshot after folding this many messages (0: never)
    snapshot_every_s: float = 300.0  # or this long after the last one, if anything was folded
    metrics_host: str = "127.0.0.1"  # where the scheduler and executor serve /metrics
    metrics_port: int | None = None  # None: the service's default (METRICS_PORTS); 0: none

    def metrics_port_for(self, service: str) -> int:
        """The port `service` serves /metrics on (0: none); the api serves it on its own."""
        return METRICS_PORTS[service] if self.metrics_port is None else self.metrics_port

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `env` (default `os.environ`); unset variables keep defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for var, (field, parse) in _VARIABLES.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                values[field] = parse(raw)
            except ValueError as e:
                shown = MASK if var in _SECRET_VARIABLES else repr(raw)
                raise ConfigError(f"{var}={shown} is invalid: {e}") from None
        _slots_from_resources(env, values)
        _together(env, "NATS_USER", "NATS_PASSWORD")
        _together(env, "NATS_TLS_CERT", "NATS_TLS_KEY")
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.token is not None and settings.token in {c.token for c in settings.tokens}:
            raise ConfigError(
                "INFERNO_TOKEN is also one of INFERNO_TOKENS: a token stands for one identity"
            )
        return settings

    def credentials(self) -> tuple[Credential, ...]:
        """Every token the api accepts: INFERNO_TOKEN (as SHARED_TOKEN_IDENTITY), then
        INFERNO_TOKENS. None: the api is open to every client that reaches it."""
        shared = (Credential(SHARED_TOKEN_IDENTITY, self.token),) if self.token else ()
        return shared + self.tokens

    def masked(self) -> dict[str, object]:
        """The effective configuration, safe to print: secrets are replaced by "***"."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and f.name in ("token", "nats_password"):
                value = MASK
            elif f.name == "tokens":
                value = [f"{c.identity}={MASK}" for c in value]
            elif f.name == "nats_url":
                value = mask_url(value)
            elif f.name == "executor_resources":
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def _str(raw: str) -> str:
    return raw


def _token(what: str) -> Callable[[str], str]:
    return lambda raw: check_token(raw, what)


def _credentials(raw: str) -> tuple[Credential, ...]:
    """`alice=tok1,bob=tok2`: comma-separated `identity=token` pairs; a token may hold `=` but
    no comma or whitespace. Errors name the entry by its position only: a reversed entry
    (`token=alice`) would otherwise show the token."""
    credentials: list[Credential] = []
    for number, entry in enumerate(raw.split(","), 1):
        if not entry.strip():
            continue  # a trailing comma
        identity, equals, token = (part.strip() for part in entry.strip().partition("="))
        where = f"entry {number}"
        if not equals or not identity or not token:
            raise ValueError(f"{where}: expected IDENTITY=TOKEN, e.g. alice=<a long random token>")
        if not _IDENTITY.match(identity) or len(identity) > MAX_IDENTITY_LENGTH:
            raise ValueError(
                f"{where}: an identity is 1 to {MAX_IDENTITY_LENGTH} letters, digits and . _ @ -,"
                " starting with a letter or digit"
            )
        if identity == SHARED_TOKEN_IDENTITY:
            raise ValueError(f"{where}: {SHARED_TOKEN_IDENTITY} names INFERNO_TOKEN's holder")
        if any(c.isspace() for c in token):
            raise ValueError(f"{where}: the token holds whitespace")
        if any(c.token == token for c in credentials):
            raise ValueError(f"{where}: its token is another entry's too; one token, one identity")
        credentials.append(Credential(identity, token))
    return tuple(credentials)


MAX_SLOTS = 1024


def _resources(raw: str) -> tuple[tuple[str, float], ...]:
    """`{"slots": 4, "gpus": 2, "gpu_mem_gb": 160}`: names to amounts (inferno.events.resources);
    `slots`, if there, a whole number of shards."""
    resources = parse_resources(raw)
    slots = resources.get(SLOTS)
    if slots is not None and (not slots.is_integer() or not 1 <= slots <= MAX_SLOTS):
        raise ValueError(f"slots must be a whole number between 1 and {MAX_SLOTS}")
    return tuple(sorted(resources.items()))


def _slots_from_resources(env: Mapping[str, str], values: dict[str, object]) -> None:
    """INFERNO_EXECUTOR_RESOURCES' `slots` is the executor's slots; with INFERNO_EXECUTOR_SLOTS
    too, the two must agree."""
    declared = dict(values.get("executor_resources", ()))  # type: ignore[call-overload]
    slots = declared.pop(SLOTS, None)
    if slots is None:
        return
    values["executor_resources"] = tuple(sorted(declared.items()))
    if "executor_slots" in values and values["executor_slots"] != int(slots):
        raise ConfigError(
            f"INFERNO_EXECUTOR_RESOURCES says slots {int(slots)} and INFERNO_EXECUTOR_SLOTS"
            f" says {values['executor_slots']}: set one of them"
        )
    values["executor_slots"] = int(slots)


def _int_between(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("must be an integer") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < value < float("inf"):  # also rejects nan
        raise ValueError("must be a positive, finite number of seconds")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw.lower()

    return parse


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def host_name(raw: str) -> str:
    """A host name as a `Host` header carries it, without the port: lower-case, no trailing
    dot, an IPv6 address in brackets (`::1` -> `[::1]`); ValueError if it is not one."""
    name = raw.strip().lower().rstrip(".")
    bare = name.removeprefix("[").removesuffix("]")
    if ":" in bare:
        try:
            return f"[{ipaddress.IPv6Address(bare)}]"
        except ValueError:
            raise ValueError(f"{raw!r} is not a host name (give no scheme or port)") from None
    if not _HOST_NAME.match(name):
        raise ValueError(f"{raw!r} is not a host name (give no scheme or port)")
    return name


def _listen_host(raw: str) -> str:
    host_name(raw)  # kept as given: uvicorn takes `::`, not `[::]`
    return raw


def _host_list(raw: str) -> tuple[str, ...]:
    return tuple(item if item == "*" else host_name(item) for item in _comma_list(raw))


def _together(env: Mapping[str, str], a: str, b: str) -> None:
    has_a, has_b = bool(env.get(a, "").strip()), bool(env.get(b, "").strip())
    if has_a != has_b:
        missing, given = (b, a) if has_a else (a, b)
        raise ConfigError(f"{missing} is required when {given} is set")


# variable -> (Settings field, parser); a parser raises ValueError saying what is expected
_VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "NATS_URL": ("nats_url", _str),
    "NATS_CREDS": ("nats_creds", _str),
    "NATS_USER": ("nats_user", _str),
    "NATS_PASSWORD": ("nats_password", _str),
    "NATS_TLS_CA": ("nats_tls_ca", _str),
    "NATS_TLS_CERT": ("nats_tls_cert", _str),
    "NATS_TLS_KEY": ("nats_tls_key", _str),
    "INFERNO_NAMESPACE": ("namespace", _token("namespace")),
    "INFERNO_TOKEN": ("token", _str),
    "INFERNO_TOKENS": ("tokens", _credentials),
    "INFERNO_API_HOST": ("api_host", _listen_host),
    "INFERNO_API_PORT": ("api_port", _int_between(1, 65535)),
    "INFERNO_CORS_ORIGINS": ("cors_origins", _comma_list),
    "INFERNO_ALLOWED_HOSTS": ("allowed_hosts", _host_list),
    "INFERNO_MAX_COMMAND_BYTES": ("max_command_bytes", _int_between(1 << 10, 1 << 30)),
    "INFERNO_MAX_UPLOAD_BYTES": ("max_upload_bytes", _int_between(1 << 10, 1 << 40)),
    "INFERNO_REPLICAS": ("replicas", _int_between(1, 5)),
    "INFERNO_HEARTBEAT_TTL_S": ("heartbeat_ttl_s", _positive_seconds),
    "INFERNO_LEASE_TTL_S": ("lease_ttl_s", _positive_seconds),
    "INFERNO_EXECUTOR_ID": ("executor_id", _token("executor id")),
    "INFERNO_EXECUTOR_SLOTS": ("executor_slots", _int_between(1, MAX_SLOTS)),
    "INFERNO_EXECUTOR_RESOURCES": ("executor_resources", _resources),
    "INFERNO_EXECUTOR_QUEUE": ("executor_queue", _int_between(0, MAX_SLOTS)),
    "INFERNO_RATE_LIMITS": ("rate_limits", _one_of(*RATE_LIMIT_SCOPES)),
    "INFERNO_LOG_LEVEL": ("log_level", _one_of(*LOG_LEVELS)),
    "INFERNO_LOG_FORMAT": ("log_format", _one_of(*LOG_FORMATS)),
    "INFERNO_SCORER_MODULES": ("scorer_modules", _comma_list),
    "INFERNO_SNAPSHOT_EVERY_EVENTS": ("snapshot_every_events", _int_between(0, 1 << 40)),
    "INFERNO_SNAPSHOT_EVERY_S": ("snapshot_every_s", _positive_seconds),
    "INFERNO_METRICS_HOST": ("metrics_host", _listen_host),
    "INFERNO_METRICS_PORT": ("metrics_port", _int_between(0, 65535)),
}
_SECRET_VARIABLES = frozenset({"INFERNO_TOKEN", "INFERNO_TOKENS", "NATS_PASSWORD"})
"""Variables whose value an error never shows."""
VARIABLES = frozenset(_VARIABLES)
"""Every variable `Settings.from_env` reads (deploy files are checked against it)."""
