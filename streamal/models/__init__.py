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


#: model name -> factory of the river estimator (or of a ready :class:`Model`, as the committee is);
#: ``river:<module>.<Class>`` names any other river classifier
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
    """
    params = params or {}
    if name.startswith("river:"):
        path = name.removeprefix("river:")
        module_name, _, cls_name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(f"river.{module_name}"), cls_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"model.name: no river classifier {path!r} ({exc})") from None
        factory: Callable[..., Any] = cls
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
