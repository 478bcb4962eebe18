"""The chaos harness in the suite: SIGKILL the service twice mid-stream; nothing is lost or learned twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scripts.chaos import run_chaos
from streamal.datasets import load

pytestmark = pytest.mark.kafka


def test_two_sigkills_lose_nothing_and_learn_every_label_once(tmp_path: Path) -> None:
    records = load("image_segments", limit=1500)
    report = asyncio.run(
        run_chaos(
            records, kills=2, rate=300.0, malformed=12, delay=0.2, seed=7, wait_seconds=90, workdir=tmp_path
        )
    )
    assert report.problems == [], report
    assert report.restarts == 2
    assert report.predicted == report.samples == 1500
    assert report.labels_learned == report.labels_sent > 0
    assert report.label_outcomes["unknown"] == 0
    assert report.dead_lettered >= report.malformed == 12
