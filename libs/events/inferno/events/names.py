"""Stream, bucket and subject names (DESIGN §2).

Names are part of the interface: people read them with the `nats` CLI, so they are built in one
place from the namespace and never spelled out elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def check_token(value: str | int, what: str) -> str:
    """A subject token must not contain `.`, spaces or wildcards, or it would change the subject."""
    token = str(value)
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{what} {token!r} may only contain letters, digits, '_' and '-'")
    return token


@dataclass(frozen=True, slots=True)
class Names:
    namespace: str = "inferno"

    def __post_init__(self) -> None:
        check_token(self.namespace, "namespace")

    @property
    def prefix(self) -> str:
        return self.namespace.upper().replace("-", "_")

    # streams, buckets and object stores
    @property
    def cmd_stream(self) -> str:
        return f"{self.prefix}_CMD"

    @property
    def evt_stream(self) -> str:
        return f"{self.prefix}_EVT"

    @property
    def exec_stream(self) -> str:
        return f"{self.prefix}_EXEC"

    @property
    def work_stream(self) -> str:
        return f"{self.prefix}_WORK"

    @property
    def executors_bucket(self) -> str:
        return f"{self.prefix}_EXECUTORS"

    @property
    def leader_bucket(self) -> str:
        return f"{self.prefix}_LEADER"

    @property
    def secrets_bucket(self) -> str:
        return f"{self.prefix}_SECRETS"

    @property
    def limits_bucket(self) -> str:
        return f"{self.prefix}_LIMITS"

    @property
    def data_store(self) -> str:
        return f"{self.prefix}_DATA"

    @property
    def results_store(self) -> str:
        return f"{self.prefix}_RESULTS"

    @property
    def snapshots_store(self) -> str:
        return f"{self.prefix}_SNAPSHOTS"

    # subject spaces each stream captures
    @property
    def cmd_subjects(self) -> str:
        return f"{self.namespace}.cmd.>"

    @property
    def evt_subjects(self) -> str:
        return f"{self.namespace}.evt.>"

    @property
    def exec_subjects(self) -> str:
        return f"{self.namespace}.exec.>"

    @property
    def work_subjects(self) -> str:
        return f"{self.namespace}.work.>"

    # concrete subjects
    def experiment_cmd(self, experiment_id: str, action: str) -> str:
        token = check_token(experiment_id, "experiment id")
        return f"{self.namespace}.cmd.experiment.{token}.{action}"

    def pipeline_cmd(self, pipeline_id: int, action: str) -> str:
        return f"{self.namespace}.cmd.pipeline.{int(pipeline_id)}.{action}"

    def context_cmd(self, context_id: str, action: str) -> str:
        return f"{self.namespace}.cmd.context.{check_token(context_id, 'context id')}.{action}"

    def experiment_evt(self, experiment_id: str, kind: str) -> str:
        return f"{self.namespace}.evt.experiment.{experiment_id}.{kind}"

    def pipeline_evt(self, pipeline_id: int | str, kind: str) -> str:  # str: the "*" wildcard
        return f"{self.namespace}.evt.pipeline.{pipeline_id}.{kind}"

    def shard_evt(self, pipeline_id: int, shard: int, kind: str) -> str:
        return f"{self.namespace}.evt.shard.{pipeline_id}.{shard}.{kind}"

    def executor_evt(self, executor_id: str, kind: str) -> str:
        """Several shards of one executor in one event (`ShardsAssigned`, `ShardsCompleted`)."""
        return f"{self.namespace}.evt.executor.{check_token(executor_id, 'executor id')}.{kind}"

    def op_evt(self, ic_id: int, kind: str) -> str:
        return f"{self.namespace}.evt.op.{ic_id}.{kind}"

    def exec_report(self, executor_id: str, kind: str) -> str:
        return f"{self.namespace}.exec.{check_token(executor_id, 'executor id')}.{kind}"

    def work(self, executor_id: str) -> str:
        return f"{self.namespace}.work.{check_token(executor_id, 'executor id')}"

    # keys of the LIMITS bucket: a pipeline's own limits, by its engine's configuration
    # (pipelines that share an engine share them), and the endpoint limits pipelines name
    def config_limit_key(self, digest: str) -> str:
        return f"config.{check_token(digest, 'configuration digest')}"

    def endpoint_limit_key(self, name: str) -> str:
        return f"endpoint.{check_token(name, 'endpoint limit name')}"
