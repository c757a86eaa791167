"""Moving secrets out of requests (pure part of `inferno.api.secrets`), and the log masks that
learn the values an executor resolves."""

from __future__ import annotations

import itertools
import time

import msgspec
import pytest

from inferno.api.errors import ApiError
from inferno.api.secrets import Found, extract, is_ref_key, without_secrets
from inferno.events.backend_options import unknown_option
from inferno.events.commands import (
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    StopPipeline,
)
from inferno.events.model import PipelineChanges, PipelineSpec
from inferno.executor.secrets import has_refs
from inferno.secrets.masking import is_secret_param, mask_text, mask_value, remember_secret
from inferno.secrets.urls import put_back, take_out


def found() -> Found:
    counter = itertools.count(1)
    return Found(make_ref=lambda: f"sec-{next(counter):032x}")


REF_1, REF_2, REF_3, REF_4 = (f"sec-{n:032x}" for n in range(1, 5))


def test_api_key_is_replaced_by_a_ref_and_api_key_env_passes_through() -> None:
    f = found()
    config = {
        "base_url": "http://llm",
        "api_key": "sk-test-abcdefghijklmnop",
        "api_key_env": "OPENAI_API_KEY",
        "max_retries": 3,
    }
    assert extract(config, "client_config", f) == {
        "base_url": "http://llm",
        "api_key_ref": REF_1,
        "api_key_env": "OPENAI_API_KEY",  # names a variable on the executors: not a secret
        "max_retries": 3,
    }
    assert f.secrets == {REF_1: b'"sk-test-abcdefghijklmnop"'}
    assert f.named == {}


def test_an_env_only_config_is_left_exactly_as_it_was() -> None:
    f = found()
    config = {"base_url": "http://llm", "api_key_env": "MY_KEY"}
    assert extract(config, "client_config", f) == config
    assert (f.secrets, f.named) == ({}, {})


def test_secrets_at_any_depth_and_of_any_json_type() -> None:
    f = found()
    config = {
        "default_headers": {"Authorization": "Bearer abc", "X-Trace": "on"},
        "extra": [{"password": {"user": "u", "pass": "p"}}],
        "max_tokens": 5,  # a count of tokens is not a secret
    }
    assert extract(config, "client_config", f) == {
        "default_headers": {"Authorization_ref": REF_1, "X-Trace": "on"},
        "extra": [{"password_ref": REF_2}],
        "max_tokens": 5,
    }
    assert f.secrets == {REF_1: b'"Bearer abc"', REF_2: b'{"user":"u","pass":"p"}'}


def test_a_null_secret_becomes_a_null_ref_which_drops_the_parents_key_in_a_clone() -> None:
    assert extract({"api_key": None}, "client_config", found()) == {"api_key_ref": None}


def test_refs_in_a_request_are_checked_later_and_must_look_like_refs() -> None:
    f = found()
    ref = "sec-" + "ab" * 16
    assert extract({"api_key_ref": ref, "token_ref": None}, "client_config", f) == {
        "api_key_ref": ref,
        "token_ref": None,
    }
    assert f.named == {ref: "client_config.api_key_ref"}
    with pytest.raises(ApiError) as bad:
        extract({"api_key_ref": "sk-not-a-ref"}, "client_config", found())
    assert bad.value.status == 400
    assert "client_config.api_key_ref" in bad.value.message
    assert "sk-not-a-ref" not in bad.value.message


def test_a_secret_and_its_ref_together_are_refused() -> None:
    with pytest.raises(ApiError) as both:
        extract({"api_key": "sk-x", "api_key_ref": REF_1}, "pipelines.0.client_config", found())
    assert both.value.status == 400
    assert "'pipelines.0.client_config.api_key'" in both.value.message
    assert "sk-x" not in both.value.message


@pytest.mark.parametrize(
    ("key", "ref"),
    [("api_key_ref", True), ("x-api-key_ref", True), ("secret_ref", True), ("dataset_ref", False)],
)
def test_ref_keys(key: str, ref: bool) -> None:
    assert is_ref_key(key) is ref
    assert has_refs({"a": [{key: "sec-x"}]}) is ref


