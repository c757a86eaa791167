"""`python -m inferno.executor [--executor-id ID] [--slots N]`: run one executor until SIGTERM.

The id comes from `--executor-id`, else INFERNO_EXECUTOR_ID, else `<hostname>-<pid>`; the slots
from `--slots`, else INFERNO_EXECUTOR_SLOTS, else 2. Everything else is `Settings.from_env()`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence

from inferno.client.logs import configure_logging
from inferno.events.config import ConfigError, Settings
from inferno.events.names import check_token
from inferno.executor.service import run

DEFAULT_SLOTS = 2


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


def parse_args(
    argv: Sequence[str] | None, settings: Settings, env: Mapping[str, str]
) -> argparse.Namespace:
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
        default=env.get("INFERNO_EXECUTOR_SLOTS", "").strip() or str(DEFAULT_SLOTS),
        help="shards run at once (env INFERNO_EXECUTOR_SLOTS; default 2)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"inferno executor: {error}", file=sys.stderr)
        return 2
    args = parse_args(argv, settings, os.environ)
    configure_logging(settings.log_level, settings.log_format, service="executor")
    asyncio.run(run(settings, executor_id=args.executor_id, slots=args.slots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
