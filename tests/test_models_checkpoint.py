"""Models behind one interface, signed checkpoints of the engine, and the recorded-message line format."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import copy
import os
import pickle
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import naive_bayes

from streamal import checkpoint
from streamal.checkpoint import Checkpoint, CheckpointError
from streamal.datasets import load
from streamal.engine import Engine
from streamal.errors import ConfigError, StreamalError
from streamal.messages import ClassLabel, Label, Proba, Sample
from streamal.models import MODELS, KNNClassifier, RiverModel, build_model
from streamal.policies import VariableUncertainty
from streamal.replay import RecordedMessage, check_file
from streamal.strategies import Entropy

KEY = b"test-key-0123456789"


def _sums_to_one(proba: Proba) -> bool:
    return (
        bool(proba) and abs(sum(proba.values()) - 1.0) < 1e-9 and all(0.0 <= p <= 1.0 for p in proba.values())
    )


def _best(proba: Proba) -> Any:
    return max(proba, key=proba.__getitem__)


# -- knn --------------------------------------------------------------------------------------------
def test_knn_is_multiclass_from_the_first_label():
    knn = KNNClassifier(n_neighbors=3)
    assert knn.predict_proba_one({"x": 0.0}) == {}
    knn.learn_one({"x": 0.0}, "a")
    assert knn.predict_proba_one({"x": 0.0}) == {"a": 1.0}
    knn.learn_one({"x": 10.0}, "b")
    knn.learn_one({"x": 20.0}, "c")
    for x, label in [(0.5, "a"), (9.0, "b"), (21.0, "c")]:
        proba = knn.predict_proba_one({"x": x})
        assert list(proba) == ["a", "b", "c"]
        assert _sums_to_one(proba)
        assert _best(proba) == label


def test_model_classes_appear_as_labels_arrive():
    model = build_model("knn")
    assert model.classes == []
    assert model.predict_proba_one({"x": 1.0}) == {}
    labels: list[ClassLabel] = ["b", 2, "b", True, "z"]
    for i, label in enumerate(labels):
        model.learn_one({"x": float(i)}, label)
    assert model.classes == ["b", 2, True, "z"]
    assert set(model.predict_proba_one({"x": 0.0})) == {"b", 2, True, "z"}


def test_knn_sliding_window_forgets_old_labels():
    knn = KNNClassifier(n_neighbors=5, window_size=5)
    for _ in range(5):
        knn.learn_one({"x": 0.0}, "a")
    for _ in range(5):
        knn.learn_one({"x": 0.0}, "b")
    proba = knn.predict_proba_one({"x": 0.0})
    # five "b" neighbours and the prior's one pseudo-vote shared by the two known classes
    assert proba == pytest.approx({"a": 0.5 / 6, "b": 5.5 / 6})


def _trained_knn() -> KNNClassifier:
    knn = KNNClassifier(n_neighbors=3)
    for record in load("image_segments", limit=300):
        knn.learn_one(record.features, record.label)
    return knn


def test_knn_batch_predictions_equal_one_by_one_predictions():
    # how the service's polls happen to group samples must not change what the model says about them
    queries = [r.features for r in load("image_segments")[300:400]]
    batch_model, single_model = _trained_knn(), _trained_knn()
    batch = batch_model.predict_proba_batch(queries)
    single = [single_model.predict_proba_one(x) for x in queries]
    classes = sorted(batch[0])
    assert np.allclose(
        [[p[c] for c in classes] for p in batch],
        [[p[c] for c in classes] for p in single],
        rtol=0.0,
        atol=1e-4,  # room for float32 distances, which round differently in a matrix product
    )


def test_knn_features_appearing_later_are_used():
    knn = KNNClassifier(n_neighbors=1)
    knn.learn_one({"x": 0.0}, "a")
    knn.learn_one({"x": 10.0}, "b")
    knn.learn_one({"x": 0.0, "y": 10.0}, "c")  # a feature nobody had sent before
    proba = knn.predict_proba_one({"x": 0.0, "y": 10.0})
    assert _sums_to_one(proba)
    assert _best(proba) == "c"
    assert _best(knn.predict_proba_one({"x": 10.0, "y": 0.0})) == "b"


def test_knn_missing_features_are_survived():
    knn = KNNClassifier(n_neighbors=1)
    knn.learn_one({"x": 0.0, "y": 0.0}, "a")
    knn.learn_one({"x": 10.0, "y": 0.0}, "b")
    for x in ({}, {"y": 0.0}, {"x": 9.5}, {"unknown": 3.0}):
        proba = knn.predict_proba_one(x)
        assert _sums_to_one(proba), x
        assert all(np.isfinite(list(proba.values()))), x
    assert _best(knn.predict_proba_one({"x": 9.5})) == "b"  # y falls back to its mean


@pytest.mark.parametrize("params", [{"n_neighbors": 0}, {"n_neighbors": 5, "window_size": 2}])
def test_knn_invalid_parameters(params):
    with pytest.raises(ValueError, match="n_neighbors"):
        KNNClassifier(**params)
    with pytest.raises(ConfigError, match=r"^model\.params"):
        build_model("knn", params)


# -- river adapter and the registry ------------------------------------------------------------------
def test_river_model_wraps_gaussian_nb_and_normalises():
    model = RiverModel(naive_bayes.GaussianNB(), name="gaussian_nb")  # type: ignore[no-untyped-call]
    assert model.predict_proba_many([{"x": 1.0}, {"x": 2.0}]) == [{}, {}]
    for i in range(20):
        model.learn_one({"x": float(i % 4), "y": 1.0}, "low")
        model.learn_one({"x": 10.0 + i % 4, "y": 1.0}, "high")
        model.learn_one({"x": 20.0 + i % 4, "y": 1.0}, "top")
    low, high = model.predict_proba_many([{"x": 1.5, "y": 1.0}, {"x": 11.5, "y": 1.0}])
    for proba in (low, high):
        assert list(proba) == ["low", "high", "top"]
        assert _sums_to_one(proba)
    assert (_best(low), _best(high)) == ("low", "high")


class _Scores:
    """A river-like classifier that returns unnormalised scores and leaves classes out."""

    def __init__(self, scores: dict[Any, float]) -> None:
        self.scores = scores

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        pass

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        return dict(self.scores)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"a": 2.0, "b": 6.0}, {"a": 0.25, "b": 0.75, "c": 0.0}),
        ({"a": 3.0, "b": -1.0, "c": 1.0}, {"a": 0.75, "b": 0.0, "c": 0.25}),
        ({"zz": 5.0}, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
        ({}, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
    ],
)
def test_river_model_normalises_over_the_known_classes(scores, expected):
    model = RiverModel(_Scores(scores))
    for label in "abc":
        model.learn_one({"x": 0.0}, label)
    assert model.predict_proba_one({"x": 0.0}) == pytest.approx(expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_cold_starts_then_predicts_known_classes(name):
    model = build_model(name)
    assert model.name == name
    assert model.predict_proba_one({"x": 0.0}) == {}
    for record in load("phishing", limit=60):
        model.learn_one(record.features, record.label)
    for record in load("phishing")[60:80]:
        proba = model.predict_proba_one(record.features)
        assert set(proba) == set(model.classes) == {True, False}
        assert _sums_to_one(proba)
    restored = pickle.loads(pickle.dumps(model))  # noqa: S301 - bytes this test just made
    x = load("phishing")[100].features
    assert restored.predict_proba_one(x) == pytest.approx(copy.deepcopy(model).predict_proba_one(x))


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("svm", r"model\.name: unknown model 'svm'"),
        ("river:no_such_module.Thing", r"model\.name: no river classifier"),
        ("river:naive_bayes.NoSuchClass", r"model\.name: no river classifier"),
    ],
)
def test_build_model_unknown_names_raise(name, match):
    with pytest.raises(ConfigError, match=match):
        build_model(name)


# -- checkpoints ------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _engine_with_history() -> Engine:
    engine = Engine(
        build_model("knn"), Entropy(seed=1), VariableUncertainty(budget=0.3, seed=1), clock=Clock()
    )
    records = load("image_segments", limit=200)
    for i in range(0, 200, 10):
        chunk = records[i : i + 10]
        decisions = engine.score([Sample(id=r.id, features=r.features) for r in chunk])
        for record, decision in zip(chunk, decisions, strict=True):
            if decision.queried and i < 150:  # the last requests stay pending
                engine.learn(Label(id=record.id, label=record.label))
    assert engine.labels_learned > 10
    assert len(engine.pending) > 0
    return engine


def _continue(engine: Engine) -> list[tuple[Any, ...]]:
    samples = [Sample(id=r.id, features=r.features) for r in load("image_segments")[200:260]]
    return [(d.queried, d.prediction, d.utility, d.model_version) for d in engine.score(samples)]


def test_checkpoint_round_trip_of_an_engine(tmp_path):
    engine = _engine_with_history()
    offsets = {"samples": {0: 200, 1: 7}, "labels": {0: 42}}
    path = checkpoint.save(tmp_path, Checkpoint(engine, offsets, created_at=123.5), KEY)
    assert path.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind
    restored = checkpoint.load(tmp_path, KEY)
    assert restored is not None
    assert restored.offsets == offsets
    assert restored.created_at == 123.5
    again = restored.engine
    assert isinstance(again, Engine)
    assert again.describe() == engine.describe()
    assert _continue(again) == _continue(engine)


def test_no_checkpoint_yet_is_none(tmp_path):
    assert checkpoint.load(tmp_path, KEY) is None


def _saved(directory: Path) -> Path:
    return checkpoint.save(directory, Checkpoint({"state": list(range(100))}, {}, 1.0), KEY)


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (_flip_last_byte, "signature does not match"),
        (lambda data: data[:-10], "truncated"),
        (lambda data: data[:25], "header|truncated"),
        (lambda data: b"PK\x03\x04 some zip file, not a checkpoint", "not a streamal checkpoint"),
        (lambda data: b"", "not a streamal checkpoint"),
        (lambda data: data.replace(b'"format":1', b'"format":99'), "format 99"),
        (lambda data: data.replace(b'{"format"', b'{"format', 1), "unreadable header"),
        (lambda data: b"streamal-checkpoint\nnull\n" + data.partition(b"}\n")[2], "header"),
    ],
    ids=["tampered", "truncated", "cut-in-header", "foreign", "empty", "format", "bad-header", "null-header"],
)
def test_damaged_checkpoints_are_refused(tmp_path, damage, match):
    path = _saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(tmp_path, KEY)


def test_a_checkpoint_signed_with_another_key_is_refused(tmp_path):
    _saved(tmp_path)
    with pytest.raises(CheckpointError, match="another key"):
        checkpoint.load(tmp_path, b"another-key")


def test_signed_content_that_is_not_a_checkpoint_is_refused(tmp_path):
    checkpoint.write(tmp_path, pickle.dumps({"not": "a checkpoint"}), 1.0, KEY)
    with pytest.raises(CheckpointError, match="unexpected content dict"):
        checkpoint.load(tmp_path, KEY)


def test_key_file_is_created_once_and_private(tmp_path):
    directory = tmp_path / "ckpt"
    key = checkpoint.key_for(directory, None)
    assert len(key) == 64
    assert checkpoint.key_for(directory, None) == key
    assert stat.S_IMODE(os.stat(directory / "checkpoint.key").st_mode) == 0o600
    assert checkpoint.key_for(directory, "configured") == b"configured"


# -- recorded messages ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        RecordedMessage("samples", 2, 17, 1_700_000_000_123, b"s-1", b'{"id": "s-1"}', [("h", b"v")]),
        RecordedMessage("samples", 0, 0, None, None, None, []),
        RecordedMessage("labels", 1, 5, 1, b"", b"", [("empty", b"")]),
        RecordedMessage(
            "dead-letters",
            0,
            3,
            42,
            b"\xff\xfekey",
            b"\x80\x81 not utf-8 \xc3\x28",
            [("error", b"invalid_json"), ("raw", b"\xff\x00\xfe"), ("error", b"again")],
        ),
        RecordedMessage("samples", 0, 1, 2, "clé".encode(), "ünïcödé ✓".encode(), [("ü", "ß".encode())]),
    ],
    ids=["plain", "tombstone", "empty", "non-utf8", "unicode"],
)
def test_recorded_message_round_trip(message):
    line = message.to_json()
    assert b"\n" not in line  # one record per line
    assert RecordedMessage.from_json(line) == message


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    key=st.none() | st.binary(max_size=20),
    value=st.none() | st.binary(max_size=50),
    headers=st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=10)), max_size=3),
)
def test_recorded_message_round_trip_on_arbitrary_bytes(key, value, headers):
    message = RecordedMessage("t", 0, 9, 1, key, value, headers)
    assert RecordedMessage.from_json(message.to_json()) == message


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"5", "a JSON object was expected"),
        (b'["samples"]', "a JSON object was expected"),
        (b'{"partition": 0}', "topic"),
        (b'{"topic": ""}', "topic must be a non-empty string"),
        (b'{"topic": "samples", "timestamp": "yesterday"}', "timestamp must be milliseconds"),
        (b'{"topic": "samples", "timestamp": 1.5}', "timestamp must be milliseconds"),
        (b'{"topic": "samples", "headers": [["h"]]}', "a header is"),
        (b'{"topic": "samples", "headers": ["h"]}', "a header is"),
        (b'{"topic": "samples", "headers": [["h", 3]]}', "a header is"),
        (b'{"topic": "samples", "headers": [["h", null, "not base64!"]]}', "not a recorded message"),
        (b'{"topic": "samples", "value_b64": "%%%"}', "not a recorded message"),
        (b'{"topic": "samples", "partition": "two"}', "not a recorded message"),
        (b"{not json", "not a recorded message"),
    ],
)
def test_a_bad_line_of_a_recording_is_named_before_anything_is_replayed(tmp_path: Path, line, says) -> None:
    good = RecordedMessage("samples", 0, 0, 1, b"k", b"v", []).to_json()
    path = tmp_path / "recording.jsonl"
    path.write_bytes(b"\n".join([good, good, line, good]) + b"\n")
    with pytest.raises(StreamalError, match=f"recording.jsonl:3: .*{re.escape(says)}"):
        check_file(path)
    path.write_bytes(b"\n".join([good, good, good]) + b"\n")
    assert check_file(path) == 3


def test_a_recording_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(StreamalError, match="cannot read the recording"):
        check_file(tmp_path / "missing.jsonl")


def test_a_standby_restores_only_a_checkpoint_newer_than_the_one_it_has(tmp_path: Path) -> None:
    from streamal.checkpointing import Checkpoints

    key = b"k" * 32

    def engine_with(labels: int) -> Engine:
        engine = Engine(build_model("knn"), Entropy(), VariableUncertainty(budget=0.5))
        for i in range(labels):
            engine.score([Sample(id=f"s{i}", features={"x": float(i)})])
            engine.learn(Label(id=f"s{i}", label=i % 2))
        return engine

    active = Checkpoints(tmp_path, key, interval_seconds=30, every_labels=1000)
    standby = Checkpoints(tmp_path, key, interval_seconds=30, every_labels=1000)
    assert standby.restore() is None  # nothing written yet
    checkpoint.save(tmp_path, Checkpoint(engine_with(1), {"labels": {0: 1}}, created_at=1.0), key)
    first = standby.restore()
    assert first is not None
    assert first.labels_learned == 1
    assert standby.restore(only_newer=True) is None  # the same one again
    checkpoint.save(tmp_path, Checkpoint(engine_with(3), {"labels": {0: 3}}, created_at=2.0), key)
    newer = standby.restore(only_newer=True)
    assert newer is not None
    assert newer.labels_learned == 3
    assert standby.restored_offsets == {"labels": {0: 3}}
    assert active.restore(only_newer=True) is not None  # it never restored: anything is newer
