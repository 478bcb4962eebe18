"""Online models behind one interface; ``build_model`` turns a name and parameters into one."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from streamal.errors import ConfigError
from streamal.models.adapter import RiverModel
from streamal.models.base import Model
from streamal.models.committee import CommitteeModel, CommitteeProba
from streamal.models.knn import KNNClassifier

__all__ = [
    "MODELS",
    "CommitteeModel",
    "CommitteeProba",
    "KNNClassifier",
    "Model",
    "RiverModel",
    "build_model",
]


def _knn(**params: Any) -> Any:
    return KNNClassifier(**params)


def _committee(**params: Any) -> Any:
    return CommitteeModel(**params)


def _torch(name: str, **defaults: Any) -> Callable[..., Any]:
    """A factory of :class:`~streamal.models.torch_mlp.TorchMLP` with ``defaults``; torch is imported
    only when such a model is built (it is an optional extra: ``pip install 'streamal[torch]'``)."""

    def build(**params: Any) -> Any:
        try:
            from streamal.models.torch_mlp import TorchMLP
        except ImportError as exc:
            raise ConfigError(
                f"model.name: {name} needs torch; install it with pip install 'streamal[torch]' ({exc})"
            ) from None
        return TorchMLP(**{**defaults, **params, "name": name})

    return build


def _gaussian_nb(**params: Any) -> Any:
    from river import naive_bayes

    return naive_bayes.GaussianNB(**params)  # type: ignore[no-untyped-call]


def _softmax(**params: Any) -> Any:
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.SoftmaxRegression(**params)


def _hoeffding_tree(**params: Any) -> Any:
    from river import tree

    return tree.HoeffdingTreeClassifier(**params)


def _river_class(path: str) -> Callable[..., Any]:
    """A factory of the river classifier ``<module>.<Class>``; one that tells only two classes apart
    (river's ``_multiclass`` is False) comes wrapped in a ``multiclass.OneVsRestClassifier``."""
    from river import base

    module_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(f"river.{module_name}"), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"model.name: no river classifier {path!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, base.Classifier)):
        what = "a regressor" if isinstance(cls, type) and issubclass(cls, base.Regressor) else "not one"
        raise ConfigError(
            f"model.name: river:{path} must be a river classifier, and it is {what}; "
            "name one that predicts class probabilities, e.g. river:forest.ARFClassifier"
        )

    def build(**params: Any) -> Any:
        estimator = cls(**params)
        if estimator._multiclass:
            return estimator
        from river import multiclass

        return multiclass.OneVsRestClassifier(estimator)

    return build


#: model name -> factory of the river estimator (or of a ready :class:`Model`, as the committee is);
#: ``river:<module>.<Class>`` names any other river classifier (see :func:`build_model`)
MODELS: dict[str, Callable[..., Any]] = {
    "knn": _knn,
    "committee": _committee,
    "gaussian_nb": _gaussian_nb,
    "softmax": _softmax,
    "hoeffding_tree": _hoeffding_tree,
    "torch_mlp": _torch("torch_mlp"),
    "torch_mc_dropout": _torch("torch_mc_dropout", dropout=0.2, mc_passes=10),
    "torch_ensemble": _torch("torch_ensemble", members=5),
}


def build_model(name: str, params: dict[str, Any] | None = None) -> Model:
    """Build a model by name.

    >>> build_model("knn", {"n_neighbors": 3}).name
    'knn'
    >>> build_model("river:naive_bayes.GaussianNB").name
    'river:naive_bayes.GaussianNB'
    >>> build_model("committee", {"n_members": 3})
    CommitteeModel(n_members=3, n_neighbors=5, window_size=1000, max_features=1.0, seed=0)

    ``river:<module>.<Class>`` must name a river classifier. One that only tells two classes apart (river's
    ``_multiclass`` is False, as for ``linear_model.LogisticRegression``) is wrapped in a
    ``multiclass.OneVsRestClassifier``, one copy per class, so that it takes any labels:

    >>> type(build_model("river:linear_model.LogisticRegression").estimator).__name__
    'OneVsRestClassifier'
    >>> build_model("river:linear_model.LinearRegression")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamal.errors.ConfigError: model.name: river:linear_model.LinearRegression must be ... a regressor; ...
    """
    params = params or {}
    factory: Callable[..., Any]
    if name.startswith("river:"):
        factory = _river_class(name.removeprefix("river:"))
    elif name in MODELS:
        factory = MODELS[name]
    else:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(
            f"model.name: unknown model {name!r}; choose one of {known}, or river:<module>.<Class>"
        )
    try:
        estimator = factory(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.params: {exc}") from None
    if isinstance(estimator, Model):
        return estimator
    return RiverModel(estimator, name=name)
