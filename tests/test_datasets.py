"""Built-in data sets (river's offline ones and the seeded drifting streams) and the user's files."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import orjson
import pytest

from streamal.datasets import BUILTIN, SYNTHETIC, Record, load
from streamal.errors import ConfigError


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_synthetic_streams_are_fixed_and_load_like_the_others(name):
    first = load(name, limit=300)
    assert first == load(name, limit=300)  # a name is one stream, on every machine
    assert len(first) == 300
    assert first[0].id == f"{name}-0"
    assert all(isinstance(v, float) for r in first for v in r.features.values())
    assert len({r.label for r in first}) >= 2
    assert name in BUILTIN


def test_synthetic_streams_have_their_length():
    assert len(load("sea_abrupt")) == 2000


def test_sea_abrupt_changes_its_concept_in_the_middle():
    stream = load("sea_abrupt")

    # SEA's label is f0 + f1 > threshold (7 before, 9.5 after): between the two, the label flips
    def positive_share(part: list[Record]) -> float:
        between = [r for r in part if 7.5 < r.features["0"] + r.features["1"] < 9.0]
        return sum(r.label is True for r in between) / len(between)

    assert positive_share(stream[:1000]) > 0.7
    assert positive_share(stream[1000:]) < 0.3


def test_files_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "stream.csv"
    csv_file.write_text("id,a,b,label\nx1,1.5,2,cat\nx2,3,,dog\n", encoding="utf-8")
    records = load(str(csv_file))
    assert [(r.id, r.features, r.label) for r in records] == [
        ("x1", {"a": 1.5, "b": 2.0}, "cat"),
        ("x2", {"a": 3.0}, "dog"),
    ]
    jsonl = tmp_path / "stream.jsonl"
    jsonl.write_bytes(b"\n".join(orjson.dumps({"f": i, "y": i % 3}) for i in range(5)))
    records = load(str(jsonl), target="y", limit=4)
    assert [r.label for r in records] == [0, 1, 2, 0]
    assert records[1].id == "stream-1"
    with pytest.raises(ConfigError, match="target column 'label'"):
        load(str(jsonl))
    with pytest.raises(ConfigError, match="neither a built-in"):
        load(str(tmp_path / "missing.csv"))
