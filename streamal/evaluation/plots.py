"""Learning-curve plots (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path


def rolling(hits: Sequence[bool], window: int) -> list[float]:
    out, total = [], 0
    for i, h in enumerate(hits):
        total += h
        if i >= window:
            total -= hits[i - window]
        out.append(total / min(i + 1, window))
    return out


def learning_curve_png(
    path: Path, curves: Mapping[str, Sequence[bool]], title: str, window: int | None = None
) -> Path:
    """Plot the rolling accuracy of each named per-sample hit list into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, hits in curves.items():
        w = window or max(20, len(hits) // 20)
        ax.plot(range(1, len(hits) + 1), rolling(hits, w), label=f"{name} (window {w})")
    ax.set_xlabel("samples")
    ax.set_ylabel("prequential accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def curves_png(path: Path, curves: Mapping[str, Sequence[tuple[float, float]]], title: str) -> Path:
    """Plot named ``(samples seen, accuracy)`` curves into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, marker=".", linewidth=1.2)
    ax.set_xlabel("samples")
    ax.set_ylabel("accuracy over the block")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def critical_difference_png(path: Path, ranks: Mapping[str, float], cd: float, title: str) -> Path:
    """A critical-difference diagram (Demšar 2006): methods on an axis of average rank (1 = best, left),
    the critical difference as a bar, and a thick line joining each group of methods whose ranks differ
    by less than it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(ranks, key=ranks.__getitem__)
    k = len(names)
    lowest, highest = 1, max(2, math.ceil(max(ranks.values())))
    height = 1.2 + 0.28 * k
    fig, ax = plt.subplots(figsize=(9, height), dpi=110)
    ax.set_xlim(lowest - 0.5, highest + 0.5)
    ax.set_ylim(-k * 0.28 - 0.4, 1.0)
    ax.axis("off")
    ax.hlines(0, lowest, highest, color="black", linewidth=1)
    for tick in range(lowest, highest + 1):
        ax.vlines(tick, 0, 0.08, color="black", linewidth=1)
        ax.text(tick, 0.14, str(tick), ha="center", va="bottom", fontsize=8)
    if cd > 0:
        ax.hlines(0.7, lowest, lowest + cd, color="tab:red", linewidth=2)
        ax.text(
            lowest + cd / 2, 0.76, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8, color="tab:red"
        )
    half = (k + 1) // 2
    for i, name in enumerate(names):
        r = ranks[name]
        y = -0.28 * (i + 1)
        left = i < half
        x_text = lowest - 0.45 if left else highest + 0.45
        ax.plot([r, r, x_text], [0, y, y], color="tab:blue", linewidth=0.8)
        ax.text(x_text, y, f"{name} ({r:.2f})", ha="left" if left else "right", va="center", fontsize=7)
    # groups of methods not significantly different: maximal runs of consecutive ranks within cd
    groups: list[tuple[int, int]] = []
    for i in range(k):
        j = i
        while j + 1 < k and ranks[names[j + 1]] - ranks[names[i]] <= cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in groups):
            groups.append((i, j))
    for g, (i, j) in enumerate(groups):
        y = -0.06 - 0.07 * g
        ax.hlines(y, ranks[names[i]] - 0.03, ranks[names[j]] + 0.03, color="black", linewidth=3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
