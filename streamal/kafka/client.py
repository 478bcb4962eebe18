"""Connection options and topic administration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from streamal.config import KafkaSettings
from streamal.errors import BrokerUnavailableError

log = logging.getLogger(__name__)


def connection_options(kafka: KafkaSettings) -> dict[str, Any]:
    """The keyword arguments every aiokafka client of the service shares (servers and security)."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
            password=kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
        )
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


async def ensure_topics(
    kafka: KafkaSettings,
    names: Iterable[str],
    partitions: int | None = None,
    timeout_seconds: float = 30.0,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(**connection_options(kafka), request_timeout_ms=int(timeout_seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_seconds)
    except (KafkaError, TimeoutError, OSError) as exc:
        await admin.close()
        raise BrokerUnavailableError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc!r}") from exc
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            new = [
                NewTopic(
                    n, partitions or kafka.partitions, kafka.replication_factor, topic_configs=configs or {}
                )
                for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica created them meanwhile
                await admin.create_topics(new)
            log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
