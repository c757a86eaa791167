"""deploy/slurm and deploy/k8s cannot run here (no Slurm, no Kubernetes), so check what can be
checked without them: every YAML parses into objects with the fields Kubernetes requires, every
INFERNO_* / NATS_* variable is a real setting whose value `Settings` accepts, secrets only ever
come from Secrets or the submitting shell, and the sbatch script is valid bash."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferno.runtime.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SBATCH = ROOT / "deploy" / "slurm" / "inferno-executors.sbatch"
SECRETS = {"INFERNO_TOKEN", "INFERNO_TOKENS", "NATS_PASSWORD", "NATS_USER"}
API_VERSIONS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
}
OURS = re.compile(r"\b((?:INFERNO|NATS)_[A-Z_]+)\b")


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "nats-values.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_name(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name)


def workloads() -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] in ("Deployment", "StatefulSet")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def environment(workload: dict[str, Any]) -> dict[str, str]:
    """What the container's process gets: the ConfigMaps it loads, then its own entries (the
    pod's name for `metadata.name`, a placeholder for a Secret's value)."""
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(by_name("ConfigMap", source["configMapRef"]["name"])["data"])
    pod = f"{workload['metadata']['name']}-0"
    for entry in spec.get("env", []):
        field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        env[entry["name"]] = pod if field == "metadata.name" else entry.get("value", "secret")
    return env


def test_every_object_has_what_kubernetes_requires():
    kinds = []
    for doc in manifests():
        kind = doc["kind"]
        kinds.append(kind)
        assert doc["apiVersion"] == API_VERSIONS[kind], kind
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert sorted(kinds) == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Service",
        "Service",
        "StatefulSet",
    ]
    for workload in workloads():
        spec = workload["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        spec_c = container(workload)
        assert spec_c["name"]
        assert spec_c["image"]
        assert spec_c["env"] or spec_c["envFrom"]
        assert spec_c["command"][:2] == ["python", "-m"]
        assert importlib.util.find_spec(spec_c["command"][2]) is not None
    for service in (d for d in manifests() if d["kind"] == "Service"):
        selected = service["spec"]["selector"].items()
        assert any(
            selected <= w["spec"]["template"]["metadata"]["labels"].items() for w in workloads()
        )


@pytest.mark.parametrize("name", ["inferno-api", "inferno-scheduler", "inferno-executor"])
def test_every_variable_is_a_setting_and_parses(name: str):
    workload = next(w for w in workloads() if w["metadata"]["name"] == name)
    env = environment(workload)
    ours = {k: v for k, v in env.items() if OURS.fullmatch(k)}
    assert set(ours) <= VARIABLES, set(ours) - VARIABLES
    settings = Settings.from_env(ours)
    assert settings.replicas == 3  # R3 over the chart's three servers
    assert settings.metrics_host == "0.0.0.0"  # the kubelet probes the pod IP
    for entry in container(workload).get("env", []):
        if entry["name"] in SECRETS:  # never a literal: from a Secret
            assert "value" not in entry
            assert entry["valueFrom"]["secretKeyRef"]["name"]


def test_schedulers_and_the_api_run_more_than_one():
    assert by_name("Deployment", "inferno-scheduler")["spec"]["replicas"] == 2
    api = container(by_name("Deployment", "inferno-api"))
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_executors_ask_for_a_gpu_and_are_probed_where_they_serve():
    executor = by_name("StatefulSet", "inferno-executor")
    spec = container(executor)
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["resources"]["requests"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    settings = Settings.from_env(
        {k: v for k, v in environment(executor).items() if OURS.fullmatch(k)}
    )
    assert ports["metrics"] == settings.metrics_port_for("executor")
    for probe in ("startupProbe", "livenessProbe"):
        assert spec[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    id_from = next(e for e in spec["env"] if e["name"] == "INFERNO_EXECUTOR_ID")
    assert id_from["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_nats_runs_three_jetstream_servers_on_files_fsynced_before_ack():
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert jetstream["merge"]["sync_interval"] == "always"
    for name in ("AUTH_USER", "AUTH_PASSWORD"):  # the server's auth, from the same Secret
        assert (
            values["container"]["env"][name]["valueFrom"]["secretKeyRef"]["name"] == "inferno-nats"
        )
    assert Settings.from_env(by_name("ConfigMap", "inferno-config")["data"]).replicas == 3


# the sbatch script


def test_the_sbatch_script_is_valid_bash_with_one_executor_per_gpu():
    result = subprocess.run(
        ["bash", "-n", str(SBATCH)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    script = SBATCH.read_text()
    directives = dict(
        re.match(r"#SBATCH --([a-z-]+)(?:=(\S+))?", line).groups()  # type: ignore[union-attr]
        for line in script.splitlines()
        if line.startswith("#SBATCH")
    )
    assert directives["gpus-per-task"] == "1"
    assert "srun" in script
    assert "CUDA_VISIBLE_DEVICES" in script
    assert "-m inferno.executor" in script
    assert '"${NATS_URL:?' in script  # required from the submitting environment


def test_the_sbatch_script_names_real_settings_and_holds_no_secret():
    script = SBATCH.read_text()
    named = set(OURS.findall(script))
    assert named <= VARIABLES, named - VARIABLES
    defaults = dict(re.findall(r'export ((?:INFERNO|NATS)_[A-Z_]+)="\$\{\1:-([^}]*)\}"', script))
    assert defaults  # INFERNO_NAMESPACE, ... with their defaults
    Settings.from_env(defaults)
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    for secret in SECRETS | {"NATS_CREDS"}:  # the comments show how to export them
        assert not re.search(rf"\b{secret}=", code), f"{secret} is assigned in the script"
    assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{8,}", script)
