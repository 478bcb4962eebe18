"""river's linear classifiers scored a whole batch at a time with numpy, computing what river computes.

river scores one sample at a time: ``StandardScaler | SoftmaxRegression`` costs some 30 µs a sample in dict
arithmetic. :func:`linear_scorer` recognises the structures it can reproduce exactly, a bare
``linear_model.SoftmaxRegression`` or ``linear_model.LogisticRegression``, or either one after a
``preprocessing.StandardScaler`` in a pipeline, and a ``multiclass.OneVsRestClassifier`` of such a
``LogisticRegression`` (as ``build_model`` wraps ``river:linear_model.LogisticRegression``), and returns a
:class:`LinearScorer` that reads the estimator's current state (running means and variances, weights,
intercepts) at every call and scores the batch with one matrix product (one per class when each copy of a
one-vs-rest has its own scaler). Learning stays river's own ``learn_one``; nothing here changes the estimator.

It follows river step by step:

- scaling: ``(x - mean) / sqrt(var)``, ``0.0`` for a feature of zero variance (one never seen among them),
  ``x - mean`` with ``with_std=False``;
- a feature absent from a sample adds nothing to a logit (river's dot product runs over the features the
  sample has), nor does a finite value of a feature the model holds no weight for;
- softmax: ``exp(z - max z)`` normalised, over the classes the model holds weights for, in their order;
  logistic: ``{False: 1 - p, True: p}`` with river's sigmoid (0 below a logit of -30, 1 above 30);
- one-vs-rest: each class's copy's ``p`` as above, in the order of river's ``classifiers``, over their sum
  (added in that order), or ``1 / k`` each where the sum is 0.0; ``{}`` before the first label.

A row river would score as non-finite (an overflowing logit, a NaN or infinite feature value) is left to
river itself, so the answer is river's in every case. One difference is on purpose: river's scaler inserts
a zero mean and variance for every unseen feature it transforms; reading the statistics here inserts
nothing (the entries river adds hold the defaults, so learning is unaffected).

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

A one-vs-rest gives river's classes in river's order, each copy scored as a ``LogisticRegression``:

>>> from river import multiclass
>>> ovr = multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
>>> for x, y in [({"a": 0.0, "b": 1.0}, "x"), ({"a": 3.0}, "y"), ({"a": 1.0, "b": 0.0}, "z")]:
...     ovr.learn_one(x, y)
>>> labels, proba = linear_scorer(ovr).predict_proba([{"a": 0.5, "b": 2.0}, {"a": 2.0, "new": 9.0}])
>>> labels
['x', 'y', 'z']
>>> river = [ovr.predict_proba_one(x) for x in ({"a": 0.5, "b": 2.0}, {"a": 2.0, "new": 9.0})]
>>> bool(np.allclose(proba, [list(p.values()) for p in river], rtol=0.0, atol=1e-12))
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
#: a ``OneVsRestClassifier`` of k classes: these over k, rounded up, at least 2. river scores a sample once
#: per class, in some 1.6 + 1.5 k µs through bare copies, 5 + 1.6 k behind one scaler, 1.6 + 5 k with a
#: scaler in each copy, while a call of the batch path costs some 35-55 µs (40-120 with a scaler in each
#: copy). Learning k = 1, 3, 5, 7 classes of image segments and the two of phishing, the batch path was as
#: fast as river from 32, 14, 12, 7, 6 samples through bare copies (k = 1, 2, 3, 5, 7), and from 10, 10,
#: 6-7, 5, 4-5 behind scalers (``scripts/bench_linear.py``'s method, best of 7)
MIN_BATCH_ONE_VS_REST = 32
MIN_BATCH_SCALED_ONE_VS_REST = 24
#: river's sigmoid saturates beyond these logits (``river.utils.math.sigmoid``)
_SIGMOID_CLIP = 30.0


class LinearScorer:
    """Scores batches for one river linear classifier, or a one-vs-rest of ``LogisticRegression``, optionally
    behind a ``StandardScaler``.

    Built by :func:`linear_scorer`; holds references to the estimator's parts, no copy of their state.
    """

    def __init__(self, model: Any, scaler: Any | None = None, pipeline: Any | None = None) -> None:
        self.model = model
        self.scaler = scaler
        self.pipeline = pipeline
        self._softmax = _name(model) == _SOFTMAX
        self._ovr = _name(model) == _ONE_VS_REST
        #: the one-vs-rest's prototype and its scaler when each copy is a scaled ``LogisticRegression`` (the
        #: copies are its clones, with its parameters)
        self._copy_pipeline = model.classifier if self._ovr and _name(model.classifier) == _PIPELINE else None
        self._copy_scaler = (
            next(iter(self._copy_pipeline.steps.values())) if self._copy_pipeline is not None else None
        )
        scaled = scaler is not None or self._copy_pipeline is not None
        self._min_batch = (
            MIN_BATCH_SOFTMAX
            if self._softmax
            else (MIN_BATCH_SCALED_ONE_VS_REST if scaled else MIN_BATCH_ONE_VS_REST)
            if self._ovr
            else MIN_BATCH_LOGISTIC
            if scaled
            else MIN_BATCH_BARE_LOGISTIC
        )

    @property
    def min_batch(self) -> int:
        """Batches smaller than this are left to river (see :data:`MIN_BATCH_SOFTMAX`); for a one-vs-rest,
        it falls as classes come (see :data:`MIN_BATCH_ONE_VS_REST`)."""
        if not self._ovr:
            return self._min_batch
        return max(2, math.ceil(self._min_batch / max(1, len(self.model.classifiers))))

    def predict_proba(self, xs: Sequence[dict[str, Any]]) -> tuple[list[Any], np.ndarray] | None:
        """The class labels in river's order and a ``len(xs)`` × ``len(labels)`` matrix of the probabilities
        river's ``predict_proba_one`` gives each sample; None when this call must be river's own (a scaler
        over a rolling window, or river's ``learn_during_predict`` on, which learns while predicting)."""
        if self._river_s_own():
            return None
        if self._softmax:
            labels, names, weights = self._softmax_weights()
            intercept, scalers = None, [self.scaler]
        elif self._ovr:
            labels, names, weights, intercept, scalers = self._one_vs_rest_weights()
        else:
            labels = [False, True]
            names, weights, intercept = self._logistic_weights([self.model.weights], [self.model])
            scalers = [self.scaler]
        n = len(xs)
        if not labels:  # a softmax or a one-vs-rest that has learned nothing: river returns {}
            return labels, np.zeros((n, 0))
        x = self._matrix(xs, names)
        missing = np.isnan(x)
        # overflows make non-finite logits, whose rows river scores below: no warning for them
        with np.errstate(over="ignore", invalid="ignore"):
            logits = self._logits(x, missing, names, weights, scalers)
            if intercept is not None:
                logits += intercept
            if self._softmax:
                z = np.exp(logits - logits.max(axis=1, keepdims=True))
                proba = z / z.sum(axis=1, keepdims=True)
            elif self._ovr:
                proba = _one_vs_rest(_sigmoid(logits))
            else:
                p = _sigmoid(logits[:, 0])
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

    def _river_s_own(self) -> bool:
        """Whether this call must be river's own: river's ``learn_during_predict`` is on (a pipeline's scaler
        learns from what it scores), or a scaler is over a rolling window (its statistics are no dicts)."""
        for pipeline in (self.pipeline, self._copy_pipeline):
            if pipeline is not None and pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:
                return True
        for scaler in (self.scaler, self._copy_scaler):
            if scaler is not None and scaler.window_size is not None:
                return True
        return False

    # -- the parts ----------------------------------------------------------------------------------
    def _one_vs_rest_weights(
        self,
    ) -> tuple[list[Any], list[Any], np.ndarray, np.ndarray, list[Any]]:
        """The classes in river's order, the features, a column of weights and an intercept per class's
        copy, and the scalers: one per copy when each copy is ``StandardScaler | LogisticRegression``."""
        copies = self.model.classifiers
        labels = list(copies)
        if self._copy_pipeline is not None:
            steps = [list(copy.steps.values()) for copy in copies.values()]
            scalers = [scaler for scaler, _ in steps]
            models = [model for _, model in steps]
        else:
            scalers, models = [self.scaler], list(copies.values())
        names, weights, intercept = self._logistic_weights([m.weights for m in models], models)
        return labels, names, weights, intercept, scalers

    @staticmethod
    def _logistic_weights(
        per_model: list[dict[Any, float]], models: list[Any]
    ) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """The features any of ``models`` weighs, their weights (a column per model, 0.0 for a feature a
        model lacks) and the models' intercepts."""
        if not per_model:  # a one-vs-rest that has learned no class
            return [], np.zeros((0, 0)), np.zeros(0)
        first = per_model[0]
        if len(per_model) == 1:
            names = list(first)
            values: Any = first.values()
        elif len(first) > 1 and all(w.keys() == first.keys() for w in per_model):
            names = list(first)  # the usual case: every model weighs the same features
            values = itertools.chain.from_iterable(map(operator.itemgetter(*names), per_model))
        else:
            names = list(dict.fromkeys(itertools.chain.from_iterable(per_model)))
            values = itertools.chain.from_iterable(_values(w, names) for w in per_model)
        size = len(models) * len(names)
        weights = np.fromiter(values, dtype=np.float64, count=size).reshape(len(models), len(names)).T
        return names, weights, np.array([float(m.intercept) for m in models], dtype=np.float64)

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

    @classmethod
    def _logits(
        cls, x: np.ndarray, missing: np.ndarray, names: list[Any], weights: np.ndarray, scalers: list[Any]
    ) -> np.ndarray:
        """``x`` (NaN where absent) times ``weights``, scaled first by the one scaler (None: unscaled), or
        column ``j`` by ``scalers[j]``."""
        if len(scalers) == 1:
            scaler = scalers[0]
            if scaler is not None:
                x = cls._scale(scaler, x, names)
            x[missing] = 0.0  # an absent feature adds nothing to the dot product
            out: np.ndarray = x @ weights
            return out
        out = np.empty((x.shape[0], weights.shape[1]))
        for j, scaler in enumerate(scalers):
            scaled = cls._scale(scaler, x, names)
            scaled[missing] = 0.0
            out[:, j] = scaled @ weights[:, j]
        return out

    @staticmethod
    def _scale(scaler: Any, x: np.ndarray, names: list[Any]) -> np.ndarray:
        """A new array: ``x`` scaled as ``scaler`` (a StandardScaler) would."""
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
        """Rows river must score itself: a non-finite logit, or a non-finite value the matrix does not show,
        a NaN it took for absent or the value of a feature no weight names (river's dot product multiplies it
        by 0.0, which makes a NaN of an infinity or a NaN)."""
        # the usual case, at little cost: finite logits, and every value of every sample in the matrix
        if np.isfinite(logits).all() and sum(map(len, xs)) == missing.size - np.count_nonzero(missing):
            return []
        rows = set(np.flatnonzero(~np.isfinite(logits).all(axis=1)).tolist())
        shown = len(names) - missing.sum(axis=1)
        hidden = np.fromiter(map(len, xs), dtype=np.intp, count=len(xs)) != shown
        for i in np.flatnonzero(hidden).tolist():
            if not math.isfinite(sum(xs[i].values())):  # a NaN or an infinity (or a sum overflowing)
                rows.add(i)
        return sorted(rows)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """river's sigmoid, elementwise: 0.0 below a logit of -30, 1.0 above 30."""
    p: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(logits, -_SIGMOID_CLIP, _SIGMOID_CLIP)))
    p[logits < -_SIGMOID_CLIP] = 0.0
    p[logits > _SIGMOID_CLIP] = 1.0
    return p


