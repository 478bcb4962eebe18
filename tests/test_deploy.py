"""The operations kit under deploy/: every file parses, fits the others, uses only metrics streamal exports.

No Kafka and no container engine: the compose file, the Kubernetes manifests and the dashboard are read as
data and checked against each other and against streamal itself (its settings and its metrics registry);
the alert rules and the Prometheus configuration go through promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from streamal.config import load_settings
from streamal.datasets import BUILTIN
from streamal.errors import DecodeError
from streamal.metrics import STAGES, Metrics
from streamal.pending import LabelOutcome
from streamal.service import ROLES

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules"
RULE_TESTS = DEPLOY / "prometheus" / "tests"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamal.json"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
#: the settings file of a kustomization, which its configMapGenerator turns into a ConfigMap
SETTINGS_FILE = "config.yaml"
#: files of a Kubernetes folder that are not manifests
NOT_MANIFESTS = {"kustomization.yaml", SETTINGS_FILE}
OPERATIONS = REPO / "docs" / "operations.md"

#: labels a scrape adds (compose: job, instance; the Prometheus Operator: also these), and `le` of buckets
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"}
#: the values a label of streamal's can take, where the set is fixed
KNOWN_VALUES = {
    "outcome": {o.value for o in LabelOutcome},
    "reason": set(DecodeError.REASONS),
    "stage": set(STAGES),
    "cause": {"evicted", "timed_out"},
    "role": set(ROLES),
}
#: the metric names PromQL can see: series name -> the labels of streamal's own (not the target's)
_NAME = re.compile(r"\bstreamal_[a-z0-9_]+\b")
_SELECTOR = re.compile(r"\b(streamal_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")


# -- what the service exports, and what deploy/ uses ---------------------------------------------------------
@cache
def exported_series() -> dict[str, tuple[str, ...]]:
    """Every series name a fresh :class:`Metrics` can export, with the label names of each."""
    metrics = Metrics(CollectorRegistry())
    out: dict[str, tuple[str, ...]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        # prometheus_client keeps the declared name, type and label names on the wrapper (no public getter
        # gives label names for a labelled metric that has no child yet, e.g. the consumer lag)
        name, kind, labels = metric._name, metric._type, tuple(metric._labelnames)
        if kind == "counter":
            suffixes = ["_total", "_created"]
        elif kind == "histogram":
            suffixes = ["_bucket", "_count", "_sum", "_created"]
        elif kind == "summary":
            suffixes = ["", "_count", "_sum", "_created"]
        else:
            suffixes = [""]
        for suffix in suffixes:
            out[name + suffix] = labels
    assert len(out) > 20
    return out


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES.glob("*.yaml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title or variable name, PromQL) of every query the dashboard runs."""
    board = dashboard()
    out = [
        (panel["title"], target["expr"])
        for panel in _panels(board["panels"])
        for target in panel.get("targets", [])
    ]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"${var['name']}", query))
    return out


def used_series() -> set[str]:
    """Every streamal_* series name that an alert rule or the dashboard uses."""
    exprs = [rule["expr"] for rule in alert_rules()] + [expr for _, expr in dashboard_exprs()]
    return {name for expr in exprs for name in _NAME.findall(expr)}


