"""river's linear models scored one sample at a time (river's ``predict_proba_one``) against the numpy batch
path of :mod:`streamal.models.river_linear`: microseconds per sample scored.

Each model learns the first 300 labels of its data set, then scores a pool of 2,000 of the other samples
(cycled where the data set has fewer): one by one, as :class:`~streamal.models.adapter.RiverModel` scores a
single sample; through the batch path in batches of each size, including 1, which ``RiverModel`` itself
never sends it; and through ``RiverModel.predict_proba_many`` as the engine calls it. Each figure is the best
of ``--repeats`` passes over the pool (wall clock: the machine is shared, compare within one run).

    .venv/bin/python scripts/bench_linear.py [--repeats 5] [--sizes 1 5 10 16 20 50 64 100 2000]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from time import perf_counter

from river import linear_model, preprocessing

from streamal.datasets import load
from streamal.messages import Features, Proba
from streamal.models import RiverModel, build_model

LEARN = 300
POOL = 2000


def _logistic() -> RiverModel:
    return RiverModel(preprocessing.StandardScaler() | linear_model.LogisticRegression(), name="logistic")


def _bare_logistic() -> RiverModel:
    return RiverModel(linear_model.LogisticRegression(), name="LogisticRegression (bare)")


def _bare_softmax() -> RiverModel:
    return RiverModel(linear_model.SoftmaxRegression(), name="SoftmaxRegression (bare)")


#: (model, data set) rows of the table; LogisticRegression is binary, so it runs on phishing only
ROWS: list[tuple[str, Callable[[], RiverModel], str]] = [
    ("softmax", lambda: build_model("softmax"), "image_segments"),  # type: ignore[list-item,return-value]
    ("softmax", lambda: build_model("softmax"), "phishing"),  # type: ignore[list-item,return-value]
    ("logistic (StandardScaler | LogisticRegression)", _logistic, "phishing"),
    ("LogisticRegression (bare)", _bare_logistic, "phishing"),
    ("SoftmaxRegression (bare)", _bare_softmax, "image_segments"),
]


def _best_us(
    score: Callable[[Sequence[Features]], list[Proba]], pool: list[Features], size: int, repeats: int
) -> float:
    chunks = [pool[i : i + size] for i in range(0, len(pool), size)]
    best = float("inf")
    for _ in range(repeats):
        started = perf_counter()
        for chunk in chunks:
            score(chunk)
        best = min(best, perf_counter() - started)
    return best / len(pool) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10, 16, 20, 50, 64, 100, 2000])
    args = parser.parse_args()
    header = ["model", "data set", "one by one"]
    header += [f"batch path, {n}" for n in args.sizes]
    header += [f"predict_proba_many, {n}" for n in args.sizes]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, make, dataset in ROWS:
        records = load(dataset)
        model = make()
        for r in records[:LEARN]:
            model.learn_one(r.features, r.label)
        pool = [r.features for r in itertools.islice(itertools.cycle(records[LEARN:]), POOL)]
        linear = model._linear  # the batch path itself, to time it also where RiverModel does not use it
        assert linear is not None, name

        def one_by_one(xs: Sequence[Features], model: RiverModel = model) -> list[Proba]:
            return [model._normalise(model.estimator.predict_proba_one(x)) for x in xs]

        def batch_path(xs: Sequence[Features], model: RiverModel = model) -> list[Proba]:
            scored = model._linear.predict_proba(xs)  # type: ignore[union-attr]
            assert scored is not None
            return model._normalise_matrix(*scored)

        cells = [f"{_best_us(one_by_one, pool, 1, args.repeats):.2f}"]
        cells += [f"{_best_us(batch_path, pool, n, args.repeats):.2f}" for n in args.sizes]
        cells += [f"{_best_us(model.predict_proba_many, pool, n, args.repeats):.2f}" for n in args.sizes]
        print(f"| {name} | {dataset} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