def _one_vs_rest(p: np.ndarray) -> np.ndarray:
    """river's ``OneVsRestClassifier.predict_proba_one`` from each class's probability (a column each): the
    columns over their sum, added in river's order, or uniform where it is 0.0."""
    total = np.cumsum(p, axis=1)[:, -1:]  # a running sum, left to right, as river adds them
    out: np.ndarray = p / total
    zero = total[:, 0] == 0.0
    if zero.any():
        out[zero] = 1.0 / p.shape[1]
    return out


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
_ONE_VS_REST = "river.multiclass.ovr.OneVsRestClassifier"


def linear_scorer(estimator: Any) -> LinearScorer | None:
    """A :class:`LinearScorer` for ``estimator`` if it is one this module reproduces exactly, else None.

    Recognised: ``SoftmaxRegression`` and ``LogisticRegression`` (any loss with the binary sigmoid), and a
    ``multiclass.OneVsRestClassifier`` of such a ``LogisticRegression``, bare or as the last step after a
    ``StandardScaler`` in a two-step pipeline; the one-vs-rest's classifier may be such a pipeline itself
    (though not when the one-vs-rest is behind a scaler too). Subclasses are not recognised: they may score
    differently.
    """
    split = _after_scaler(estimator)
    if split is None:
        return None
    pipeline, scaler, model = split
    if _name(model) == _SOFTMAX or _is_logistic(model):
        return LinearScorer(model, scaler, pipeline)
    if _name(model) == _ONE_VS_REST:
        inner = _after_scaler(model.classifier)
        if inner is not None and _is_logistic(inner[2]) and (scaler is None or inner[1] is None):
            return LinearScorer(model, scaler, pipeline)
    return None


def _after_scaler(estimator: Any) -> tuple[Any, Any, Any] | None:
    """``(pipeline, scaler, model)`` for ``StandardScaler | model``, ``(None, None, estimator)`` for any
    estimator not a pipeline, None for any other pipeline."""
    if _name(estimator) != _PIPELINE:
        return None, None, estimator
    steps = list(estimator.steps.values())
    if len(steps) != 2 or _name(steps[0]) != _SCALER:
        return None
    return estimator, steps[0], steps[1]


def _is_logistic(model: Any) -> bool:
    """A ``LogisticRegression`` whose loss links a logit to a probability with the binary sigmoid."""
    if _name(model) != _LOGISTIC:
        return False
    from river import optim

    return type(model.loss).mean_func is optim.losses.BinaryLoss.mean_func
