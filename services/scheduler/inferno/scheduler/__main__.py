"""`python -m inferno.scheduler [--scheduler-id ID]`: run one scheduler (leader or standby) until
SIGTERM or SIGINT, configured from the environment (DESIGN §8, plus INFERNO_LEASE_TTL_S)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from inferno.events.names import check_token
from inferno.runtime.bootstrap import service_main
from inferno.runtime.settings import Settings
from inferno.scheduler.service import run


def _scheduler_id(raw: str) -> str:
    try:
        return check_token(raw, "scheduler id")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


async def _serve(settings: Settings, scheduler_id: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = settings.metrics_port_for("scheduler")
    await run(settings, scheduler_id=scheduler_id, stop=stop, metrics_port=port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inferno.scheduler",
        description="Inferno scheduler: folds the log, decides, assigns shards (one leader).",
    )
    parser.add_argument(
        "--scheduler-id",
        type=_scheduler_id,
        help="name in the leader lease and in the logs (default: <hostname>-<pid>)",
    )
    args = parser.parse_args(argv)
    return service_main("scheduler", lambda s: asyncio.run(_serve(s, args.scheduler_id)))


if __name__ == "__main__":
    sys.exit(main())
