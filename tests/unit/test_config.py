from __future__ import annotations

import dataclasses

import pytest

from inferno.runtime.settings import ConfigError, Settings, mask_url


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.namespace == "inferno"
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8851)
    assert s.cors_origins == ()
    assert s.replicas == 1
    assert s.heartbeat_ttl_s == 10.0
    assert s.executor_id is None
    assert s.token is None
    assert s.nats_creds is None
    assert (s.log_level, s.log_format) == ("info", "auto")


def test_every_variable_is_read() -> None:
    env = {
        "NATS_URL": "nats://a:4222,nats://b:4222",
        "NATS_CREDS": "/etc/nats/user.creds",
        "NATS_USER": "alice",
        "NATS_PASSWORD": "hunter2",
        "NATS_TLS_CA": "/ca.pem",
        "NATS_TLS_CERT": "/cert.pem",
        "NATS_TLS_KEY": "/key.pem",
        "INFERNO_NAMESPACE": "team-a_1",
        "INFERNO_TOKEN": "s3cret",
        "INFERNO_API_HOST": "0.0.0.0",
        "INFERNO_API_PORT": "9000",
        "INFERNO_CORS_ORIGINS": " http://localhost:3000 , https://x.example ,",
        "INFERNO_REPLICAS": "3",
        "INFERNO_HEARTBEAT_TTL_S": "2.5",
        "INFERNO_EXECUTOR_ID": "gpu-0",
        "INFERNO_LOG_LEVEL": "DEBUG",
        "INFERNO_LOG_FORMAT": "json",
    }
    s = Settings.from_env(env)
    assert s == Settings(
        nats_url="nats://a:4222,nats://b:4222",
        nats_creds="/etc/nats/user.creds",
        nats_user="alice",
        nats_password="hunter2",
        nats_tls_ca="/ca.pem",
        nats_tls_cert="/cert.pem",
        nats_tls_key="/key.pem",
        namespace="team-a_1",
        token="s3cret",
        api_host="0.0.0.0",
        api_port=9000,
        cors_origins=("http://localhost:3000", "https://x.example"),
        replicas=3,
        heartbeat_ttl_s=2.5,
        executor_id="gpu-0",
        log_level="debug",
        log_format="json",
    )


def test_empty_values_count_as_unset() -> None:
    s = Settings.from_env({"INFERNO_API_PORT": "", "INFERNO_TOKEN": "  ", "NATS_URL": ""})
    assert s == Settings()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NATS_USER", "NATS_PASSWORD", "NATS_TLS_CERT", "NATS_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("INFERNO_REPLICAS", "5")
    monkeypatch.setenv("INFERNO_NAMESPACE", "envtest")
    s = Settings.from_env()
    assert (s.replicas, s.namespace) == (5, "envtest")


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().replicas = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("INFERNO_NAMESPACE", "a.b"),
        ("INFERNO_NAMESPACE", "has space"),
        ("INFERNO_NAMESPACE", "wild*"),
        ("INFERNO_API_PORT", "http"),
        ("INFERNO_API_PORT", "0"),
        ("INFERNO_API_PORT", "70000"),
        ("INFERNO_REPLICAS", "0"),
        ("INFERNO_REPLICAS", "6"),
        ("INFERNO_REPLICAS", "two"),
        ("INFERNO_REPLICAS", "1.5"),
        ("INFERNO_HEARTBEAT_TTL_S", "0"),
        ("INFERNO_HEARTBEAT_TTL_S", "-1"),
        ("INFERNO_HEARTBEAT_TTL_S", "soon"),
        ("INFERNO_HEARTBEAT_TTL_S", "nan"),
        ("INFERNO_HEARTBEAT_TTL_S", "inf"),
        ("INFERNO_EXECUTOR_ID", "gpu.0"),
        ("INFERNO_LOG_LEVEL", "verbose"),
        ("INFERNO_LOG_LEVEL", "critical"),
        ("INFERNO_LOG_FORMAT", "xml"),
    ],
)
def test_invalid_value_names_the_variable_and_value(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({var: value})
    assert var in str(err.value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("NATS_USER", "NATS_PASSWORD"),
        ("NATS_PASSWORD", "NATS_USER"),
        ("NATS_TLS_CERT", "NATS_TLS_KEY"),
        ("NATS_TLS_KEY", "NATS_TLS_CERT"),
    ],
)
def test_paired_variables_must_come_together(given: str, missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        Settings.from_env({given: "value-of-it"})
    # the value itself (possibly a password) is not echoed
    with pytest.raises(ConfigError) as err:
        Settings.from_env({given: "value-of-it"})
    assert "value-of-it" not in str(err.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_masked_hides_secrets_and_keeps_the_rest() -> None:
    s = Settings.from_env(
        {
            "NATS_URL": "nats://alice:hunter2@nats-1:4222,tls://tok3n@nats-2:4222",
            "NATS_USER": "bob",
            "NATS_PASSWORD": "pa55word",
            "INFERNO_TOKEN": "bearer-token-value",
            "INFERNO_CORS_ORIGINS": "http://a,http://b",
        }
    )
    m = s.masked()
    assert m["nats_url"] == "nats://***@nats-1:4222,tls://***@nats-2:4222"
    assert m["nats_password"] == "***"
    assert m["token"] == "***"
    assert m["nats_user"] == "bob"
    assert m["cors_origins"] == ["http://a", "http://b"]
    assert m["api_port"] == 8851
    assert set(m) == {f.name for f in dataclasses.fields(Settings)}
    text = repr(m)
    for secret in ("alice", "hunter2", "tok3n", "pa55word", "bearer-token-value"):
        assert secret not in text


def test_masked_keeps_unset_secrets_as_none() -> None:
    m = Settings().masked()
    assert m["token"] is None
    assert m["nats_password"] is None
    assert m["nats_url"] == "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://user:pass@host:4222", "nats://***@host:4222"),
        ("nats://token@host", "nats://***@host"),
        ("wss://u:p@a:443/path,nats://b:4222", "wss://***@a:443/path,nats://b:4222"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected
