"""`python -m inferno.executor` arguments: flags over environment over defaults."""

from __future__ import annotations

import os
import re

import pytest

from inferno.events.config import Settings
from inferno.executor.__main__ import default_executor_id, parse_args


def test_defaults_are_hostname_pid_and_two_slots():
    args = parse_args([], Settings(), {})
    assert args.slots == 2
    assert args.executor_id == default_executor_id()
    assert re.fullmatch(rf"[A-Za-z0-9_-]+-{os.getpid()}", args.executor_id)


def test_environment_then_flags():
    env = {"INFERNO_EXECUTOR_SLOTS": "6"}
    settings = Settings.from_env({"INFERNO_EXECUTOR_ID": "gpu-7"})
    args = parse_args([], settings, env)
    assert (args.executor_id, args.slots) == ("gpu-7", 6)
    args = parse_args(["--executor-id", "gpu-8", "--slots", "1"], settings, env)
    assert (args.executor_id, args.slots) == ("gpu-8", 1)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--slots", "0"], {}, "at least 1"),
        ([], {"INFERNO_EXECUTOR_SLOTS": "many"}, "not an integer"),
        (["--executor-id", "a.b"], {}, "may only contain"),
    ],
)
def test_bad_values_exit_with_a_clear_message(argv, env, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv, Settings(), env)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
