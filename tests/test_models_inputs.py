"""Models fed what real streams send: features that show up late or go missing, and river estimators that
are not multi-class classifiers."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import numpy as np
import pytest
from river import multiclass, naive_bayes

from streamal.datasets import load
from streamal.errors import ConfigError
from streamal.evaluation.simulate import simulate
from streamal.messages import Proba
from streamal.models import KNNClassifier, RiverModel, build_model


def _best(proba: Proba) -> Any:
    return max(proba, key=proba.__getitem__)


def _rows(probas: list[Proba], classes: list[Any]) -> np.ndarray:
    return np.array([[p[c] for c in classes] for p in probas])


# -- kNN: features that show up late or go missing ---------------------------------------------------
def test_knn_late_feature_is_missing_from_the_samples_stored_before_it():
    knn = KNNClassifier(n_neighbors=1)
    knn.learn_one({"a": 0.0}, "old")
    knn.learn_one({"a": 1.0}, "old")
    knn.learn_one({"a": 9.0, "b": 500.0}, "new")
    knn.learn_one({"a": 10.0, "b": 500.0}, "new")
    # the old samples take b's running mean (500), not 0: the query is nearest to a = 0, an old sample
    assert knn.predict_proba_one({"a": 0.2, "b": 500.0}) == pytest.approx({"old": 0.75, "new": 0.25})
    assert _best(knn.predict_proba_one({"a": 9.8, "b": 500.0})) == "new"


def test_knn_constant_field_added_late_changes_no_prediction():
    # a producer that starts sending a constant field ("version": 2) tells no sample from another
    records = load("image_segments", limit=600)
    plain, late = KNNClassifier(), KNNClassifier()
    for i, r in enumerate(records):
        x = dict(r.features, version=2.0) if i >= 300 else r.features
        if i >= 300 and i % 3 == 0:
            p, q = plain.predict_proba_one(r.features), late.predict_proba_one(x)
            assert list(p) == list(q)
            assert _best(p) == _best(q), i
            # room for float32 distances, in which the field's column cancels out only to rounding
            assert np.allclose(_rows([p], list(p)), _rows([q], list(p)), rtol=0.0, atol=1e-2), i
        plain.learn_one(r.features, r.label)
        late.learn_one(x, r.label)


def test_knn_late_feature_is_scaled_by_its_own_values():
    knn = KNNClassifier(n_neighbors=1)
    for i in range(50):
        knn.learn_one({"a": float(i % 2)}, "old")
    for i in range(50):
        knn.learn_one({"a": float(i % 2), "b": 600.0 if i % 2 else 400.0}, "high" if i % 2 else "low")
    # b's mean and spread are those of the 50 samples that had it (500 and 100), not diluted by 50 zeros
    b = knn._index["b"]
    assert knn._mean[b] == pytest.approx(500.0)
    assert knn._inv_scale()[b] == pytest.approx(1 / 100.0)
    assert knn._inv_scale()[knn._index["a"]] == pytest.approx(1 / 0.5)
    # so an old sample (b: 500) is 1 away from the query, the nearest new one 2 (in a, or 200 in b)
    assert _best(knn.predict_proba_one({"a": 0.0, "b": 600.0})) == "old"


def test_knn_stored_sample_without_a_feature_follows_its_running_mean():
    knn = KNNClassifier(n_neighbors=1)
    knn.learn_one({"a": 0.0, "b": 0.0}, "x")
    knn.learn_one({"a": 0.0, "b": 2.0}, "x")
    knn.learn_one({"a": 5.0}, "y")  # b missing: it is b's mean when distances are computed, not 1 for ever
    knn.learn_one({"a": 5.0, "b": 10.0}, "z")
    knn.learn_one({"a": 5.0, "b": 12.0}, "z")
    proba = knn.predict_proba_one({"a": 5.0, "b": 6.0})  # b's mean over the four samples that had it
    assert proba == pytest.approx({"x": 1 / 6, "y": 2 / 3, "z": 1 / 6})  # one neighbour and the prior


def test_knn_pickled_before_features_were_counted_apart_still_scores():
    knn = KNNClassifier(n_neighbors=3)
    for r in load("image_segments", limit=300):
        knn.learn_one(r.features, r.label)
    queries = [r.features for r in load("image_segments")[300:320]]
    old = copy.deepcopy(knn)
    for name in ("_counts", "_holes_before"):  # as a model pickled before these attributes existed
        del old.__dict__[name]
    restored = pickle.loads(pickle.dumps(old))  # noqa: S301 - bytes this test just made
    assert restored.predict_proba_batch(queries) == knn.predict_proba_batch(queries)
    restored.learn_one(dict(queries[0], late=1.0), "path")  # and it still learns, a late feature too
    assert _best(restored.predict_proba_one(dict(queries[0], late=1.0))) == "path"


def test_knn_feature_no_label_had_counts_for_nothing():
    knn = KNNClassifier(n_neighbors=2)
    knn.learn_one({"a": 0.0}, "x")
    knn.learn_one({"a": 10.0}, "y")
    before = knn.predict_proba_one({"a": 2.0})
    assert knn.predict_proba_one({"a": 2.0, "unknown": 1e6}) == pytest.approx(before)


# -- river estimators ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("river:linear_model.LinearRegression", "a regressor"),
        ("river:datasets.Phishing", "not one"),
        ("river:utils.math.sigmoid", "not one"),
    ],
)
def test_river_estimator_that_is_not_a_classifier_is_refused(name, what):
    with pytest.raises(
        ConfigError, match=rf"^model\.name: {name} must be a river classifier, and it is {what}"
    ):
        build_model(name)


def _blobs(n: int, seed: int = 0) -> list[tuple[dict[str, float], str]]:
    rng = random.Random(seed)
    centres = {"north": (0.0, 4.0), "east": (4.0, 0.0), "south": (0.0, -4.0)}
    out = []
    for i in range(n):
        label = list(centres)[i % 3]
        cx, cy = centres[label]
        out.append(({"x": rng.gauss(cx, 1.0), "y": rng.gauss(cy, 1.0)}, label))
    return out


def test_binary_river_classifier_learns_string_labels_and_three_classes():
    model = build_model("river:linear_model.LogisticRegression", {"l2": 1e-4})
    assert isinstance(model, RiverModel)
    assert isinstance(model.estimator, multiclass.OneVsRestClassifier)
    assert vars(model.estimator.classifier)["l2"] == 1e-4  # the parameters go to the classifier it wraps
    data = _blobs(600)
    for x, y in data[:300]:
        model.learn_one(x, y)
    probas = model.predict_proba_many([x for x, _ in data[300:]])
    for proba in probas:
        assert list(proba) == ["north", "east", "south"]
        assert sum(proba.values()) == pytest.approx(1.0)
    accuracy = np.mean([_best(p) == y for p, (_, y) in zip(probas, data[300:], strict=True)])
    assert accuracy > 0.9
    restored = pickle.loads(pickle.dumps(model))  # noqa: S301 - a checkpoint holds it
    assert restored.predict_proba_one(data[0][0]) == model.predict_proba_one(data[0][0])


def test_binary_river_classifier_runs_a_simulation_of_seven_classes():
    result = simulate(load("image_segments", limit=300), model="river:linear_model.LogisticRegression")
    assert result.n == 300
    assert result.labels_used > 0


def test_multiclass_river_classifier_is_not_wrapped():
    model = build_model("river:naive_bayes.GaussianNB")
    assert isinstance(model, RiverModel)
    assert isinstance(model.estimator, naive_bayes.GaussianNB)
