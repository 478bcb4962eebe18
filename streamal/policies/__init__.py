"""Budget policies: whether a utility is worth a label. Register a new one in ``POLICIES``."""

from __future__ import annotations

import inspect
from typing import Any

from streamal.errors import ConfigError
from streamal.policies.base import Policy
from streamal.policies.biqf import BalancedIncrementalQuantileFilter
from streamal.policies.class_balanced import ClassBalancedQuota
from streamal.policies.fixed_rate import FixedRate
from streamal.policies.rate_limit import RateLimit
from streamal.policies.split import Split
from streamal.policies.threshold import FixedThreshold
from streamal.policies.variable_uncertainty import RandomizedVariableUncertainty, VariableUncertainty

__all__ = [
    "POLICIES",
    "BalancedIncrementalQuantileFilter",
    "ClassBalancedQuota",
    "FixedRate",
    "FixedThreshold",
    "Policy",
    "RandomizedVariableUncertainty",
    "RateLimit",
    "Split",
    "VariableUncertainty",
    "build_policy",
    "parameters",
    "reads_clock",
]

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        FixedThreshold,
        FixedRate,
        VariableUncertainty,
        RandomizedVariableUncertainty,
        Split,
        BalancedIncrementalQuantileFilter,
        RateLimit,
        ClassBalancedQuota,
    )
}


def reads_clock(name: str) -> bool:
    """Whether the policy called ``name`` takes a ``clock`` (the labels-per-hour rate limit): a simulation
    gives it the simulated one."""
    return name in POLICIES and "clock" in inspect.signature(POLICIES[name]).parameters


#: constructor arguments that are not parameters: ``build_policy`` passes the budget and the seed itself, and
#: a simulation gives a ``clock`` (:func:`reads_clock`)
_GIVEN = frozenset({"budget", "seed", "clock"})


def parameters(name: str) -> frozenset[str]:
    """The names the policy called ``name`` takes in ``build_policy``'s ``params``: its constructor's
    keyword arguments and those of the bases it passes ``**kwargs`` on to (not the budget, the seed and the
    clock, which are given otherwise).

    >>> sorted(parameters("rate_limit") - parameters("variable_uncertainty"))
    ['burst', 'labels_per_hour', 'rate_window']
    >>> "labels_per_hour" in parameters("threshold")
    False
    """
    names: set[str] = set()
    for cls in _policy_class(name).__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        signature = inspect.signature(vars(cls)["__init__"])
        names |= {
            p.name
            for p in list(signature.parameters.values())[1:]  # not self
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break  # the rest of the chain is not reachable by keyword
    return frozenset(names - _GIVEN)


def _policy_class(name: str) -> type[Policy]:
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigError(
            f"policy.name: unknown policy {name!r}; choose one of {', '.join(sorted(POLICIES))}"
        ) from None


def build_policy(
    name: str, budget: float, seed: int | None = None, params: dict[str, Any] | None = None
) -> Policy:
    cls = _policy_class(name)
    try:
        return cls(budget=budget, seed=seed, **(params or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"policy: {exc}") from None
