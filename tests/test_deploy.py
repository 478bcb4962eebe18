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

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules"
RULE_TESTS = DEPLOY / "prometheus" / "tests"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamal.json"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
OPERATIONS = REPO / "docs" / "operations.md"

#: labels a scrape adds (compose: job, instance; the Prometheus Operator: also these), and `le` of buckets
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"}
#: the values a label of streamal's can take, where the set is fixed
KNOWN_VALUES = {
    "outcome": {o.value for o in LabelOutcome},
    "reason": set(DecodeError.REASONS),
    "stage": set(STAGES),
    "cause": {"evicted", "timed_out"},
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


# -- compose -------------------------------------------------------------------------------------------------
def _defaults(value: str) -> str:
    """Compose's ${NAME:-default} interpolation, with nothing set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_runs_apache_kafka_in_kraft_mode_streamal_prometheus_and_grafana() -> None:
    services = compose()["services"]
    assert {"kafka", "streamal", "oracle", "feeder", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "healthcheck" in kafka
    for name in ("oracle", "feeder"):
        assert services[name]["profiles"] == ["demo"], name
    for name in ("kafka", "streamal", "prometheus", "grafana"):
        assert "profiles" not in services[name], name
    # every bind mount exists
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("."), f"{name}: {volume} (the stack has no named volumes)"
            assert (DEPLOY / source).exists(), f"{name}: {source}"


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


def test_the_image_is_non_root_has_a_health_check_and_runs_streamal_run() -> None:
    steps = _instructions((DEPLOY / "Dockerfile").read_text())
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    final = steps[stages[-1] :]
    users = [rest for word, rest in final if word == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    (health,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "/healthz" in health
    assert dict(final)["ENTRYPOINT"] == '["streamal"]'
    assert dict(final)["CMD"] == '["run"]'
    assert "STREAMAL_HTTP__HOST=0.0.0.0" in " ".join(rest for word, rest in final if word == "ENV")
    installs = [rest for word, rest in steps if word == "RUN" and "pip install" in rest]
    assert any(re.search(r"pip install \.(\s|$)", rest) for rest in installs)
    assert not any(re.search(r"pip install[^&]*torch", rest) for rest in installs)
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"!pyproject.toml", "!README.md", "!streamal/"} <= set(ignore)


# -- Kubernetes ----------------------------------------------------------------------------------------------
def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one resource of that kind in deploy/k8s (kustomization.yaml aside)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, path.name
        doc: dict[str, Any] = docs[0]
        for key in ("apiVersion", "kind", "metadata"):
            assert key in doc, f"{path.name}: no {key}"
        assert doc["metadata"]["name"], path.name
        assert doc["kind"] not in out, f"two {doc['kind']}s"
        out[doc["kind"]] = doc
    return out


def _pod(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = resources["StatefulSet"]["spec"]["template"]
    return pod


def _container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(resources)["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _config(resources: dict[str, dict[str, Any]], tmp_path: Path) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(resources["ConfigMap"]["data"]["config.yaml"])
    env = {
        e["name"]: "from-a-secret"
        for e in _container(resources)["env"]
        if e["name"] != "STREAMAL_CONFIG" and e["name"].startswith("STREAMAL_")
    }
    return load_settings(path, env=env)


def test_the_kustomization_lists_every_manifest_and_every_manifest_parses() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = set(manifests())
    assert {
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
    } == kinds


def test_the_service_reads_its_config_by_reference_and_its_secrets_from_a_secret(tmp_path: Path) -> None:
    resources = manifests()
    container = _container(resources)
    settings = _config(resources, tmp_path)  # the ConfigMap's file, as the service would load it
    assert settings.http.host == "0.0.0.0"
    env = {e["name"]: e for e in container["env"]}
    config_path = Path(env["STREAMAL_CONFIG"]["value"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(resources)["spec"]["volumes"]}
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == resources["ConfigMap"]["metadata"]["name"]
    assert config_path.parent == Path(mounts[config_volume]["mountPath"])
    assert config_path.name in resources["ConfigMap"]["data"]
    for name in ("STREAMAL_KAFKA__SASL_PASSWORD", "STREAMAL_CHECKPOINT__KEY"):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "streamal-secrets"
    # no secret in the ConfigMap, and none written into the manifest
    text = resources["ConfigMap"]["data"]["config.yaml"]
    assert not re.search(r"^\s*(sasl_password|ssl_key_password|key):", text, re.MULTILINE)
    # the checkpoints live on the pod's volume
    assert settings.checkpoint.dir is not None
    claims = {c["metadata"]["name"] for c in resources["StatefulSet"]["spec"]["volumeClaimTemplates"]}
    data_mounts = [m["mountPath"] for n, m in mounts.items() if n in claims]
    assert any(str(settings.checkpoint.dir).startswith(p) for p in data_mounts)


def test_probes_check_the_loop_for_liveness_and_never_the_broker(tmp_path: Path) -> None:
    resources = manifests()
    container = _container(resources)
    settings = _config(resources, tmp_path)
    (port,) = container["ports"]
    assert port["containerPort"] == settings.http.port
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"]["path"] == path, probe
        assert container[probe]["httpGet"]["port"] == port["name"], probe
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


def test_keda_scales_on_the_lag_of_the_samples_topic_only_never_beyond_one_all_in_one_replica(
    tmp_path: Path,
) -> None:
    resources = manifests()
    settings = _config(resources, tmp_path)
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
    """metadata.name -> resource, of every manifest in deploy/k8s/scale-out."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(SCALE_OUT.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        key = f"{doc['kind']}/{doc['metadata']['name']}"
        assert key not in out, key
        out[key] = doc
    return out


def _role_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_scale_out_kustomization_lists_every_manifest_and_runs_both_roles(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((SCALE_OUT / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in SCALE_OUT.glob("*.yaml")} - {
        "kustomization.yaml"
    }
    resources = scale_out()
    learner = resources["StatefulSet/streamal-learner"]
    scorer = resources["Deployment/streamal-scorer"]
    assert _role_container(learner)["args"] == ["run", "--role", "learner"]
    assert _role_container(scorer)["args"] == ["run", "--role", "scorer"]
    assert learner["spec"]["replicas"] == 2  # one active, one standby
    path = tmp_path / "config.yaml"
    path.write_text(resources["ConfigMap/streamal-config"]["data"]["config.yaml"])
    for workload in (learner, scorer):
        container = _role_container(workload)
        env = {e["name"]: e for e in container["env"]}
        # the roles refuse to start without the key: it must come from the Secret, and not be optional
        key = env["STREAMAL_CHECKPOINT__KEY"]["valueFrom"]["secretKeyRef"]
        assert key["name"] == "streamal-secrets"
        assert not key.get("optional", False)
        assert Path(env["STREAMAL_CONFIG"]["value"]).parent == Path(
            next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
        )
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in workload["spec"]["selector"]["matchLabels"].items())
        # the Service (the alert rules' job) and the disruption budget select both roles
        assert all(labels.get(k) == v for k, v in resources["Service/streamal"]["spec"]["selector"].items())
        pdb = resources["PodDisruptionBudget/streamal"]["spec"]["selector"]["matchLabels"]
        assert all(labels.get(k) == v for k, v in pdb.items())
    settings = load_settings(path, env={"STREAMAL_CHECKPOINT__KEY": "from-a-secret"})
    assert settings.checkpoint.dir is not None


def test_the_learners_share_one_read_write_many_volume_for_their_checkpoints(tmp_path: Path) -> None:
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
    path = tmp_path / "config.yaml"
    path.write_text(resources["ConfigMap/streamal-config"]["data"]["config.yaml"])
    settings = load_settings(path, env={"STREAMAL_CHECKPOINT__KEY": "from-a-secret"})
    assert str(settings.checkpoint.dir).startswith(mounts[volume])
    # scorers keep no checkpoints: no volume but their scratch space
    scorer = resources["Deployment/streamal-scorer"]
    assert all("persistentVolumeClaim" not in v for v in scorer["spec"]["template"]["spec"]["volumes"])


def test_keda_scales_the_scorers_on_the_samples_lag_never_beyond_the_partitions(tmp_path: Path) -> None:
    resources = scale_out()
    path = tmp_path / "config.yaml"
    path.write_text(resources["ConfigMap/streamal-config"]["data"]["config.yaml"])
    settings = load_settings(path, env={"STREAMAL_CHECKPOINT__KEY": "from-a-secret"})
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
    sorted(p for p in [*K8S.glob("*.yaml"), *SCALE_OUT.glob("*.yaml")] if p.name != "kustomization.yaml"),
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
