"""Who and why on a command (issue 8 §2), the pure parts: INFERNO_TOKENS, the rules for an
actor and a reason, what the api records behind a token, and where a trace id comes from."""

from __future__ import annotations

import pytest

from inferno.api.tracing import trace_id_from
from inferno.client.cli import main
from inferno.events.commands import MAX_REASON_LENGTH
from inferno.events.provenance import (
    MAX_ACTOR_LENGTH,
    as_actor,
    check_actor,
    check_reason,
    recorded_actor,
)
from inferno.runtime.logs import log_effective_config
from inferno.runtime.settings import ConfigError, Credential, Settings

# INFERNO_TOKENS


def test_tokens_map_each_token_to_an_identity() -> None:
    s = Settings.from_env({"INFERNO_TOKENS": " alice=tok-1== , bob.smith@ops=tok-2,"})
    assert s.tokens == (Credential("alice", "tok-1=="), Credential("bob.smith@ops", "tok-2"))
    assert s.credentials() == s.tokens
    assert Settings.from_env({}).credentials() == ()


def test_a_single_token_is_one_identity_beside_the_named_ones() -> None:
    s = Settings.from_env({"INFERNO_TOKEN": "shared", "INFERNO_TOKENS": "alice=a1,alice=a2"})
    assert [(c.identity, c.token) for c in s.credentials()] == [
        ("INFERNO_TOKEN", "shared"),
        ("alice", "a1"),  # one identity may hold two tokens: rotate without a gap
        ("alice", "a2"),
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("alice", "entry 1: expected IDENTITY=TOKEN"),
        ("alice=", "entry 1: expected IDENTITY=TOKEN"),
        ("a=1,=secret-token", "entry 2: expected IDENTITY=TOKEN"),
        ("al ice=secret-token", "entry 1: an identity is 1 to 64 letters"),
        ("(alice)=secret-token", "entry 1: an identity is 1 to 64 letters"),
        (f"{'a' * 65}=secret-token", "entry 1: an identity is 1 to 64 letters"),
        ("INFERNO_TOKEN=secret-token", "entry 1: INFERNO_TOKEN names INFERNO_TOKEN's holder"),
        ("alice=secret token", "entry 1: the token holds whitespace"),
        ("alice=secret-token,bob=secret-token", "entry 2: its token is another entry's too"),
    ],
)
def test_bad_tokens_name_the_variable_and_entry_but_never_a_token(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"INFERNO_TOKENS": value})
    message = str(raised.value)
    assert message.startswith("INFERNO_TOKENS=*** is invalid: ")
    assert says in message
    assert "secret" not in message


def test_the_single_token_may_not_also_be_a_named_one() -> None:
    with pytest.raises(ConfigError, match="INFERNO_TOKEN is also one of INFERNO_TOKENS"):
        Settings.from_env({"INFERNO_TOKEN": "same-secret", "INFERNO_TOKENS": "a=same-secret"})


def test_tokens_are_masked_in_the_effective_config_and_the_repr() -> None:
    s = Settings.from_env({"INFERNO_TOKENS": "alice=tok-alice-secret,bob=tok-bob-secret"})
    assert s.masked()["tokens"] == ["alice=***", "bob=***"]
    logged: list[dict[str, object]] = []

    class Logger:
        def info(self, event: str, **fields: object) -> None:
            logged.append({"event": event, **fields})

    log_effective_config(Logger(), s)
    assert "tok-" not in repr(logged) + repr(s)
    assert logged[0]["tokens"] == ["alice=***", "bob=***"]


# actor and reason


def test_an_actor_is_printable_ascii_and_short() -> None:
    assert check_actor("  alice@laptop ") == "alice@laptop"
    assert check_actor("   ") is None
    assert check_actor("a" * MAX_ACTOR_LENGTH) == "a" * MAX_ACTOR_LENGTH
    for bad, why in [
        ("a" * (MAX_ACTOR_LENGTH + 1), f"at most {MAX_ACTOR_LENGTH} characters"),
        ("alice\x1b[2J", "printable ASCII"),
        ("alice\nbob", "printable ASCII"),
        ("José", "printable ASCII"),
    ]:
        with pytest.raises(ValueError, match=why):
            check_actor(bad)


