"""river's linear classifiers scored a whole batch at a time with numpy, computing what river computes.

river scores one sample at a time: ``StandardScaler | SoftmaxRegression`` costs some 30 µs a sample in dict
arithmetic. :func:`linear_scorer` recognises the structures it can reproduce exactly, a bare
``linear_model.SoftmaxRegression`` or ``linear_model.LogisticRegression``, or either one after a
``preprocessing.StandardScaler`` in a pipeline, and returns a :class:`LinearScorer` that reads the
estimator's current state (running means and variances, weights, intercept) at every call and scores the
batch with one matrix product. Learning stays river's own ``learn_one``; nothing here changes the estimator.

It follows river step by step:

- scaling: ``(x - mean) / sqrt(var)``, ``0.0`` for a feature of zero variance (one never seen among them),
  ``x - mean`` with ``with_std=False``;
- a feature absent from a sample adds nothing to a logit (river's dot product runs over the features the
  sample has), nor does a feature the model holds no weight for;
- softmax: ``exp(z - max z)`` normalised, over the classes the model holds weights for, in their order;
  logistic: ``{False: 1 - p, True: p}`` with river's sigmoid (0 below a logit of -30, 1 above 30).

A row river would score as non-finite (an overflowing logit, a NaN feature value) is left to river itself,
so the answer is river's in every case. One difference is on purpose: river's scaler inserts a zero mean
and variance for every unseen feature it transforms; reading the statistics here inserts nothing (the
entries river adds hold the defaults, so learning is unaffected).

>>> from river import linear_model, preprocessing
>>> model = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
>>> for x, y in [({"a": 0.0, "b": 1.0}, "x"), ({"a": 3.0}, "y"), ({"a": 1.0, "b": 0.0}, "x")]:
...     model.learn_one(x, y)
>>> scorer = linear_scorer(model)
>>> labels, proba = scorer.predict_proba([{"a": 0.5, "b": 2.0}, {"a": 2.0, "new": 9.0}])
>>> labels
['x', 'y']
>>> river = [model.predict_proba_one(x) for x in ({"a": 0.5, "b": 2.0}, {"a": 2.0, "new": 9.0})]
>>> bool(np.allclose(proba, [[p["x"], p["y"]] for p in river], rtol=0.0, atol=1e-12))
True
>>> linear_scorer(preprocessing.MinMaxScaler() | linear_model.SoftmaxRegression()) is None
True
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

#: batches smaller than these stay on river's own path: the smallest batch sizes at which the batch path
#: was faster than river one sample at a time on image segments and phishing (``scripts/bench_linear.py``;
#: a call costs some 35-60 µs whatever its size; river scores a sample in 8-30 µs through softmax, 5 µs
#: through a scaled LogisticRegression, 2.5 µs through a bare one, whose dot product is in Rust)
MIN_BATCH_SOFTMAX = 10
MIN_BATCH_LOGISTIC = 20
MIN_BATCH_BARE_LOGISTIC = 64
#: river's sigmoid saturates beyond these logits (``river.utils.math.sigmoid``)
_SIGMOID_CLIP = 30.0


class LinearScorer:
    """Scores batches for one river linear classifier, optionally behind a ``StandardScaler``.

    Built by :func:`linear_scorer`; holds references to the estimator's parts, no copy of their state.
    """

    def __init__(self, model: Any, scaler: Any | None = None, pipeline: Any | None = None) -> None:
        self.model = model
        self.scaler = scaler
        self.pipeline = pipeline
        self._softmax = _name(model) == _SOFTMAX
        #: batches smaller than this are left to river (see :data:`MIN_BATCH_SOFTMAX`)
        self.min_batch = (
            MIN_BATCH_SOFTMAX
            if self._softmax
            else MIN_BATCH_LOGISTIC
            if scaler is not None
            else MIN_BATCH_BARE_LOGISTIC
        )

    def predict_proba(self, xs: Sequence[dict[str, Any]]) -> tuple[list[Any], np.ndarray] | None:
        """The class labels in river's order and a ``len(xs)`` × ``len(labels)`` matrix of the probabilities
        river's ``predict_proba_one`` gives each sample; None when this call must be river's own (a scaler
        over a rolling window, or river's ``learn_during_predict`` on, which learns while predicting)."""
        if self.pipeline is not None and self.pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:
            return None
        if self.scaler is not None and getattr(self.scaler, "window_size", None) is not None:
            return None
        if self._softmax:
            labels, names, weights = self._softmax_weights()
            intercept = None
        else:
            labels = [False, True]
            weights_dict = self.model.weights
            names = list(weights_dict)
            weights = np.array(list(weights_dict.values()), dtype=np.float64).reshape(len(names), 1)
            intercept = float(self.model.intercept)
        n = len(xs)
        if not labels:  # a softmax that has learned nothing: river returns {} for every sample
            return labels, np.zeros((n, 0))
        x = self._matrix(xs, names)
        missing = np.isnan(x)
        # overflows make non-finite logits, whose rows river scores below: no warning for them
        with np.errstate(over="ignore", invalid="ignore"):
            if self.scaler is not None:
                x = self._scale(x, names)
            x[missing] = 0.0  # an absent feature adds nothing to the dot product
            logits = x @ weights
            if intercept is not None:
                logits += intercept
            if self._softmax:
                z = np.exp(logits - logits.max(axis=1, keepdims=True))
                proba = z / z.sum(axis=1, keepdims=True)
            else:
                logit = logits[:, 0]
                p = 1.0 / (1.0 + np.exp(-np.clip(logit, -_SIGMOID_CLIP, _SIGMOID_CLIP)))
                p[logit < -_SIGMOID_CLIP] = 0.0
                p[logit > _SIGMOID_CLIP] = 1.0
                proba = np.stack([1.0 - p, p], axis=1)
        for i in self._river_rows(xs, names, missing, logits):
            own = self._river_proba_one(xs[i])
            proba[i] = [float(own.get(label, 0.0)) for label in labels]
        return labels, proba

    def _river_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        """river's own answer for one sample."""
        est = self.pipeline if self.pipeline is not None else self.model
        out: dict[Any, float] = est.predict_proba_one(x)
        return out

    # -- the parts ----------------------------------------------------------------------------------
    def _softmax_weights(self) -> tuple[list[Any], list[Any], np.ndarray]:
        per_label = self.model.weights
        labels = list(per_label)
        names = list(dict.fromkeys(itertools.chain.from_iterable(per_label.values())))
        weights = np.array([_values(w, names) for w in per_label.values()], dtype=np.float64)
        return labels, names, weights.reshape(len(labels), len(names)).T

    @staticmethod
    def _matrix(xs: Sequence[dict[str, Any]], names: list[Any]) -> np.ndarray:
        nan = math.nan
        return np.array([[x.get(k, nan) for k in names] for x in xs], dtype=np.float64).reshape(
            len(xs), len(names)
        )

    def _scale(self, x: np.ndarray, names: list[Any]) -> np.ndarray:
        scaler: Any = self.scaler
        mean = np.array(_values(scaler.means, names), dtype=np.float64)
        if not scaler.with_std:
            out: np.ndarray = x - mean
            return out
        var = np.array(_values(scaler.vars, names), dtype=np.float64)
        known = var != 0.0  # river: ``(x - mean) / var ** 0.5 if var else 0.0``
        if known.all():
            out = (x - mean) / np.sqrt(var)
            return out
        out = (x - mean) / np.sqrt(np.where(known, var, 1.0))
        out[:, ~known] = 0.0
        return out

    @staticmethod
    def _river_rows(
        xs: Sequence[dict[str, Any]], names: list[Any], missing: np.ndarray, logits: np.ndarray
    ) -> list[int]:
        """Rows river must score itself: a non-finite logit, or a NaN value the matrix took for absent."""
        rows = set(np.flatnonzero(~np.isfinite(logits).all(axis=1)).tolist())
        if missing.any():
            known = set(names)
            n_absent = missing.sum(axis=1)
            for i in np.flatnonzero(n_absent).tolist():
                if len(names) - int(n_absent[i]) != len(xs[i].keys() & known):
                    rows.add(i)
        return sorted(rows)


def _values(d: Any, names: list[Any]) -> list[float]:
    """``d``'s values for ``names``, 0.0 for a name it lacks, without inserting into a defaultdict."""
    if len(names) > 1 and all(map(d.__contains__, names)):
        return list(operator.itemgetter(*names)(d))  # every name present: one C call
    return [d.get(k, 0.0) for k in names]


def _name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# the classes recognised, by name: this module imports none of river (river.linear_model brings in
# scipy.stats), and an estimator of one of them means its module is loaded already
_PIPELINE = "river.compose.pipeline.Pipeline"
_SCALER = "river.preprocessing.scale.StandardScaler"
_SOFTMAX = "river.linear_model.softmax.SoftmaxRegression"
_LOGISTIC = "river.linear_model.log_reg.LogisticRegression"


def linear_scorer(estimator: Any) -> LinearScorer | None:
    """A :class:`LinearScorer` for ``estimator`` if it is one this module reproduces exactly, else None.

    Recognised: ``SoftmaxRegression`` and ``LogisticRegression`` (any loss with the binary sigmoid), bare or
    as the last step after a ``StandardScaler`` in a two-step pipeline. Subclasses are not recognised:
    they may score differently.
    """
    scaler = pipeline = None
    model = estimator
    if _name(estimator) == _PIPELINE:
        steps = list(estimator.steps.values())
        if len(steps) != 2 or _name(steps[0]) != _SCALER:
            return None
        pipeline, scaler, model = estimator, steps[0], steps[1]
    if _name(model) == _SOFTMAX:
        return LinearScorer(model, scaler, pipeline)
    if _name(model) == _LOGISTIC:
        from river import optim

        if type(model.loss).mean_func is optim.losses.BinaryLoss.mean_func:
            return LinearScorer(model, scaler, pipeline)
    return None
