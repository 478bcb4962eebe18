"""The bench's report: tables, average ranks, statistical tests and plots, from the rows of ``results.json``.

Per budget, a method's score on a data set is its accuracy averaged over the seeds; methods are ranked per
data set (1 = best), and compared across data sets with the Friedman test and the Nemenyi post-hoc test
(critical difference), as Demšar (2006) recommends, plus Wilcoxon signed-rank tests of the best method
against every other, Holm-corrected (:mod:`streamal.evaluation.stats`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamal.evaluation import plots, stats
from streamal.evaluation.bench import BASELINE
from streamal.evaluation.overhead import BEST_OF

Row = dict[str, Any]
#: a run whose spending is above ``budget * OVER`` is over budget (slack for the estimate's window)
OVER = 1.10
#: a run whose spending is below ``budget * STARVED`` has starved
STARVED = 0.5


@dataclass
class BudgetSummary:
    """What the report says about one budget."""

    budget: float
    datasets: list[str]
    methods: list[str]
    kind: dict[str, str]
    #: method -> data set -> mean accuracy over seeds
    score: dict[str, dict[str, float]]
    #: method -> data set -> standard deviation over seeds
    spread: dict[str, dict[str, float]]
    ranks: dict[str, float]
    best_streamal: str | None
    best_peer: str | None
    baseline: str | None
    friedman: stats.Friedman | None = None
    cd: float | None = None
    wilcoxon: dict[str, tuple[float, bool]] = field(default_factory=dict)

    def gain_over_baseline(self, method: str) -> dict[str, float]:
        if self.baseline is None:
            return {}
        return {d: self.score[method][d] - self.score[self.baseline][d] for d in self.datasets}


def summarise(rows: Sequence[Row], budget: float) -> BudgetSummary:
    at = [r for r in rows if r["budget"] == budget]
    datasets = list(dict.fromkeys(r["dataset"] for r in at))
    accuracies: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    kind: dict[str, str] = {}
    for r in at:
        accuracies[r["method"]][r["dataset"]].append(r["accuracy"])
        kind[r["method"]] = r["kind"]
    # only methods that ran on every data set can be ranked
    methods = [m for m in accuracies if all(accuracies[m][d] for d in datasets)]
    score = {m: {d: statistics.fmean(accuracies[m][d]) for d in datasets} for m in methods}
    spread = {
        m: {d: statistics.pstdev(accuracies[m][d]) if len(accuracies[m][d]) > 1 else 0.0 for d in datasets}
        for m in methods
    }
    table = {m: [score[m][d] for d in datasets] for m in methods}
    ranks = stats.average_ranks(table) if methods else {}
    methods.sort(key=lambda m: (ranks[m], m))
    streamal = [m for m in methods if kind[m] == "streamal"]
    peers = [m for m in methods if kind[m] == "peer"]
    # random sampling with the default model (a bench run with other models has one per model)
    baselines = [m for m in methods if kind[m] == "baseline"]
    baseline = " / ".join(BASELINE) if " / ".join(BASELINE) in baselines else next(iter(baselines), None)
    summary = BudgetSummary(
        budget=budget,
        datasets=datasets,
        methods=methods,
        kind=kind,
        score=score,
        spread=spread,
        ranks=ranks,
        best_streamal=streamal[0] if streamal else None,
        best_peer=peers[0] if peers else None,
        baseline=baseline,
    )
    if len(methods) >= 3 and len(datasets) >= 2:
        summary.friedman = stats.friedman(table)
        summary.cd = stats.nemenyi_cd(len(methods), len(datasets))
        summary.wilcoxon = stats.wilcoxon_holm(table, methods[0])
    return summary


def _deterministic(s: BudgetSummary, rows: Sequence[Row]) -> list[str]:
    """The methods that ran more than one seed and scored the same with each on every data set."""
    seeds: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if r["budget"] == s.budget:
            seeds[r["method"]].add(r["seed"])
    return [m for m in s.methods if len(seeds[m]) > 1 and not any(s.spread[m].values())]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _budget_section(s: BudgetSummary, rows: Sequence[Row], out: Path) -> list[str]:
    lines = [f"## Budget {s.budget:g}", ""]
    header = ["method", *s.datasets, "avg rank", "mean acc"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for m in s.methods:
        cells = [f"{_pct(s.score[m][d])} ± {_pct(s.spread[m][d])}" for d in s.datasets]
        mean = statistics.fmean(s.score[m].values())
        name = f"**{m}**" if m in (s.best_streamal, s.best_peer) else m
        lines.append(
            f"| {name} ({s.kind[m]}) | " + " | ".join(cells) + f" | {s.ranks[m]:.2f} | {_pct(mean)} |"
        )
    lines += [
        "",
        "Accuracy in %, mean ± standard deviation over the seeds; ranks are per data set (1 = best).",
    ]
    if _deterministic(s, rows):
        lines[-1] += (
            " A spread of 0.00 on every data set is a deterministic method: the streams do not change with"
            " the seed, so its seeds repeat one run; 0.00 is not its spread, which is unmeasured here."
        )
    lines.append("")
    if s.friedman is not None:
        f = s.friedman
        lines.append(
            f"**Friedman test** over {f.n_datasets} data sets and {f.n_methods} methods: chi² = "
            f"{f.statistic:.2f}, p = {f.p_value:.3g} (Iman-Davenport F = {f.iman_davenport:.2f}, "
            f"p = {f.iman_davenport_p:.3g})."
        )
        lines.append(
            f"**Nemenyi post-hoc test** (alpha 0.05): critical difference {s.cd:.2f} ranks; two methods "
            "whose average ranks differ by more are significantly different "
            f"(`cd_{s.budget:g}.png`)."
        )
        if f.n_datasets < 5:
            lines.append(
                f"With {f.n_datasets} data sets these tests have little power: "
                "read the ranks, not the p-values."
            )
        best = s.methods[0]
        significant = [m for m, (_, sig) in s.wilcoxon.items() if sig]
        lines.append(
            f"**Wilcoxon signed-rank tests** of {best} against each other method "
            "(Holm-corrected, alpha 0.05): "
            + (
                f"significantly better than {', '.join(significant)}."
                if significant
                else "no difference significant."
            )
        )
        cd_png = out / f"cd_{s.budget:g}.png"
        plots.critical_difference_png(
            cd_png, s.ranks, s.cd or 0.0, title=f"average ranks at budget {s.budget:g}"
        )
    else:
        lines.append("No statistical test: it needs at least 3 methods and 2 data sets.")
    lines.append("")
    return lines


def _targets(s: BudgetSummary, rows: Sequence[Row]) -> list[str]:
    lines = [f"## Targets at budget {s.budget:g}", ""]
    ours = [r for r in rows if r["budget"] == s.budget and r["kind"] in ("streamal", "baseline")]
    if s.best_streamal and s.baseline:
        gains = s.gain_over_baseline(s.best_streamal)
        mean_gain = statistics.fmean(gains.values())
        lines.append(
            f"- Best streamal method by average rank: **{s.best_streamal}** "
            f"(rank {s.ranks[s.best_streamal]:.2f})."
        )
        lines.append(
            "- Its accuracy minus random sampling's, per data set (points): "
            + ", ".join(f"{d} {100 * g:+.2f}" for d, g in gains.items())
            + f"; mean {100 * mean_gain:+.2f}. Above random on "
            f"{sum(g > 0 for g in gains.values())} of {len(gains)} data sets."
        )
    if s.best_peer and s.best_streamal:
        lines.append(
            f"- Best peer by average rank: **{s.best_peer}** (rank {s.ranks[s.best_peer]:.2f}); "
            "best streamal "
            f"{'is not behind it' if s.ranks[s.best_streamal] <= s.ranks[s.best_peer] else 'is behind it'}."
        )
    if ours:
        over = [r for r in ours if r["spent"] > r["budget"] * OVER]
        starved = [r for r in ours if r["spent"] < r["budget"] * STARVED]
        worst = max(ours, key=lambda r: r["spent"] / r["budget"])
        least = min(ours, key=lambda r: r["spent"] / r["budget"])
        high, low = worst["spent"] / worst["budget"], least["spent"] / least["budget"]
        lines.append(
            f"- Spending of the {len(ours)} streamal runs: at most {high:.3f} x the "
            f"budget ({worst['method']}, {worst['dataset']}), at least {low:.3f} x "
            f"({least['method']}, {least['dataset']}); over budget (> {OVER:.2f} x): {len(over)}; starved "
            f"(< {STARVED} x): {len(starved)}."
        )
    lines += _decision_target([r for r in rows if r["budget"] == s.budget])
    lines.append("")
    return lines


#: the per-decision overhead the strategy and the policy may cost, in µs per sample
DECISION_TARGET_US = 5.0


def _decision_medians(rows: Sequence[Row], field: str) -> dict[str, float]:
    """The median of ``field`` over each method's runs (methods whose rows do not all have it: none)."""
    by: dict[str, list[float]] = defaultdict(list)
    methods = {r["method"] for r in rows}
    for r in rows:
        if r.get(field) is None:
            methods.discard(r["method"])
        else:
            by[r["method"]].append(r[field])
    return {m: statistics.median(by[m]) for m in sorted(methods)}


