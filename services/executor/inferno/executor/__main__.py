"""`python -m inferno.executor [--executor-id ID] [--slots N]`: run one executor until SIGTERM.

The id comes from `--executor-id`, else INFERNO_EXECUTOR_ID, else `<hostname>-<pid>`; the slots
from `--slots`, else INFERNO_EXECUTOR_SLOTS (or INFERNO_EXECUTOR_RESOURCES' `slots`), else 2.
Everything else is `Settings.from_env()`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import sys
from collections.abc import Sequence

from inferno.events.names import check_token
from inferno.executor.service import run
from inferno.runtime.bootstrap import service_main
from inferno.runtime.settings import Settings


def default_executor_id() -> str:
    """`<hostname>-<pid>`, with characters a subject token cannot hold replaced by '-'."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "executor"
    return f"{host}-{os.getpid()}"


def _slots(raw: str) -> int:
    try:
        slots = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if slots < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: at least 1")
    return slots


def _executor_id(raw: str) -> str:
    try:
        return check_token(raw, "executor id")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inferno.executor", description=__doc__)
    parser.add_argument(
        "--executor-id",
        type=_executor_id,
        default=settings.executor_id or default_executor_id(),
        help="unique id of this executor (env INFERNO_EXECUTOR_ID; default <hostname>-<pid>)",
    )
    parser.add_argument(
        "--slots",
        type=_slots,
        default=settings.executor_slots,
        help="shards run at once (env INFERNO_EXECUTOR_SLOTS or INFERNO_EXECUTOR_RESOURCES'"
        " slots; default 2)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return service_main("executor", lambda settings: _serve(settings, parse_args(argv, settings)))


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    port = settings.metrics_port_for("executor")
    queue = settings.executor_queue
    asyncio.run(
        run(
            settings, executor_id=args.executor_id, slots=args.slots, queue=queue, metrics_port=port
        )
    )


if __name__ == "__main__":
    sys.exit(main())
