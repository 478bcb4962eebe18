"""The wire vocabulary: what comes in on ``samples`` and ``labels``, and what goes out.

Every message is JSON in UTF-8 and keyed by the sample ``id``. Decoding is strict: a message that does
not match its schema raises :class:`~streamal.errors.DecodeError` with a reason from a small fixed set,
so that the shell can dead-letter it and count it by reason.

>>> s = decode_sample(b'{"id": "s1", "features": {"x": 1, "y": 2.5}}')
>>> s.id, s.features
('s1', {'x': 1.0, 'y': 2.5})
>>> try:
...     decode_sample(b'{"id": "s1", "features": {"x": NaN}}')
... except DecodeError as exc:
...     print(exc.reason)
non_finite
"""

from __future__ import annotations

import re
from math import hypot
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, TypeAlias

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamal.errors import DecodeError

if TYPE_CHECKING:
    from streamal.engine import Decision

#: A class label as it travels on the wire.
ClassLabel: TypeAlias = str | int | bool
Features: TypeAlias = dict[str, float]
Proba: TypeAlias = dict[ClassLabel, float]

#: Messages larger than this are refused before parsing (1 MiB, Kafka's default message size).
MAX_MESSAGE_BYTES = 1_048_576

#: room kept in a record batch for its own header (61 bytes) and the record's framing (varints), so that a
#: record whose key, value and headers take up to ``MAX_MESSAGE_BYTES - RECORD_OVERHEAD`` bytes is accepted
#: by a topic with Kafka's default ``max.message.bytes`` (``MAX_MESSAGE_BYTES`` + 12)
RECORD_OVERHEAD = 1024

#: a number re-encoded as a float takes at most 24 characters where its sample may have used 3 ("1e9") with
#: its separator: a sample's label request is at most this many times its size, plus its prediction's
REENCODED_GROWTH = 8

_Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Id = Annotated[str, Field(strict=True, min_length=1, max_length=512)]


class Sample(NamedTuple):
    """A sample to score: ``{"id": str, "features": {name: number}, "ts": float?, "meta": object?}``.

    A named tuple: tens of thousands are made per second, and building a pydantic model took 3 µs each
    (a frozen dataclass, 1 µs). Its schema, used to explain what is wrong with a message, is
    :class:`SampleSchema`.
    """

    id: str
    features: Features
    ts: float | None = None
    meta: dict[str, Any] | None = None


class SampleSchema(BaseModel):
    """The schema of a ``samples`` message (for validation errors and documentation)."""

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


