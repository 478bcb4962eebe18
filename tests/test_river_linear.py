"""river's linear classifiers scored in batches (streamal.models.river_linear) give river's own numbers."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import compose, linear_model, naive_bayes, optim, preprocessing

from streamal.datasets import load
from streamal.messages import Features, Proba
from streamal.models import RiverModel, build_model
from streamal.models.river_linear import LinearScorer, linear_scorer

TOL = 1e-9


def _softmax() -> RiverModel:
    return RiverModel(build_model("softmax").estimator, name="softmax")  # type: ignore[attr-defined]


def _logistic() -> RiverModel:
    return RiverModel(preprocessing.StandardScaler() | linear_model.LogisticRegression(), name="logistic")


def _one_by_one(model: RiverModel, xs: list[Features]) -> list[Proba]:
    """river's own path: one sample at a time."""
    return [model.predict_proba_many([x])[0] for x in xs]


def _batched(model: RiverModel, xs: list[Features]) -> list[Proba]:
    """The batch path, whatever the batch's size, checked to be taken: river's ``predict_proba_one`` is not
    called (every row is finite)."""
    calls = []
    original = type(model.estimator).predict_proba_one

    def counting(self: Any, x: Any, **kw: Any) -> Any:
        calls.append(x)
        return original(self, x, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(type(model.estimator), "predict_proba_one", counting)
        m.setattr(model._linear, "min_batch", 1)
        out = model.predict_proba_many(xs)
    assert not calls, f"river scored {len(calls)} of the {len(xs)} samples itself"
    return out


def _assert_same(batch: list[Proba], single: list[Proba]) -> None:
    assert len(batch) == len(single)
    for b, s in zip(batch, single, strict=True):
        assert list(b) == list(s)  # the same classes, in the same order
        for c in s:
            assert math.isfinite(b[c])
            assert abs(b[c] - s[c]) <= TOL, (c, b[c], s[c])


def _perturbed(xs: list[Features], seed: int) -> list[Features]:
    """Some samples lose features, some gain a feature never seen, some both."""
    rng = random.Random(seed)
    out = []
    for x in xs:
        x = dict(x)
        if rng.random() < 0.4:
            for k in rng.sample(sorted(x), rng.randint(1, len(x))):
                del x[k]
        if rng.random() < 0.3:
            x[f"never_seen_{rng.randint(0, 3)}"] = rng.uniform(-5.0, 5.0)
        out.append(x)
    return out


def _image_segments_learned(model: RiverModel, late: str = "grass") -> list[Features]:
    """Learn 300 labels of image segments with ``late`` held back, then 5 of ``late``: the rest to score."""
    records = load("image_segments")
    early = [r for r in records[:400] if r.label != late][:300]
    for r in early:
        model.learn_one(r.features, r.label)
    for r in [r for r in records[400:] if r.label == late][:5]:
        model.learn_one(r.features, r.label)
    assert model.classes[-1] == late
    return [r.features for r in records[1000:1600]]


# -- recognition ------------------------------------------------------------------------------------
def test_recognises_the_linear_models_bare_or_after_a_standard_scaler():
    assert isinstance(linear_scorer(build_model("softmax").estimator), LinearScorer)  # type: ignore[attr-defined]
    assert isinstance(linear_scorer(linear_model.LogisticRegression()), LinearScorer)
    assert isinstance(linear_scorer(linear_model.SoftmaxRegression()), LinearScorer)
    scaled = preprocessing.StandardScaler(with_std=False) | linear_model.LogisticRegression()
    assert isinstance(linear_scorer(scaled), LinearScorer)
    assert isinstance(build_model("river:linear_model.LogisticRegression")._linear, LinearScorer)  # type: ignore[attr-defined]


class _MySoftmax(linear_model.SoftmaxRegression):
    pass


@pytest.mark.parametrize(
    "estimator",
    [
        naive_bayes.GaussianNB(),  # type: ignore[no-untyped-call]
        preprocessing.MinMaxScaler() | linear_model.SoftmaxRegression(),
        preprocessing.StandardScaler() | preprocessing.StandardScaler() | linear_model.SoftmaxRegression(),
        _MySoftmax(),
        linear_model.LogisticRegression(loss=optim.losses.CrossEntropy()),  # type: ignore[arg-type]
        linear_model.Perceptron(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_anything_else_keeps_the_per_sample_path(estimator):
    assert linear_scorer(estimator) is None


def test_a_loss_with_another_link_is_not_recognised():
    class Probit(optim.losses.Log):
        def mean_func(self, y_pred: Any) -> Any:
            return 0.5

    assert linear_scorer(linear_model.LogisticRegression(loss=Probit())) is None


# -- equivalence on real data -----------------------------------------------------------------------
def test_softmax_batches_equal_one_by_one_on_image_segments():
    model = _softmax()
    xs = _image_segments_learned(model)
    _assert_same(_batched(model, xs), _one_by_one(model, xs))
    odd = _perturbed(xs, seed=1)
    _assert_same(_batched(model, odd), _one_by_one(model, odd))


def test_softmax_is_river_before_the_late_class_too():
    model = _softmax()
    records = load("image_segments")
    for r in records[:50]:
        model.learn_one(r.features, r.label)
    xs = _perturbed([r.features for r in records[50:350]], seed=2)
    _assert_same(_batched(model, xs), _one_by_one(model, xs))


@pytest.mark.parametrize(
    "estimator",
    [
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        lambda: preprocessing.StandardScaler(with_std=False) | linear_model.LogisticRegression(l2=0.01),
        lambda: linear_model.LogisticRegression(optimizer=optim.Adam(), intercept_lr=0.1),
        lambda: preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.Adam(0.05)),
        lambda: preprocessing.StandardScaler(with_std=False) | linear_model.SoftmaxRegression(l2=0.01),
    ],
    ids=["logistic", "logistic-no-std", "bare-logistic-adam", "softmax-adam", "softmax-no-std"],
)
def test_batches_equal_one_by_one_on_phishing(estimator):
    model = RiverModel(estimator())
    records = load("phishing")
    for r in records[:400]:
        model.learn_one(r.features, r.label)
    xs = [r.features for r in records[400:]]
    _assert_same(_batched(model, xs), _one_by_one(model, xs))
    odd = _perturbed(xs, seed=3)
    _assert_same(_batched(model, odd), _one_by_one(model, odd))


def test_the_first_labels_of_one_class_only():
    for model in (_softmax(), _logistic()):
        model.learn_one({"a": 1.0, "b": 2.0}, True)
        xs = [{"a": 0.0}, {"a": 1.0, "b": 2.0}, {"c": 3.0}, {}]
        _assert_same(_batched(model, xs), _one_by_one(model, xs))


def test_zero_variance_and_features_the_scaler_never_saw_scale_to_zero():
    """States learning alone does not reach (a weight on a feature of zero variance, or one the scaler
    never saw), set by hand, as a warm start could."""
    model = _softmax()
    model.learn_one({"a": 1.0}, "x")
    model.learn_one({"a": 2.0}, "y")
    scaler = model.estimator["StandardScaler"]
    scaler.counts.update({"b": 10})
    scaler.means.update({"a": 1.0, "b": 2.0})
    scaler.vars.update({"a": 4.0, "b": 0.0})
    weights = model.estimator["SoftmaxRegression"].weights
    weights["x"].update({"a": 1.0, "b": 5.0, "c": -3.0})
    weights["y"].update({"a": -1.0, "b": 2.0, "c": 0.5})
    xs = [{"a": 3.0, "b": 9.0, "c": 4.0}, {"b": 1.0}, {"c": -2.0}, {"a": -1.0, "d": 1.0}]
    batch = _batched(model, xs)
    _assert_same(batch, _one_by_one(model, xs))
    assert batch[1] == {"x": 0.5, "y": 0.5}  # b scales to 0.0, whatever its weight


# -- any sample: hypothesis ---------------------------------------------------------------------------
_NAMES = [f"feature_{i}" for i in range(6)] + ["never_seen", "other"]
_samples = st.lists(
    st.dictionaries(
        st.sampled_from(_NAMES),
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
        max_size=len(_NAMES),
    ),
    min_size=2,
    max_size=30,
)


def _trained(kind: str) -> RiverModel:
    rng = random.Random(0)
    model = _softmax() if kind == "softmax" else _logistic()
    for i in range(200):
        x = {f"feature_{j}": rng.gauss(j, 1.0 + j) for j in range(5) if rng.random() < 0.9}
        x["feature_5"] = 7.0  # constant: zero variance
        label: Any = (i % 3 if i < 150 else 3) if kind == "softmax" else bool(x.get("feature_1", 0.0) > 1.0)
        model.learn_one(x, label)
    return model


_TRAINED = {kind: _trained(kind) for kind in ("softmax", "logistic")}


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["softmax", "logistic"]), xs=_samples)
def test_any_batch_equals_one_by_one(kind, xs):
    model = _TRAINED[kind]
    _assert_same(_batched(model, xs), _one_by_one(model, xs))


def test_rows_river_scores_as_non_finite_are_river_s():
    model = _TRAINED["logistic"]
    xs = [
        {"feature_1": math.nan},
        {"feature_1": 1e308, "feature_2": -1e308},
        {"feature_1": 1e5},
        {"feature_1": 2.0},
    ]
    batch = model.predict_proba_many(xs)
    assert batch == _one_by_one(model, xs)
    assert batch[2] == {False: 0.0, True: 1.0}  # beyond river's sigmoid clip


# -- river's own path stays where the batch path does not apply --------------------------------------
@pytest.mark.parametrize(
    ("make", "least"),
    [(_softmax, 10), (_logistic, 20), (lambda: RiverModel(linear_model.LogisticRegression()), 64)],
)
def test_small_batches_stay_river_s(make, least, monkeypatch):
    model = make()
    for r in load("phishing", limit=50):
        model.learn_one(r.features, r.label)
    assert model._linear.min_batch == least
    calls = []
    original = type(model.estimator).predict_proba_one

    def counting(self: Any, x: Any) -> Any:
        calls.append(x)
        return original(self, x)

    monkeypatch.setattr(type(model.estimator), "predict_proba_one", counting)
    xs = [r.features for r in load("phishing")[50 : 50 + least]]
    model.predict_proba_many(xs[:1])
    model.predict_proba_many(xs[:-1])
    assert len(calls) == least
    model.predict_proba_many(xs)
    assert len(calls) == least


def test_learn_during_predict_stays_river_s():
    a, b = _logistic(), _logistic()
    records = load("phishing")
    for r in records[:100]:
        a.learn_one(r.features, r.label)
        b.learn_one(r.features, r.label)
    xs = _perturbed([r.features for r in records[100:300]], seed=4)
    with compose.learn_during_predict():
        batch = a.predict_proba_many(xs)
        single = _one_by_one(b, xs)
    _assert_same(batch, single)
    assert a.estimator["StandardScaler"].counts == b.estimator["StandardScaler"].counts  # both learned


def test_a_windowed_scaler_stays_river_s():
    model = RiverModel(preprocessing.StandardScaler(window_size=50) | linear_model.SoftmaxRegression())
    assert model._linear is not None
    records = load("image_segments")
    for r in records[:200]:
        model.learn_one(r.features, r.label)
    assert model._linear.predict_proba([r.features for r in records[200:205]]) is None
    xs = [r.features for r in records[200:300]]
    _assert_same(model.predict_proba_many(xs), _one_by_one(model, xs))


def test_batch_scoring_leaves_learning_as_it_was():
    scored, plain = _softmax(), _softmax()
    records = load("image_segments")
    for i, r in enumerate(records[:300]):
        if i % 10 == 0:
            scored.predict_proba_many(_perturbed([s.features for s in records[i : i + 50]], seed=i))
        scored.learn_one(r.features, r.label)
        plain.learn_one(r.features, r.label)
    assert scored.estimator["SoftmaxRegression"].weights == plain.estimator["SoftmaxRegression"].weights


# -- pickling ---------------------------------------------------------------------------------------
def test_pickled_models_rebuild_the_batch_path():
    model = _softmax()
    xs = _image_segments_learned(model)[:100]
    restored = pickle.loads(pickle.dumps(model))  # noqa: S301 - bytes this test just made
    assert isinstance(restored._linear, LinearScorer)
    assert restored._linear.model is restored.estimator["SoftmaxRegression"]
    _assert_same(_batched(restored, xs), model.predict_proba_many(xs))
    # a model pickled before the batch path existed has no ``_linear``
    state = model.__getstate__()
    del state["_linear"]
    old = RiverModel.__new__(RiverModel)
    old.__setstate__(pickle.loads(pickle.dumps(state)))  # noqa: S301
    _assert_same(old.predict_proba_many(xs), model.predict_proba_many(xs))
