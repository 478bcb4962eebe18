"""Built-in data sets (river's offline ones and the seeded drifting streams) and the user's files."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import orjson
import pytest

from streamal.datasets import BUILTIN, SYNTHETIC, Record, load
from streamal.errors import ConfigError, DataWarning


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
    with pytest.warns(DataWarning, match="column 'b': 1 of 2 cells empty"):
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


# -- the user's files: what is refused, what is warned about ----------------------------------------------
def _csv(tmp_path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _jsonl(tmp_path, rows: list[object], name: str = "data.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return str(path)


def test_a_csv_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("label,a\nyes,1\nno,2\n".encode("utf-8-sig"))
    assert [(r.features, r.label) for r in load(str(path))] == [({"a": 1.0}, "yes"), ({"a": 2.0}, "no")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"a": 1, "label": ', "line 3 is not valid JSON"),
        (b"5", "line 3 is a JSON number, not an object"),
        (b"[1, 2, 3]", "line 3 is a JSON list, not an object"),
        (b"null", "line 3 is a JSON null, not an object"),
    ],
)
def test_a_json_line_that_is_not_an_object_names_its_line(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1, "label": "x"}\n\n' + line + b"\n")  # (a blank line still counts)
    with pytest.raises(ConfigError, match=f"bad.jsonl: {expected}"):
        load(str(path))
    assert len(load(str(path), limit=1)) == 1  # only the rows asked for are read


def test_the_wire_shape_takes_its_features_from_the_features_object(tmp_path):
    rows = [
        {"id": "s1", "features": {"a": 1.5, "label": 2}, "label": "yes", "ts": 5.0},
        {"id": "s2", "features": {"a": -1}, "label": "no"},
    ]
    records = load(_jsonl(tmp_path, rows))
    assert [(r.id, r.features, r.label) for r in records] == [
        ("s1", {"a": 1.5, "label": 2.0}, "yes"),  # a feature may be called like the target
        ("s2", {"a": -1.0}, "no"),
    ]


def test_cells_that_are_not_numbers_are_counted_and_a_column_never_numeric_is_left_out(tmp_path):
    text = "a,b,color,label\n" + "".join(
        f"{v},{i},red,x\n" for i, v in enumerate(["", "NA", "nan", "inf", "1"])
    )
    with pytest.warns(DataWarning) as caught:
        records = load(_csv(tmp_path, text))
    where = tmp_path / "data.csv"
    assert [str(w.message) for w in caught] == [
        f"{where}: column 'a': 4 of 5 cells empty or not a finite number: missing in those samples",
        f"{where}: column 'color' is not a number in any of its 5 rows: left out of the features",
    ]
    assert [r.features for r in records] == [
        {"b": 0.0},
        {"b": 1.0},
        {"b": 2.0},
        {"b": 3.0},
        {"a": 1.0, "b": 4.0},
    ]
    with pytest.warns(DataWarning, match="column 'c' is empty in all of its 2 rows"):
        load(_csv(tmp_path, "a,c,label\n1,,x\n2,,y\n"))
    with pytest.warns(DataWarning, match=r"1 row has more cells than the header \(line 3\)"):
        load(_csv(tmp_path, "a,label\n1,x\n2,y,surplus\n"))


def test_a_file_with_no_numeric_feature_or_no_row_is_refused(tmp_path):
    with pytest.raises(
        ConfigError, match="no row has a numeric feature \\('color', 'shape' are never a number"
    ):
        load(_csv(tmp_path, "color,shape,label\nred,sq,yes\nblue,ci,no\n"))
    with pytest.raises(ConfigError, match="no row has a numeric feature"):  # a nested object is not one
        load(_jsonl(tmp_path, [{"x": {"a": 1}, "label": 1}]))
    for text in ("", "a,label\n"):
        with pytest.raises(ConfigError, match="no samples"):
            load(_csv(tmp_path, text))


def test_ids_must_be_present_short_enough_for_the_wire_and_unique(tmp_path):
    with pytest.raises(ConfigError, match=r"2 rows have an empty id \(lines 2, 4\)"):
        load(_csv(tmp_path, "id,a,label\n,1,x\nb,2,y\n,3,x\n"))
    with pytest.raises(ConfigError, match=r"1 row has an empty id \(line 1\)"):  # a JSON null
        load(_jsonl(tmp_path, [{"id": None, "a": 1, "label": "x"}, {"id": "b", "a": 2, "label": "y"}]))
    with pytest.raises(ConfigError, match=r"1 row has an id longer than 512 characters \(line 3\)"):
        load(_csv(tmp_path, f"id,a,label\nok,1,x\n{'i' * 513},2,y\n"))
    with pytest.raises(
        ConfigError, match=r"id '7' is repeated \(lines 2, 4, 5\), and 1 other id is too \('8'\)"
    ):
        load(_csv(tmp_path, "id,a,label\n7,1,x\n8,2,y\n7,3,x\n7,4,y\n8,5,x\n"))


def test_labels_must_be_present_and_short_enough_for_the_wire(tmp_path):
    text = "a,label\n" + "".join(f"{i},{'' if i % 3 == 0 else 'x'}\n" for i in range(21))
    with pytest.raises(ConfigError, match=r"7 rows have no label \(lines 2, 5, 8, 11, 14 and 2 more\)"):
        load(_csv(tmp_path, text))
    # a JSON null is a missing label, not a class "None"
    with pytest.raises(ConfigError, match=r"1 row has no label \(line 1\)"):
        load(_jsonl(tmp_path, [{"a": 1, "label": None}, {"a": 2, "label": "no"}]))
    with pytest.raises(ConfigError, match=r"1 row has a label longer than 256 characters \(line 3\)"):
        load(_csv(tmp_path, f"a,label\n1,x\n2,{'y' * 257}\n"))
    with pytest.raises(ConfigError, match=r"1 row has no label \(line 3\)"):  # a short CSV row
        load(_csv(tmp_path, "a,label\n1,x\n2\n"))
    with pytest.raises(ConfigError, match="target column 'label' is missing from line 2"):
        load(_jsonl(tmp_path, [{"a": 1, "label": "x"}, {"a": 2}]))


def test_a_negative_limit_is_refused_not_counted_from_the_end(tmp_path):
    path = _csv(tmp_path, "a,label\n1,x\n2,y\n3,x\n")
    assert len(load(path, limit=2)) == 2
    with pytest.raises(ConfigError, match="limit -1"):
        load(path, limit=-1)
    with pytest.raises(ConfigError, match="limit -1"):
        load("phishing", limit=-1)
