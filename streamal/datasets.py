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
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson
from pydantic import ValidationError

from streamal.errors import ConfigError, DataWarning
from streamal.messages import ClassLabel, Features, Label


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


def _empty(value: Any) -> bool:
    """A JSON null, an empty CSV cell (or one of blanks), or a cell a short CSV row does not have."""
    return value is None or (isinstance(value, str) and not value.strip())


def _rows_have(n: int) -> str:
    return f"{n} row has" if n == 1 else f"{n} rows have"


def _lines(numbers: list[int], first: int = 5) -> str:
    """``line 7``, ``lines 2, 9``, or the first few and how many more."""
    shown = ", ".join(map(str, numbers[:first]))
    more = f" and {len(numbers) - first} more" if len(numbers) > first else ""
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{more}"


@dataclass
class _Column:
    rows: int = 0  # rows that have the column
    numbers: int = 0  # ... with a finite number in it
    empty: int = 0  # ... with nothing in it


@dataclass
class _Problems:
    """What is wrong with the ids and the labels of a file, by line number."""

    lines_of_id: dict[str, list[int]] = field(default_factory=dict)
    empty_ids: list[int] = field(default_factory=list)
    long_ids: list[int] = field(default_factory=list)
    id_max: int = 0
    no_label: list[int] = field(default_factory=list)
    long_labels: list[int] = field(default_factory=list)
    label_max: int = 0

    def check(self, line: int, sample_id: str, label: ClassLabel) -> None:
        """Check one record against the wire contract (:class:`~streamal.messages.Label`)."""
        self.lines_of_id.setdefault(sample_id, []).append(line)
        try:
            Label(id=sample_id, label=label)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                too_long = err["type"] == "string_too_long"
                if err["loc"][:1] == ("id",):
                    if too_long:
                        self.long_ids.append(line)
                        self.id_max = err["ctx"]["max_length"]
                    else:
                        self.empty_ids.append(line)
                elif err["loc"][:1] == ("label",) and too_long:
                    self.long_labels.append(line)
                    self.label_max = err["ctx"]["max_length"]

    def raise_any(self, where: str, target: str, id_column: str | None) -> None:
        problems = []
        if self.empty_ids:
            problems.append(f"{_rows_have(len(self.empty_ids))} an empty id ({_lines(self.empty_ids)})")
        if self.long_ids:
            problems.append(
                f"{_rows_have(len(self.long_ids))} an id longer than {self.id_max} characters "
                f"({_lines(self.long_ids)})"
            )
        repeated = {i: lines for i, lines in self.lines_of_id.items() if len(lines) > 1 and i}
        if repeated:
            first, lines = next(iter(repeated.items()))
            text = f"id {first!r} is repeated ({_lines(lines)})"
            if len(repeated) > 1:
                others = [repr(i) for i in itertools.islice(repeated, 1, 4)]
                if len(repeated) > 4:
                    others.append("...")
                more = "1 other id is" if len(repeated) == 2 else f"{len(repeated) - 1} other ids are"
                text += f", and {more} too ({', '.join(others)})"
            problems.append(text)
        if self.no_label:
            problems.append(f"{_rows_have(len(self.no_label))} no label ({_lines(self.no_label)})")
        if self.long_labels:
            problems.append(
                f"{_rows_have(len(self.long_labels))} a label longer than {self.label_max} characters "
                f"({_lines(self.long_labels)})"
            )
        if problems:
            fix = []
            if self.empty_ids or self.long_ids or repeated:
                fix.append(f"every row needs an id of its own in column {id_column!r}")
            if self.no_label or self.long_labels:
                fix.append(f"a label in column {target!r} (or leave those rows out)")
            raise ConfigError(f"data: {where}: {'; '.join(problems)}: {', and '.join(fix)}")


_JSON_KINDS = {bool: "true or false", int: "number", float: "number", str: "string", list: "list"}