def _decision_batch(rows: Sequence[Row]) -> str:
    """The batch size the rows' batched decisions were timed at ("N" if they differ)."""
    sizes = {r.get("decision_batch") for r in rows if r.get("us_per_decision_batched") is not None}
    return str(next(iter(sizes))) if len(sizes) == 1 else "N"


def _decision_target(rows: Sequence[Row]) -> list[str]:
    ours = [r for r in rows if r["kind"] in ("streamal", "baseline")]
    if not ours:
        return []
    lines = []
    paths = [
        ("us_per_decision_batched", f"in batches of {_decision_batch(ours)} (as the service decides a poll)"),
        ("us_per_decision", "as this run decided them (one sample per batch when labels come back at once)"),
    ]
    for field_name, path in paths:
        medians = _decision_medians(ours, field_name)
        if not medians:
            continue
        worst = max(medians, key=medians.__getitem__)
        over = sorted((m for m, v in medians.items() if v > DECISION_TARGET_US), key=medians.__getitem__)
        lines.append(
            f"- Per-decision overhead (strategy + policy, median of each method's runs) {path}: at most "
            f"{medians[worst]:.2f} µs ({worst}); above {DECISION_TARGET_US:g} µs: "
            + (", ".join(f"{m} {medians[m]:.2f}" for m in over) if over else "none")
            + "."
        )
    return lines


