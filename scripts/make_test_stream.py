"""Writes tests/data/image_segments_stream.jsonl: a recorded stream for the integration tests.

The first 600 samples of river's ImageSegments (real data, 7 classes) as ``samples`` messages, with 12
malformed messages mixed in at fixed places (bad JSON, a NaN feature, a missing id, wrong types, a tombstone,
invalid UTF-8), in the format ``streamal record`` writes. Run it again to regenerate the file.

    .venv/bin/python scripts/make_test_stream.py [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamal.datasets import load
from streamal.messages import encode
from streamal.replay import RecordedMessage

MALFORMED: list[tuple[bytes | None, str]] = [
    (b"{not json", "invalid_json"),
    (b'{"id": "m-nan", "features": {"x": NaN}}', "non_finite"),
    (b'{"features": {"x": 1.0}}', "invalid_schema"),
    (b'{"id": 42, "features": {"x": 1.0}}', "invalid_schema"),
    (b'{"id": "m-str", "features": {"x": "1.0"}}', "invalid_schema"),
    (b'{"id": "m-bool", "features": {"x": true}}', "invalid_schema"),
    (b'{"id": "m-list", "features": [1, 2, 3]}', "invalid_schema"),
    (b'{"id": "m-inf", "features": {"x": 1e400}}', "non_finite"),
    (b"[1, 2, 3]", "invalid_schema"),
    (None, "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_json"),
    (b'{"id": "", "features": {}}', "invalid_schema"),
]


def main() -> None:
    default = Path(__file__).resolve().parent.parent / "tests" / "data" / "image_segments_stream.jsonl"
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=default, help=f"where to write it (default: {default})")
    out: Path = parser.parse_args().out
    records = load("image_segments", limit=600)
    lines: list[RecordedMessage] = []
    bad = iter(MALFORMED)
    ts = 1_700_000_000_000
    for i, r in enumerate(records):
        lines.append(
            RecordedMessage(
                "samples",
                0,
                len(lines),
                ts + 10 * i,
                r.id.encode(),
                encode({"id": r.id, "features": r.features}),
                [],
            )
        )
        if i % 50 == 25:
            value, _ = next(bad)
            lines.append(RecordedMessage("samples", 0, len(lines), ts + 10 * i + 5, b"bad", value, []))
    out.write_bytes(b"".join(m.to_json() + b"\n" for m in lines))
    print(f"wrote {len(lines)} messages to {out}")


if __name__ == "__main__":
    main()
