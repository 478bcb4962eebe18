"""Labelled streams: the real data sets river ships offline, and the user's own CSV or JSON-lines files.

Every stream is a sequence of :class:`Record` (an ``id``, numeric features, and the true label), so the
demo, the oracle and the simulator read a built-in data set and a user's file the same way.
"""

from __future__ import annotations

import csv
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


#: built-in data sets (all ship inside the river package; nothing is downloaded)
BUILTIN: dict[str, Callable[[], Any]] = {
    "image_segments": _river("ImageSegments"),  # 2,310 samples, 18 features, 7 classes
    "phishing": _river("Phishing"),  # 1,250 samples, 9 features, 2 classes
    "bananas": _river("Bananas"),  # 5,300 samples, 2 features, 2 classes
    "shuttle": _river("Shuttle"),  # 49,097 samples, 9 features, 2 classes (river's binary version)
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
            out.append(Record(f"{source}-{i}", {k: float(v) for k, v in x.items()}, _label(y)))
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