def spec(**knobs: object) -> PipelineSpec:
    return PipelineSpec(pipeline_name="p", pipeline_type="openai", **knobs)  # type: ignore[arg-type]


def test_every_command_that_carries_a_spec_loses_its_secrets() -> None:
    now = time.time()
    secret = {"api_key": "sk-test-abcdefghijklmnop"}
    create = CreateExperiment(
        experiment_id="e",
        context_id="c",
        experiment_name="n",
        dataset_ref="sha256-x",
        row_count=1,
        num_shards=1,
        pipelines=[spec(), spec(model_config={"model": "m", "hf_token": "hf_abcdefghij"})],
        issued_at=now,
    )
    f = found()
    safe = without_secrets(create, f)
    assert isinstance(safe, CreateExperiment)
    assert safe.pipelines[1].model_config == {"model": "m", "hf_token_ref": REF_1}
    clone = ClonePipeline(
        pipeline_id=1,
        changes=PipelineChanges(client_config=secret, sampling_params={"temperature": 0}),
        issued_at=now,
    )
    safe_clone = without_secrets(clone, f)
    assert isinstance(safe_clone, ClonePipeline)
    assert safe_clone.changes.client_config == {"api_key_ref": REF_2}
    assert safe_clone.changes.model_config is None  # left out stays left out (inherited)
    into = CloneIntoContext(context_id="c", spec=spec(client_config=secret), issued_at=now)
    safe_into = without_secrets(into, f)
    assert isinstance(safe_into, CloneIntoContext)
    assert safe_into.spec.client_config == {"api_key_ref": f"sec-{3:032x}"}
    for command in (safe, safe_clone, safe_into):
        assert b"sk-test" not in msgspec.json.encode(command)
        assert b"hf_abcdefghij" not in msgspec.json.encode(command)
    stop = StopPipeline(pipeline_id=1, issued_at=now)
    assert without_secrets(stop, f) is stop


def test_refs_are_shown_and_remembered_secrets_are_masked_everywhere() -> None:
    assert mask_value({"api_key_ref": REF_1}) == {"api_key_ref": REF_1}
    secret = "plain-words-no-pattern-9f8e7d"  # matches none of the masking patterns
    assert mask_text(f"auth failed for {secret}") == f"auth failed for {secret}"
    remember_secret({"nested": [secret, "short"]})
    assert mask_text(f"auth failed for {secret}") == "auth failed for ***"
    assert mask_text("a short word") == "a short word"  # too short to be masked everywhere


def test_credentials_inside_a_url_become_placeholders_and_the_rest_stays_as_given() -> None:
    f = found()
    url = "http://svc:p%40ss@llm:8/v1?api-version=2024-06-01&api-key=K1&Sig=K2&model=x#k=v"
    config = {"base_url": url, "extra": [{"callback": "https://h/cb?access_token=K3"}]}
    assert extract(config, "client_config", f) == {
        "base_url": f"http://{{{{{REF_1}}}}}@llm:8/v1?api-version=2024-06-01"
        f"&api-key={{{{{REF_2}}}}}&Sig={{{{{REF_3}}}}}&model=x#k=v",
        "extra": [{"callback": f"https://h/cb?access_token={{{{{REF_4}}}}}"}],
    }
    assert [msgspec.json.decode(v) for v in f.secrets.values()] == ["svc:p%40ss", "K1", "K2", "K3"]
    assert f.named == {}
    # a URL without credentials, and a string that is no URL, are left alone
    plain = {"base_url": "http://llm/v1?api-version=1", "model": "a?key=b"}
    assert extract(plain, "client_config", found()) == plain