def _overhead(rows: Sequence[Row]) -> list[str]:
    by: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by[r["method"]].append(r)
    batched = _decision_medians(rows, "us_per_decision_batched")
    lines = [
        "## Time per sample",
        "",
        "Median over every run of the method. *Decision* is the strategy and the policy only "
        "(for a peer, its query step as its API defines it: scikit-activeml's `query` + `update`, given "
        "the classifier's probabilities already computed to predict the sample, as streamal's decisions "
        "are; river's `_ask_for_label`), as the run decided the samples: one at a time when labels come "
        "back without delay, since the model may learn after any sample. *Decision, batched* is the same "
        "samples and probabilities decided again by a new strategy and policy in batches of "
        f"{_decision_batch(rows)}, as the service decides a poll (best of {BEST_OF}; the peers' APIs decide "
        "one sample at a time). "
        "*Sample* is everything: scoring, deciding and learning.",
        "",
        "| method | µs per decision | µs per decision, batched | µs per sample |",
        "|---|---|---|---|",
    ]
    order = sorted(by, key=lambda m: statistics.median(r["us_per_decision"] for r in by[m]))
    for m in order:
        dec = statistics.median(r["us_per_decision"] for r in by[m])
        tot = statistics.median(r["us_per_sample"] for r in by[m])
        dec_batched = f"{batched[m]:.1f}" if m in batched else "–"
        lines.append(f"| {m} ({by[m][0]['kind']}) | {dec:.1f} | {dec_batched} | {tot:.0f} |")
    lines.append("")
    return lines


def _curves(s: BudgetSummary, rows: Sequence[Row], out: Path) -> list[str]:
    wanted = [m for m in (s.best_streamal, s.baseline, s.best_peer) if m]
    lines = [f"## Learning curves at budget {s.budget:g}", ""]
    for d in s.datasets:
        curves = {}
        for m in wanted:
            run = next(
                (r for r in rows if r["budget"] == s.budget and r["dataset"] == d and r["method"] == m), None
            )
            if run is not None:
                curves[m] = [tuple(p) for p in run["curve"]]
        name = f"curve_{_slug(d)}_{s.budget:g}.png"
        plots.curves_png(out / name, curves, title=f"{d}: accuracy per block at budget {s.budget:g} (seed 0)")
        lines.append(f"- {d}: `{name}`")
    lines.append("")
    return lines


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_report(rows: Sequence[Row], out: Path, command: str = "") -> list[BudgetSummary]:
    """Write ``report.md`` and its plots into ``out``; returns the per-budget summaries."""
    out.mkdir(parents=True, exist_ok=True)
    budgets = sorted({r["budget"] for r in rows})
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# streamal bench", ""]
    if command:
        lines += ["```", command, "```", ""]
    n_by = {d: next(r["n"] for r in rows if r["dataset"] == d) for d in datasets}
    lines.append(
        f"Data sets (samples): {', '.join(f'{d} ({n_by[d]})' for d in datasets)}. Budgets: "
        f"{', '.join(f'{b:g}' for b in budgets)}. Seeds: {len(seeds)}. Prequential accuracy over every "
        "sample, each predicted before any label of it is learned; labels arrive "
        f"{rows[0]['delay'] if rows else 0} samples after their request."
    )
    lines.append("")
    summaries = [summarise(rows, b) for b in budgets]
    focus = next((s for s in summaries if math.isclose(s.budget, 0.1)), summaries[-1] if summaries else None)
    if focus is not None:
        lines += _targets(focus, rows)
    for s in summaries:
        lines += _budget_section(s, rows, out)
    lines += _overhead(rows)
    if focus is not None:
        lines += _curves(focus, rows, out)
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return summaries
