"""Regenerate the README's configuration and metrics tables from the code (tests/test_docs.py checks them)."""

from __future__ import annotations

import re
from pathlib import Path

from streamal.config import settings_table
from streamal.metrics import metrics_table

README = Path(__file__).resolve().parent.parent / "README.md"


def render(text: str) -> str:
    for marker, table in (("settings-table", settings_table()), ("metrics-table", metrics_table())):
        pattern = re.compile(rf"(<!-- {marker}:start[^\n]*-->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no {marker} markers")
        match = pattern.search(text)
        assert match is not None
        text = text[: match.start()] + f"{match.group(1)}{table}\n{match.group(2)}" + text[match.end() :]
    return text


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
    print(f"updated {README}")
