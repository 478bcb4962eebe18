"""Prometheus metrics, on a registry the caller passes in (never the global one).

Names follow Prometheus' rules: base units, ``_total`` for counters, label values from small fixed sets.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from streamal.errors import DecodeError
from streamal.pending import LabelOutcome

STAGES = ("decode", "score", "decide", "produce", "learn", "commit")
#: the kinds of ``streamal_errors_total``, every one exported at 0 from the start
ERROR_KINDS = ("produce", "consume", "commit", "checkpoint", "snapshot", "model")

_LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # process_* (memory, CPU, start time) and python_info, on the same injected registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.consumed = Counter(
            "streamal_consumed_records", "Records read, by input topic.", ["topic"], registry=registry
        )
        self.samples = Counter(
            "streamal_samples",
            "Samples scored, counted once the broker acknowledged their predictions.",
            registry=registry,
        )
        self.predictions = Counter(
            "streamal_predictions",
            "Predictions sent, counted once the broker acknowledged them (their offsets are then committed).",
            registry=registry,
        )
        self.label_requests = Counter(
            "streamal_label_requests",
            "Label requests made, counted once the broker acknowledged them.",
            registry=registry,
        )
        self.labels = Counter(
            "streamal_labels", "Labels received, by outcome.", ["outcome"], registry=registry
        )
        self.dead_letters = Counter(
            "streamal_dead_letters",
            "Messages sent to the dead-letter topic (malformed, too large, or failing the model), by reason.",
            ["reason"],
            registry=registry,
        )
        self.budget = Gauge("streamal_budget_ratio", "The configured labelling budget.", registry=registry)
        self.budget_spent = Gauge(
            "streamal_budget_spent_ratio",
            "Fraction of recent samples asked for (the policy's estimate).",
            registry=registry,
        )
        self.accuracy = Gauge(
            "streamal_prequential_accuracy_ratio",
            "Accuracy of predictions made before learning, recent labels.",
            registry=registry,
        )
        self.model_version = Gauge(
            "streamal_model_version", "Version of the model (labels learned).", registry=registry
        )
        self.model_latest_version = Gauge(
            "streamal_model_latest_version",
            "Newest model version seen on the model topic (scorers).",
            registry=registry,
        )
        self.info = Gauge(
            "streamal_info",
            "1, labelled with the process's role (all, scorer, learner).",
            ["role"],
            registry=registry,
        )
        self.rebalances = Counter("streamal_rebalances", "Consumer group rebalances.", registry=registry)
        self.rebalance_seconds = Histogram(
            "streamal_rebalance_seconds",
            "From partitions revoked to partitions assigned.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.model_updated = Gauge(
            "streamal_model_last_update_timestamp_seconds", "When the model last learned.", registry=registry
        )
        self.pending = Gauge(
            "streamal_pending_requests", "Label requests awaiting their label.", registry=registry
        )
        self.pending_dropped = Counter(
            "streamal_pending_dropped",
            "Label requests dropped unanswered, by cause.",
            ["cause"],
            registry=registry,
        )
        self.processing = Histogram(
            "streamal_processing_seconds",
            "Time spent per batch, by stage.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.decision_seconds = Counter(
            "streamal_decision_seconds",
            "Seconds spent in the query strategy and the policy, apart from the model: the per-decision "
            "overhead (its rate over streamal_samples_total's is the overhead per sample).",
            registry=registry,
        )
        self.batch_size = Histogram(
            "streamal_batch_size_messages",
            "Records per fetched batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.lag = Gauge(
            "streamal_consumer_lag_messages",
            "Messages not yet consumed, by partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.errors = Counter(
            "streamal_errors",
            "Errors met by the service loop, by kind: produce (a delivery failed), consume (reading the "
            "input failed), commit, checkpoint, snapshot (publishing the model), model (the model raised).",
            ["kind"],
            registry=registry,
        )
        self.broker_up = Gauge("streamal_broker_up", "1 while the Kafka cluster answers.", registry=registry)
        self.ready = Gauge(
            "streamal_ready",
            "1 when partitions are assigned, the model is loaded and the broker answers.",
            registry=registry,
        )
        # every label value exists from the start, so rates and alerts see zeros, not absent series
        for outcome in LabelOutcome:
            self.labels.labels(outcome.value)
        for reason in sorted(DecodeError.REASONS):
            self.dead_letters.labels(reason)
        for stage in STAGES:
            self.processing.labels(stage)
        for cause in ("evicted", "timed_out"):
            self.pending_dropped.labels(cause)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)


def metrics_table() -> str:
    """The metrics table of the README, generated from the metrics themselves (a test keeps them equal)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    metrics = Metrics(CollectorRegistry())
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name = metric._name + ("_total" if metric._type == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in metric._labelnames) or "—"
        rows.append(f"| `{name}` | {metric._type} | {labels} | {metric._documentation} |")
    return "\n".join(rows)
