"""Fixtures shared by the tests that need Kafka: each test session starts its own embedded broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streamal.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker on a free 127.0.0.1 port, stopped (by its PID) after the session."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def prefix() -> str:
    """A unique prefix for topic and group names, so tests sharing the broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:8]}-"
