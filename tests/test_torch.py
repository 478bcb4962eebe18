"""The torch models (MLP, MC dropout, deep ensemble), BALD, and their snapshots inside signed checkpoints."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from streamal import checkpoint
from streamal.checkpoint import Checkpoint
from streamal.datasets import load
from streamal.engine import Engine
from streamal.errors import ConfigError
from streamal.messages import Label, Proba, Sample
from streamal.models import build_model
from streamal.models.committee import CommitteeProba
from streamal.models.torch_mlp import TorchMLP, load_tensors
from streamal.policies import VariableUncertainty
from streamal.snapshot import decode_snapshot, encode_snapshot
from streamal.strategies import BALD, STRATEGIES, Entropy, KLDivergence

KEY = b"test-key-0123456789"
TORCH_MODELS = ("torch_mlp", "torch_mc_dropout", "torch_ensemble")


def blobs(n: int, seed: int, classes: int = 3, dims: int = 4) -> list[tuple[dict[str, float], str]]:
    """``n`` samples of ``classes`` well separated Gaussian blobs, in random order."""
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, dims) * 6.0
    ys = rng.integers(0, classes, n)
    xs = centres[ys] + rng.normal(size=(n, dims))
    return [({f"f{j}": float(v) for j, v in enumerate(x)}, f"c{y}") for x, y in zip(xs, ys, strict=True)]


def stream(model, data) -> None:
    """Predict, then learn, sample by sample (a label between every two predictions)."""
    for x, y in data:
        model.predict_proba_one(x)
        model.learn_one(x, y)


def accuracy(model, data) -> float:
    probas = model.predict_proba_many([x for x, _ in data])
    return sum(  # type: ignore[no-any-return]
        max(p, key=p.__getitem__) == y for p, (_, y) in zip(probas, data, strict=True)
    ) / len(data)


# -- learning ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TORCH_MODELS)
def test_learns_a_separable_problem(name):
    model = build_model(name, {"seed": 3})
    assert model.predict_proba_one({"f0": 1.0}) == {}
    stream(model, blobs(150, seed=1))
    assert model.classes == sorted(model.classes, key=model.classes.index)
    assert set(model.classes) == {"c0", "c1", "c2"}
    assert accuracy(model, blobs(300, seed=2)) >= 0.95


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_learns_image_segments_about_as_well_as_knn(name):
    records = load("image_segments")
    train, test = records[:1500], records[1500:]
    model, knn = build_model(name), build_model("knn")
    for r in train[::3]:  # 500 labels
        model.predict_proba_one(r.features)
        model.learn_one(r.features, r.label)
        knn.learn_one(r.features, r.label)
    data = [(r.features, r.label) for r in test]
    assert accuracy(model, data) >= accuracy(knn, data) - 0.03


def test_one_class_is_certain_and_a_new_class_is_learned_later():
    model = TorchMLP(hidden=32, seed=0)
    model.learn_one({"x": 0.0}, "a")
    assert model.predict_proba_one({"x": 5.0}) == {"a": 1.0}
    rng = np.random.default_rng(0)
    stream(model, [({"x": float(v)}, "a" if v < 1 else "b") for v in rng.uniform(-2, 4, 200)])
    stream(
        model,
        [({"x": float(v)}, "c" if v > 8 else ("a" if v < 1 else "b")) for v in rng.uniform(-2, 12, 300)],
    )
    assert model.classes == ["a", "b", "c"]
    proba = model.predict_proba_one({"x": 11.0})
    assert list(proba) == ["a", "b", "c"]
    assert max(proba, key=proba.__getitem__) == "c"
    assert sum(proba.values()) == pytest.approx(1.0, abs=1e-12)


def test_features_are_fixed_at_first_sight_and_new_or_missing_ones_survived():
    model = TorchMLP(hidden=16, seed=0)
    model.learn_one({"b": 1.0, "a": 0.0}, "x")
    model.learn_one({"b": 0.0, "a": 1.0, "c": 3.0}, "y")  # a feature appears
    assert model._names == ["b", "a", "c"]
    before = model.predict_proba_one({"b": 1.0, "a": 0.0, "c": 0.0})
    # a missing feature takes the running mean; one never labelled is ignored
    assert model.predict_proba_one({"b": 1.0, "a": 0.0, "never": 9.0}) == model.predict_proba_one(
        {"b": 1.0, "a": 0.0, "c": model._mean[2]}
    )
    assert set(before) == {"x", "y"}
    assert model._net is not None
    assert model._net.weights[0].shape == (1, 3, 16)


def test_the_same_seed_gives_the_same_model_and_another_seed_another():
    data = blobs(80, seed=4)
    probe = [x for x, _ in blobs(20, seed=5)]
    a, b, c = (TorchMLP(hidden=16, dropout=0.1, mc_passes=3, seed=s) for s in (7, 7, 8))
    for m in (a, b, c):
        stream(m, data)
    assert a.predict_proba_many(probe) == b.predict_proba_many(probe)
    assert a.predict_proba_many(probe) != c.predict_proba_many(probe)


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_a_batch_is_scored_as_its_samples_one_by_one(name):
    model = build_model(name)
    stream(model, blobs(60, seed=6))
    xs = [x for x, _ in blobs(30, seed=7)]
    batched = model.predict_proba_many(xs)
    for x, p in zip(xs, batched, strict=True):
        one = model.predict_proba_one(x)
        assert list(one) == list(p)
        assert list(one.values()) == pytest.approx(list(p.values()), abs=1e-6)


def test_a_batch_is_one_forward_pass(monkeypatch):
    model = TorchMLP(hidden=16, seed=0)
    stream(model, blobs(40, seed=8))
    model.predict_proba_one({"f0": 0.0})  # trains on the last label first
    assert model._net is not None
    calls = []
    original = model._net.forward

    def forward(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(model._net, "forward", forward)
    model.predict_proba_many([x for x, _ in blobs(100, seed=9)])
    assert calls == [(100, 4)]


def test_labels_that_arrive_together_are_learned_together(monkeypatch):
    data = blobs(64, seed=10)
    one_by_one, waiting = TorchMLP(hidden=16, seed=0), TorchMLP(hidden=16, seed=0, group=8)
    stream(one_by_one, data)
    chunks: list[int] = []
    original = waiting._steps

    def counted(new):
        chunks.append(len(new))
        original(new)

    monkeypatch.setattr(waiting, "_steps", counted)
    for x, y in data:
        waiting.learn_one(x, y)
        assert len(waiting._untrained) < 8  # learned as soon as 8 wait, as a learner that never predicts
    assert chunks == [1] * 64  # 8 x 4 steps is within max_steps: 4 steps per label, as one by one
    probe = blobs(100, seed=11)
    assert accuracy(waiting, probe) >= 0.95
    assert accuracy(one_by_one, probe) >= 0.95
    burst = TorchMLP(hidden=16, seed=0, group=1000, steps=4, max_steps=32)
    original = burst._steps
    monkeypatch.setattr(burst, "_steps", counted)
    chunks.clear()
    for x, y in data:
        burst.learn_one(x, y)
    assert burst.labels_learned == 64
    burst.predict_proba_one(data[0][0])
    assert burst._untrained == []
    assert chunks == [8] * 8  # 64 labels x 4 steps > 32: 8 chunks of 8 labels, 4 steps each


@pytest.mark.parametrize(
    "params",
    [
        {"hidden": 0},
        {"lr": 0.0},
        {"dropout": 1.0},
        {"mc_passes": 5},
        {"members": 3, "mc_passes": 4, "dropout": 0.1},
    ],
)
def test_invalid_parameters_are_config_errors(params):
    with pytest.raises(ConfigError, match=r"model\.params"):
        build_model("torch_mlp", params)


def test_one_intra_op_thread_by_default():
    build_model("torch_mlp", {"n_threads": 2})
    assert torch.get_num_threads() == 2
    build_model("torch_mlp")
    assert torch.get_num_threads() == 1


# -- committees and BALD ----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "size"), [("torch_mc_dropout", 10), ("torch_ensemble", 5)])
def test_committee_models_predict_their_members(name, size):
    model = build_model(name)
    stream(model, blobs(60, seed=11))
    for proba in model.predict_proba_many([x for x, _ in blobs(10, seed=12)]):
        assert isinstance(proba, CommitteeProba)
        assert len(proba.members) == size
        assert all(len(row) == 3 and sum(row) == pytest.approx(1.0) for row in proba.members)
        mean = np.mean(proba.members, axis=0)
        assert list(proba.values()) == pytest.approx(list(mean))
        assert sum(proba.values()) == pytest.approx(1.0, abs=1e-9)
    assert isinstance(build_model("torch_mlp").predict_proba_one({"x": 1.0}), dict)


def test_ensemble_members_are_trained_on_different_resamples():
    model = build_model("torch_ensemble", {"seed": 1})
    assert isinstance(model, TorchMLP)
    stream(model, blobs(50, seed=13))
    weights = model._w[:, : model._filled]
    assert set(np.unique(weights)) >= {0.0, 1.0, 2.0}  # Poisson(1) counts
    assert not all((weights[0] == weights[m]).all() for m in range(1, 5))
    proba = model.predict_proba_one({"f0": 3.0, "f1": 3.0, "f2": 0.0, "f3": 0.0})
    assert isinstance(proba, CommitteeProba)
    assert len({tuple(np.round(row, 6)) for row in proba.members}) == 5


def test_bald_separates_disagreement_from_agreed_ambiguity():
    bald = BALD()
    agreed_unsure = CommitteeProba({"a": 0.5, "b": 0.5}, [[0.5, 0.5]] * 4)
    agreed_sure = CommitteeProba({"a": 0.9, "b": 0.1}, [[0.9, 0.1]] * 4)
    disagree = CommitteeProba({"a": 0.5, "b": 0.5}, [[1.0, 0.0], [0.0, 1.0]] * 2)
    assert bald.utility(disagree) == pytest.approx(1.0)
    assert bald.utility(agreed_unsure) == pytest.approx(0.0, abs=1e-12)
    assert bald.utility(agreed_sure) == pytest.approx(0.0, abs=1e-12)
    assert Entropy().utility(agreed_unsure) == pytest.approx(1.0)  # what entropy cannot tell apart
    partly = CommitteeProba({"a": 0.55, "b": 0.45}, [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    assert 0.0 < bald.utility(partly) < bald.utility(disagree)
    assert bald.utility(partly) == pytest.approx(KLDivergence().utility(partly))  # the same quantity


def test_bald_falls_back_to_entropy_without_a_committee():
    probas: list[Proba] = [{"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 0.5, "b": 0.5}]
    for proba in probas:
        assert BALD().utility(proba) == pytest.approx(Entropy().utility(proba))
    assert BALD().utility({}) == 1.0 == BALD().utility({"a": 1.0})  # cold start: ask
    assert STRATEGIES["bald"] is BALD


def test_bald_with_mc_dropout_is_higher_off_the_labelled_data():
    model = build_model("torch_mc_dropout", {"seed": 0})
    stream(model, blobs(200, seed=14))
    inside = model.predict_proba_many([x for x, _ in blobs(50, seed=15)])
    outside = model.predict_proba_many([{"f0": 3.0, "f1": 3.0, "f2": 3.0, "f3": -9.0 + i} for i in range(50)])
    bald = BALD()
    assert np.mean([bald.utility(p) for p in outside]) > 2 * np.mean([bald.utility(p) for p in inside])


# -- pickling, checkpoints, snapshots ---------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(engine: Engine, records, learn: bool = True) -> list[tuple[Any, ...]]:
    keys = []
    for i in range(0, len(records), 10):
        chunk = records[i : i + 10]
        decisions = engine.score([Sample(id=r.id, features=r.features) for r in chunk])
        for r, d in zip(chunk, decisions, strict=True):
            keys.append((d.queried, d.prediction, d.utility, d.model_version, tuple(d.proba.values())))
            if d.queried and learn:
                engine.learn(Label(id=r.id, label=r.label))
    return keys


@pytest.mark.parametrize(("name", "strategy"), [("torch_mc_dropout", "bald"), ("torch_ensemble", "qbc_kl")])
def test_checkpoint_round_trip_of_an_engine_with_a_torch_model(tmp_path, name, strategy):
    records = load("image_segments")
    model = build_model(name)
    assert isinstance(model, TorchMLP)
    engine = Engine(
        model,
        STRATEGIES[strategy](seed=1),
        VariableUncertainty(budget=0.2, seed=1),
        clock=Clock(),
    )
    _run(engine, records[:300])
    engine.learn(Label(id="never-asked", label="x"))  # an unknown label changes nothing
    assert engine.labels_learned > 20
    # labels learned but not trained on yet travel with the checkpoint
    asked = [
        d for d in engine.score([Sample(id=r.id, features=r.features) for r in records[300:340]]) if d.queried
    ]
    engine.learn(Label(id=asked[0].sample.id, label="BRICKFACE"))
    assert model._untrained
    checkpoint.save(tmp_path, Checkpoint(engine, {"samples": {0: 340}}, created_at=1.0), KEY)
    restored = checkpoint.load(tmp_path, KEY)
    assert restored is not None
    again = restored.engine
    assert isinstance(again.model, TorchMLP)
    assert again.model is not model
    assert again.model._untrained == model._untrained
    assert again.describe() == engine.describe()
    assert _run(again, records[340:700]) == _run(engine, records[340:700])
    assert again.model.labels_learned == model.labels_learned


def test_a_model_snapshot_round_trip_predicts_identically():
    model = build_model("torch_mlp")
    stream(model, blobs(100, seed=16))
    version, restored = decode_snapshot(encode_snapshot(model, 5, KEY), KEY, "test")
    probe = [x for x, _ in blobs(20, seed=17)]
    assert version == 5
    assert restored.predict_proba_many(probe) == model.predict_proba_many(probe)


def test_an_untrained_model_pickles():
    model = build_model("torch_ensemble")
    restored = pickle.loads(pickle.dumps(model))  # noqa: S301 - bytes this test just made
    assert restored.predict_proba_one({"x": 1.0}) == {}
    restored.learn_one({"x": 1.0}, "a")
    assert restored.classes == ["a"]


class Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_the_network_is_loaded_with_weights_only():
    buffer = io.BytesIO()
    torch.save({"generator": torch.Generator().get_state(), "evil": Payload()}, buffer)
    with pytest.raises(pickle.UnpicklingError, match=r"[Ww]eights only load failed"):
        load_tensors(buffer.getvalue())
    model = TorchMLP()
    stream(model, blobs(20, seed=18))
    state = model.__getstate__()
    state["_torch"] = buffer.getvalue()
    with pytest.raises(pickle.UnpicklingError):
        TorchMLP.__new__(TorchMLP).__setstate__(state)


# -- torch stays optional -------------------------------------------------------------------------
def test_streamal_works_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # import torch now raises ImportError
        "import streamal, streamal.service, streamal.cli, streamal.evaluation.simulate\n"
        "from streamal.models import build_model\n"
        "from streamal.errors import ConfigError\n"
        "m = build_model('knn'); m.learn_one({'x': 1.0}, 'a')\n"
        "assert m.predict_proba_one({'x': 1.0}) == {'a': 1.0}\n"
        "try:\n"
        "    build_model('torch_mlp')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "torch_mlp needs torch" in out.stdout
    assert "streamal[torch]" in out.stdout
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, streamal.service, streamal.cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert loaded.stdout.strip() == "False"


def test_a_poll_without_samples_trains_the_labels_it_brought():
    model = TorchMLP(hidden=16, seed=0)
    engine = Engine(model, Entropy(seed=0), VariableUncertainty(budget=1.0, seed=0), clock=Clock())
    data = blobs(20, seed=19)
    decisions = engine.score([Sample(id=str(i), features=x) for i, (x, _) in enumerate(data)])
    for d, (_, y) in zip(decisions, data, strict=True):
        assert d.queried
        engine.learn(Label(id=d.sample.id, label=y))
    assert len(model._untrained) == 20  # a learner's poll: labels, no samples
    assert engine.score([]) == []
    assert model._untrained == []


def test_samples_without_features_are_survived():
    model = TorchMLP(hidden=8, seed=0)
    model.learn_one({}, "a")
    model.learn_one({}, "b")
    proba = model.predict_proba_one({"x": 1.0})
    assert set(proba) == {"a", "b"}
    model.learn_one({"x": 1.0}, "a")
    assert set(model.predict_proba_one({})) == {"a", "b"}