def concrete(expr: str, rate_interval: str = "5m") -> str:
    """A dashboard query with Grafana's variables filled in, as Prometheus would receive it."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace('"$job"', '"streamal"')
        .replace('"$instance"', '".*"')
    )


# -- metrics -------------------------------------------------------------------------------------------------
def test_every_streamal_metric_used_by_a_rule_or_the_dashboard_is_exported() -> None:
    exported = exported_series()
    used = used_series()
    assert used - set(exported) == set(), "used by deploy/ but not registered by streamal.metrics.Metrics"
    # what the issue asks the dashboard and the rules to cover
    for name in (
        "streamal_samples_total",
        "streamal_label_requests_total",
        "streamal_budget_ratio",
        "streamal_labels_total",
        "streamal_prequential_accuracy_ratio",
        "streamal_model_version",
        "streamal_consumer_lag_messages",
        "streamal_dead_letters_total",
        "streamal_processing_seconds_bucket",
    ):
        assert name in used, name


@pytest.mark.parametrize(
    ("where", "expr"),
    [(r["alert"], r["expr"]) for r in alert_rules()] + dashboard_exprs(),
)
def test_label_matchers_and_groupings_name_real_labels(where: str, expr: str) -> None:
    exported = exported_series()
    in_expr: set[str] = set(TARGET_LABELS)
    for name in _NAME.findall(expr):
        in_expr |= set(exported.get(name, ()))
    for name, matchers in _SELECTOR.findall(expr):
        own = set(exported[name])
        for label, op, value in _MATCHER.findall(matchers):
            assert label in own | TARGET_LABELS, f"{where}: {name} has no label {label!r}"
            if op == "=" and label in KNOWN_VALUES:
                assert value in KNOWN_VALUES[label], f"{where}: {label}={value!r} never occurs"
    for _, labels in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in labels.split(","))):
            assert label in in_expr, f"{where}: no metric of the expression has the label {label!r}"


# -- alert rules ---------------------------------------------------------------------------------------------
def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: `make test` installs it (Debian's prometheus package); "
            "or run `apt-get install prometheus`",
            pytrace=False,
        )
    return promtool


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_checks_the_rules_runs_their_unit_tests_and_checks_the_config() -> None:
    promtool = _promtool()
    rule_files = [str(p) for p in sorted(RULES.glob("*.yaml"))]
    tests = [str(p) for p in sorted(RULE_TESTS.glob("*.yaml"))]
    assert rule_files
    assert tests
    assert f"SUCCESS: {len(alert_rules())} rules found" in _run(promtool, "check", "rules", *rule_files)
    assert "SUCCESS" in _run(promtool, "test", "rules", *tests)
    out = _run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert "is valid prometheus config file syntax" in out
    assert f"{len(rule_files)} rule files found" in out


def test_every_alert_the_issue_asks_for_exists_and_has_a_unit_test() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "StreamalConsumerLagHigh",
        "StreamalConsumerStalled",
        "StreamalDeadLetterRatioHigh",
        "StreamalModelStale",
        "StreamalBudgetOverspent",
        "StreamalBudgetStarved",
        "StreamalAccuracyDropping",
    } <= names
    tested = {
        case["alertname"]: case
        for path in RULE_TESTS.glob("*.yaml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for path in RULE_TESTS.glob("*.yaml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    assert names <= set(tested), "every alert has a case where it fires"
    assert names <= quiet, "every alert has a case where it must not fire"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of a markdown text."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return out


def test_every_alert_waits_has_a_severity_and_points_to_its_runbook() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: needs a `for:` duration"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        doc, _, anchor = annotations["runbook_url"].partition("#")
        assert doc == "docs/operations.md", name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: docs/operations.md has no heading for #{anchor}"


def test_the_prometheus_rule_for_kubernetes_holds_the_same_rules() -> None:
    resource = yaml.safe_load((K8S / "prometheusrule.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == rule_groups()


# -- dashboard -----------------------------------------------------------------------------------------------
def test_the_dashboard_has_a_fixed_uid_and_takes_its_data_source_from_a_variable() -> None:
    board = dashboard()
    assert board["uid"] == "streamal-overview"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels = [p for p in _panels(board["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(board["panels"])}) == len(list(_panels(board["panels"])))
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == source, var["name"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in (
        "throughput",
        "budget",
        "outcome",
        "accuracy",
        "model version",
        "lag",
        "dead letters",
        "processing time",
    ):
        assert topic in titles, topic


def test_the_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _panels(dashboard()["panels"]):
        pos = panel["gridPos"]
        assert pos["x"] >= 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[x, y]}"
                taken[x, y] = panel["title"]


def test_the_dashboard_shows_latency_quantiles_by_stage() -> None:
    quantiles = [
        expr
        for _, expr in dashboard_exprs()
        if "histogram_quantile" in expr and "streamal_processing_seconds_bucket" in expr
    ]
    assert len(quantiles) >= 3
    for expr in quantiles:
        assert re.search(r"by \(stage, le\)", expr), expr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query, filled in as Grafana would, as a recording rule."""
    promtool = _promtool()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": concrete(expr)}
                    for i, (_, expr) in enumerate(dashboard_exprs())
                    if not expr.startswith("label_values(")
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    _run(promtool, "check", "rules", str(path))


def _panel_query(title: str, panel_type: str = "stat", legend: str | None = None) -> str:
    """The query of one dashboard panel (its target with that legend, or its only one), filled in."""
    (panel,) = [p for p in _panels(dashboard()["panels"]) if (p["title"], p["type"]) == (title, panel_type)]
    (target,) = [t for t in panel["targets"] if legend in (None, t["legendFormat"])]
    return concrete(str(target["expr"]))


def _labels(metric: str, **labels: str) -> str:
    return metric + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


#: the labels the Prometheus Operator gives a pod of the scale-out Service, by pod
_SCALE_OUT_PODS = {
    pod: {
        "job": "streamal",
        "namespace": "ml",
        "service": "streamal",
        "container": "streamal",
        "endpoint": "http",
        "pod": pod,
        "instance": f"10.0.0.{i}:8080",
    }
    for i, pod in enumerate(
        ["streamal-scorer-a", "streamal-scorer-b", "streamal-learner-0", "streamal-learner-1"], start=1
    )
}