def _json_rows(fh: BinaryIO, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(
                f"data: {where}: line {number} is not valid JSON (column {exc.colno}: {exc.msg})"
            ) from None
        if not isinstance(row, dict):
            kind = _JSON_KINDS.get(type(row), "null")
            raise ConfigError(
                f"data: {where}: line {number} is a JSON {kind}, not an object "
                '(one {"name": value, ...} per line)'
            )
        yield number, row


def _csv_rows(fh: TextIO, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(fh)
    try:
        for row in reader:
            yield reader.line_num, row
    except UnicodeDecodeError as exc:
        raise ConfigError(f"data: {where}: not UTF-8 near line {reader.line_num + 1} ({exc})") from None
    except csv.Error as exc:
        raise ConfigError(f"data: {where}: line {reader.line_num}: {exc}") from None


def _from_rows(
    rows: Iterator[tuple[int, dict[str, Any]]], target: str, id_column: str | None, prefix: str, where: str
) -> list[Record]:
    """The records of a file's rows (each with its line number); refuses what cannot be a labelled sample
    and warns (:class:`~streamal.errors.DataWarning`) about cells that are not numbers."""
    records = []
    columns: dict[str, _Column] = {}
    extra: list[int] = []  # CSV rows with more cells than the header
    problems = _Problems()
    for i, (line, row) in enumerate(rows):
        if target not in row:
            raise ConfigError(
                f"data: {where}: target column {target!r} is missing from line {line}; columns are "
                f"{sorted(map(str, row))}"
            )
        raw = row[target]
        if _empty(raw):
            problems.no_label.append(line)
            label: ClassLabel = ""
        else:
            if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
                raw = int(raw)
            label = _label(raw)
        if id_column and id_column in row:
            given = row[id_column]
            sample_id = "" if _empty(given) else str(given)
        else:
            sample_id = f"{prefix}-{i}"
        problems.check(line, sample_id, label)
        # the wire shape, {"id": ..., "features": {name: number}, "label": ...}: the features are that object
        values = row["features"] if isinstance(row.get("features"), dict) else row
        features: Features = {}
        for key, value in values.items():
            if key is None:  # csv.DictReader's key for the cells past the header
                extra.append(line)
                continue
            if values is row and key in (target, id_column):
                continue
            column = columns.get(key)
            if column is None:
                column = columns[key] = _Column()
            column.rows += 1
            number = _number(value)
            if number is not None:
                features[key] = number
                column.numbers += 1
            elif _empty(value):
                column.empty += 1
        records.append(Record(sample_id, features, label))
    problems.raise_any(where, target, id_column)
    if not records:
        raise ConfigError(f"data: {where}: no samples (the file is empty, or has a header only)")
    never = [name for name, c in columns.items() if not c.numbers]
    if not any(r.features for r in records):
        named = f" ({', '.join(map(repr, never))} {'is' if len(never) == 1 else 'are'} never a number)"
        raise ConfigError(
            f"data: {where}: no row has a numeric feature{named if never else ''}: features must be finite "
            "numbers (encode a category as numbers, e.g. one column per value)"
        )
    for name, c in columns.items():
        if not c.numbers:
            how = "empty in all" if c.empty == c.rows else "not a number in any"
            message = f"column {name!r} is {how} of its {c.rows} rows: left out of the features"
        elif c.numbers < c.rows:
            message = (
                f"column {name!r}: {c.rows - c.numbers} of {c.rows} cells empty or not a finite number: "
                "missing in those samples"
            )
        else:
            continue
        warnings.warn(f"{where}: {message}", DataWarning, stacklevel=3)
    if extra:
        warnings.warn(
            f"{where}: {_rows_have(len(extra))} more cells than the header ({_lines(extra)}): the extra "
            "cells are left out",
            DataWarning,
            stacklevel=3,
        )
    return records


def load(
    source: str, target: str = "label", id_column: str | None = "id", limit: int | None = None
) -> list[Record]:
    """A built-in data set by name, or a ``.csv`` / ``.jsonl`` file with a ``target`` column.

    >>> records = load("image_segments", limit=2)
    >>> records[0].id, records[0].label, len(records[0].features)
    ('image_segments-0', 'path', 18)

    A file's features are its other columns, or, for a JSON line in the wire shape
    (``{"id": ..., "features": {name: number}, "label": ...}``), the ``features`` object. A cell that is not
    a finite number is missing in its sample, and a column that never holds one is left out: both are said,
    with their counts, by a :class:`~streamal.errors.DataWarning`. A ``ConfigError`` refuses a file with no
    sample, with no numeric feature, with an id that is empty, too long for the wire or repeated, or with a
    missing or too long label; it names the lines of the file.
    """
    if limit is not None and limit < 0:
        raise ConfigError(f"data: limit {limit}: must be at least 0")
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
            return _from_rows(
                itertools.islice(_json_rows(fh, source), limit), target, id_column, prefix, source
            )
    # utf-8-sig: a byte order mark (Excel's "CSV UTF-8") is not part of the first column's name
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return _from_rows(itertools.islice(_csv_rows(fh, source), limit), target, id_column, prefix, source)
