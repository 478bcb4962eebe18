"""The wire vocabulary (strict decoding with a reason for every refusal) and the settings root."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamal.config import load_settings
from streamal.errors import ConfigError, DecodeError
from streamal.messages import (
    MAX_MESSAGE_BYTES,
    Label,
    Sample,
    decode_label,
    decode_sample,
    label_message,
    label_request_message,
    prediction_message,
)
from streamal.models import build_model
from streamal.policies import build_policy
from streamal.strategies import build_strategy


# -- samples ----------------------------------------------------------------------------------------
def test_decode_sample_valid():
    s = decode_sample(
        b'{"id": "s1", "features": {"x": 1, "y": -2.5, "z": 0}, "ts": 12, "meta": {"src": [1]}, "extra": 1}'
    )
    assert s.id == "s1"
    assert s.features == {"x": 1.0, "y": -2.5, "z": 0.0}
    assert all(type(v) is float for v in s.features.values())
    assert s.ts == 12.0
    assert s.meta == {"src": [1]}
    assert decode_sample(b'{"id": "s2", "features": {}}').ts is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "invalid_json"),  # a tombstone
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b'{"id": "s1", "features": {"x": 1}', "invalid_json"),
        (b"\xff\xfe{}", "invalid_encoding"),  # not UTF-8
        (b'{"id": "s\xff", "features": {"x": 1}}', "invalid_encoding"),
        (b"null", "invalid_schema"),
        (b"[]", "invalid_schema"),
        (b'{"features": {"x": 1}}', "invalid_schema"),  # no id
        (b'{"id": 7, "features": {"x": 1}}', "invalid_schema"),
        (b'{"id": "", "features": {"x": 1}}', "invalid_schema"),
        (b'{"id": "s1"}', "invalid_schema"),
        (b'{"id": "s1", "features": [1, 2]}', "invalid_schema"),
        (b'{"id": "s1", "features": "x=1"}', "invalid_schema"),
        (b'{"id": "s1", "features": {"x": "1"}}', "invalid_schema"),
        (b'{"id": "s1", "features": {"x": true}}', "invalid_schema"),  # bool is not a number
        (b'{"id": "s1", "features": {"x": null}}', "invalid_schema"),
        (b'{"id": "s1", "features": {"x": 1}, "meta": 3}', "invalid_schema"),
        (b'{"id": "s1", "features": {"x": NaN}}', "non_finite"),
        (b'{"id": "s1", "features": {"x": Infinity}}', "non_finite"),
        (b'{"id": "s1", "features": {"x": -Infinity}}', "non_finite"),
        (b'{"id": "s1", "features": {"x": 1e400}}', "non_finite"),
        (b'{"id": "s1", "features": {"x": 1}, "ts": NaN}', "non_finite"),
        (b'{"id": "s1", "features": {"x": 1e308}}', "non_finite"),  # finite, but squares overflow
        (b'{"id": "s1", "features": {"x": 1.0, "y": -2e100}}', "non_finite"),
        (b'{"id": "s1", "features": {"x": 1, "y": 1' + b"0" * 101 + b"}}", "non_finite"),  # an int
        (b'{"id": "s1", "features": {"x": "a", "y": 1e300}}', "invalid_schema"),  # the schema's reason first
    ],
)
def test_decode_sample_refusals_have_a_reason(raw, reason):
    with pytest.raises(DecodeError) as info:
        decode_sample(raw)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{reason}: ")


@pytest.mark.parametrize("features", ['{"x": 1.0}', '{"x": 1}', '{"x": "1"}'])  # fast path, ints, schema
def test_a_meta_too_deep_to_send_on_is_refused_and_one_that_can_be_is_kept(features):
    def sample(depth: int) -> bytes:
        meta = "{}"
        for _ in range(depth):
            meta = '{"a": ' + meta + "}"
        return f'{{"id": "s1", "features": {features}, "meta": {meta}}}'.encode()

    if features == '{"x": "1"}':  # (a string feature is refused first, for its own reason)
        with pytest.raises(DecodeError, match="features"):
            decode_sample(sample(300))
        return
    with pytest.raises(DecodeError, match="meta: cannot be sent on") as info:
        decode_sample(sample(300))  # orjson reads it, but writes at most 254 levels
    assert info.value.reason == "invalid_schema"
    # around the limit, every sample is refused or can be sent on in its label request (meta one level down)
    refused = []
    for depth in range(240, 260):
        try:
            kept = decode_sample(sample(depth))
        except DecodeError:
            refused.append(depth)
        else:
            assert label_request_message(kept, "a", {"a": 1.0}, 1.0, "entropy", 0, 0.0)
    assert 240 not in refused
    assert refused == list(range(refused[0], 260))


def test_a_feature_too_large_to_compute_with_is_named_and_the_largest_allowed_is_kept():
    with pytest.raises(DecodeError, match=r"features\.y: -2e\+101 is too large to compute with"):
        decode_sample(b'{"id": "s1", "features": {"x": 1.0, "y": -2e101}}')
    assert decode_sample(b'{"id": "s1", "features": {"x": 1e100, "y": -1e100}}').features["y"] == -1e100


def test_decode_error_names_the_field():
    with pytest.raises(DecodeError, match=r"features\.speed"):
        decode_sample(b'{"id": "s1", "features": {"speed": "fast"}}')


def test_too_large_is_refused_before_parsing_and_the_limit_is_exact():
    head = b'{"id": "s1", "features": {"x": 1}}'
    exactly = head + b" " * (MAX_MESSAGE_BYTES - len(head))
    assert len(exactly) == MAX_MESSAGE_BYTES
    assert decode_sample(exactly).features == {"x": 1.0}
    with pytest.raises(DecodeError) as info:
        decode_sample(exactly + b" ")
    assert info.value.reason == "too_large"
    with pytest.raises(DecodeError) as info:
        decode_label(b"{" * (MAX_MESSAGE_BYTES + 1))  # not even valid JSON: size is checked first
    assert info.value.reason == "too_large"


# -- labels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "label"),
    [
        (b'{"id": "s1", "label": true}', True),
        (b'{"id": "s1", "label": false}', False),
        (b'{"id": "s1", "label": 1}', 1),
        (b'{"id": "s1", "label": 0}', 0),
        (b'{"id": "s1", "label": "1"}', "1"),
        (b'{"id": "s1", "label": "cat", "annotator": "ann", "ts": 3}', "cat"),
    ],
)
def test_decode_label_keeps_the_label_type(raw, label):
    decoded = decode_label(raw)
    assert decoded.label == label
    assert type(decoded.label) is type(label)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "invalid_json"),
        (b"not json", "invalid_json"),
        (b'{"label": "cat"}', "invalid_schema"),
        (b'{"id": "s1", "label": 1.5}', "invalid_schema"),
        (b'{"id": "s1", "label": 1.0}', "invalid_schema"),
        (b'{"id": "s1", "label": null}', "invalid_schema"),
        (b'{"id": "s1", "label": ""}', "invalid_schema"),
        (b'{"id": "s1", "label": ["a"]}', "invalid_schema"),
        (b'{"id": "s1", "label": {"a": 1}}', "invalid_schema"),
        (b'{"id": "s1", "label": "a", "annotator": 5}', "invalid_schema"),
        (b'{"id": "s1", "label": "a", "ts": Infinity}', "non_finite"),
    ],
)
def test_decode_label_refusals_have_a_reason(raw, reason):
    with pytest.raises(DecodeError) as info:
        decode_label(raw)
    assert info.value.reason == reason


@pytest.mark.parametrize("label", [True, False, 0, 1, -3, "1", "true", "chat noir"])
def test_label_message_round_trips_the_label_type(label):
    decoded = decode_label(label_message("s1", label, annotator="ann", ts=1.5))
    assert (decoded.id, decoded.label, decoded.annotator, decoded.ts) == ("s1", label, "ann", 1.5)
    assert type(decoded.label) is type(label)


def test_prediction_message_encodes_non_string_class_keys():
    raw = prediction_message("s1", True, {True: 0.75, False: 0.25}, 0.25, 3, True, 9.0)
    assert orjson.loads(raw) == {
        "id": "s1",
        "prediction": True,
        "proba": {"true": 0.75, "false": 0.25},
        "uncertainty": 0.25,
        "model_version": 3,
        "queried": True,
        "ts": 9.0,
    }


# -- decoding never raises anything else ------------------------------------------------------------
def _decode_or_reason(decode: Callable[[bytes], object], raw: bytes) -> tuple[object, str | None]:
    """The decoded message, or the reason of the DecodeError; any other exception fails the test."""
    try:
        return decode(raw), None
    except DecodeError as exc:
        return None, exc.reason


@settings(max_examples=300, derandomize=True, deadline=None)
@given(raw=st.binary(max_size=200))
def test_decode_arbitrary_bytes_only_raises_decode_error(raw):
    for decode in (decode_sample, decode_label):
        _, reason = _decode_or_reason(decode, raw)
        assert reason is None or reason in DecodeError.REASONS


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
_numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | st.booleans()
# near-valid messages, so that both decoders also succeed, and every field is sometimes wrong
_messageish = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=20) | _json_values,
        "features": st.dictionaries(st.text(max_size=5), _numbers, max_size=5) | _json_values,
        "label": st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=10) | _json_values,
    },
    optional={"ts": _numbers | _json_scalars, "meta": _json_values, "annotator": _json_scalars},
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(obj=_messageish | _json_values)
def test_decode_arbitrary_json_only_raises_decode_error(obj: Any):
    raw = json.dumps(obj).encode()  # allow_nan: NaN and Infinity appear on the wire too
    sample, reason = _decode_or_reason(decode_sample, raw)
    if isinstance(sample, Sample):
        assert all(type(v) is float and math.isfinite(v) for v in sample.features.values())
        assert isinstance(sample.id, str)
        assert sample.id
    else:
        assert reason in DecodeError.REASONS
    label, reason = _decode_or_reason(decode_label, raw)
    if isinstance(label, Label):
        assert type(label.label) in (str, int, bool)
    else:
        assert reason in DecodeError.REASONS


# -- settings ---------------------------------------------------------------------------------------
def test_defaults():
    s = load_settings(env={})
    assert s.policy.budget == 0.1
    assert (s.topics.samples, s.topics.predictions, s.topics.label_requests) == (
        "samples",
        "predictions",
        "label-requests",
    )
    assert (s.topics.labels, s.topics.dead_letters) == ("labels", "dead-letters")
    # the default pair may change with benchmarks, but it must be one that builds
    assert build_strategy(s.strategy.name, s.strategy.seed).name == s.strategy.name
    assert build_policy(s.policy.name, s.policy.budget, s.policy.seed, s.policy.params).budget == 0.1
    assert build_model(s.model.name, s.model.params).name == s.model.name
    assert s.kafka.bootstrap_servers == "localhost:9092"
    assert s.kafka.sasl_password is None


def test_env_is_read_with_nesting():
    s = load_settings(
        env={
            "STREAMAL_POLICY__BUDGET": "0.05",
            "STREAMAL_TOPICS__SAMPLES": "in",
            "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": "a:9092,b:9093",
            "STREAMAL_LOG_LEVEL": "DEBUG",
        }
    )
    assert (s.policy.budget, s.topics.samples, s.topics.labels) == (0.05, "in", "labels")
    assert s.kafka.bootstrap_servers == "a:9092,b:9093"
    assert s.log_level == "DEBUG"


def test_env_overrides_the_yaml_file(tmp_path):
    path = tmp_path / "streamal.yaml"
    path.write_text("policy:\n  name: threshold\n  budget: 0.2\ntopics:\n  samples: from-file\n")
    s = load_settings(path, env={"STREAMAL_POLICY__BUDGET": "0.05"})
    assert s.policy.budget == 0.05  # the environment wins
    assert s.policy.name == "threshold"  # the file still counts where the environment is silent
    assert s.topics.samples == "from-file"
    assert load_settings(path, env={}).policy.budget == 0.2


def test_a_wrong_yaml_value_names_the_setting(tmp_path):
    path = tmp_path / "streamal.yaml"
    path.write_text("http:\n  port: 99999\n")
    with pytest.raises(ConfigError, match=r"STREAMAL_HTTP__PORT \(http\.port\)"):
        load_settings(path, env={})


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_checkpoint_dir_is_refused_not_taken_for_the_working_directory(value):
    with pytest.raises(ConfigError, match=r"STREAMAL_CHECKPOINT__DIR .*is empty"):
        load_settings(None, env={"STREAMAL_CHECKPOINT__DIR": value})
    assert load_settings(None, env={}).checkpoint.dir is None  # left out: no checkpoints


def test_a_missing_config_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="--config"):
        load_settings(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STREAMAL_POLICY__BUDGET": "2"}, "STREAMAL_POLICY__BUDGET"),
        ({"STREAMAL_POLICY__BUDGET": "0"}, "STREAMAL_POLICY__BUDGET"),
        ({"STREAMAL_POLICY__BUDGET": "a lot"}, "STREAMAL_POLICY__BUDGET"),
        ({"STREAMAL_HTTP__PORT": "70000"}, "STREAMAL_HTTP__PORT"),
        ({"STREAMAL_KAFKA__BOOTSTRAP_SERVERS": "nohost"}, "STREAMAL_KAFKA__BOOTSTRAP_SERVERS"),
        ({"STREAMAL_KAFKA__SECURITY_PROTOCOL": "TELNET"}, "STREAMAL_KAFKA__SECURITY_PROTOCOL"),
        ({"STREAMAL_POLICY__NO_SUCH_SETTING": "1"}, "STREAMAL_POLICY__NO_SUCH_SETTING"),
        ({"STREAMAL_NO_SUCH_SECTION__X": "1"}, "STREAMAL_NO_SUCH_SECTION__X"),
        ({"STREAMAL_BUDGET": "0.1"}, "STREAMAL_BUDGET"),
    ],
)
def test_a_wrong_setting_names_its_env_var(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env=env)


def test_sasl_needs_credentials():
    with pytest.raises(ConfigError, match=r"STREAMAL_KAFKA.*sasl_username"):
        load_settings(env={"STREAMAL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"})


def test_secrets_never_appear_in_repr():
    s = load_settings(
        env={
            "STREAMAL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMAL_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMAL_KAFKA__SASL_USERNAME": "svc",
            "STREAMAL_KAFKA__SASL_PASSWORD": "hunter2-very-secret",
            "STREAMAL_CHECKPOINT__KEY": "signing-key-secret",
        }
    )
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2-very-secret"
    for text in (repr(s), str(s), repr(s.kafka), s.model_dump_json()):
        assert "hunter2" not in text
        assert "signing-key-secret" not in text
    assert "svc" in repr(s.kafka)


def test_an_explicit_env_ignores_and_restores_the_process_environment(monkeypatch):
    monkeypatch.setenv("STREAMAL_POLICY__BUDGET", "0.3")
    assert load_settings(env={}).policy.budget == 0.1
    assert load_settings(env={"STREAMAL_POLICY__BUDGET": "0.2"}).policy.budget == 0.2
    assert os.environ["STREAMAL_POLICY__BUDGET"] == "0.3"
    assert load_settings().policy.budget == 0.3


def test_an_explicit_env_leaves_unrelated_variables_alone(monkeypatch):
    monkeypatch.setenv("TEST_STREAMAL_PROBE", "outer")
    load_settings(env={"TEST_STREAMAL_PROBE": "inner", "STREAMAL_POLICY__BUDGET": "0.2"})
    assert os.environ.get("TEST_STREAMAL_PROBE") == "outer"
