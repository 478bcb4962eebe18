"""`streamal simulate` and `streamal bench`: the protocol, the rows, the statistics and the report."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import functools

import orjson
import pytest
from scipy import stats as scipy_stats

from streamal.cli import main
from streamal.datasets import Record, load
from streamal.engine import Engine
from streamal.evaluation import bench, peers, stats
from streamal.evaluation.overhead import time_decisions
from streamal.evaluation.report import summarise
from streamal.evaluation.simulate import simulate
from streamal.messages import Label, Proba, Sample
from streamal.models import build_model
from streamal.policies import build_policy
from streamal.strategies import build_strategy

ROW_FIELDS = {
    "dataset",
    "strategy",
    "policy",
    "budget",
    "seed",
    "accuracy",
    "labels_used",
    "labels_learned",
    "n",
    "us_per_sample",
}


@functools.cache
def phishing(n: int = 400) -> tuple[Record, ...]:
    return tuple(load("phishing", limit=n))


# -- simulate ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 7, 40])
def test_batched_simulation_predicts_exactly_as_sample_by_sample(delay):
    stream = phishing()
    batched = simulate(stream, strategy="margin", policy="variable_uncertainty", delay=delay)
    single = simulate(stream, strategy="margin", policy="variable_uncertainty", delay=delay, max_batch=1)
    assert batched.hits == single.hits
    assert batched.labels_used == single.labels_used
    assert batched.us_per_decision > 0.0
    assert batched.us_per_decision < batched.us_per_sample


@pytest.mark.parametrize(
    ("data", "strategy", "policy", "batches"),
    [
        ("image_segments", "margin", "biqf", (1, 7, 100, 1000)),
        ("shuttle", "margin", "class_balanced", (1,)),
        ("image_segments", "diversity", "split", (1,)),
    ],
)
def test_decisions_timed_again_are_the_runs_decisions(data, strategy, policy, batches):
    # a strategy and a policy that read no labels make the same decisions at any batch size, and every
    # combination does at the run's batch size (one sample): the replay asks exactly the labels the run
    # asked, given the run's probabilities (the labels it is told steer the class quota on shuttle's rare
    # classes, and diversity's labelled set)
    stream = tuple(load(data, limit=600))
    engine = Engine(
        build_model("knn"),
        build_strategy(strategy, seed=0),
        build_policy(policy, 0.1, seed=0),
        clock=lambda: 0.0,
    )
    probas: list[Proba] = []
    run_asked = []
    for i, record in enumerate(stream):  # as simulate runs it with no label delay
        [decision] = engine.score([Sample(id=record.id, features=record.features)])
        probas.append(decision.proba)
        if decision.queried:
            run_asked.append(i)
            engine.learn(Label(id=record.id, label=record.label))
    assert 40 < len(run_asked) < 80
    for batch in batches:
        us, asked = time_decisions(strategy, policy, 0.1, stream, probas, batch=batch)
        assert asked == run_asked
        assert us > 0.0
    with pytest.raises(ValueError, match="batch"):
        time_decisions(strategy, policy, 0.1, stream, probas, batch=0)
    with pytest.raises(ValueError, match="probabilities"):
        time_decisions(strategy, policy, 0.1, stream, probas[1:])


def test_the_rate_limit_is_replayed_on_the_simulated_clock():
    # 600 samples at one a second are 10 minutes: 360 labels an hour allow about 60 of them (with the wall
    # clock, the replay's few milliseconds would allow one)
    stream = phishing(600)
    probas: list[Proba] = [{True: 0.5, False: 0.5}] * 600
    limit = {"labels_per_hour": 360}
    for batch in (1, 100):
        _, asked = time_decisions(
            "margin", "rate_limit", 0.5, stream, probas, batch=batch, policy_params=limit
        )
        assert 55 <= len(asked) <= 61
    _, asked = time_decisions(
        "margin", "rate_limit", 0.5, stream, probas, policy_params=limit | {"clock": lambda: 0.0}
    )
    assert len(asked) == 10  # a clock given in the parameters is kept: stopped, it allows the burst alone


def test_simulate_times_the_decisions_in_batches_only_when_asked():
    plain = simulate(phishing(200), strategy="density_weighted", policy="biqf")
    assert plain.us_per_decision_batched is None
    assert plain.decision_batch is None
    timed = simulate(phishing(200), strategy="density_weighted", policy="biqf", decision_batch=50)
    assert timed.decision_batch == 50
    assert timed.us_per_decision_batched is not None
    assert timed.us_per_decision_batched > 0.0
    assert timed.hits == plain.hits
    assert timed.labels_used == plain.labels_used
    assert {"us_per_decision_batched", "decision_batch"} <= set(timed.summary())
    with pytest.raises(ValueError, match="decision_batch"):
        simulate(phishing(200), decision_batch=0)


def test_a_longer_label_delay_learns_later():
    stream = phishing()
    soon = simulate(stream, strategy="entropy", policy="biqf", delay=0)
    late = simulate(stream, strategy="entropy", policy="biqf", delay=200)
    assert soon.accuracy > late.accuracy
    assert late.hits[:200].count(True) == 0  # no label has come back yet: nothing is predicted


def test_labels_learned_are_the_engines_applied_labels():
    # every label comes back `delay` samples after its request: those still due when the stream ends are not
    # learned, so a delay as long as the stream learns nothing
    for delay, learned in ((0, None), (40, None), (len(phishing()), 0)):
        result = simulate(phishing(), strategy="margin", policy="biqf", delay=delay)
        late = delay + 1  # the last samples: their labels would come after the end
        assert result.labels_learned is not None
        assert result.labels_used - late <= result.labels_learned <= result.labels_used
        assert learned is None or result.labels_learned == learned
        assert result.summary()["labels_learned"] == result.labels_learned
    row = bench.run_task(bench.Task("phishing", "margin", "biqf", 0.1, 0, limit=200, delay=300))
    assert row["labels_learned"] == 0 < row["labels_used"]


def test_committee_strategies_are_simulated_with_the_committee():
    result = simulate(phishing(200), strategy="qbc_kl", policy="split", seed=2)
    assert result.model == "committee"
    assert simulate(phishing(200), strategy="margin").model == "knn"


def test_rate_limit_gets_the_simulated_clock():
    # 1 sample a second, 360 labels an hour: one label every 10 samples at most, whatever the budget
    result = simulate(
        phishing(), strategy="margin", policy="rate_limit", budget=0.5, policy_params={"labels_per_hour": 360}
    )
    assert result.labels_used <= 10 + len(phishing()) // 10


def test_simulate_cli_writes_summary_and_plot(tmp_path):
    csv_file = tmp_path / "s.csv"
    names = list(phishing()[0].features)
    rows = [",".join([*names, "label"])]
    rows += [",".join([*(str(r.features[k]) for k in names), str(int(r.label))]) for r in phishing()]
    csv_file.write_text("\n".join(rows), encoding="utf-8")
    out = tmp_path / "out"
    code = main(["simulate", "--data", str(csv_file), "--strategy", "entropy", "--policy", "biqf",
                 "--budget", "0.2", "--delay", "5", "--seed", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert {"accuracy", "labels_used", "labels_learned", "n", "us_per_sample", "curve"} <= set(summary)
    assert (
        summary["labels_used"] - 2 <= summary["labels_learned"] <= summary["labels_used"]
    )  # (5 samples late)
    assert summary["n"] == len(phishing())
    assert summary["delay"] == 5
    assert summary["labels_used"] <= 0.22 * summary["n"]
    assert (out / "learning_curve.png").stat().st_size > 1000


# -- statistics -------------------------------------------------------------------------------------------
def test_friedman_and_ranks_agree_with_scipy_and_demsar():
    scores = {
        "a": [0.90, 0.85, 0.70, 0.95, 0.80],
        "b": [0.85, 0.86, 0.60, 0.90, 0.75],
        "c": [0.80, 0.80, 0.65, 0.85, 0.70],
        "d": [0.80, 0.70, 0.55, 0.85, 0.70],
    }
    ranks = stats.average_ranks(scores)
    assert ranks == {"a": 1.2, "b": 2.0, "c": 3.1, "d": 3.7}
    f = stats.friedman(scores)
    expected = scipy_stats.friedmanchisquare(*scores.values())
    assert f.statistic == pytest.approx(expected.statistic)
    assert f.p_value == pytest.approx(expected.pvalue)
    assert f.iman_davenport > f.statistic / 3  # the F form is the less conservative
    # Demšar (2006), table 5(a): q_0.05 = 2.569 for 4 methods
    assert stats.nemenyi_cd(4, 5) == pytest.approx(2.569 * (4 * 5 / (6 * 5)) ** 0.5, abs=2e-3)
    holm = stats.wilcoxon_holm(scores, "a")
    assert set(holm) == {"b", "c", "d"}
    assert all(0.0 <= p <= 1.0 for p, _ in holm.values())
    with pytest.raises(ValueError, match="at least 3 methods"):
        stats.friedman({"a": [1.0, 2.0], "b": [2.0, 1.0]})
    assert stats.friedman({m: [0.5, 0.5] for m in "abc"}).p_value == 1.0


# -- bench --------------------------------------------------------------------------------------------
def test_plan_always_includes_random_sampling_and_puts_peers_first():
    tasks = bench.plan(["phishing"], [0.1], 2, combos=[("margin", "biqf")], peers=["river.EntropySampler"])
    assert tasks[0].is_peer
    methods = {t.method for t in tasks}
    assert methods == {"river.EntropySampler", "random / threshold", "margin / biqf"}
    assert len(tasks) == 6
    assert len(bench.COMBOS) >= 9  # at least 8 streamal combinations besides the baseline


def test_random_baseline_spends_its_budget_at_random():
    row = bench.run_task(bench.Task("phishing", "random", "threshold", 0.1, 0, limit=400))
    assert row["kind"] == "baseline"
    assert 0.08 <= row["spent"] <= 0.11
    assert set(row) >= ROW_FIELDS
    assert row["decision_batch"] == 100
    assert row["us_per_decision_batched"] > 0.0


def test_bench_cli_end_to_end(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--data", "phishing", "--data", "image_segments", "--limit", "250", "--budget", "0.1",
            "--seeds", "2", "--combo", "entropy/biqf", "--combo", "margin/split",
            "--combo", "periodic/threshold", "--no-peers", "--jobs", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = orjson.loads((out / "results.json").read_bytes())
    assert len(rows) == 2 * 4 * 2  # data sets x (3 combos + random) x seeds
    for row in rows:
        assert set(row) >= ROW_FIELDS
        # the budget (10% slack for the estimate), and the warm start's seed set, repaid over 500 samples
        assert row["spent"] * row["n"] <= row["budget"] * (1.10 * row["n"] + 100)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Friedman test" in report
    assert "Nemenyi" in report
    assert "streamal bench --data phishing" in report
    assert (out / "cd_0.1.png").stat().st_size > 1000
    assert (out / "curve_phishing_0.1.png").stat().st_size > 1000
    summary = summarise(rows, 0.1)
    assert summary.baseline == "random / threshold"
    assert summary.best_streamal in {"entropy / biqf", "margin / split", "periodic / threshold"}


def test_bench_cli_refuses_a_bad_combo(capsys):
    assert main(["bench", "--combo", "margin-biqf", "--no-peers"]) == 2
    assert "STRATEGY/POLICY" in capsys.readouterr().err


@pytest.mark.skipif(not peers.available(), reason="the peers extra is not installed")
@pytest.mark.parametrize("peer", ["river.EntropySampler", "skactiveml.Split"])
def test_peers_run_under_the_same_protocol(peer):
    result = peers.simulate_peer(phishing(150), peer, budget=0.2, delay=3, seed=1)
    assert result.n == 150
    assert result.strategy == peer
    assert 0 < result.labels_used <= 0.4 * 150  # (scikit-activeml's Split overspends at first)
    assert result.accuracy > 0.5
    assert result.us_per_decision > 0.0


def test_an_unknown_peer_is_a_configuration_error():
    from streamal.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown peer"):
        peers.simulate_peer(phishing(10), "skactiveml.Nope")


# -- other models -------------------------------------------------------------------------------------
def test_a_combination_may_name_its_model():
    combos: list[tuple[str, str] | tuple[str, str, str]] = [
        ("margin", "biqf"),
        ("margin", "biqf", "gaussian_nb"),
        ("qbc_kl", "split", "committee"),
    ]
    tasks = bench.plan(["phishing"], [0.1], 1, limit=150, combos=combos)
    assert [t.method for t in tasks] == [
        "random / threshold",
        "margin / biqf",
        "margin / biqf / gaussian_nb",
        "qbc_kl / split",  # the committee is its default model: not named
    ]
    rows = [bench.run_task(t) for t in tasks]
    assert [r["model"] for r in rows] == ["knn", "knn", "gaussian_nb", "committee"]
    assert rows[1]["accuracy"] != rows[2]["accuracy"]
    summary = summarise(rows * 2, 0.1)  # the report keeps the two models apart
    assert {"margin / biqf", "margin / biqf / gaussian_nb"} <= set(summary.methods)


def test_unregistered_parts_of_a_combination_are_named():
    assert bench.missing_parts(("margin", "biqf", "no_such_model")) == ["model 'no_such_model'"]
    assert bench.missing_parts(("no_such", "biqf")) == ["strategy 'no_such'"]
    assert bench.missing_parts(("margin", "biqf", "river:naive_bayes.GaussianNB")) == []


def test_bench_cli_runs_other_models_apart(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--data", "phishing", "--data", "bananas", "--limit", "150", "--seeds", "1",
            "--combo", "entropy/biqf", "--combo", "margin/split/gaussian_nb", "--model", "softmax",
            "--no-peers", "--jobs", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = orjson.loads((out / "results.json").read_bytes())
    methods = {(r["method"], r["model"], r["kind"]) for r in rows}
    assert methods == {
        ("random / threshold", "knn", "baseline"),
        ("random / threshold / softmax", "softmax", "baseline"),
        ("entropy / biqf / softmax", "softmax", "streamal"),
        ("margin / split / gaussian_nb", "gaussian_nb", "streamal"),
    }
    assert summarise(rows, 0.1).baseline == "random / threshold"
    assert "entropy / biqf / softmax" in (out / "report.md").read_text(encoding="utf-8")


def test_bench_cli_refuses_an_unknown_model(capsys):
    assert main(["bench", "--combo", "margin/biqf/nope", "--no-peers"]) == 2
    assert "model 'nope'" in capsys.readouterr().err
    assert main(["bench", "--model", "nope", "--no-peers"]) == 2


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("river:linear_model.LinearRegression", "must be a river classifier, and it is a regressor"),
        ("river:nosuch.Classifier", "no river classifier 'nosuch.Classifier'"),
        ("river:tree.NoSuchTree", "no river classifier 'tree.NoSuchTree'"),
        ("river:ensemble.BaggingClassifier", "cannot be built without parameters"),
    ],
)
def test_bench_cli_refuses_an_unusable_river_model_before_any_run(tmp_path, capsys, model, why):
    # (each was refused when the first run with it started: after the runs before it, with their progress)
    out = tmp_path / "bench"
    rest = ["--data", "phishing", "--limit", "60", "--seeds", "1", "--no-peers", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    for flags, flag in (
        (["--combo", f"margin/biqf/{model}"], f"--combo 'margin/biqf/{model}'"),
        (["--combo", "margin/biqf", "--model", model], f"--model {model!r}"),
    ):
        assert main(["bench", *flags, *rest]) == 2
        err = capsys.readouterr().err
        assert f"streamal: configuration error: {flag}: " in err
        assert why in err
        assert "Traceback" not in err
        assert "runs done" not in err
        assert not out.exists()  # nothing ran: not even results.partial.jsonl


def test_bench_run_builds_every_model_before_its_first_run():
    from streamal.errors import ConfigError

    tasks = bench.plan(["phishing"], [0.1], 1, limit=60, combos=[("margin", "biqf", "river:tree.NoSuchTree")])
    finished: list[dict[str, object]] = []
    with pytest.raises(ConfigError, match=r"no river classifier 'tree\.NoSuchTree'"):
        bench.run(tasks, jobs=1, on_done=finished.append)
    assert finished == []  # (random sampling, the first task, had run)


# -- reusing the slow peers' rows ---------------------------------------------------------------------
def test_only_scikit_activeml_rows_of_the_same_runs_are_reused():
    tasks = bench.plan(
        ["phishing"], [0.1], 2, limit=120, combos=[], peers=["skactiveml.Split", "river.EntropySampler"]
    )
    earlier = [bench.run_task(t) for t in tasks]
    earlier[0] = {**earlier[0], "accuracy": -1.0}  # marks the row that must come back as it was
    found = bench.reusable(tasks, earlier)
    assert sorted(found) == [i for i, t in enumerate(tasks) if t.strategy == "skactiveml.Split"]
    rows = bench.run(tasks, jobs=1, done=found)
    assert rows[0]["accuracy"] == -1.0
    assert [r["method"] for r in rows] == [t.method for t in tasks]
    # another sample count, budget or seed is another run
    other = bench.plan(["phishing"], [0.1], 2, limit=100, combos=[], peers=["skactiveml.Split"])
    assert bench.reusable(other, earlier) == {}


# -- policy parameters ----------------------------------------------------------------------------
def test_policy_parameters_reach_every_streamal_run_but_not_the_peers():
    tasks = bench.plan(
        ["phishing"], [0.1], 1, limit=300, combos=[("margin", "biqf")], peers=["river.EntropySampler"],
        policy_params={"warmup": 0},
    )  # fmt: skip
    assert [t.policy_params for t in tasks] == [(), (("warmup", 0),), (("warmup", 0),)]
    cold = {t.method: bench.run_task(t) for t in tasks if not t.is_peer}
    warm = {
        t.method: bench.run_task(t)
        for t in bench.plan(["phishing"], [0.1], 1, limit=300, combos=[("margin", "biqf")])
    }
    assert cold["margin / biqf"]["curve"] != warm["margin / biqf"]["curve"]
    assert cold["margin / biqf"]["spent"] <= 0.11  # without a seed set, within the budget on every prefix
    assert warm["margin / biqf"]["spent"] * 300 <= 0.1 * (1.10 * 300 + 100)  # with one, not yet repaid


def test_bench_cli_policy_param(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--data", "phishing", "--limit", "150", "--seeds", "1", "--combo", "margin/biqf",
            "--policy-param", "warmup=0", "--no-peers", "--jobs", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "--policy-param warmup=0" in (out / "report.md").read_text(encoding="utf-8")
    assert main(["bench", "--policy-param", "warmup", "--no-peers"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


# -- the report's note on deterministic methods -----------------------------------------------------------
def _row(method: str, dataset: str, seed: int, accuracy: float, kind: str = "streamal") -> dict[str, object]:
    return {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "accuracy": accuracy,
        "kind": kind,
        "budget": 0.1,
    }


def test_the_report_names_the_methods_over_the_per_decision_target_on_each_path(tmp_path):
    from streamal.evaluation.report import _decision_target, _overhead

    def timed(method: str, kind: str, one: float, batched: float | None) -> dict[str, object]:
        row = _row(method, "a", 0, 0.8, kind) | {"us_per_sample": 80.0, "us_per_decision": one}
        return row | ({"us_per_decision_batched": batched, "decision_batch": 100} if batched else {})

    rows = [
        timed("margin / biqf", "streamal", 2.5, 1.5),
        timed("density_weighted / biqf", "streamal", 17.0, 3.5),
        timed("qbc_kl / split", "streamal", 7.0, 6.0),
        timed("random / threshold", "baseline", 1.0, 0.5),
        timed("skactiveml.Split", "peer", 900.0, None),
        timed("margin / split", "streamal", 9.0, None),  # a row of an older results.json: no batched time
    ]
    batched, one = _decision_target(rows)
    assert "in batches of 100" in batched
    assert "at most 6.00 µs (qbc_kl / split)" in batched
    assert batched.endswith("above 5 µs: qbc_kl / split 6.00.")
    assert "skactiveml" not in one  # the target is streamal's
    assert one.endswith(
        "above 5 µs: qbc_kl / split 7.00, margin / split 9.00, density_weighted / biqf 17.00."
    )
    table = "\n".join(_overhead(rows))
    assert "| skactiveml.Split (peer) | 900.0 | – | 80 |" in table
    assert "| density_weighted / biqf (streamal) | 17.0 | 3.5 | 80 |" in table
    assert "| margin / split (streamal) | 9.0 | – | 80 |" in table
    assert "in batches of 100" in table
    assert _decision_target([timed("margin / biqf", "streamal", 2.5, 1.5)])[0].endswith("none.")


def test_a_method_that_repeats_one_run_over_its_seeds_is_called_deterministic():
    from streamal.evaluation.report import _deterministic

    rows = [
        *(_row("margin / biqf", d, s, 0.8) for d in ("a", "b") for s in (0, 1)),  # same run twice
        *(_row("margin / split", d, s, 0.8 + s / 100) for d in ("a", "b") for s in (0, 1)),  # a spread
        *(_row("periodic / threshold", d, 0, 0.7) for d in ("a", "b")),  # one seed: nothing to tell
    ]
    summary = summarise(rows, 0.1)
    assert _deterministic(summary, rows) == ["margin / biqf"]
    assert _deterministic(summary, rows[4:]) == []


# -- scripts/compare_pairs.py ----------------------------------------------------------------------------
def test_compare_pairs_covers_every_registered_policy_and_strategy_it_names():
    from scripts import compare_pairs
    from streamal.policies import POLICIES
    from streamal.strategies import STRATEGIES

    # rate_limit without a labels_per_hour decides as variable_uncertainty: the same row twice
    assert set(compare_pairs.POLICIES) == set(POLICIES) - {"rate_limit"}
    assert set(compare_pairs.STRATEGIES) <= set(STRATEGIES)
    name, delay, cell = compare_pairs._cell(("phishing", 0, 100, 0.1))
    assert (name, delay) == ("phishing", 0)
    assert set(cell) == {(s, p) for s in compare_pairs.STRATEGIES for p in compare_pairs.POLICIES}
    for accuracy, spent in cell.values():
        assert 0.0 < accuracy <= 1.0
        assert len(spent) == len(compare_pairs.SEEDS)
        assert max(spent) <= 0.1 * 1.10
