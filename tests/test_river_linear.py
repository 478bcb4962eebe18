"""river's linear classifiers scored in batches (streamal.models.river_linear) give river's own numbers."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import contextlib
import math
import pickle
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import compose, linear_model, multiclass, naive_bayes, optim, preprocessing

from streamal.datasets import load
from streamal.messages import Features, Proba
from streamal.models import RiverModel, build_model
from streamal.models.river_linear import LinearScorer, linear_scorer

TOL = 1e-9
#: a one-vs-rest's batch against river's own ``predict_proba_one``, on the same estimator
ATOL = 1e-12


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
        m.setattr(type(model._linear), "min_batch", 1)
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


def _one_vs_rest(classifier: Any) -> Any:
    return multiclass.OneVsRestClassifier(classifier)


def _ovr(kind: str) -> Any:
    """A one-vs-rest of LogisticRegressions: bare, each copy behind its own scaler, or behind one scaler."""
    if kind == "bare":
        return _one_vs_rest(linear_model.LogisticRegression())
    if kind == "scaled copies":
        return _one_vs_rest(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    assert kind == "scaled"
    return preprocessing.StandardScaler() | _one_vs_rest(linear_model.LogisticRegression())


def _built() -> RiverModel:
    """``river:linear_model.LogisticRegression`` as streamal builds it: a one-vs-rest of them."""
    model = build_model("river:linear_model.LogisticRegression")
    assert isinstance(model, RiverModel)
    return model


_OVR_KINDS = ["bare", "scaled copies", "scaled"]


def _assert_river_s(
    estimator: Any, xs: list[Features], hostile: list[Features] | None = None
) -> tuple[list[Any], np.ndarray]:
    """The batch path scores ``xs`` as ``estimator``'s own ``predict_proba_one`` does, sample by sample:
    the same classes in the same order, each probability within ``ATOL`` (NaN where river's is). River
    itself scores none of them but some of ``hostile`` (samples of ``xs``). Returns the labels and matrix."""
    calls = []
    original = type(estimator).predict_proba_one

    def counting(self: Any, x: Any, **kw: Any) -> Any:
        calls.append(x)
        return original(self, x, **kw)

    scorer = linear_scorer(estimator)
    assert scorer is not None
    with pytest.MonkeyPatch.context() as m:
        m.setattr(type(estimator), "predict_proba_one", counting)
        scored = scorer.predict_proba(xs)
    assert scored is not None
    labels, proba = scored
    assert all(any(x is h for h in hostile or []) for x in calls), "river scored a finite sample itself"
    assert proba.shape == (len(xs), len(labels))
    for x, row in zip(xs, proba, strict=True):
        own = estimator.predict_proba_one(x)
        assert labels == list(own)  # river's classes, in river's order
        np.testing.assert_allclose(row, list(own.values()), rtol=0.0, atol=ATOL)
    return labels, proba


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
    wrapped = _built()
    assert isinstance(wrapped._linear, LinearScorer)
    assert wrapped._linear.model is wrapped.estimator  # the one-vs-rest


@pytest.mark.parametrize("kind", _OVR_KINDS)
def test_recognises_a_one_vs_rest_of_logistic_regressions(kind):
    estimator = _ovr(kind)
    scorer = linear_scorer(estimator)
    assert isinstance(scorer, LinearScorer)
    ovr = estimator if kind != "scaled" else estimator["OneVsRestClassifier"]
    assert scorer.model is ovr


class _MyOneVsRest(multiclass.OneVsRestClassifier):
    pass


@pytest.mark.parametrize(
    "estimator",
    [
        multiclass.OneVsRestClassifier(linear_model.SoftmaxRegression()),
        multiclass.OneVsRestClassifier(naive_bayes.GaussianNB()),  # type: ignore[no-untyped-call]
        multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression(loss=optim.losses.CrossEntropy())  # type: ignore[arg-type]
        ),
        _one_vs_rest(preprocessing.MinMaxScaler() | linear_model.LogisticRegression()),
        preprocessing.StandardScaler() | _ovr("scaled copies"),
        multiclass.OneVsRestClassifier(multiclass.OneVsRestClassifier(linear_model.LogisticRegression())),
        _MyOneVsRest(linear_model.LogisticRegression()),
        multiclass.OutputCodeClassifier(linear_model.LogisticRegression(), code_size=3, seed=0),
    ],
    ids=[
        "of-softmax",
        "of-gaussian-nb",
        "of-cross-entropy",
        "of-min-max-scaled",
        "scaled-twice",
        "of-one-vs-rest",
        "subclass",
        "output-code",
    ],
)
def test_any_other_one_vs_rest_keeps_the_per_sample_path(estimator):
    assert linear_scorer(estimator) is None


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


# -- one-vs-rest: river's own numbers, on real streams -------------------------------------------------
@pytest.mark.parametrize("kind", _OVR_KINDS)
def test_one_vs_rest_is_river_s_on_image_segments(kind):
    """Seven classes named by strings: before any label, after one class only, with a class coming late;
    samples as they come, and with features absent and features never seen."""
    estimator = _ovr(kind)
    records = load("image_segments")
    xs = [r.features for r in records[1000:1400]]
    odd = _perturbed(xs, seed=5)
    assert estimator.predict_proba_one(xs[0]) == {}  # nothing learned: river has no class
    assert _assert_river_s(estimator, odd)[1].shape == (len(odd), 0)

    first = [r for r in records if r.label == "path"][:20]
    for r in first:
        estimator.learn_one(r.features, r.label)
    labels, proba = _assert_river_s(estimator, odd)
    assert labels == ["path"]
    assert (proba == 1.0).all()  # its own probability over itself, or uniform over one class

    for r in [r for r in records[:400] if r.label != "grass"][:300]:
        estimator.learn_one(r.features, r.label)
    labels, _ = _assert_river_s(estimator, xs)
    assert len(labels) == 6
    assert "grass" not in labels
    assert all(isinstance(c, str) for c in labels)
    _assert_river_s(estimator, odd)

    for r in [r for r in records[400:] if r.label == "grass"][:5]:
        estimator.learn_one(r.features, r.label)
    labels, proba = _assert_river_s(estimator, xs)
    assert labels[-1] == "grass"
    assert len(labels) == 7
    _assert_river_s(estimator, odd)
    assert len(set(proba.argmax(axis=1).tolist())) >= 3  # not one answer for all


@pytest.mark.parametrize("kind", _OVR_KINDS)
def test_one_vs_rest_is_river_s_on_phishing(kind):
    """Two classes, True first: before any label, after True only, then False, then 400 labels."""
    estimator = _ovr(kind)
    records = load("phishing")
    xs = [r.features for r in records[400:]]
    odd = _perturbed(xs, seed=6)
    assert _assert_river_s(estimator, xs)[0] == []
    for r in [r for r in records if r.label is True][:10]:
        estimator.learn_one(r.features, r.label)
    assert _assert_river_s(estimator, odd)[0] == [True]
    for r in [r for r in records if r.label is False][:3]:
        estimator.learn_one(r.features, r.label)
    assert _assert_river_s(estimator, odd)[0] == [True, False]
    for r in records[:400]:
        estimator.learn_one(r.features, r.label)
    _assert_river_s(estimator, xs)
    _assert_river_s(estimator, odd)


@pytest.mark.parametrize("kind", _OVR_KINDS)
def test_one_vs_rest_leaves_non_finite_rows_to_river(kind):
    """Overflowing logits, a NaN, an infinity in a feature no copy weighs: river's own answers, among
    samples the batch path scores itself."""
    estimator = _ovr(kind)
    records = load("image_segments")
    for r in records[:300]:
        estimator.learn_one(r.features, r.label)
    names = list(records[0].features)
    hostile = [
        dict.fromkeys(names, 1e308),  # every logit overflows
        {names[0]: 1e308, names[1]: -1e308},
        {names[2]: math.nan},
        {**records[500].features, "never_seen": math.inf},
        {**records[501].features, "never_seen": math.nan},
        {names[3]: 1e300},
    ]
    xs = [r.features for r in records[600:650]] + hostile + [r.features for r in records[650:700]]
    _, proba = _assert_river_s(estimator, xs, hostile=hostile)
    assert np.isfinite(np.delete(proba, range(50, 56), axis=0)).all()
    assert np.isnan(proba[[50, 52]]).all()  # river's own NaNs: river scored them


def test_one_vs_rest_through_the_model_as_built():
    """``river:linear_model.LogisticRegression`` as streamal builds it: batches take the batch path and
    give what river gives one sample at a time."""
    model = _built()
    assert isinstance(model._linear, LinearScorer)
    xs = _image_segments_learned(model)
    _assert_same(_batched(model, xs), _one_by_one(model, xs))
    odd = _perturbed(xs, seed=7)
    _assert_same(_batched(model, odd), _one_by_one(model, odd))


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


_KINDS: dict[str, Callable[[], RiverModel]] = {
    "softmax": _softmax,
    "logistic": _logistic,
    "one-vs-rest": _built,
    "one-vs-rest, scaled copies": lambda: RiverModel(_ovr("scaled copies")),
}


def _trained(kind: str) -> RiverModel:
    rng = random.Random(0)
    model = _KINDS[kind]()
    for i in range(200):
        x = {f"feature_{j}": rng.gauss(j, 1.0 + j) for j in range(5) if rng.random() < 0.9}
        x["feature_5"] = 7.0  # constant: zero variance
        label: Any = (
            bool(x.get("feature_1", 0.0) > 1.0)
            if kind == "logistic"
            else f"class {i % 3 if i < 150 else 3}"  # the last class comes late
        )
        model.learn_one(x, label)
    return model


_TRAINED = {kind: _trained(kind) for kind in _KINDS}


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(list(_KINDS)), xs=_samples)
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


def test_a_non_finite_value_of_a_feature_no_weight_names_is_river_s():
    """river's bare LogisticRegression multiplies each value of a sample by its weight, 0.0 for a feature it
    never learned: an infinity or a NaN there makes its answer NaN (uniform once normalised)."""
    model = RiverModel(linear_model.LogisticRegression())
    records = load("phishing")
    for r in records[:200]:
        model.learn_one(r.features, r.label)
    odd = [1.0, math.inf, math.nan, -math.inf]
    xs = [{**r.features, "never_seen": odd[i % 4]} for i, r in enumerate(records[200:264])]
    assert model._linear is not None
    assert len(xs) >= model._linear.min_batch
    batch = model.predict_proba_many(xs)
    _assert_same(batch, _one_by_one(model, xs))
    assert batch[1] == batch[2] == {True: 0.5, False: 0.5}
    assert batch[0] != batch[1]


# -- river's own path stays where the batch path does not apply --------------------------------------
@pytest.mark.parametrize(
    ("make", "least"),
    [
        (_softmax, 10),
        (_logistic, 20),
        (lambda: RiverModel(linear_model.LogisticRegression()), 64),
        (_built, 16),  # 32 over its two classes
        (lambda: RiverModel(_ovr("scaled")), 12),  # 24 over two
        (lambda: RiverModel(_ovr("scaled copies")), 12),
    ],
    ids=["softmax", "logistic", "bare-logistic", "one-vs-rest", "scaled-one-vs-rest", "of-scaled"],
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


def test_the_one_vs_rest_threshold_falls_as_classes_come():
    """river scores a sample once per class: the batch path pays off from fewer samples as classes come."""
    bare, scaled = _built(), RiverModel(_ovr("scaled"))
    bare_scorer, scaled_scorer = bare._linear, scaled._linear
    assert bare_scorer is not None
    assert scaled_scorer is not None
    assert (bare_scorer.min_batch, scaled_scorer.min_batch) == (32, 24)  # no class yet
    seen: list[Any] = []
    for r in load("image_segments"):
        if r.label in seen:
            continue
        bare.learn_one(r.features, r.label)
        scaled.learn_one(r.features, r.label)
        seen.append(r.label)
        assert bare_scorer.min_batch == max(2, math.ceil(32 / len(seen)))
        assert scaled_scorer.min_batch == max(2, math.ceil(24 / len(seen)))
    assert (bare_scorer.min_batch, scaled_scorer.min_batch) == (5, 4)  # seven classes
    many = _ovr("bare")
    for i in range(30):
        many.learn_one({"a": float(i)}, i)
    assert linear_scorer(many).min_batch == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("estimator", "windowed"),
    [
        (lambda: _ovr("scaled"), False),
        (lambda: _ovr("scaled copies"), False),
        (lambda: preprocessing.StandardScaler(window_size=50) | _ovr("bare"), True),
        (
            lambda: _one_vs_rest(
                preprocessing.StandardScaler(window_size=50) | linear_model.LogisticRegression()
            ),
            True,
        ),
    ],
    ids=["learning-scaler", "learning-scalers-in-copies", "windowed-scaler", "windowed-scalers-in-copies"],
)
def test_a_one_vs_rest_s_scalers_that_learn_or_roll_stay_river_s(estimator, windowed):
    """Under ``learn_during_predict`` (scalers that learn what they score) or with scalers over a rolling
    window, every call is river's own."""
    a, b = RiverModel(estimator()), RiverModel(estimator())
    assert a._linear is not None
    records = load("image_segments")
    for r in records[:200]:
        a.learn_one(r.features, r.label)
        b.learn_one(r.features, r.label)
    xs = _perturbed([r.features for r in records[200:300]], seed=8)
    with contextlib.nullcontext() if windowed else compose.learn_during_predict():
        assert a._linear.predict_proba(xs) is None
        batch = a.predict_proba_many(xs)
        single = _one_by_one(b, xs)
    _assert_same(batch, single)


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


def test_a_pickled_one_vs_rest_rebuilds_the_batch_path():
    model = _built()
    xs = _image_segments_learned(model)[:100]
    restored = pickle.loads(pickle.dumps(model))  # noqa: S301 - bytes this test just made
    assert isinstance(restored._linear, LinearScorer)
    assert restored._linear.model is restored.estimator
    _assert_same(_batched(restored, xs), model.predict_proba_many(xs))
