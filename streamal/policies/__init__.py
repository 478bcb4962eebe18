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


def build_policy(
    name: str, budget: float, seed: int | None = None, params: dict[str, Any] | None = None
) -> Policy:
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ConfigError(
            f"policy.name: unknown policy {name!r}; choose one of {', '.join(sorted(POLICIES))}"
        ) from None
    try:
        return cls(budget=budget, seed=seed, **(params or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"policy: {exc}") from None