def _process(target: dict[str, str], role: str, **values: str) -> list[dict[str, str]]:
    """The input series of one streamal process: its role, and each gauge or counter given (promtool's
    notation: 'a+bxn'); ``dropped_<cause>`` is streamal_pending_dropped_total of that cause."""
    names = {
        "ready": "streamal_ready",
        "accuracy": "streamal_prequential_accuracy_ratio",
        "spent": "streamal_budget_spent_ratio",
        "pending": "streamal_pending_requests",
    }
    series = [{"series": _labels("streamal_info", **target, role=role), "values": "1x20"}]
    for key, value in values.items():
        if key.startswith("dropped_"):
            name = _labels("streamal_pending_dropped_total", **target, cause=key.removeprefix("dropped_"))
        else:
            name = _labels(names[key], **target)
        series.append({"series": name, "values": value})
    return series


def test_the_dashboard_shows_each_role_what_it_does(tmp_path: Path) -> None:
    """The queries of the panels that would mix the roles, over the series the roles export, through
    promtool: scale-out (two scorers, an active learner, a standby that takes over) and the all-in-one.
    Scorers export an accuracy of 0 and a pending request they keep for no label; learners a budget
    spending of 0; a standby is never ready and has learned nothing."""
    pods = _SCALE_OUT_PODS
    scale_out = [
        *_process(
            pods["streamal-scorer-a"],
            "scorer",
            ready="1x20",
            accuracy="0x20",
            spent="0.05x20",
            pending="1x20",
            dropped_evicted="0+60x20",
            dropped_timed_out="0x20",
        ),
        # not ready from the 11th minute on (no partition, no broker)
        *_process(
            pods["streamal-scorer-b"],
            "scorer",
            ready="1x10 0x9",
            accuracy="0x20",
            spent="0.15x20",
            pending="1x20",
            dropped_evicted="0+60x20",
            dropped_timed_out="0x20",
        ),
        # the active learner until the 6th minute, when it restarts and the standby takes over
        *_process(
            pods["streamal-learner-0"],
            "learner",
            ready="1x5 0x14",
            accuracy="0.8x5 0x14",
            spent="0x20",
            pending="40x5 0x14",
            dropped_evicted="0x20",
            dropped_timed_out="0+6x5 0x14",
        ),
        *_process(
            pods["streamal-learner-1"],
            "learner",
            ready="0x5 1x14",
            accuracy="0x5 0.75x14",
            spent="0x20",
            pending="0x5 35x14",
            dropped_evicted="0x20",
            dropped_timed_out="0x20",
        ),
    ]
    no_learner = _process(pods["streamal-scorer-a"], "scorer", ready="1x20")
    aio = {"job": "streamal", "instance": "streamal:8080"}
    all_in_one = _process(
        aio,
        "all",
        ready="1x5 0x14",
        accuracy="0.9x20",
        spent="0.1x20",
        pending="12x20",
        dropped_evicted="0x20",
        dropped_timed_out="0+12x20",
    )
    accuracy_of = {
        pod: _labels("streamal_prequential_accuracy_ratio", **pods[pod])
        for pod in ("streamal-learner-0", "streamal-learner-1")
    }

    def at(minute: int, query: str, *samples: tuple[str, float]) -> dict[str, Any]:
        return {
            "expr": query,
            "eval_time": f"{minute}m",
            "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
        }

    ready, learner_ready = _panel_query("Ready"), _panel_query("Learner ready")
    accuracy = _panel_query("Prequential accuracy")
    accuracy_graph = _panel_query("Prequential accuracy", "timeseries")
    estimate = _panel_query("Label requests against budget", "timeseries", "policy's estimate")
    pending = _panel_query("Pending label requests")
    dropped = _panel_query("Pending and dropped label requests", "timeseries", "dropped: {{cause}}")
    tests = [
        (
            scale_out,
            [
                at(5, ready, ("{}", 1)),  # the scorers; not the standby
                at(15, ready, ("{}", 0)),
                at(5, learner_ready, ("{}", 1)),  # the active one; a standby is 0 by design
                at(10, learner_ready, ("{}", 1)),
                at(5, accuracy, ("{}", 0.8)),  # the active learner's, not the scorers' nor the standby's
                at(10, accuracy, ("{}", 0.75)),
                at(5, accuracy_graph, (accuracy_of["streamal-learner-0"], 0.8)),
                at(10, accuracy_graph, (accuracy_of["streamal-learner-1"], 0.75)),
                at(5, estimate, ("{}", 0.1)),  # the scorers' mean, not lowered by the learners' 0
                at(5, pending, ("{}", 40)),  # the active learner's, not the scorers' one each
                at(10, pending, ("{}", 35)),
                at(5, dropped, ('{cause="evicted"}', 0), ('{cause="timed_out"}', 0.1)),
            ],
        ),
        (no_learner, [at(5, learner_ready, ("{}", 0))]),  # scorers run, no learner is scraped
        (
            all_in_one,
            [
                at(5, ready, ("{}", 1)),
                at(10, ready, ("{}", 0)),
                at(5, learner_ready),  # no learner role: no data (the panel says n/a)
                at(5, accuracy, ("{}", 0.9)),
                at(10, accuracy, ("{}", 0.9)),  # the last accuracy, also while it is not ready
                at(5, accuracy_graph, (_labels("streamal_prequential_accuracy_ratio", **aio), 0.9)),
                at(5, estimate, ("{}", 0.1)),
                at(5, pending, ("{}", 12)),
                at(5, dropped, ('{cause="evicted"}', 0), ('{cause="timed_out"}', 0.2)),
            ],
        ),
    ]
    path = tmp_path / "dashboard_test.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "evaluation_interval": "1m",
                "tests": [
                    {"interval": "1m", "input_series": series, "promql_expr_test": cases}
                    for series, cases in tests
                ],
            }
        )
    )
    assert "SUCCESS" in _run(_promtool(), "test", "rules", str(path))


