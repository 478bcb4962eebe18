"""Scale-out: three scorers and one learner; one scorer is killed mid-stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scripts.bench_scale import run_cluster
from streamal.datasets import load

pytestmark = pytest.mark.kafka


def test_three_scorers_one_learner_one_scorer_killed(tmp_path: Path) -> None:
    records = load("image_segments", limit=1500)
    report = asyncio.run(
        run_cluster(
            records, scorers=3, kill_one_at=0.3, rate=250.0, delay=0.2, wait_seconds=120, workdir=tmp_path
        )
    )
    assert report.killed == 1
    assert report.predicted == report.samples == 1500, report
    assert report.labels_sent > 0
    assert report.labels_learned == report.labels_sent, report
    assert len(report.scorer_versions) == 2
    assert report.scorer_versions == [report.learner_version] * 2, report
    assert report.learner_version == report.labels_learned