def test_a_placeholder_in_a_request_is_a_ref_to_check_not_a_secret() -> None:
    f = found()
    shown = f"http://{{{{{REF_1}}}}}@llm/v1?key={{{{{REF_2}}}}}"
    assert extract({"base_url": shown}, "pipelines.0.client_config", f) == {"base_url": shown}
    assert f.secrets == {}
    assert f.named == {REF_1: "pipelines.0.client_config.base_url", REF_2: f.named[REF_2]}


def test_take_out_and_put_back_give_the_url_back_byte_for_byte() -> None:
    counter = itertools.count(1)
    for url in [
        "http://USER:PASS@h/v1?x=1&token=TOKEN1&token=TOKEN2",
        "https://TOKEN3@h",
        "http://h/a@b?sig=",  # an @ in the path is not userinfo; an empty value hides nothing
        "http://h/v1?api-version=1",
    ]:
        safe, parts = take_out(url, lambda: f"sec-{next(counter):032x}")
        assert all(part not in safe for part in parts.values())
        assert put_back(safe, parts) == url
    assert take_out("http://h/a@b?sig=", lambda: "unused") == ("http://h/a@b?sig=", {})


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api-key", True),
        ("key", True),
        ("token", True),
        ("access_token", True),
        ("sig", True),
        ("X-Amz-Signature", True),
        ("X-Amz-Credential", True),
        ("subscription-key", True),
        ("Ocp-Apim-Subscription-Key", True),
        ("api-version", False),
        ("max_tokens", False),
        ("monkey", False),
        ("model", False),
    ],
)
def test_which_query_parameters_and_headers_are_secret(name: str, secret: bool) -> None:
    assert is_secret_param(name) is secret


def test_secret_headers_follow_the_wider_rule_only_inside_headers() -> None:
    f = found()
    config = {
        "default_headers": {"Ocp-Apim-Subscription-Key": "k1", "Authorization": "Bearer b"},
        "subscription_key": "not-a-header",  # outside headers the key rule applies
    }
    assert extract(config, "client_config", f) == {
        "default_headers": {"Ocp-Apim-Subscription-Key_ref": REF_1, "Authorization_ref": REF_2},
        "subscription_key": "not-a-header",
    }
    assert has_refs({"default_headers": {"Ocp-Apim-Subscription-Key_ref": REF_1}})
    assert not has_refs({"Ocp-Apim-Subscription-Key_ref": REF_1})


def test_url_credentials_are_masked_in_text_but_placeholders_are_shown() -> None:
    text = "GET http://u:pw@h/v1?api-version=1&api-key=K&key=K2&sig=a%2Fb&max_tokens=5 failed"
    assert mask_text(text) == (
        "GET http://***@h/v1?api-version=1&api-key=***&key=***&sig=***&max_tokens=5 failed"
    )
    shown = f"http://{{{{{REF_1}}}}}@h/v1?key={{{{{REF_2}}}}}"
    assert mask_text(shown) == shown
    # a response masks a raw URL the log might hold from before the api moved credentials
    assert mask_value({"base_url": "http://h/v1?token=T"}) == {"base_url": "http://h/v1?token=***"}


@pytest.mark.parametrize(
    ("kind", "knobs", "field"),
    [
        ("sim", {"sampling_params": {"temprature": 1}}, "sampling_params.temprature"),
        ("sim", {"model_config": {"acuracy": 1}}, "model_config.acuracy"),
        ("openai", {"client_config": {"b": 1, "a": 1}}, "client_config.a"),
        ("sim", {"sampling_params": {"temperature": 1}, "client_config": {"x": 1}}, None),
        ("openai", {"client_config": {"api_key_ref": REF_1, "base_url": "u"}}, None),
        ("openai", {"model_config": {"model": "m", "temperature": 1}}, None),
        ("hf", {"sampling_params": {"temprature": 1}}, None),  # checked by the hf backend
    ],
)
def test_the_one_check_for_unknown_backend_keys(kind: str, knobs: dict, field: str | None) -> None:
    spec = PipelineSpec(pipeline_name="p", pipeline_type=kind, **knobs)  # type: ignore[arg-type]
    found_field = unknown_option(spec)
    assert (found_field and found_field[0]) == field
