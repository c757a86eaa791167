"""Executor hosts for benchmarks: many real executors as asyncio tasks in a few processes.

    python bench/hosts.py --ids exec-1,exec-2 --slots 2 [--queue N]

runs `inferno.executor.service.run` (its defaults) once per id in one process, until SIGTERM.
Hundreds of Python processes on 2 cores would mostly measure context switches, so a bench spreads
its executors over a few such hosts (`ExecutorHosts.start`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from inferno.client.embedded import die_with_parent_hook
from inferno.client.launcher import ClusterError
from inferno.client.sdk import Client
from inferno.executor.service import run
from inferno.runtime.logs import configure_logging
from inferno.runtime.settings import Settings


async def host_executors(ids: list[str], slots: int, queue: int | None) -> None:
    settings = Settings.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.gather(
        *(
            run(settings, executor_id=executor_id, slots=slots, queue=queue, stop=stop)
            for executor_id in ids
        )
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hosts.py")
    parser.add_argument("--ids", required=True, help="comma-separated executor ids")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--queue", type=int, default=None, help="default: by shard length")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format, service="executor")
    asyncio.run(host_executors(args.ids.split(","), args.slots, args.queue))
    return 0


@dataclass
class ExecutorHosts:
    """`executors` executors named exec-1.. spread round-robin over `hosts` processes."""

    processes: list[subprocess.Popen[bytes]]
    log_dir: Path

    @classmethod
    def start(
        cls,
        nats_url: str,
        namespace: str,
        *,
        executors: int,
        hosts: int,
        slots: int,
        log_dir: Path,
        queue: int | None = None,
    ) -> ExecutorHosts:
        env = {**os.environ, "NATS_URL": nats_url, "INFERNO_NAMESPACE": namespace}
        ids = [f"exec-{i}" for i in range(1, executors + 1)]
        processes = []
        queued = [] if queue is None else ["--queue", str(queue)]
        for h in range(hosts):
            argv = [sys.executable, __file__, "--ids", ",".join(ids[h::hosts]), "--slots"]
            with (log_dir / f"executors-{h}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        [*argv, str(slots), *queued],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=die_with_parent_hook(),
                    )
                )
        return cls(processes, log_dir)

    @property
    def pids(self) -> dict[str, int]:
        return {f"executors-{h}": p.pid for h, p in enumerate(self.processes)}

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def check(self) -> None:
        for h, process in enumerate(self.processes):
            if process.poll() is not None:
                tail = (self.log_dir / f"executors-{h}.log").read_text()[-3000:]
                raise ClusterError(f"executor host {h} exited:\n{tail}")

    def wait_registered(self, client: Client, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(client.executors()) < count:
            self.check()
            if time.monotonic() > deadline:
                raise ClusterError(f"{count} executors did not register within {timeout:.0f}s")
            time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
