"""``streamal demo``: the whole loop on one machine, live.

It starts the embedded broker, runs ``streamal run`` as a child process, replays a real data set into
``samples``, answers label requests from the data set's ground truth after a delay (the oracle), and shows
progress until every sample is predicted and every request answered. It ends with a summary, the same
stream under random sampling at the same budget (offline, same engine) for comparison, and a learning-curve
PNG. Every process it started is stopped before it returns.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamal.broker import EmbeddedBroker, free_port
from streamal.config import KafkaSettings
from streamal.datasets import Record, load
from streamal.evaluation.plots import learning_curve_png
from streamal.evaluation.simulate import simulate
from streamal.http import answers_ok, fetch_json
from streamal.kafka.client import connection_options, ensure_topics
from streamal.messages import encode
from streamal.oracle import OracleStats, run_oracle

TOPICS = ["samples", "predictions", "label-requests", "labels", "dead-letters"]


class _Progress:
    def __init__(self, n: int, budget: float) -> None:
        self.n = n
        self.budget = budget
        self.sent = 0
        self.hits: dict[int, bool] = {}
        self.model: dict[str, Any] = {}
        self.oracle = OracleStats()
        self.started = time.monotonic()

    def table(self) -> Table:
        t = Table(title="streamal demo", show_header=False, min_width=60)
        predicted = len(self.hits)
        acc = sum(self.hits.values()) / predicted if predicted else 0.0
        recent = [self.hits[i] for i in sorted(self.hits)[-300:]]
        t.add_row("samples sent / predicted", f"{self.sent} / {predicted} of {self.n}")
        t.add_row(
            "labels asked / answered / learned",
            f"{self.model.get('label_requests', 0)} / {self.oracle.answered} / "
            f"{self.model.get('labels_learned', 0)}",
        )
        t.add_row("budget spent", f"{self.model.get('budget_spent', 0.0):.3f} of {self.budget}")
        t.add_row(
            "accuracy (all / last 300 predicted)",
            f"{acc:.3f} / {sum(recent) / len(recent) if recent else 0.0:.3f}",
        )
        t.add_row("model version", str(self.model.get("version", 0)))
        t.add_row("elapsed", f"{time.monotonic() - self.started:.0f} s")
        return t


async def _produce(options: dict[str, Any], records: list[Record], rate: float, progress: _Progress) -> None:
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        started = time.monotonic()
        for i, record in enumerate(records):
            due = started + i / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await producer.send(
                "samples", encode({"id": record.id, "features": record.features}), key=record.id.encode()
            )
            progress.sent = i + 1
        await producer.flush()
    finally:
        await producer.stop()


async def _watch(
    options: dict[str, Any], index: dict[str, tuple[int, Any]], progress: _Progress, stopping: asyncio.Event
) -> None:
    consumer = AIOKafkaConsumer("predictions", **options, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    msg = orjson.loads(r.value)
                    if msg["id"] in index:
                        i, truth = index[msg["id"]]
                        progress.hits[i] = msg["prediction"] == truth
    finally:
        await consumer.stop()


async def _demo(
    broker: EmbeddedBroker,
    records: list[Record],
    budget: float,
    rate: float,
    delay: float,
    out: Path,
    max_seconds: float,
    console: Console,
) -> dict[str, Any]:
    options = connection_options(KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    await ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers), TOPICS, partitions=3)
    http_port = free_port()
    env = {
        **os.environ,
        "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "STREAMAL_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "STREAMAL_POLICY__BUDGET": str(budget),
        "STREAMAL_HTTP__PORT": str(http_port),
        "STREAMAL_CHECKPOINT__DIR": tempfile.mkdtemp(prefix="streamal-demo-"),
    }
    log_path = out / "service.log"
    with log_path.open("wb") as log:
        service = subprocess.Popen(  # noqa: ASYNC220 - started once; asyncio's subprocess API gains nothing
            [sys.executable, "-m", "streamal", "run"],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    progress = _Progress(len(records), budget)
    index = {r.id: (i, r.label) for i, r in enumerate(records)}
    stopping = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    try:
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        while fetch_json(f"{url}/v1/model") is None or not answers_ok(f"{url}/readyz"):
            if service.poll() is not None:
                raise RuntimeError(f"the service exited with {service.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready in 60 s; see {log_path}")
            await asyncio.sleep(0.2)
        truth = {r.id: r.label for r in records}
        oracle_ready = asyncio.Event()
        tasks = [
            asyncio.create_task(
                run_oracle(
                    options, truth, stopping, delay_seconds=delay, stats=progress.oracle, ready=oracle_ready
                )
            ),
            asyncio.create_task(_watch(options, index, progress, stopping)),
        ]
        await asyncio.wait_for(oracle_ready.wait(), 60)
        tasks.append(asyncio.create_task(_produce(options, records, rate, progress)))
        end = time.monotonic() + max_seconds
        with Live(progress.table(), console=console, refresh_per_second=4) as live:
            while time.monotonic() < end:
                await asyncio.sleep(0.25)
                progress.model = fetch_json(f"{url}/v1/model") or progress.model
                live.update(progress.table())
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                done = len(progress.hits) == len(records)
                asked = progress.model.get("label_requests", -1)
                if (
                    done
                    and progress.model.get("labels_learned", -2) >= asked
                    and progress.oracle.answered >= asked
                ):
                    break
    finally:
        stopping.set()
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "hits": [progress.hits.get(i, False) for i in range(len(records))],
        "model": progress.model,
        "oracle": progress.oracle,
        "complete": len(progress.hits) == len(records),
        "exit_code": service.returncode,
    }


def run_demo(
    data: str = "image_segments",
    budget: float = 0.1,
    rate: float = 100.0,
    delay: float = 1.0,
    out: Path = Path("demo-output"),
    max_seconds: float = 150.0,
) -> int:
    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    records = load(data)
    console.print(
        f"[bold]streamal demo[/]: {data}, {len(records)} samples at {rate:g}/s, budget {budget}, "
        f"labels answered after {delay:g} s"
    )
    with EmbeddedBroker() as broker:
        console.print(f"embedded broker (Tansu, pid {broker.pid}) on {broker.bootstrap_servers}")
        result = asyncio.run(_demo(broker, records, budget, rate, delay, out, max_seconds, console))
    hits: list[bool] = result["hits"]
    model = result["model"]
    n = len(hits)
    accuracy = sum(hits) / n if n else 0.0
    baseline = simulate(
        records,
        strategy="random",
        policy="threshold",
        budget=budget,
        seed=0,
        delay=int(delay * rate),
        policy_params={"threshold": 1.0 - budget},
    )
    summary = {
        "data": data,
        "samples": n,
        "predicted": result["complete"],
        "accuracy": accuracy,
        "labels_used": model.get("labels_learned", 0),
        "label_requests": model.get("label_requests", 0),
        "budget": budget,
        "strategy": model.get("strategy"),
        "policy": (model.get("policy") or {}).get("name"),
        "model": model.get("model"),
        "random_sampling": {"accuracy": baseline.accuracy, "labels_used": baseline.labels_used},
        "service_exit_code": result["exit_code"],
    }
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    plot = learning_curve_png(
        out / "learning_curve.png",
        {f"streamal ({summary['strategy']} / {summary['policy']})": hits, "random sampling": baseline.hits},
        title=f"{data}: prequential accuracy at budget {budget}",
    )
    table = Table(title="summary", show_header=True)
    table.add_column("")
    table.add_column("accuracy")
    table.add_column("labels used")
    table.add_row(
        f"streamal: {summary['strategy']} / {summary['policy']}",
        f"{accuracy:.3f}",
        f"{summary['labels_used']} of {n}",
    )
    table.add_row(
        "random sampling, same budget", f"{baseline.accuracy:.3f}", f"{baseline.labels_used} of {n}"
    )
    console.print(table)
    console.print(
        f"learning curve: {plot}\nsummary: {out / 'summary.json'}\nservice log: {out / 'service.log'}"
    )
    ok = result["complete"] and result["exit_code"] == 0
    if not ok:
        console.print("[red]the demo did not finish cleanly[/]")
    return 0 if ok else 1
