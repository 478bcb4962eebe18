"""Learning-curve plots (matplotlib, headless)."""

from __future__ import annotations

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
