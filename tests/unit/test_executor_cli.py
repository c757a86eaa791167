"""`python -m inferno.executor` arguments: flags over environment over defaults."""

from __future__ import annotations

import os
import re

import pytest

from inferno.executor.__main__ import default_executor_id, main, parse_args
from inferno.runtime.settings import Settings


def test_defaults_are_hostname_pid_and_two_slots():
    args = parse_args([], Settings())
    assert args.slots == 2
    assert args.executor_id == default_executor_id()
    assert re.fullmatch(rf"[A-Za-z0-9_-]+-{os.getpid()}", args.executor_id)


def test_environment_then_flags():
    settings = Settings.from_env({"INFERNO_EXECUTOR_ID": "gpu-7", "INFERNO_EXECUTOR_SLOTS": "6"})
    args = parse_args([], settings)
    assert (args.executor_id, args.slots) == ("gpu-7", 6)
    args = parse_args(["--executor-id", "gpu-8", "--slots", "1"], settings)
    assert (args.executor_id, args.slots) == ("gpu-8", 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--slots", "0"], "at least 1"), (["--executor-id", "a.b"], "may only contain")],
)
def test_bad_flags_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv, Settings())
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_slots_in_the_environment_exit_2_naming_the_variable(monkeypatch, capsys):
    """INFERNO_EXECUTOR_SLOTS is a setting like the others: checked by `Settings`, before any
    connection, with the variable named (it used to bypass Settings)."""
    monkeypatch.setenv("INFERNO_EXECUTOR_SLOTS", "many")
    assert main([]) == 2
    assert "INFERNO_EXECUTOR_SLOTS='many' is invalid" in capsys.readouterr().err