def _check_size(raw: bytes | None) -> bytes:
    if raw is None:
        raise DecodeError("invalid_json", "the message has no value (a tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    return raw


def _explain(exc: ValidationError) -> DecodeError:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    kind = err["type"]
    if kind == "json_invalid":
        reason = "invalid_json"
    elif kind == "finite_number":
        reason = "non_finite"
    else:
        reason = "invalid_schema"
    if err["loc"] and err["loc"][0] == "label" and reason == "invalid_schema":
        return DecodeError(reason, "label: must be a string, an integer or a boolean")
    return DecodeError(reason, f"{where}: {err['msg']}")


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        # NaN and Infinity are not JSON (RFC 8259), but Python's json module writes them: say what they are
        if "infinity" in text or _NON_FINITE.search(raw):
            raise DecodeError("non_finite", f"NaN or an infinite number: {text}") from None
        if "UTF-8" in text:
            raise DecodeError("invalid_encoding", f"not UTF-8: {text}") from None
        raise DecodeError("invalid_json", text) from None


_FLOAT = frozenset({float})
_NUMBER = frozenset({float, int})
_NON_FINITE = re.compile(rb"[:\[,]\s*-?(NaN|Infinity)\b")


def decode_sample(raw: bytes | None) -> Sample:
    """Parse and validate a ``samples`` message, or raise :class:`DecodeError`.

    The common, valid message takes a fast path of type checks; anything else goes through
    :class:`SampleSchema`, whose error names the field that is wrong.
    """
    obj = _parse(_check_size(raw))
    if type(obj) is dict:
        sample_id = obj.get("id")
        features = obj.get("features")
        ts = obj.get("ts")
        meta = obj.get("meta")
        if (
            type(sample_id) is str
            and 0 < len(sample_id) <= 512
            and type(features) is dict
            and (ts is None or type(ts) is float or type(ts) is int)
            and (meta is None or type(meta) is dict)
        ):
            kinds = set(map(type, features.values()))
            if kinds <= _FLOAT:  # finite: orjson refuses NaN and infinities
                return Sample(
                    sample_id, _in_range(features), None if ts is None else float(ts), _sendable(meta)
                )
            if kinds <= _NUMBER:
                return Sample(
                    sample_id,
                    _in_range({k: float(v) for k, v in features.items()}),
                    None if ts is None else float(ts),
                    _sendable(meta),
                )
    try:
        valid = SampleSchema.model_validate(obj)
    except ValidationError as exc:
        raise _explain(exc) from None
    return Sample(valid.id, _in_range(valid.features), valid.ts, _sendable(valid.meta))


#: the largest magnitude a feature may have: the models square and add features (distances, variances),
#: which overflow to inf and NaN not far beyond 1e150, and a model that has learned one such sample then
#: predicts NaN probabilities for every sample
MAX_FEATURE = 1e100


def _in_range(features: dict[str, float]) -> dict[str, float]:
    """``features`` if none is beyond :data:`MAX_FEATURE` in magnitude, else a ``non_finite``
    :class:`DecodeError` naming the first that is."""
    # hypot (C, one call) bounds every value: only past it is each one looked at (the common sample: 0.35 µs
    # for 18 features, against 0.92 for max(map(abs, ...)))
    if hypot(*features.values()) > MAX_FEATURE and max(map(abs, features.values())) > MAX_FEATURE:
        name, value = next((k, v) for k, v in features.items() if abs(v) > MAX_FEATURE)
        raise DecodeError(
            "non_finite", f"features.{name}: {value!r} is too large to compute with ({MAX_FEATURE:g} at most)"
        )
    return features


def _sendable(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """``meta`` if it can be encoded again (it goes on with the sample's label request), else a
    :class:`DecodeError`: orjson reads JSON nested up to 1,024 levels but writes at most 254, and a sample
    the service could read but not pass on would stop it at its label request, again after every restart."""
    if meta:
        try:
            orjson.dumps([meta])  # one level deeper, where a label request carries it
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise DecodeError(
                "invalid_schema", f"meta: cannot be sent on ({exc}); 254 levels at most"
            ) from None
    return meta


def decode_label(raw: bytes | None) -> Label:
    """Parse and validate a ``labels`` message, or raise :class:`DecodeError`."""
    obj = _parse(_check_size(raw))
    try:
        return Label.model_validate(obj)
    except ValidationError as exc:
        raise _explain(exc) from None


class LabelRequestRecord(BaseModel):
    """What the learner needs of a ``label-requests`` message read back: the features as they were scored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: _Id
    features: dict[str, _Finite]
    prediction: bool | int | str | None = None
    model_version: Annotated[int, Field(strict=True, ge=0)] = 0
    requested_at: _Finite


def decode_label_request(raw: bytes | None) -> LabelRequestRecord:
    """Parse a ``label-requests`` message, or raise :class:`DecodeError`."""
    obj = _parse(_check_size(raw))
    try:
        return LabelRequestRecord.model_validate(obj)
    except ValidationError as exc:
        raise _explain(exc) from None


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


def encode_outputs(
    d: Decision, record_bytes: int, strategy: str, windowed: bool
) -> tuple[bytes, bytes | None]:
    """The ``predictions`` message of a decided sample, and its ``label-requests`` message when one may go out
    (it was asked for; or, with a windowed selector, ``windowed``, it may be asked for later and its sample of
    ``record_bytes`` could make one too large: then the request is encoded to be checked, and sent only when
    ``d.queried``). Raises :class:`DecodeError` when its output cannot go out, the reason the service
    dead-letters its sample with: ``invalid_schema`` (it cannot be encoded) or ``too_large`` (a record would
    be over the size limit with its key and framing; a label request keeps 64 bytes more, for the time of a
    request made later, from a window, being longer). The worker and the offline replay both call it.
    """
    room = MAX_MESSAGE_BYTES - RECORD_OVERHEAD
    key = len(d.sample.id.encode())
    try:
        prediction = prediction_message(
            d.sample.id, d.prediction, d.proba, d.uncertainty, d.model_version, d.queried, d.ts
        )
        request = None
        # with a selector any sample may be asked for later (Engine.take_requests): its request must fit
        if d.queried or (windowed and REENCODED_GROWTH * record_bytes + len(prediction) + 64 > room):
            request = label_request_message(
                d.sample, d.prediction, d.proba, d.utility, strategy, d.model_version, d.ts
            )
    except TypeError as exc:  # orjson cannot write it (the decoder refuses what it knows of)
        raise DecodeError("invalid_schema", f"its output cannot be encoded: {exc}") from None
    if key + len(prediction) > room or (request is not None and key + len(request) + 64 > room):
        sizes = [f"its prediction would be {len(prediction)} bytes"]
        if request is not None:
            sizes.append(f"its label request {len(request)} bytes")
        limit = MAX_MESSAGE_BYTES
        detail = f"{', '.join(sizes)}: over the {limit} bytes a record may take with its key and framing"
        raise DecodeError("too_large", detail)
    return prediction, request


def fits(key: bytes, value: bytes) -> bool:
    """A record of ``key`` and ``value`` (no headers) is within the size limit with its framing."""
    return RECORD_OVERHEAD + len(key) + len(value) <= MAX_MESSAGE_BYTES
