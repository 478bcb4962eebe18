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


def test_sigkills_before_the_first_periodic_checkpoint_lose_nothing(tmp_path: Path) -> None:
    """With the production intervals (30 s, 1,000 labels) no periodic checkpoint is written in this 3 s
    stream: every restart begins from the checkpoint of where the first start began, and reads it again."""
    records = load("image_segments", limit=900)
    report = asyncio.run(
        run_chaos(
            records,
            kills=2,
            rate=300.0,
            malformed=8,
            delay=0.2,
            seed=1,
            wait_seconds=90,
            workdir=tmp_path,
            checkpoint_seconds=30.0,
            checkpoint_labels=1000,
        )
    )
    assert report.problems == [], report
    assert report.restarts == 2
    assert report.predicted == report.samples == 900
    assert report.labels_learned == report.labels_sent > 0
    assert report.label_outcomes["unknown"] == 0
