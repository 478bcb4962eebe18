"""The wire vocabulary: what comes in on ``samples`` and ``labels``, and what goes out.

Every message is JSON in UTF-8 and keyed by the sample ``id``. Decoding is strict: a message that does
not match its schema raises :class:`~streamal.errors.DecodeError` with a reason from a small fixed set,
so that the shell can dead-letter it and count it by reason.

>>> s = decode_sample(b'{"id": "s1", "features": {"x": 1, "y": 2.5}}')
>>> s.id, s.features
('s1', {'x': 1.0, 'y': 2.5})
>>> decode_sample(b'{"id": "s1", "features": {"x": NaN}}')
Traceback (most recent call last):
...
streamal.errors.DecodeError: non_finite: features.x: Input should be a finite number
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamal.errors import DecodeError

#: A class label as it travels on the wire.
ClassLabel: TypeAlias = str | int | bool
Features: TypeAlias = dict[str, float]
Proba: TypeAlias = dict[ClassLabel, float]

#: Messages larger than this are refused before parsing (1 MiB, Kafka's default message size).
MAX_MESSAGE_BYTES = 1_048_576

_Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Id = Annotated[str, Field(strict=True, min_length=1, max_length=512)]


class Sample(BaseModel):
    """A sample to score: ``{"id": str, "features": {name: number}, "ts": float?, "meta": object?}``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: _Id
    features: dict[str, _Finite]
    ts: _Finite | None = None
    meta: dict[str, Any] | None = None


class Label(BaseModel):
    """A label for an earlier request.

    ``{"id": str, "label": str | int | bool, "annotator": str?, "ts": float?}``
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: _Id
    # bool first: JSON true must stay a bool, not become the int 1.
    label: (
        Annotated[bool, Field(strict=True)]
        | Annotated[int, Field(strict=True)]
        | Annotated[str, Field(strict=True, min_length=1, max_length=256)]
    )
    annotator: Annotated[str, Field(strict=True, max_length=256)] | None = None
    ts: _Finite | None = None


def _decode(raw: bytes | None, model: type[BaseModel]) -> Any:
    if raw is None:
        raise DecodeError("invalid_json", "the message has no value (a tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        kind = err["type"]
        if kind == "json_invalid":
            reason = "invalid_json"
        elif kind == "finite_number":
            reason = "non_finite"
        elif kind == "string_unicode" or "utf-8" in str(err.get("msg", "")).lower():
            reason = "invalid_encoding"
        else:
            reason = "invalid_schema"
        if err["loc"] and err["loc"][0] == "label" and reason == "invalid_schema":
            raise DecodeError(reason, "label: must be a string, an integer or a boolean") from None
        raise DecodeError(reason, f"{where}: {err['msg']}") from None


def decode_sample(raw: bytes | None) -> Sample:
    """Parse and validate a ``samples`` message, or raise :class:`DecodeError`."""
    sample: Sample = _decode(raw, Sample)
    return sample


def decode_label(raw: bytes | None) -> Label:
    """Parse and validate a ``labels`` message, or raise :class:`DecodeError`."""
    label: Label = _decode(raw, Label)
    return label


def _default(obj: object) -> object:
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(payload: dict[str, Any]) -> bytes:
    """Encode an outgoing message; non-string keys of ``proba`` become JSON strings, as JSON requires."""
    return orjson.dumps(payload, default=_default, option=orjson.OPT_NON_STR_KEYS)


def prediction_message(
    sample_id: str,
    prediction: ClassLabel | None,
    proba: Proba,
    uncertainty: float,
    model_version: int,
    queried: bool,
    ts: float,
) -> bytes:
    """The ``predictions`` message sent for every sample."""
    return encode(
        {
            "id": sample_id,
            "prediction": prediction,
            "proba": proba,
            "uncertainty": uncertainty,
            "model_version": model_version,
            "queried": queried,
            "ts": ts,
        }
    )


def label_request_message(
    sample: Sample,
    prediction: ClassLabel | None,
    proba: Proba,
    utility: float,
    strategy: str,
    model_version: int,
    requested_at: float,
) -> bytes:
    """The ``label-requests`` message sent for every sample the policy chose."""
    return encode(
        {
            "id": sample.id,
            "features": sample.features,
            "prediction": prediction,
            "proba": proba,
            "utility": utility,
            "strategy": strategy,
            "model_version": model_version,
            "requested_at": requested_at,
            "meta": sample.meta,
        }
    )


def label_message(
    sample_id: str, label: ClassLabel, annotator: str | None = None, ts: float | None = None
) -> bytes:
    """A ``labels`` message, as an oracle or an annotation tool sends it."""
    payload: dict[str, Any] = {"id": sample_id, "label": label}
    if annotator is not None:
        payload["annotator"] = annotator
    if ts is not None:
        payload["ts"] = ts
    return encode(payload)
