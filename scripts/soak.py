"""Soak: a million samples through the engine with delayed and missing labels; resident memory must stay flat.

Every structure that grows with the stream is bounded: pending requests (by number and by age), the
memory of answered and expired requests, the kNN window, the policies' windows, the accuracy window.
This drives the same Engine the service runs (no Kafka, so that only our memory is measured), on river's
Shuttle data set cycled with fresh ids, with a clock that advances 1 ms per sample; a quarter of the label
requests are never answered, the rest are answered 2,000 samples later.

    .venv/bin/python scripts/soak.py [--samples 1000000] [--warmup 200000]

It prints resident memory (from /proc/self/status) at the start, after the warm-up and every 100,000
samples, and the ratio end / after warm-up (the target is within 1.20).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections import deque

from streamal.config import load_settings
from streamal.datasets import load
from streamal.messages import Label, Sample
from streamal.service import build_engine


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--delay", type=int, default=2_000, help="samples before a label comes back")
    parser.add_argument("--missing", type=float, default=0.25, help="fraction of requests never answered")
    args = parser.parse_args()

    records = load("shuttle")
    clock = [0.0]
    settings = load_settings(env={"STREAMAL_PENDING__TTL_SECONDS": "60"})  # 60,000 samples at 1 ms each
    engine = build_engine(settings, clock=lambda: clock[0])  # simulated time: 1 ms per sample
    rng = random.Random(0)
    due: deque[tuple[int, Label]] = deque()
    start_rss = rss_mib()
    print(f"start: {start_rss:.1f} MiB", flush=True)
    warm_rss = None
    started = time.perf_counter()
    for offset in range(0, args.samples, args.batch):
        while due and due[0][0] <= offset:
            engine.learn(due.popleft()[1])
        batch = []
        truth = {}
        for i in range(offset, min(offset + args.batch, args.samples)):
            r = records[i % len(records)]
            sample_id = f"s-{i}"
            truth[sample_id] = r.label
            batch.append(Sample(sample_id, r.features))
        clock[0] += len(batch) / 1000.0
        for d in engine.score(batch):
            if d.queried and rng.random() >= args.missing:
                due.append((offset + args.delay, Label(id=d.sample.id, label=truth[d.sample.id])))
        if offset % 10_000 == 0:
            engine.expire()
        done = offset + len(batch)
        if done % 100_000 == 0:
            gc.collect()
            rss = rss_mib()
            if done == args.warmup:
                warm_rss = rss
            print(
                f"{done:>9,} samples: {rss:.1f} MiB  pending {len(engine.pending):,}  "
                f"learned {engine.labels_learned:,}  timed out {engine.pending.timed_out:,}  "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    end_rss = rss_mib()
    print(f"end: {end_rss:.1f} MiB; after warm-up ({args.warmup:,} samples): {warm_rss} MiB")
    if warm_rss:
        print(f"ratio end / after warm-up: {end_rss / warm_rss:.3f}")


if __name__ == "__main__":
    main()
