"""The README's tables are generated from the code; this fails when the two drift apart."""

from __future__ import annotations

from pathlib import Path

from scripts.update_readme import render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tables_match_the_code() -> None:
    text = README.read_text()
    assert render(text) == text, (
        "the README's tables are stale: run .venv/bin/python scripts/update_readme.py"
    )


def test_readme_shows_the_two_commands_first() -> None:
    text = README.read_text()
    first_block = text.split("```")[1]
    assert first_block.strip().splitlines()[:2] == [
        line for line in first_block.strip().splitlines() if line.startswith("make ")
    ]
    assert "make demo" in first_block
    assert "make test" in first_block
