"""Acceptance check: a labelled stream of yours through `streamal run`, driven by an independent client.

It starts the embedded broker and `streamal run` (defaults, except bootstrap servers, budget, HTTP port,
checkpoint dir and, with ``--model``, ``--model-params``, ``--strategy`` and ``--policy``,
``STREAMAL_MODEL__NAME``, ``__PARAMS``, ``STREAMAL_STRATEGY__NAME`` and ``STREAMAL_POLICY__NAME``),
then, with confluent-kafka (librdkafka, not our aiokafka code):

* produces every row of ``--data`` to ``samples`` in file order, with ``--malformed`` broken samples and
  broken labels mixed in;
* answers each label request from the file's ground truth after ``--delay`` seconds, as an annotator;
* reads ``predictions`` and ``dead-letters`` back.

It prints: predictions received per sample, the label-request rate against the budget, prequential
accuracy over the whole stream and over its last third (predictions against the file's labels, in file
order), ``labels_learned`` from ``/v1/model`` against the labels sent, dead letters against the malformed
messages mixed in, and the service's per-decision overhead (``streamal_decision_seconds_total`` over
``streamal_samples_total``, scraped from ``/metrics``).

    .venv/bin/python scripts/verify_stream.py --data my_stream.csv --target label [--budget 0.1] \\
        [--model torch_mlp]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from streamal.broker import EmbeddedBroker, free_port
from streamal.datasets import load

BAD_SAMPLES = [
    b"{oops",
    b'{"id": "bad-nan", "features": {"x": NaN}}',
    b'{"features": {"x": 1}}',
    b'{"id": "bad-str", "features": {"x": "one"}}',
    b"\xff\xfe",
    b'{"id": 7, "features": {}}',
]
BAD_LABELS = [b"{oops", b'{"id": "x"}', b'{"id": "x", "label": 1.5}', b'{"id": "x", "label": null}']


def _scrape(url: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition, by name."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(_get(url))
        for sample in family.samples
        if not sample.labels
    }


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own 127.0.0.1 endpoint
        return json.load(r) if r.headers.get_content_type() == "application/json" else r.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", default="label")
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds before a label is sent back")
    parser.add_argument("--rate", type=float, default=500.0, help="samples per second produced")
    parser.add_argument("--malformed", type=int, default=20, help="broken samples and labels mixed in")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--model", help="the service's model.name (STREAMAL_MODEL__NAME; default: knn)")
    parser.add_argument("--model-params", help="the model's parameters as JSON, e.g. '{\"steps\": 8}'")
    parser.add_argument("--strategy", help="the service's strategy.name (default: least_confidence)")
    parser.add_argument("--policy", help="the service's policy.name (default: biqf)")
    args = parser.parse_args()

    records = load(args.data, target=args.target)
    truth = {r.id: r.label for r in records}
    order = {r.id: i for i, r in enumerate(records)}
    rng = random.Random(0)
    bad_positions = set(rng.sample(range(len(records)), min(args.malformed, len(records))))
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAL_")}
        env.update(
            {
                "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": bs,
                "STREAMAL_POLICY__BUDGET": str(args.budget),
                "STREAMAL_HTTP__PORT": str(port),
                "STREAMAL_CHECKPOINT__DIR": tempfile.mkdtemp(prefix="streamal-verify-"),
            }
        )
        if args.model:
            env["STREAMAL_MODEL__NAME"] = args.model
        if args.model_params:
            env["STREAMAL_MODEL__PARAMS"] = args.model_params
        if args.strategy:
            env["STREAMAL_STRATEGY__NAME"] = args.strategy
        if args.policy:
            env["STREAMAL_POLICY__NAME"] = args.policy
        log = tempfile.NamedTemporaryFile(prefix="streamal-verify-", suffix=".log", delete=False)  # noqa: SIM115
        service = subprocess.Popen([sys.executable, "-m", "streamal", "run"], env=env, stdout=log, stderr=log)
        producer = Producer({"bootstrap.servers": bs, "linger.ms": 5})
        requests = Consumer(
            {"bootstrap.servers": bs, "group.id": "verify-annotator", "auto.offset.reset": "earliest"}
        )
        outputs = Consumer(
            {"bootstrap.servers": bs, "group.id": "verify-reader", "auto.offset.reset": "earliest"}
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or service.poll() is not None:
                    print(f"the service did not become ready; log: {log.name}")
                    return 1
                time.sleep(0.2)
            requests.subscribe(["label-requests"])
            outputs.subscribe(["predictions", "dead-letters"])
            # the annotator must be in its group before the first request, or every label comes late
            while not requests.assignment() or not outputs.assignment():
                requests.consume(num_messages=1, timeout=0.1)
                outputs.consume(num_messages=1, timeout=0.1)
                if time.monotonic() > deadline + 60:
                    print("the test clients did not join their groups")
                    return 1
            predictions: dict[str, int] = {}
            hits: dict[int, bool] = {}
            dead: list[dict[str, Any]] = []
            due: list[tuple[float, str]] = []
            labels_sent = bad_sent = 0
            started = time.monotonic()
            i = 0
            end = time.monotonic() + args.timeout
            while time.monotonic() < end:
                # produce at the given rate
                target = min(len(records), int((time.monotonic() - started) * args.rate) + 1)
                while i < target:
                    r = records[i]
                    producer.produce(
                        "samples", key=r.id, value=json.dumps({"id": r.id, "features": r.features})
                    )
                    if i in bad_positions:
                        producer.produce("samples", key="bad", value=BAD_SAMPLES[bad_sent % len(BAD_SAMPLES)])
                        producer.produce("labels", key="bad", value=BAD_LABELS[bad_sent % len(BAD_LABELS)])
                        bad_sent += 1
                    i += 1
                producer.poll(0)
                for msg in requests.consume(num_messages=500, timeout=0.05):
                    if msg.error() is None:
                        sample_id = json.loads(msg.value() or b"{}")["id"]
                        due.append((time.monotonic() + args.delay, sample_id))
                now = time.monotonic()
                while due and due[0][0] <= now:
                    _, sample_id = due.pop(0)
                    producer.produce(
                        "labels",
                        key=sample_id,
                        value=json.dumps({"id": sample_id, "label": truth[sample_id]}),
                    )
                    labels_sent += 1
                for msg in outputs.consume(num_messages=2000, timeout=0.05):
                    if msg.error() is not None:
                        continue
                    if msg.topic() == "predictions":
                        p = json.loads(msg.value() or b"{}")
                        predictions[p["id"]] = predictions.get(p["id"], 0) + 1
                        hits[order[p["id"]]] = p["prediction"] == truth[p["id"]]
                    else:
                        dead.append(dict(msg.headers() or []))
                if i == len(records) and len(predictions) == len(records) and not due:
                    model = _get(f"http://127.0.0.1:{port}/v1/model")
                    if (
                        model["labels_learned"] + model["outcomes"]["duplicate"] >= labels_sent
                        and len(dead) >= 2 * bad_sent
                    ):
                        break
            producer.flush(10)
            time.sleep(1.0)
            model = _get(f"http://127.0.0.1:{port}/v1/model")
            scraped = _scrape(f"http://127.0.0.1:{port}/metrics")
        finally:
            requests.close()
            outputs.close()
            service.terminate()
            code = service.wait(timeout=15)
            log.close()
    n = len(records)
    third = [hits[j] for j in range(2 * n // 3, n) if j in hits]
    asked = model["label_requests"]
    print(
        f"stream: {args.data} ({n} samples, {len(set(truth.values()))} classes), budget {args.budget}, "
        f"model {model['model']}, strategy {model.get('strategy')}, policy {model['policy']['name']}"
    )
    print(
        f"samples with a prediction: {len(predictions)} of {n} "
        f"(repeated predictions: {sum(c - 1 for c in predictions.values())})"
    )
    print(
        f"label requests: {asked} = {asked / n:.4f} of the samples = {asked / n / args.budget:.2f} x budget"
    )
    print(
        f"prequential accuracy: all {sum(hits.values()) / len(hits):.4f}, "
        f"last third {sum(third) / len(third):.4f}"
    )
    print(
        f"labels sent back: {labels_sent}; labels_learned in /v1/model: {model['labels_learned']} "
        f"(outcomes {model['outcomes']})"
    )
    with_error = sum(1 for h in dead if h.get("error"))
    print(
        f"malformed mixed in: {bad_sent} samples + {bad_sent} labels; dead letters: {len(dead)} "
        f"({with_error} with an error header)"
    )
    scored, deciding = (
        scraped.get("streamal_samples_total", 0.0),
        scraped.get("streamal_decision_seconds_total"),
    )
    if scored and deciding is not None:
        print(
            f"per-decision overhead in the service (strategy + policy, from /metrics): "
            f"{deciding / scored * 1e6:.2f} µs per sample over {scored:.0f} samples"
        )
    print(f"service exit code after SIGTERM: {code}; log: {log.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
