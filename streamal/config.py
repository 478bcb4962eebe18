"""The settings root: one pydantic-settings object, from a YAML file and ``STREAMAL_`` environment variables.

Environment variables win over the file; nested names use ``__``: ``STREAMAL_POLICY__BUDGET=0.05``.
A wrong setting fails at start with a message that names it in both spellings.

>>> s = load_settings(env={"STREAMAL_POLICY__BUDGET": "0.05", "STREAMAL_TOPICS__SAMPLES": "in"})
>>> s.policy.budget, s.topics.samples, s.topics.labels
(0.05, 'in', 'labels')
>>> load_settings(env={"STREAMAL_POLICY__BUDGET": "2"})
Traceback (most recent call last):
...
streamal.errors.ConfigError: STREAMAL_POLICY__BUDGET (policy.budget): Input should be less than or equal to 1
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from streamal.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = Field("localhost:9092", description="Comma-separated host:port list of brokers.")
    client_id: str = Field("streamal", description="Client id the broker sees in its logs and quotas.")
    group_id: str = Field("streamal", description="Consumer group of the service.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol)."
    )
    sasl_username: str | None = Field(None, description="SASL user.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (a secret: never logged).")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of the client key, if any (secret)."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts reading."
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        le=300_000,
        description="Consumer group session timeout (a dead member is noticed after it).",
    )
    heartbeat_interval_ms: int = Field(
        1_000, ge=100, le=60_000, description="Consumer group heartbeat interval."
    )
    rebalance_timeout_ms: int = Field(
        30_000,
        ge=1_000,
        le=600_000,
        description="How long the group coordinator waits for members to rejoin in a rebalance.",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1_000,
        le=3_600_000,
        description="A member that has not polled for this long leaves its group (the service polls between "
        "batches, and while it waits for partitions).",
    )
    max_batch_size: int = Field(2_000, ge=1, le=100_000, description="Most records scored in one batch.")
    partitions: int = Field(3, ge=1, le=10_000, description="Partitions of the topics the service creates.")
    replication_factor: int = Field(
        1, ge=1, le=16, description="Replication of the topics the service creates."
    )
    linger_ms: int = Field(5, ge=0, le=10_000, description="Producer batching delay.")
    group_instance_id: str | None = Field(
        None,
        description="Static membership (KIP-345): a stable name per replica avoids rebalances on restarts.",
    )
    max_outage_seconds: float = Field(
        300.0, ge=0, description="Exit non-zero after this long without a broker (0: never), for a restart."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self


class TopicSettings(_Section):
    samples: str = Field("samples", min_length=1, description="Samples to score (in).")
    predictions: str = Field("predictions", min_length=1, description="A prediction for every sample (out).")
    label_requests: str = Field(
        "label-requests", min_length=1, description="Samples chosen for labelling (out)."
    )
    labels: str = Field("labels", min_length=1, description="Labels coming back (in).")
    dead_letters: str = Field(
        "dead-letters", min_length=1, description="Malformed input, with the reason (out)."
    )
    models: str = Field(
        "streamal-models", min_length=1, description="Signed model snapshots, learner to scorers (scale-out)."
    )
    create_missing: bool = Field(True, description="Create missing topics at start.")


class ModelSettings(_Section):
    name: str = Field(
        "knn",
        description="knn, committee, gaussian_nb, softmax, hoeffding_tree, torch_mlp, torch_mc_dropout, "
        "torch_ensemble (the torch ones need `pip install 'streamal[torch]'`), or river:<module>.<Class>.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the model.")


class StrategySettings(_Section):
    name: str = Field("least_confidence", description="Query strategy: one of the strategies listed below.")
    seed: int | None = Field(0, description="Seed of the strategy's random numbers (null: from the OS).")
    selector: Literal["kcenter", "badge"] | None = Field(
        None,
        description="Windowed batch selection for bursty streams: collect `window` samples, ask for "
        "round(budget x window) of them chosen by k-center greedy or BADGE (none: decide each sample).",
    )
    window: int = Field(100, ge=2, le=100_000, description="Samples per window of the selector.")


class PolicySettings(_Section):
    name: str = Field("biqf", description="Budget policy: one of the policies listed below.")
    budget: float = Field(0.1, gt=0.0, le=1.0, description="Largest fraction of samples sent for labelling.")
    seed: int | None = Field(0, description="Seed of the policy's random numbers (null: from the OS).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Other arguments, e.g. threshold, window."
    )


class PendingSettings(_Section):
    max_size: int = Field(100_000, ge=1, description="Most label requests awaiting a label at once.")
    ttl_seconds: float = Field(86_400.0, gt=0, description="How long a label request waits for its label.")


class CheckpointSettings(_Section):
    dir: Path | None = Field(None, description="Where checkpoints are written (none: no checkpoints).")
    interval_seconds: float = Field(30.0, gt=0, description="Longest time between checkpoints.")
    every_labels: int = Field(1000, ge=1, description="Also checkpoint after this many labels learned.")
    key: SecretStr | None = Field(
        None, description="HMAC key that signs checkpoints and model snapshots (none: a key file in dir)."
    )
    publish_interval_seconds: float = Field(
        1.0, gt=0, description="Learner: least time between two model snapshots published."
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # an empty value (compose's ${VAR:-}) would be Path(""), the working directory, without a word
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; leave it out for no checkpoints, or give a directory")
        return value


class HttpSettings(_Section):
    host: str = Field("127.0.0.1", description="Address of /metrics, /healthz, /readyz and /v1/model.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP endpoints (0: any free port).")


class Settings(BaseSettings):
    """Everything the service can be told, in one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMAL_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    model: ModelSettings = ModelSettings()
    strategy: StrategySettings = StrategySettings()
    policy: PolicySettings = PolicySettings()
    pending: PendingSettings = PendingSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    http: HttpSettings = HttpSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = settings_cls.model_config.get("streamal_env")
        if isinstance(env, dict):
            env_settings = _MappingEnvSource(settings_cls, env)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


