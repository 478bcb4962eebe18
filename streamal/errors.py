"""One root exception; every error says what went wrong and what to do about it."""

from __future__ import annotations


class StreamalError(Exception):
    """Root of every error streamal raises on purpose."""

    #: a retry may succeed (broker away, timeout); False means fix the input or the configuration.
    retriable: bool = False


class ConfigError(StreamalError):
    """A setting is missing or wrong; the message names it."""


class DecodeError(StreamalError):
    """A message on an input topic cannot be used.

    ``reason`` is one of a small, fixed set (it becomes a metric label), ``detail`` is for people.
    """

    REASONS = frozenset(
        {"invalid_json", "invalid_schema", "non_finite", "too_large", "invalid_encoding", "model_error"}
    )

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown decode reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerUnavailableError(StreamalError):
    """The Kafka cluster could not be reached in time."""

    retriable = True


class InvalidArgument(ConfigError, ValueError):
    """A function was called with an argument out of its range (a negative label delay, no worker).

    A :class:`ConfigError`, so the command line reports it as one (exit code 2), and a ``ValueError``, which
    is what Python code calling the function expects.
    """


class DataWarning(UserWarning):
    """A data file was loaded, but not all of it as written: a column that is never a number was left out,
    or some cells were empty or not a finite number and are missing in their samples.

    The message says which column and how many cells; ``streamal`` prints each as one line on stderr,
    ``streamal: data: ...``.
    """
