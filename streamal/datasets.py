"""Labelled streams: the real data sets river ships offline, drifting synthetic streams, and the user's own
CSV or JSON-lines files.

Every stream is a sequence of :class:`Record` (an ``id``, numeric features, and the true label), so the
demo, the oracle, the simulator and the bench read a built-in data set and a user's file the same way.

The synthetic streams are river's generators with a fixed seed, cut to a fixed length, under names that
say their drift (:data:`SYNTHETIC` describes each): the same name is the same stream on every machine.

>>> records = load("sea_abrupt", limit=3)
>>> [(r.id, sorted(r.features), r.label) for r in records][:1]
[('sea_abrupt-0', ['0', '1', '2'], True)]
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamal.errors import ConfigError
from streamal.messages import ClassLabel, Features


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    features: Features
    label: ClassLabel


def _river(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from river import datasets

        return getattr(datasets, name)()

    return load


def _drift(first: Any, second: Any, width: int) -> Any:
    """``first`` until the middle of the stream, then ``second``: at once (``width`` 1) or over ``width``."""
    from river.datasets import synth

    middle = _SYNTHETIC_LENGTH // 2
    if width <= 1:  # river's ConceptDriftStream overflows for a width of 1
        return itertools.chain(itertools.islice(first, middle), second)
    return synth.ConceptDriftStream(first, second, position=middle, width=width, seed=9)


def _sea(before: int, after: int, width: int) -> Callable[[], Any]:
    def load() -> Any:
        from river.datasets import synth

        return _drift(
            synth.SEA(variant=before, noise=0.1, seed=7), synth.SEA(variant=after, noise=0.1, seed=8), width
        )

    return load


def _agrawal(before: int, after: int, width: int) -> Callable[[], Any]:
    def load() -> Any:
        from river.datasets import synth

        return _drift(
            synth.Agrawal(classification_function=before, seed=7, perturbation=0.05),
            synth.Agrawal(classification_function=after, seed=8, perturbation=0.05),
            width,
        )

    return load


def _hyperplane() -> Any:
    from river.datasets import synth

    return synth.Hyperplane(
        seed=7, n_features=10, n_drift_features=5, mag_change=0.001, noise_percentage=0.05
    )


def _rbf_drift() -> Any:
    from river.datasets import synth

    return synth.RandomRBFDrift(
        seed_model=7,
        seed_sample=8,
        n_classes=4,
        n_features=10,
        n_centroids=30,
        change_speed=0.001,
        n_drift_centroids=15,
    )


_SYNTHETIC_LENGTH = 2000

#: name -> (loader, description) of the drifting synthetic streams, each ``_SYNTHETIC_LENGTH`` samples
SYNTHETIC: dict[str, tuple[Callable[[], Any], str]] = {
    "sea_abrupt": (_sea(2, 3, 1), "SEA, 3 features, 2 classes, 10% label noise; threshold 7 -> 9.5 at 1,000"),
    "sea_gradual": (_sea(2, 3, 500), "SEA, as sea_abrupt but the change takes 500 samples"),
    "agrawal_abrupt": (
        _agrawal(0, 2, 1),
        "Agrawal, 9 features, 2 classes, 5% perturbation; function 0 -> 2 at 1,000",
    ),
    "agrawal_gradual": (_agrawal(0, 2, 500), "Agrawal, as agrawal_abrupt but the change takes 500"),
    "hyperplane": (_hyperplane, "rotating hyperplane, 10 features (5 drifting, magnitude 0.001), 5% noise"),
    "rbf_drift": (_rbf_drift, "random RBF, 10 features, 4 classes, 15 of 30 centroids moving at 0.001"),
}


def _synthetic(load: Callable[[], Any]) -> Callable[[], Any]:
    def cut() -> Any:
        return itertools.islice(load(), _SYNTHETIC_LENGTH)

    return cut


#: built-in data sets (river's offline data sets and seeded synthetic streams; nothing is downloaded)
BUILTIN: dict[str, Callable[[], Any]] = {
    "image_segments": _river("ImageSegments"),  # 2,310 samples, 18 features, 7 classes
    "phishing": _river("Phishing"),  # 1,250 samples, 9 features, 2 classes
    "bananas": _river("Bananas"),  # 5,300 samples, 2 features, 2 classes
    "shuttle": _river("Shuttle"),  # 49,097 samples, 9 features, 2 classes (river's binary version)
    **{name: _synthetic(loader) for name, (loader, _) in SYNTHETIC.items()},
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, str):
        try:
            v = float(value)
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


def _label(value: Any) -> ClassLabel:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def _from_rows(
    rows: Iterator[dict[str, Any]], target: str, id_column: str | None, prefix: str
) -> Iterator[Record]:
    for i, row in enumerate(rows):
        if target not in row:
            raise ConfigError(f"target column {target!r} is missing from row {i}; columns are {sorted(row)}")
        label = row[target]
        if isinstance(label, str) and label.strip().lstrip("-").isdigit():
            label = int(label)
        sample_id = str(row[id_column]) if id_column and id_column in row else f"{prefix}-{i}"
        features: Features = {}
        for key, value in row.items():
            if key in (target, id_column):
                continue
            number = _number(value)
            if number is not None:
                features[key] = number
        yield Record(sample_id, features, _label(label))


def load(
    source: str, target: str = "label", id_column: str | None = "id", limit: int | None = None
) -> list[Record]:
    """A built-in data set by name, or a ``.csv`` / ``.jsonl`` file with a ``target`` column.

    >>> records = load("image_segments", limit=2)
    >>> records[0].id, records[0].label, len(records[0].features)
    ('image_segments-0', 'path', 18)
    """
    if source in BUILTIN:
        stream = BUILTIN[source]()
        out = []
        for i, (x, y) in enumerate(stream):
            if limit is not None and i >= limit:
                break
            out.append(Record(f"{source}-{i}", {str(k): float(v) for k, v in x.items()}, _label(y)))
        return out
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"data: {source!r} is neither a built-in data set ({', '.join(BUILTIN)}) nor a file"
        )
    prefix = path.stem
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        with path.open("rb") as fh:
            rows: Iterator[dict[str, Any]] = (orjson.loads(line) for line in fh if line.strip())
            records = list(_from_rows(rows, target, id_column, prefix))
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            records = list(_from_rows(csv.DictReader(fh), target, id_column, prefix))
    return records[:limit] if limit is not None else records