# -- compose -------------------------------------------------------------------------------------------------
def _defaults(value: str) -> str:
    """Compose's ${NAME:-default} interpolation, with nothing set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_runs_apache_kafka_in_kraft_mode_streamal_prometheus_and_grafana() -> None:
    stack = compose()
    services = stack["services"]
    assert {"kafka", "streamal", "oracle", "feeder", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "healthcheck" in kafka
    for name in ("oracle", "feeder"):
        assert services[name]["profiles"] == ["demo"], name
    for name in ("kafka", "streamal", "prometheus", "grafana"):
        assert "profiles" not in services[name], name
    # every bind mount exists, every named volume is declared
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in stack.get("volumes", {}), f"{name}: {volume} is not a declared volume"


def test_the_compose_services_are_configured_with_real_settings() -> None:
    services = compose()["services"]
    streamal = services["streamal"]
    assert streamal["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    env = {k: str(v) for k, v in streamal["environment"].items()}
    settings = load_settings(env=env)
    assert settings.http.host == "0.0.0.0"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert streamal["depends_on"]["kafka"]["condition"] == "service_healthy"
    # the oracle and the feeder use one built-in data set
    oracle = [_defaults(arg) for arg in services["oracle"]["command"]]
    data = oracle[oracle.index("--data") + 1]
    assert data in BUILTIN
    assert _defaults(services["feeder"]["environment"]["DEMO_DATA"]) == data
    assert services["feeder"]["entrypoint"] == ["python", "/demo/feed.py"]
    # Prometheus gets our configuration and rules, Grafana our data source and dashboard
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["streamal"]["static_configs"][0]["targets"] == [f"streamal:{settings.http.port}"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/streamal.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == mounts["./grafana/dashboards"]
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"


def test_the_compose_service_keeps_its_checkpoints_on_a_named_volume() -> None:
    """A rebuild (`up --build`) replaces the container: the model must be on a volume, and the volume on a
    directory of the image that belongs to the service's user (a new volume takes the owner of the image's
    directory; on a path the image does not have, it would belong to root and stay unwritable)."""
    stack = compose()
    streamal = stack["services"]["streamal"]
    settings = load_settings(env={**image_env(), **{k: str(v) for k, v in streamal["environment"].items()}})
    assert settings.checkpoint.dir is not None
    named = {
        target: source
        for source, target, *_ in (v.split(":") for v in streamal["volumes"])
        if not source.startswith(".")
    }
    (target,) = [t for t in named if Path(settings.checkpoint.dir).is_relative_to(t)]
    assert named[target] in stack["volumes"]
    final = _final_stage()
    assert dict(final)["WORKDIR"] == target
    assert any(word == "RUN" and f"chown streamal:streamal {target}" in rest for word, rest in final)


# -- Dockerfile ----------------------------------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions(DOCKERFILE.read_text())
    return steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]


def image_env() -> dict[str, str]:
    """The STREAMAL_* variables the image sets (its final stage's ENV): they override a settings file."""
    env: dict[str, str] = {}
    for word, rest in _final_stage():
        if word == "ENV":
            for pair in rest.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return {name: value for name, value in env.items() if name.startswith("STREAMAL_")}


def test_the_image_is_non_root_has_a_health_check_and_runs_streamal_run() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    final = _final_stage()
    users = [rest for word, rest in final if word == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    (health,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "/healthz" in health
    assert dict(final)["ENTRYPOINT"] == '["streamal"]'
    assert dict(final)["CMD"] == '["run"]'
    assert image_env()["STREAMAL_HTTP__HOST"] == "0.0.0.0"
    assert load_settings(env=image_env()).http.port == int(dict(final)["EXPOSE"])
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"!pyproject.toml", "!README.md", "!streamal/"} <= set(ignore)


def _fake_environment(root: Path, distributions: dict[str, str]) -> Path:
    """An /opt/streamal whose pip only logs its arguments and whose python sees only these distributions."""
    site = root / "site"
    for name, version in distributions.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    site.mkdir(exist_ok=True)
    bin_ = root / "opt" / "bin"
    bin_.mkdir(parents=True)
    scripts = {
        "pip": f'echo "$@" >> {root / "pip.log"}',
        "streamal": "exit 0",
        # `python -m pip uninstall pip` does nothing; the guard runs without site-packages, on the fakes
        "python": f'[ "$1" = "-m" ] && exit 0\nPYTHONPATH={site} exec {sys.executable} -S "$@"',
    }
    for name, body in scripts.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    return root / "opt"


@pytest.mark.parametrize(
    ("extras", "installed", "pip_args", "refused"),
    [
        ("", {}, ". ", False),
        ("torch", {"torch": "2.13.0+cpu"}, "--extra-index-url=$TORCH .[torch]", False),
        ("peers,torch", {"torch": "2.13.0+cpu"}, "--extra-index-url=$TORCH .[peers,torch]", False),
        ("peers", {}, ".[peers]", False),
        ("torch", {"torch": "2.13.0"}, "--extra-index-url=$TORCH .[torch]", True),  # the CUDA build
        ("", {"nvidia-cublas-cu12": "12.1.3.1"}, ".", True),
        ("", {"torch": "2.13.0"}, ".", True),
    ],
)
def test_the_image_installs_extras_and_torch_only_as_a_cpu_build(
    tmp_path: Path, extras: str, installed: dict[str, str], pip_args: str, refused: bool
) -> None:
    """The build's install step, run by sh with a fake pip and python: the extras named by the build
    argument EXTRAS, PyTorch's CPU index only when torch is one of them, and a build refused when torch is
    not a +cpu build or a CUDA library came with it."""
    steps = _instructions(DOCKERFILE.read_text())
    build = steps[: max(i for i, (word, _) in enumerate(steps) if word == "FROM")]
    args = dict(rest.partition("=")[::2] for word, rest in build if word == "ARG")
    assert args["EXTRAS"] == '""'  # no extra by default: the default image has no torch
    torch_index = args["TORCH_INDEX_URL"]
    assert f"--extra-index-url {torch_index}" in (REPO / "docs" / "torch.md").read_text()
    # the pin the index serves: one CPU build of torch, never a range
    assert re.search(r'"torch==[0-9.]+\+cpu"', (REPO / "pyproject.toml").read_text())
    (install,) = [rest for word, rest in build if word == "RUN" and "pip install" in rest]
    opt = _fake_environment(tmp_path, installed)
    done = subprocess.run(
        ["sh", "-c", install.replace("/opt/streamal", str(opt))],
        env={"EXTRAS": extras, "TORCH_INDEX_URL": torch_index, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    logged = (tmp_path / "pip.log").read_text().strip()
    assert logged == f"install {pip_args.replace('$TORCH', torch_index)}".strip()
    assert (done.returncode != 0) == refused, done.stderr
    if refused:
        assert "must be a +cpu build" in done.stderr


# -- Kubernetes ----------------------------------------------------------------------------------------------
def _manifests(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(folder.glob("*.yaml")):
        if path.name in NOT_MANIFESTS:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, path.name
        doc: dict[str, Any] = docs[0]
        for key in ("apiVersion", "kind", "metadata"):
            assert key in doc, f"{path.name}: no {key}"
        assert doc["metadata"]["name"], path.name
        yield path, doc


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one resource of that kind in deploy/k8s (kustomization.yaml and config.yaml aside)."""
    out: dict[str, dict[str, Any]] = {}
    for _, doc in _manifests(K8S):
        assert doc["kind"] not in out, f"two {doc['kind']}s"
        out[doc["kind"]] = doc
    return out


def kustomization(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return loaded


def _pod(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = resources["StatefulSet"]["spec"]["template"]
    return pod


def _container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(resources)["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _settings(folder: Path, container: dict[str, Any]) -> Any:
    """What a container of the folder's workloads runs with: the settings file under the image's environment
    and the container's own (a secret as a placeholder), as the service would load them."""
    env = dict(image_env())
    for var in container["env"]:
        if var["name"].startswith("STREAMAL_") and var["name"] != "STREAMAL_CONFIG":
            env[var["name"]] = var.get("value", "from-a-secret")
    return load_settings(folder / SETTINGS_FILE, env=env)


def _reads_the_generated_config(folder: Path, pod: dict[str, Any]) -> None:
    """The pod mounts the ConfigMap the folder's kustomization generates from its settings file, with a
    hash of the content in its name (so a change rolls the pod), and STREAMAL_CONFIG names that file."""
    (generator,) = kustomization(folder)["configMapGenerator"]
    assert generator["files"] == [SETTINGS_FILE]
    assert not generator.get("behavior")
    for options in (generator.get("options", {}), kustomization(folder).get("generatorOptions", {})):
        assert not options.get("disableNameSuffixHash"), "the hash suffix is what rolls the pods"
    (container,) = pod["spec"]["containers"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == generator["name"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    env = {e["name"]: e for e in container["env"]}
    config_path = Path(env["STREAMAL_CONFIG"]["value"])
    assert config_path == Path(mounts[config_volume]["mountPath"]) / SETTINGS_FILE


def test_the_kustomization_lists_every_manifest_and_every_manifest_parses() -> None:
    listed = set(kustomization(K8S)["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - NOT_MANIFESTS
    assert listed == on_disk
    kinds = set(manifests())
    assert {
        "ServiceAccount",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
    } == kinds


def test_the_service_reads_its_config_by_reference_and_its_secrets_from_a_secret() -> None:
    resources = manifests()
    container = _container(resources)
    _reads_the_generated_config(K8S, _pod(resources))
    settings = _settings(K8S, container)
    env = {e["name"]: e for e in container["env"]}
    for name in ("STREAMAL_KAFKA__SASL_PASSWORD", "STREAMAL_CHECKPOINT__KEY"):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "streamal-secrets"
    # no secret in the settings file, and none written into the manifest
    text = (K8S / SETTINGS_FILE).read_text()
    assert not re.search(r"^\s*(sasl_password|ssl_key_password|key):", text, re.MULTILINE)
    # the checkpoints live on the pod's volume
    assert settings.checkpoint.dir is not None
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in resources["StatefulSet"]["spec"]["volumeClaimTemplates"]}
    data_mounts = [m["mountPath"] for n, m in mounts.items() if n in claims]
    assert any(str(settings.checkpoint.dir).startswith(p) for p in data_mounts)


def _workload_containers() -> list[tuple[Path, dict[str, Any]]]:
    """(folder, container) of every workload of deploy/k8s and deploy/k8s/scale-out."""
    return [(K8S, _container(manifests()))] + [
        (SCALE_OUT, _role_container(workload))
        for key, workload in scale_out().items()
        if key.split("/")[0] in {"StatefulSet", "Deployment"}
    ]


def test_the_settings_files_leave_http_to_the_image_and_the_ports_match() -> None:
    """The image sets http.host and http.port in its environment, which wins over a settings file: an
    `http:` section there would be silently ignored, so there is none, and containerPort is the image's."""
    for folder in (K8S, SCALE_OUT):
        assert "http" not in yaml.safe_load((folder / SETTINGS_FILE).read_text()), folder
    for folder, container in _workload_containers():
        settings = _settings(folder, container)
        assert settings.http.host == "0.0.0.0"
        (port,) = container["ports"]
        assert port["containerPort"] == settings.http.port, container["args"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == port["name"], (container["args"], probe)


def test_probes_check_the_loop_for_liveness_and_never_the_broker() -> None:
    resources = manifests()
    container = _container(resources)
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"]["path"] == path, probe
    # liveness never fails because of the broker: /readyz (partitions assigned) is for readiness only
    assert container["livenessProbe"]["httpGet"]["path"] != "/readyz"
    security = _pod(resources)["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0


def test_one_all_in_one_replica_a_budget_that_allows_drains_and_selectors_that_match() -> None:
    resources = manifests()
    statefulset = resources["StatefulSet"]
    pod_labels = _pod(resources)["metadata"]["labels"]
    assert statefulset["spec"]["replicas"] == 1

    def selects(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(statefulset["spec"]["selector"]["matchLabels"])
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert selects(pdb["selector"]["matchLabels"])
    # with one replica, minAvailable 1 would block every drain
    assert pdb.get("maxUnavailable", 0) >= 1 or pdb.get("minAvailable") == 0
    service = resources["Service"]
    assert selects(service["spec"]["selector"])
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["targetPort"] == "http"
    monitor = resources["ServiceMonitor"]["spec"]
    assert all(
        service["metadata"]["labels"].get(k) == v for k, v in monitor["selector"]["matchLabels"].items()
    )
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    # the StreamalDown alert's job label is the Service's name under the Prometheus Operator
    assert service["metadata"]["name"] == "streamal"


def test_keda_scales_on_the_lag_of_the_samples_topic_only_never_beyond_one_all_in_one_replica() -> None:
    resources = manifests()
    settings = _settings(K8S, _container(resources))
    scaled = resources["ScaledObject"]["spec"]
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", resources["StatefulSet"]["metadata"]["name"])
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == settings.topics.samples
    assert meta["consumerGroup"] == settings.kafka.group_id
    assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert meta["allowIdleConsumers"] == "false"
    # all-in-one: exactly one replica until the scale-out roles exist, and never more than partitions
    assert scaled["minReplicaCount"] == scaled["maxReplicaCount"] == 1
    assert scaled["maxReplicaCount"] <= settings.kafka.partitions


# -- Kubernetes, scaled out ----------------------------------------------------------------------------------
SCALE_OUT = K8S / "scale-out"


def scale_out() -> dict[str, dict[str, Any]]:
    """kind/metadata.name -> resource, of every manifest in deploy/k8s/scale-out."""
    out: dict[str, dict[str, Any]] = {}
    for _, doc in _manifests(SCALE_OUT):
        key = f"{doc['kind']}/{doc['metadata']['name']}"
        assert key not in out, key
        out[key] = doc
    return out


def _role_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_scale_out_kustomization_lists_every_manifest_and_runs_both_roles() -> None:
    assert (
        set(kustomization(SCALE_OUT)["resources"])
        == {p.name for p in SCALE_OUT.glob("*.yaml")} - NOT_MANIFESTS
    )
    resources = scale_out()
    learner = resources["StatefulSet/streamal-learner"]
    scorer = resources["Deployment/streamal-scorer"]
    assert _role_container(learner)["args"] == ["run", "--role", "learner"]
    assert _role_container(scorer)["args"] == ["run", "--role", "scorer"]
    assert learner["spec"]["replicas"] == 2  # one active, one standby
    for workload in (learner, scorer):
        container = _role_container(workload)
        env = {e["name"]: e for e in container["env"]}
        # the roles refuse to start without the key: it must come from the Secret, and not be optional
        key = env["STREAMAL_CHECKPOINT__KEY"]["valueFrom"]["secretKeyRef"]
        assert key["name"] == "streamal-secrets"
        assert not key.get("optional", False)
        _reads_the_generated_config(SCALE_OUT, workload["spec"]["template"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in workload["spec"]["selector"]["matchLabels"].items())
        # the Service (the alert rules' job) selects both roles
        assert all(labels.get(k) == v for k, v in resources["Service/streamal"]["spec"]["selector"].items())
        assert _settings(SCALE_OUT, container).checkpoint.dir is not None
    # readiness: a scorer takes traffic from the group only once it holds partitions and the model (/readyz);
    # a standby learner is never ready by that measure, and a StatefulSet's rolling update waits for each
    # updated pod to be ready, so the learners' readiness is the loop's (/healthz)
    assert _role_container(scorer)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert _role_container(learner)["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_each_role_has_a_disruption_budget_that_allows_one_eviction() -> None:
    """One budget per role, selecting that role only, that allows an eviction when every pod runs as
    designed (a standby learner included), as the disruption controller counts: the pods whose readiness
    probe passes, less the replicas expected minus maxUnavailable."""
    resources = scale_out()
    budgets = [r["spec"] for key, r in resources.items() if key.startswith("PodDisruptionBudget/")]
    (scaled,) = [r["spec"] for key, r in resources.items() if key.startswith("ScaledObject/")]
    workloads = {
        "learner": resources["StatefulSet/streamal-learner"],
        "scorer": resources["Deployment/streamal-scorer"],
    }
    labels = {role: w["spec"]["template"]["metadata"]["labels"] for role, w in workloads.items()}

    def selects(budget: dict[str, Any], role: str) -> bool:
        return all(labels[role].get(k) == v for k, v in budget["selector"]["matchLabels"].items())

    for role, workload in workloads.items():
        (budget,) = [b for b in budgets if selects(b, role)]
        assert [r for r in workloads if selects(budget, r)] == [role]
        assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        expected = workload["spec"].get("replicas", scaled["minReplicaCount"])  # scorers: KEDA's floor
        readiness = _role_container(workload)["readinessProbe"]["httpGet"]["path"]
        never_ready = 1 if role == "learner" and readiness == "/readyz" else 0  # the standby, by design
        allowed = (expected - never_ready) - (expected - budget["maxUnavailable"])
        assert allowed >= 1, role


def test_the_scorers_roll_one_at_a_time_without_a_surge_and_keda_owns_their_count() -> None:
    resources = scale_out()
    scorer = resources["Deployment/streamal-scorer"]["spec"]
    (scaled,) = [r["spec"] for key, r in resources.items() if key.startswith("ScaledObject/")]
    settings = _settings(SCALE_OUT, _role_container(resources["Deployment/streamal-scorer"]))
    # a count here would reset KEDA's at every apply
    assert "replicas" not in scorer
    # at full scale KEDA runs one scorer per partition: a surge pod would be a member too many, get no
    # partition from the assignor, never be ready, and hold the rollout
    assert scaled["maxReplicaCount"] == settings.kafka.partitions
    assert scorer["strategy"]["type"] == "RollingUpdate"
    assert scorer["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_the_learners_share_one_read_write_many_volume_for_their_checkpoints() -> None:
    resources = scale_out()
    learner = resources["StatefulSet/streamal-learner"]
    assert "volumeClaimTemplates" not in learner["spec"]  # one volume per pod would strand the standby
    volumes = {v["name"]: v for v in learner["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in _role_container(learner)["volumeMounts"]}
    claims = {
        n: v["persistentVolumeClaim"]["claimName"] for n, v in volumes.items() if "persistentVolumeClaim" in v
    }
    (volume, claim) = next(iter(claims.items()))
    assert "ReadWriteMany" in resources[f"PersistentVolumeClaim/{claim}"]["spec"]["accessModes"]
    settings = _settings(SCALE_OUT, _role_container(learner))
    assert str(settings.checkpoint.dir).startswith(mounts[volume])
    # scorers keep no checkpoints: no volume but their scratch space
    scorer = resources["Deployment/streamal-scorer"]
    assert all("persistentVolumeClaim" not in v for v in scorer["spec"]["template"]["spec"]["volumes"])


def test_keda_scales_the_scorers_on_the_samples_lag_never_beyond_the_partitions() -> None:
    resources = scale_out()
    settings = _settings(SCALE_OUT, _role_container(resources["Deployment/streamal-scorer"]))
    (scaled,) = [r["spec"] for k, r in resources.items() if k.startswith("ScaledObject/")]
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "streamal-scorer")
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert meta["topic"] == settings.topics.samples
    assert meta["consumerGroup"] == settings.kafka.group_id  # the scorers' group (the learners' has a suffix)
    assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert meta["allowIdleConsumers"] == "false"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= settings.kafka.partitions
    monitor = resources["ServiceMonitor/streamal"]["spec"]
    service = resources["Service/streamal"]
    assert all(
        service["metadata"]["labels"].get(k) == v for k, v in monitor["selector"]["matchLabels"].items()
    )


@pytest.mark.parametrize(
    "path",
    sorted(p for p in [*K8S.glob("*.yaml"), *SCALE_OUT.glob("*.yaml")] if p.name not in NOT_MANIFESTS),
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_every_kubernetes_manifest_validates_against_the_api_schema(path: Path) -> None:
    """Strict: an unknown or misspelt field fails. The custom resources (KEDA, the Prometheus Operator) have
    no schema in kubernetes-validate; their fields are checked by the tests above."""
    import kubernetes_validate

    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        assert doc["kind"] in {"ScaledObject", "ServiceMonitor", "PrometheusRule"}, doc["kind"]


@pytest.mark.parametrize("folder", [K8S, SCALE_OUT], ids=["all-in-one", "scale-out"])
def test_kustomize_builds_each_folder_with_a_hashed_config_map_that_the_workloads_mount(folder: Path) -> None:
    """What `kubectl apply -k` applies, where kubectl (or kustomize) is installed: the tests above read the
    files; this one reads kustomize's output, with the generated ConfigMap's real name."""
    import kubernetes_validate

    tool = shutil.which("kubectl") or shutil.which("kustomize")
    if tool is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    command = [tool, "kustomize", str(folder)] if tool.endswith("kubectl") else [tool, "build", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    name = config_map["metadata"]["name"]
    assert re.fullmatch(r"streamal-config-[a-z0-9]{10}", name), name
    assert config_map["data"] == {SETTINGS_FILE: (folder / SETTINGS_FILE).read_text()}
    workloads = [d for d in docs if d["kind"] in {"StatefulSet", "Deployment"}]
    assert len(workloads) == (1 if folder == K8S else 2)
    for workload in workloads:
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        assert [v["configMap"]["name"] for v in volumes if "configMap" in v] == [name]
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert doc["kind"] in {"ScaledObject", "ServiceMonitor", "PrometheusRule"}, doc["kind"]
