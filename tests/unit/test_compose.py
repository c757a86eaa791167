"""compose.yaml cannot run here (no Docker engine), so check what can be checked without one:
the file's structure, the NATS cluster config against the real nats-server, and that every
service command and environment variable means something to the code it starts."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import yaml

from inferno.client.embedded import find_nats_server
from inferno.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def interpolated(value: object) -> str:
    """A value as compose gives it to the container when the variables it names are unset
    (`${VAR:-default}` becomes `default`)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def test_three_nats_nodes_share_one_cluster_config_that_fsyncs_before_ack():
    nodes = [name for name in SERVICES if name.startswith("nats-")]
    assert nodes == ["nats-1", "nats-2", "nats-3"]
    conf = ROOT / "deploy" / "nats-cluster.conf"
    assert "sync_interval: always" in conf.read_text()
    for node in nodes:
        assert SERVICES[node]["environment"]["SERVER_NAME"] == node
        assert any("nats-cluster.conf" in v for v in SERVICES[node]["volumes"])
        result = subprocess.run(
            [find_nats_server(), "-c", str(conf), "-t"],
            env={**os.environ, "SERVER_NAME": node},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_services_run_inferno_modules_with_r3_streams_and_a_standby_scheduler():
    roles = {}
    for name, service in SERVICES.items():
        if name.startswith("nats-"):
            continue
        command = service["command"]
        assert command[:2] == ["python", "-m"]
        assert importlib.util.find_spec(command[2]) is not None, command[2]
        roles.setdefault(command[2], []).append(name)
        settings = Settings.from_env(
            {k: interpolated(v) for k, v in service["environment"].items()}
        )
        assert settings.replicas == 3
        assert settings.nats_url.count("nats://") == 3
    assert roles == {
        "inferno.api": ["api"],
        "inferno.scheduler": ["scheduler-1", "scheduler-2"],
        "inferno.executor": ["executor-1", "executor-2"],
    }


def test_the_image_installs_the_project():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in ("COPY pyproject.toml", "COPY libs", "COPY services", "pip install ."):
        assert needed in dockerfile
