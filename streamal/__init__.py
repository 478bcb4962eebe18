"""streamal: stream-based active learning as a Kafka microservice."""

from __future__ import annotations

__version__ = "0.1.0"