class _MappingEnvSource(EnvSettingsSource):
    """Environment variables from a given mapping instead of ``os.environ`` (for tests and embedding)."""

    def __init__(self, settings_cls: type[BaseSettings], mapping: Mapping[str, str]) -> None:
        self._mapping = dict(mapping)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(k if self.case_sensitive else k.lower()): v for k, v in self._mapping.items()}


def _name(loc: tuple[int | str, ...]) -> str:
    dotted = ".".join(str(p) for p in loc)
    env = "STREAMAL_" + "__".join(str(p).upper() for p in loc)
    return f"{env} ({dotted})"


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``path`` (YAML) and the environment (``env``, default ``os.environ``)."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}")
    environ = os.environ if env is None else env
    known = {name.upper() for name in Settings.model_fields} | {"CONFIG"}
    for key in environ:
        if key.upper().startswith("STREAMAL_"):
            section = key.upper().removeprefix("STREAMAL_").split("__")[0]
            if section not in known:
                raise ConfigError(f"{key}: not a streamal setting (sections: {', '.join(sorted(known))})")
    config: dict[str, Any] = dict(Settings.model_config)
    if path is not None:
        config["yaml_file"] = str(path)
    if env is not None:
        config["streamal_env"] = dict(env)
    cls: type[Settings] = type("LoadedSettings", (Settings,), {"model_config": config})
    try:
        return cls()
    except ValidationError as exc:
        problems = [f"{_name(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ConfigError("; ".join(problems)) from None


def settings_table() -> str:
    """The configuration table of the README, generated from the settings model (a test keeps them equal)."""
    rows = ["| environment variable | YAML key | default | meaning |", "|---|---|---|---|"]

    def show(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, SecretStr):
            return "(secret)"
        if isinstance(value, dict):
            return "`{}`" if not value else f"`{value}`"
        return f"`{value}`"

    for section, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, sub in annotation.model_fields.items():
                default = sub.get_default(call_default_factory=True)
                env = f"STREAMAL_{section.upper()}__{name.upper()}"
                rows.append(f"| `{env}` | `{section}.{name}` | {show(default)} | {sub.description or ''} |")
        else:
            rows.append(
                f"| `STREAMAL_{section.upper()}` | `{section}` | {show(field.get_default())} | "
                f"{field.description or ''} |"
            )
    return "\n".join(rows)
