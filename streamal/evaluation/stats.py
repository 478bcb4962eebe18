"""Comparing several methods over several data sets (Demšar 2006, "Statistical comparisons of classifiers
over multiple data sets"): average ranks, the Friedman test, and the Nemenyi post-hoc test with its
critical difference; Wilcoxon signed-rank tests with Holm's correction for one method against others.

>>> scores = {"a": [0.9, 0.8, 0.7, 0.9], "b": [0.8, 0.7, 0.6, 0.85], "c": [0.7, 0.75, 0.5, 0.8]}
>>> average_ranks(scores)
{'a': 1.0, 'b': 2.25, 'c': 2.75}
>>> f = friedman(scores)
>>> round(f.statistic, 3), round(f.p_value, 4)
(6.5, 0.0388)
>>> round(nemenyi_cd(3, 4), 3)
1.657
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def rank_rows(scores: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """Per data set (position in each list), the rank of each method: 1 is the highest score, ties share
    the mean of their ranks."""
    names = list(scores)
    matrix = np.array([scores[n] for n in names], dtype=np.float64)  # methods x data sets
    ranks = np.apply_along_axis(lambda col: stats.rankdata(-col), 0, matrix)
    return {n: ranks[i].tolist() for i, n in enumerate(names)}


def average_ranks(scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The mean over data sets of each method's rank (lower is better)."""
    return {n: float(np.mean(r)) for n, r in rank_rows(scores).items()}


@dataclass(frozen=True)
class Friedman:
    statistic: float  # Friedman's chi-square
    p_value: float
    iman_davenport: float  # the F statistic of Iman and Davenport (less conservative)
    iman_davenport_p: float
    n_methods: int
    n_datasets: int


def friedman(scores: Mapping[str, Sequence[float]]) -> Friedman:
    """The Friedman test of "all methods are equivalent", from scipy, with the Iman-Davenport F."""
    columns = [list(v) for v in scores.values()]
    k, n = len(columns), len(columns[0])
    if k < 3 or n < 2:
        raise ValueError(f"the Friedman test needs at least 3 methods and 2 data sets, got {k} and {n}")
    if all(len(set(row)) == 1 for row in zip(*columns, strict=True)):
        return Friedman(0.0, 1.0, 0.0, 1.0, k, n)  # every method tied on every data set
    result = stats.friedmanchisquare(*columns)
    chi2 = float(result.statistic)
    p = float(result.pvalue)
    denominator = n * (k - 1) - chi2
    if denominator <= 0:
        f, f_p = math.inf, 0.0
    else:
        f = (n - 1) * chi2 / denominator
        f_p = float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))
    return Friedman(chi2, p, f, f_p, k, n)


def nemenyi_cd(n_methods: int, n_datasets: int, alpha: float = 0.05) -> float:
    """The Nemenyi critical difference: two methods whose average ranks differ by more are significantly
    different at level ``alpha``. ``q_alpha`` is the studentized range quantile over ``sqrt 2``."""
    q = float(stats.studentized_range.ppf(1.0 - alpha, n_methods, math.inf)) / math.sqrt(2.0)
    return q * math.sqrt(n_methods * (n_methods + 1) / (6.0 * n_datasets))


def wilcoxon_holm(
    scores: Mapping[str, Sequence[float]], control: str, alpha: float = 0.05
) -> dict[str, tuple[float, bool]]:
    """Wilcoxon signed-rank test of ``control`` against every other method, Holm-corrected.

    Returns ``{method: (p_value, significant)}``; a method with the same score as the control on every
    data set gets p = 1.
    """
    ref = np.asarray(scores[control], dtype=np.float64)
    raw: dict[str, float] = {}
    for name, values in scores.items():
        if name == control:
            continue
        diff = ref - np.asarray(values, dtype=np.float64)
        if not np.any(diff):
            raw[name] = 1.0
            continue
        raw[name] = float(stats.wilcoxon(ref, values, zero_method="zsplit").pvalue)
    out: dict[str, tuple[float, bool]] = {}
    m = len(raw)
    rejecting = True
    for i, (name, p) in enumerate(sorted(raw.items(), key=lambda kv: kv[1])):
        rejecting = rejecting and p <= alpha / (m - i)
        out[name] = (p, rejecting)
    return out
