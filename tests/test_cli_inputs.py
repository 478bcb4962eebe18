"""`streamal simulate` and `streamal bench` on wrong flags and damaged files: a clear message, exit code 2
and nothing written; what a file's loading left out is said on stderr, one line each."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from streamal.cli import main
from streamal.datasets import load
from streamal.errors import ConfigError
from streamal.evaluation import bench, peers
from streamal.evaluation.report import write_report
from streamal.evaluation.simulate import simulate

#: one combination, no peers, one process: the fastest bench there is
FAST = ["--combo", "margin/biqf", "--seeds", "1", "--no-peers", "--jobs", "1"]


def stream_csv(path, n: int = 120, seed: int = 0, extra: str = "") -> str:
    """``a``, ``b`` Gaussian, ``label`` yes/no by the sign of a + b (and ``extra`` appended to each row)."""
    rng = random.Random(seed)
    rows = ["a,b,label" + (",x" if extra else "")]
    for _ in range(n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        rows.append(f"{a},{b},{'yes' if a + b > 0 else 'no'}" + (f",{extra}" if extra else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def error(capsys) -> str:
    err: str = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- flags --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--delay", "-1"], "--delay -1"),
        (["--limit", "0"], "--limit 0"),
        (["--limit", "-5"], "--limit -5"),  # not "all but the last 5 rows"
    ],
)
@pytest.mark.parametrize("verb", ["simulate", "bench"])
def test_out_of_range_flags_are_configuration_errors(tmp_path, capsys, verb, flags, named):
    data = stream_csv(tmp_path / "s.csv")
    extra = FAST if verb == "bench" else []
    assert main([verb, "--data", data, *flags, *extra, "--out", str(tmp_path / "out")]) == 2
    assert f"streamal: configuration error: {named}" in error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_bench_needs_at_least_one_process(tmp_path, capsys, jobs):
    data = stream_csv(tmp_path / "s.csv")
    argv = ["bench", "--data", data, *FAST, "--jobs", jobs, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert f"--jobs {jobs}: must be at least 1" in error(capsys)
    with pytest.raises(ConfigError, match="jobs must be at least 1"):
        bench.run([], jobs=int(jobs))


def test_an_out_that_is_a_file_is_refused_before_the_run(tmp_path, capsys):
    data = stream_csv(tmp_path / "s.csv")
    afile = tmp_path / "afile"
    afile.write_text("mine", encoding="utf-8")
    assert main(["simulate", "--data", data, "--out", str(afile)]) == 2
    assert f"--out {afile}: is a file" in error(capsys)
    assert main(["bench", "--data", data, *FAST, "--out", str(afile)]) == 2
    assert f"--out {afile}: is a file" in error(capsys)
    assert afile.read_text(encoding="utf-8") == "mine"


def test_reuse_must_be_a_readable_results_json(tmp_path, capsys):
    data = stream_csv(tmp_path / "s.csv")
    out = tmp_path / "out"
    assert (
        main(["bench", "--data", data, *FAST, "--reuse", str(tmp_path / "nosuch.json"), "--out", str(out)])
        == 2
    )
    assert f"--reuse {tmp_path / 'nosuch.json'}: cannot read it" in error(capsys)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert main(["bench", "--data", data, *FAST, "--reuse", str(bad), "--out", str(out)]) == 2
    assert f"--reuse {bad}: not JSON" in error(capsys)
    bad.write_text('{"rows": []}', encoding="utf-8")
    assert main(["bench", "--data", data, *FAST, "--reuse", str(bad), "--out", str(out)]) == 2
    assert "not the results.json of a streamal bench" in error(capsys)
    assert not out.exists()


def test_a_bad_argument_of_simulate_is_a_configuration_error_and_still_a_value_error(tmp_path):
    records = load(stream_csv(tmp_path / "s.csv", n=20))
    with pytest.raises(ConfigError, match="delay must be non-negative") as caught:
        simulate(records, delay=-1)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="decision_batch must be at least 1"):
        simulate(records, decision_batch=0)


# -- damaged files ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("a,b,label\n1,2,\n3,4,no\n", "1 row has no label (line 2)"),
        ("id,a,label\n,1,yes\n2,2,no\n", "1 row has an empty id (line 2)"),
        ("id,a,label\n1,1,yes\n1,2,no\n", "id '1' is repeated (lines 2, 3)"),
        ("color,label\nred,yes\nblue,no\n", "no row has a numeric feature"),
    ],
)
def test_simulate_refuses_a_damaged_file_with_a_message(tmp_path, capsys, text, named):
    # (an empty label or id made pydantic's ValidationError escape when its row was asked for; a repeated id
    # lost labels; a file without numbers ran, with no feature at all)
    data = tmp_path / "damaged.csv"
    data.write_text(text, encoding="utf-8")
    assert main(["simulate", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    assert f"streamal: configuration error: data: {data}: {named}" in error(capsys)
    assert not (tmp_path / "out").exists()


def test_what_loading_left_out_is_one_line_each_on_stderr(tmp_path, capsys):
    data = stream_csv(tmp_path / "colour.csv", n=60, extra="red")
    out = tmp_path / "out"
    assert main(["simulate", "--data", data, "--out", str(out)]) == 0
    err = error(capsys)
    assert err.splitlines() == [
        f"streamal: data: {data}: column 'x' is not a number in any of its 60 rows: left out of the features"
    ]
    assert orjson.loads((out / "summary.json").read_bytes())["n"] == 60
    # the bench says it once, though every run loads the file
    argv = [
        "bench",
        "--data",
        data,
        *FAST,
        "--budget",
        "0.1",
        "--budget",
        "0.2",
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(argv) == 0
    assert error(capsys).count("streamal: data:") == 1


def test_the_wire_shape_of_a_sample_runs_with_its_features(tmp_path, capsys):
    rng = random.Random(1)
    rows = []
    for i in range(80):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        rows.append({"id": f"s{i}", "features": {"a": a, "b": b}, "label": "yes" if a + b > 0 else "no"})
    data = tmp_path / "wire.jsonl"
    data.write_bytes(b"\n".join(map(orjson.dumps, rows)))
    assert main(["simulate", "--data", str(data), "--out", str(tmp_path / "out")]) == 0
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["accuracy"] > 0.7  # (with no feature at all, it was about 0.5)


# -- labels learned -----------------------------------------------------------------------------------
def test_simulate_says_when_labels_asked_for_were_never_learned(tmp_path, capsys):
    data = stream_csv(tmp_path / "s.csv", n=100)
    out = tmp_path / "out"
    assert main(["simulate", "--data", data, "--delay", "100", "--out", str(out)]) == 0
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["labels_learned"] == 0 < summary["labels_used"]
    assert list(summary).index("labels_learned") == list(summary).index("labels_used") + 1
    err = error(capsys)
    assert (
        f"{summary['labels_used']} of the {summary['labels_used']} labels asked for were not learned: their "
        "requests were still waiting for their label when the stream ended (--delay 100, 100 samples)"
    ) in err


# -- bench: data sets and budgets ---------------------------------------------------------------------
def test_repeated_data_and_budgets_are_run_once(tmp_path, capsys):
    data = stream_csv(tmp_path / "s.csv", n=100)
    out = tmp_path / "out"
    argv = ["bench", "--data", data, "--data", str(tmp_path / "." / "s.csv"), "--budget", "0.1", "--budget",
            "0.1", *FAST, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    err = error(capsys)
    assert f"streamal: --data {data} is given 2 times: run once" in err
    assert "streamal: --budget 0.1 is given 2 times: run once" in err
    rows = orjson.loads((out / "results.json").read_bytes())
    assert sorted(r["method"] for r in rows) == ["margin / biqf", "random / threshold"]
    assert all(r["labels_learned"] <= r["labels_used"] for r in rows)


@pytest.mark.parametrize("second", ["b/data.csv", "phishing"])
def test_two_data_sets_that_would_share_a_name_are_refused(tmp_path, capsys, second):
    first = stream_csv(tmp_path / "a" / ("data.csv" if second != "phishing" else "phishing.csv"))
    if second != "phishing":
        second = stream_csv(tmp_path / second)
    out = tmp_path / "out"
    assert main(["bench", "--data", first, "--data", second, *FAST, "--out", str(out)]) == 2
    assert f"--data {first} and --data {second} would both be called" in error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "no samples"),
        ("a,b,label\n", "no samples"),
        ("a,b,y\n1,2,yes\n", "target column 'label' is missing from line 2"),
    ],
)
def test_bench_loads_every_data_set_before_it_writes_anything(tmp_path, capsys, text, named):
    good = stream_csv(tmp_path / "good.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["bench", "--data", good, "--data", str(bad), *FAST, "--out", str(out)]) == 2
    assert named in error(capsys)
    assert not out.exists()  # neither results.partial.jsonl nor a report


# -- policy parameters --------------------------------------------------------------------------------
def test_a_policy_parameter_goes_only_to_the_policies_that_take_it(tmp_path, capsys):
    data = stream_csv(tmp_path / "s.csv", n=150)
    out = tmp_path / "out"
    argv = ["bench", "--data", data, "--combo", "margin/rate_limit", "--combo", "margin/biqf",
            "--policy-param", "labels_per_hour=60", "--policy-param", "warmup=0", "--seeds", "1",
            "--no-peers", "--jobs", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0  # (the random baseline's threshold policy refused labels_per_hour)
    assert "--policy-param labels_per_hour=60: for rate_limit only" in error(capsys)
    rows = {r["method"]: r for r in orjson.loads((out / "results.json").read_bytes())}
    assert (
        rows["margin / rate_limit"]["labels_used"] <= 150 // 60 + 1
    )  # one label a minute, a sample a second
    assert rows["margin / biqf"]["labels_used"] > 5
    tasks = bench.plan(["phishing"], [0.1], 1, combos=[("margin", "rate_limit"), ("margin", "biqf")],
                       policy_params={"labels_per_hour": 60, "warmup": 0})  # fmt: skip
    assert {t.policy: t.policy_params for t in tasks} == {
        "threshold": (("warmup", 0),),
        "rate_limit": (("labels_per_hour", 60), ("warmup", 0)),
        "biqf": (("warmup", 0),),
    }


def test_a_policy_parameter_no_policy_takes_is_refused(tmp_path, capsys):
    data = stream_csv(tmp_path / "s.csv")
    out = tmp_path / "out"
    assert (
        main(["bench", "--data", data, *FAST, "--policy-param", "labels_per_hour=6", "--out", str(out)]) == 2
    )
    assert "--policy-param labels_per_hour: no policy of this run (biqf, threshold) takes it" in error(capsys)
    assert main(["bench", "--data", data, *FAST, "--policy-param", "w=1", "--out", str(out)]) == 2
    assert "--policy-param, for biqf: w must be at least 2" in error(capsys)
    assert not out.exists()


def test_simulate_takes_policy_parameters(tmp_path, capsys):
    data = stream_csv(tmp_path / "s.csv", n=150)
    out = tmp_path / "out"
    argv = ["simulate", "--data", data, "--policy", "rate_limit", "--policy-param", "labels_per_hour=60",
            "--policy-param", "burst=1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert orjson.loads((out / "summary.json").read_bytes())["labels_used"] <= 150 // 60 + 1
    assert main(["simulate", "--data", data, "--policy-param", "labels_per_hour=60", "--out", str(out)]) == 2
    assert "--policy-param labels_per_hour: the policy biqf does not take it" in error(capsys)
    assert main(["simulate", "--data", data, "--policy-param", "warmup", "--out", str(out)]) == 2
    assert "expected NAME=VALUE" in error(capsys)


# -- older results ------------------------------------------------------------------------------------
def test_rows_of_an_older_results_json_without_labels_learned_are_reused_and_reported(tmp_path):
    data = stream_csv(tmp_path / "s.csv", n=80)
    tasks = bench.plan([data], [0.1], 1, combos=[("margin", "biqf")])
    rows = [bench.run_task(t) for t in tasks]
    assert all(isinstance(r["labels_learned"], int) for r in rows)
    old = [{k: v for k, v in r.items() if k != "labels_learned"} for r in rows]
    old_peer = {**old[0], "kind": "peer", "method": "skactiveml.Split", "strategy": "skactiveml.Split"}
    peer_tasks = bench.plan([data], [0.1], 1, combos=[], peers=["skactiveml.Split"])
    assert bench.reusable(peer_tasks, [old_peer]) == {0: old_peer}
    write_report([*old, old_peer], tmp_path / "report")
    assert "margin / biqf" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")


# -- reuse: the same data, not only the same name ------------------------------------------------------
def _as_peer(row: dict[str, Any]) -> dict[str, Any]:
    """A run's row as scikit-activeml's Split would give it (the peer itself is slow)."""
    return {**row, "kind": "peer", "method": "skactiveml.Split", "strategy": "skactiveml.Split"}


def test_reuse_tells_a_file_from_the_built_in_data_set_of_its_name(tmp_path):
    mine = stream_csv(tmp_path / "phishing.csv", n=100)  # named like the built-in data set: other data
    of_builtin, of_file = (
        bench.plan([source], [0.1], 1, limit=100, combos=[], peers=["skactiveml.Split"])
        for source in ("phishing", mine)
    )
    builtin_row, file_row = (
        _as_peer(bench.run_task(bench.Task(source, "random", "threshold", 0.1, 0, limit=100)))
        for source in ("phishing", mine)
    )
    older = {k: v for k, v in builtin_row.items() if k != "source"}  # a row of a results.json before source
    assert bench.reusable(of_file, [builtin_row]) == {}
    assert bench.reusable(of_file, [older]) == {}
    assert bench.reusable(of_builtin, [file_row]) == {}
    assert builtin_row["source"] == {"builtin": "phishing"}
    assert file_row["source"]["file"] == str((tmp_path / "phishing.csv").resolve())
    assert bench.reusable(of_builtin, [builtin_row]) == {0: builtin_row}
    assert bench.reusable(of_builtin, [older]) == {0: builtin_row}  # older rows still answer the built-in
    assert bench.reusable(of_file, [file_row]) == {0: file_row}
    # the same file read with another label column, or changed since, is other data
    other_target = bench.plan([mine], [0.1], 1, target="a", limit=100, combos=[], peers=["skactiveml.Split"])
    assert bench.reusable(other_target, [file_row]) == {}
    stream_csv(tmp_path / "phishing.csv", n=100, seed=1)
    assert bench.reusable(of_file, [file_row]) == {}


@pytest.mark.skipif(not peers.available(), reason="the peers extra is not installed")
def test_bench_reuses_the_built_in_data_sets_peer_rows_for_it_only(tmp_path, capsys):
    # a results.json written before rows had a source, with a marked scikit-activeml row of phishing
    older = tmp_path / "older.json"
    row = bench.run_task(bench.Task("phishing", "random", "threshold", 0.1, 0, limit=100))
    marked = {k: v for k, v in _as_peer(row).items() if k != "source"} | {"accuracy": -1.0}
    older.write_bytes(orjson.dumps([marked]))
    mine = stream_csv(tmp_path / "own" / "phishing.csv", n=100)
    run = ["--limit", "100", "--peer", "skactiveml.Split", "--combo", "margin/biqf", "--seeds", "1",
           "--jobs", "1"]  # fmt: skip
    for data, reused in ((mine, False), ("phishing", True)):
        out = tmp_path / "out" / str(reused)
        assert main(["bench", "--data", data, *run, "--reuse", str(older), "--out", str(out)]) == 0
        assert ("reusing 1 scikit-activeml runs" in error(capsys)) is reused
        [peer] = [r for r in orjson.loads((out / "results.json").read_bytes()) if r["kind"] == "peer"]
        assert (peer["accuracy"] == -1.0) is reused
        assert peer["source"] == bench.data_source(data)
