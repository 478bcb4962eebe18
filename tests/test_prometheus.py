"""A real Prometheus scrapes a running streamal; PromQL over its HTTP API agrees with what the service did.

Prometheus is Debian's package (``make test`` installs it), started on 127.0.0.1 on a free port with the
scrape configuration and alert rules of deploy/prometheus, scraping every second. The service runs in this
process on the embedded broker; the demo's feeder (deploy/demo/feed.py) sends it a few hundred samples of a
real data set and the oracle answers its label requests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamal.broker import EmbeddedBroker, free_port
from streamal.datasets import load
from streamal.kafka.client import connection_options
from streamal.oracle import OracleStats
from streamal.service import Service
from tests.kafkatools import oracle_for, settings_for
from tests.test_deploy import DEPLOY, concrete, dashboard_exprs, used_series

pytestmark = pytest.mark.kafka

N_SAMPLES = 300


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: `make test` installs it (Debian's prometheus package); "
            "or run `apt-get install prometheus`",
            pytrace=False,
        )
    return binary


def _feeder() -> Any:
    """deploy/demo/feed.py, the compose demo's sample source, as a module."""
    spec = importlib.util.spec_from_file_location("streamal_demo_feed", DEPLOY / "demo" / "feed.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prometheus_config(tmp_path: Path, service_port: int) -> Path:
    """deploy/prometheus/prometheus.yml, scraping the service on 127.0.0.1 every second, with our rules."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(DEPLOY / "prometheus" / rule) for rule in config["rule_files"]]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "streamal"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
    config["scrape_configs"] = [job]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.25)


class _Prometheus:
    """Prometheus' HTTP API, as a test reads it."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session = session
        self.base = base

    async def get(self, path: str, **params: str) -> Any:
        async with self._session.get(
            f"{self.base}{path}", params=params, timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            body = await r.json()
            assert r.status == 200, f"{path} {params}: {r.status} {body}"
            assert body["status"] == "success", body
            return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    async def value(self, promql: str) -> float | None:
        result = await self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    async def ready(self) -> bool:
        try:
            async with self._session.get(f"{self.base}/-/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Stop the Prometheus we started, by its PID."""
    if proc.returncode is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 5)


def test_prometheus_scrapes_the_service_and_promql_agrees_with_what_it_did(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path
) -> None:
    binary = _prometheus_binary()
    feeder = _feeder()
    truth = {r.id: r.label for r in load("phishing", limit=N_SAMPLES)}
    settings = settings_for(broker.bootstrap_servers, prefix)
    options = connection_options(settings.kafka)
    registry = CollectorRegistry()
    stats = OracleStats()
    prometheus_port = free_port()
    log_path = tmp_path / "prometheus.log"
    seen: dict[str, Any] = {}

    def counted(name: str, **labels: str) -> float:
        value = registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def main() -> None:
        service = Service(settings, registry)
        run = asyncio.create_task(service.run())
        stopping = asyncio.Event()
        oracle: asyncio.Task[OracleStats] | None = None
        proc: asyncio.subprocess.Process | None = None
        try:

            async def service_ready() -> bool:
                assert not run.done(), "the service stopped"
                return service.ready()

            await _until(service_ready, 30, "the service to be ready")
            assert service.http_port is not None
            config = _prometheus_config(tmp_path, service.http_port)
            with log_path.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--storage.tsdb.retention.time=1h",
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
            async with aiohttp.ClientSession() as session:
                prom = _Prometheus(session, f"http://127.0.0.1:{prometheus_port}")

                async def prometheus_ready() -> bool:
                    assert proc is not None
                    assert proc.returncode is None, "prometheus exited:\n" + log_path.read_text()[-3000:]
                    return await prom.ready()

                await _until(prometheus_ready, 30, "Prometheus to be ready")

                async def scraped() -> bool:
                    return await prom.value('up{job="streamal"}') == 1.0

                await _until(scraped, 30, "the first scrape of the service")

                answering = asyncio.Event()
                oracle = oracle_for(options, prefix, truth, stopping, stats, ready=answering)
                # the model learns while the samples stream in (and its accuracy is not the cold start's)
                await asyncio.wait_for(answering.wait(), 30)
                # over about three seconds, so that Prometheus scrapes the service while it works
                sent = await feeder.feed(
                    broker.bootstrap_servers, "phishing", 100.0, f"{prefix}samples", limit=N_SAMPLES
                )
                assert sent == N_SAMPLES

                async def settled() -> bool:
                    asked = counted("streamal_label_requests_total")
                    return (
                        counted("streamal_samples_total") == N_SAMPLES
                        and asked > 0
                        and counted("streamal_labels_total", outcome="applied") == asked
                    )

                await _until(settled, 60, "every sample scored and every label request answered")
                expected = {
                    'streamal_samples_total{job="streamal"}': float(N_SAMPLES),
                    'streamal_label_requests_total{job="streamal"}': counted("streamal_label_requests_total"),
                    'streamal_labels_total{job="streamal", outcome="applied"}': counted(
                        "streamal_labels_total", outcome="applied"
                    ),
                    'sum(streamal_labels_total{job="streamal"})': float(stats.answered),
                    'streamal_model_version{job="streamal"}': counted("streamal_model_version"),
                    'streamal_predictions_total{job="streamal"}': counted("streamal_predictions_total"),
                    'streamal_processing_seconds_count{job="streamal", stage="score"}': counted(
                        "streamal_processing_seconds_count", stage="score"
                    ),
                    'streamal_budget_ratio{job="streamal"}': settings.policy.budget,
                    'streamal_decision_seconds_total{job="streamal"}': counted(
                        "streamal_decision_seconds_total"
                    ),
                }

                async def agrees() -> bool:
                    got = {q: await prom.value(q) for q in expected}
                    seen["promql"] = got
                    return got == expected

                await _until(agrees, 30, "PromQL to agree with the service's own counts")

                # the dashboard's queries run, and the main panels have data
                for title, expr in dashboard_exprs():
                    if expr.startswith("label_values("):
                        continue
                    seen[title + ": " + expr] = await prom.query(concrete(expr, rate_interval="1m"))
                median = await prom.query(
                    "histogram_quantile(0.5, sum by (stage, le) "
                    '(rate(streamal_processing_seconds_bucket{job="streamal"}[1m])))'
                )
                by_stage = {r["metric"]["stage"]: float(r["value"][1]) for r in median}
                assert 0 < by_stage["score"] < 1, by_stage
                throughput = await prom.value('sum(rate(streamal_samples_total{job="streamal"}[1m]))')
                assert throughput is not None
                assert throughput > 0
                overhead = await prom.value(
                    'sum(rate(streamal_decision_seconds_total{job="streamal"}[1m])) '
                    '/ sum(rate(streamal_samples_total{job="streamal"}[1m]))'
                )
                # the strategy and the policy's seconds per sample, as the dashboard shows them
                assert overhead is not None
                assert overhead > 0
                lag = await prom.query('sum by (topic) (streamal_consumer_lag_messages{job="streamal"})')
                assert f"{prefix}samples" in {r["metric"]["topic"] for r in lag}
                accuracy = await prom.value('streamal_prequential_accuracy_ratio{job="streamal"}')
                assert accuracy is not None
                assert 0 < accuracy <= 1

                # every series the rules and the dashboard use is there (labelled ones exist from the start)
                names = set(await prom.get("/api/v1/label/__name__/values"))
                assert used_series() - names == set()

                # our alert rules loaded, and evaluate without an error on the real series
                async def evaluated() -> bool:
                    groups = (await prom.get("/api/v1/rules"))["groups"]
                    seen["rules"] = groups
                    rules = [rule for group in groups for rule in group["rules"]]
                    return bool(rules) and all(rule["health"] != "unknown" for rule in rules)

                await _until(evaluated, 30, "every alert rule to be evaluated")
                rules = [rule for group in seen["rules"] for rule in group["rules"]]
                assert {g["name"] for g in seen["rules"]} == {
                    "streamal.availability",
                    "streamal.consumer",
                    "streamal.learning",
                }
                assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules] == [
                    (r["name"], "ok", "") for r in rules
                ]
                # a healthy run for a few seconds: nothing is firing
                firing = [a for a in (await prom.get("/api/v1/alerts"))["alerts"] if a["state"] == "firing"]
                assert firing == []
        finally:
            if proc is not None:
                await _stop(proc)
            stopping.set()
            if oracle is not None:
                await asyncio.wait_for(oracle, 15)
            service.stop()
            assert await asyncio.wait_for(run, 15) == 0

    asyncio.run(main())
    assert all(math.isfinite(v) for v in seen["promql"].values() if v is not None)
