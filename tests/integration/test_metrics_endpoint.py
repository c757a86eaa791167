"""The scheduler's and executor's /metrics server (inferno.runtime.metrics) and its settings:
a real socket on loopback, a real process for the port-in-use refusal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from inferno.runtime.metrics import MetricsPortInUse, MetricsServer
from inferno.runtime.settings import METRICS_PORTS, ConfigError, Settings


class Refreshed(Collector):
    """A gauge that counts the refreshes before each scrape."""

    def __init__(self) -> None:
        self.refreshes = 0

    async def refresh(self) -> None:
        self.refreshes += 1

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("p9_refreshes", "refreshes before scrapes", value=self.refreshes)


async def get(url: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        return await http.request(method, url)


def test_metrics_port_defaults_per_service_and_zero_turns_it_off() -> None:
    assert Settings.from_env({}).metrics_port_for("scheduler") == METRICS_PORTS["scheduler"]
    assert Settings.from_env({}).metrics_port_for("executor") == METRICS_PORTS["executor"]
    off = Settings.from_env({"INFERNO_METRICS_PORT": "0"})
    assert (off.metrics_port_for("scheduler"), off.metrics_port_for("executor")) == (0, 0)
    chosen = Settings.from_env({"INFERNO_METRICS_PORT": "9100", "INFERNO_METRICS_HOST": "::"})
    assert (chosen.metrics_port_for("executor"), chosen.metrics_host) == (9100, "::")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("INFERNO_METRICS_PORT", "-1"),
        ("INFERNO_METRICS_PORT", "65536"),
        ("INFERNO_METRICS_PORT", "metrics"),
        ("INFERNO_METRICS_HOST", "http://0.0.0.0:9"),
    ],
)
def test_invalid_metrics_settings_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({var: value})
    assert var in str(error.value)
    assert repr(value) in str(error.value)


async def test_serves_the_registry_and_the_live_collector_refreshed() -> None:
    live = Refreshed()
    server = await MetricsServer("127.0.0.1", 0, live=live, refresh=live.refresh).start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        for expected in (1, 2):
            answer = await get(f"{url}/metrics")
            assert answer.status_code == 200
            samples = {
                s.name: s.value
                for family in text_string_to_metric_families(answer.text)
                for s in family.samples
            }
            assert samples["p9_refreshes"] == expected
            assert "process_cpu_seconds_total" in samples  # the process-wide registry
        assert (await get(f"{url}/")).status_code == 404
        assert (await get(f"{url}/metrics", "POST")).status_code == 404
        health = await get(f"{url}/healthz")  # the liveness probe: no refresh, no I/O
        assert (health.status_code, health.text) == (200, "ok\n")
        assert live.refreshes == 2
    finally:
        await server.stop()


async def test_a_taken_port_is_refused_with_the_variable_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsPortInUse, match="INFERNO_METRICS_PORT"):
            await MetricsServer("127.0.0.1", port).start()


def test_an_executor_on_a_taken_port_says_so_in_one_line(nats_url: str, namespace: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "NATS_URL": nats_url,
            "INFERNO_NAMESPACE": namespace,
            "INFERNO_METRICS_PORT": str(port),
            "INFERNO_LOG_FORMAT": "json",
        }
        done = subprocess.run(
            [sys.executable, "-m", "inferno.executor", "--executor-id", "p9"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert f"inferno executor: cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