def test_an_os_user_and_host_become_a_valid_actor() -> None:
    assert as_actor("José@laptöp") == "Jose@laptop"
    assert as_actor("用户@host\x07") == "@host"
    assert as_actor("用户") is None
    long = as_actor("u" * 500 + "@h")
    assert long is not None
    assert len(long) == MAX_ACTOR_LENGTH
    assert check_actor(long) == long


def test_a_reason_is_capped_and_kept_on_one_printable_line() -> None:
    assert check_reason(None) is None
    assert check_reason("   ") is None
    assert check_reason("  diverging after shard 3 ") == "diverging after shard 3"
    assert check_reason("überprüft: zu langsam") == "überprüft: zu langsam"
    assert check_reason("x" * MAX_REASON_LENGTH) == "x" * MAX_REASON_LENGTH
    with pytest.raises(ValueError, match=f"at most {MAX_REASON_LENGTH} characters, not 1001"):
        check_reason("x" * (MAX_REASON_LENGTH + 1))
    assert check_reason("line one\r\nline two\ttab") == "line one line two tab"
    assert check_reason("red \x1b[31mtext\x07") == "red [31mtext"
    assert check_reason("bidi \u202egnp.exe\u200b") == "bidi gnp.exe"
    assert (
        check_reason("non\u00a0breaking, emoji \U0001f525") == "non\u00a0breaking, emoji \U0001f525"
    )
    assert check_reason("\n\t\x1b") is None
    assert check_reason("lone \ud800surrogate") == "lone surrogate"


def test_the_cli_refuses_a_reason_over_the_cap_before_sending(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in (["stop", "1"], ["clone", "1"], ["run", "spec.yaml"]):
        with pytest.raises(SystemExit) as usage:  # argparse's exit, as for any bad argument
            main([*command, "--api", "http://127.0.0.1:9", "--reason", "x" * 1001])
        assert usage.value.code == 2
        error = capsys.readouterr().err
        assert "argument --reason: must be at most 1000 characters, not 1001" in error


def test_behind_a_token_the_identity_comes_first() -> None:
    assert recorded_actor(None, None) is None
    assert recorded_actor(None, "bob@laptop") == "bob@laptop"  # loopback, no token: the claim
    assert recorded_actor("alice", None) == "alice"
    assert recorded_actor("alice", "alice") == "alice"
    assert recorded_actor("INFERNO_TOKEN", "bob@ci") == "INFERNO_TOKEN (bob@ci)"
    actor = recorded_actor("alice", "x" * MAX_ACTOR_LENGTH)
    assert actor is not None
    assert actor.startswith("alice (")
    assert len(actor) == MAX_ACTOR_LENGTH


# trace ids

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_valid_traceparent_gives_its_trace_id() -> None:
    assert trace_id_from(f"00-{TRACE}-00f067aa0ba902b7-01", "req-1") == TRACE
    assert trace_id_from(f"01-{TRACE}-00f067aa0ba902b7-01-future", None) == TRACE


@pytest.mark.parametrize(
    "traceparent",
    [
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",  # version 00 has no suffix
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # hex is lower-case
        "garbage",
    ],
)
def test_an_invalid_traceparent_is_ignored(traceparent: str) -> None:
    assert trace_id_from(traceparent, "req-7.a:b_c") == "req-7.a:b_c"
    generated = trace_id_from(traceparent, None)
    assert len(generated) == 32
    assert set(generated) <= set("0123456789abcdef")


def test_an_invalid_request_id_is_replaced_by_a_new_trace_id() -> None:
    for bad in ("has space", "x" * 129, "semi;colon", "\x1b[2J", ""):
        generated = trace_id_from(None, bad)
        assert generated != bad
        assert len(generated) == 32
    assert trace_id_from(None, None) != trace_id_from(None, None)
