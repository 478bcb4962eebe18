"""Offline replay of a recording: the service's own engine, no Kafka, the recording's time, the same result on
every run.

**Recording.** Record the service's topics with ``streamal record`` (or :func:`streamal.replay.record`)
once the run is over: ``samples`` and ``labels`` always, and ``predictions`` too for a *faithful* replay;
recording ``label-requests`` as well lets the faithful replay check its requests against the original ones::

    streamal record --topic samples --topic labels --topic predictions --topic label-requests --out run.jsonl

**Replaying.** :func:`replay_offline` runs the recording through :func:`streamal.service.build_engine` (role
``all``, the settings given: the run's own, so that model, strategy, policy, budget and seeds are the
service's; its ``topics`` name the recording's topics) and returns an :class:`OfflineRun`. Its ``mode``
says which of two orders it followed, chosen from what the recording holds:

``"faithful"`` (the recording holds ``predictions``; ``mode="faithful"`` insists on them): the original
run's decisions again. Every recorded prediction carries the ``model_version`` its sample was scored with
and the ``ts`` of the engine's clock when its batch was scored; the engine reads its clock once per batch,
so the predictions that share a ``ts`` are one batch of the original (:meth:`~streamal.engine.Engine.score`
is called once per fetched batch). The batches are scored in the order of their model version and time,
each as one call, with the clock at the recorded ``ts`` and its samples in the order the worker scores a
fetched batch's: by partition, each partition in offset order. Before each batch, the labels stamped
before its ``ts`` whose request is not waiting are learned (they change no model state: ``unknown``,
``duplicate``, ... as in the original, even a label that came before its sample was scored), then those
that take the engine's model version to the one the batch was scored with, in the order the worker learns
a fetch's labels: by partition and offset. So each label is learned where the original learned it, and
the float32 numerics of a batched model (the kNN) see the same batches.

A valid sample with no recorded prediction was scored by the original all the same if a later sample of its
partition has one, or if its dead letter is recorded (the ``dead-letters`` topic): the worker scores a
batch first (spending the policy's budget, filling a selector's window) and then dead-letters the samples
whose output cannot go out (``too_large``, ``invalid_schema``), or the model failed on it
(``model_error``). Such a sample is scored in its batch again (the batch of its neighbours in its partition
when they are in one; else the last batch between them scored before its recorded dead letter; else the
batch of the one before it) and its output checked as the worker checks it, so it is dead-lettered again
and its request withdrawn. A valid sample after the last one with a prediction in its partition, with no
dead letter recorded, was not scored (the recording ends before the service got to it) and is not scored
here either (``unscored``); nor is a sample the service dead-letters when it decodes it (``invalid_json``
and the like). The replay's label requests and predictions are compared with the recorded ones
(:attr:`OfflineRun.comparison`): a user's test can assert that a replay reproduces production.

``"recorded"`` (no ``predictions``): the records in time order (each partition in offset order, merged by
timestamp; ties: samples before labels, then by partition and offset; a record stamped earlier than the one
before it in its partition, or not stamped, takes that one's time, as ``streamal replay`` orders them), each
sample scored on its own and each label learned when it comes, the clock at the record's timestamp
(``mode="recorded"`` replays a recording with predictions so too, and leaves them out). The
same file gives the same result on every run, but it is *not* what the service decided when the stream
went through it: which labels the live service had learned when it scored a sample depended on the timing
of its fetches, and it scored whole fetched batches.

Label requests read back from the recording (``label-requests``) are never given to the engine: it makes its
own, as the original did (an all-in-one service reads its requests back only to re-register what it already
holds). A faithful replay compares its requests with them.

**What is exact and what is not.** For a recording of one service run without restarts, a faithful replay
makes the same label requests in the same order and the same prediction, ``queried`` flag and model version
for every sample, and the same probabilities, with any number of partitions. The batches are the same,
scored in the same order (the worker takes a fetched batch's partitions in ascending order, whatever order
the consumer returns them in), so are the float32 products of a batched model: scored one sample at a time
instead, the kNN's probabilities moved by up to 2e-3 in our runs, where float32 rounding picked another of
two nearly equidistant neighbours, and a decision near the policy's threshold can follow.

**What is taken from the recording.** The recorded predictions are input as well as what is compared: each
one's ``model_version`` and ``ts`` define the batches (which samples are scored together, and in which
order), the engine's clock at each batch (the time of its label requests, of a request's expiry, of a rate
limit), and how many labels are learned before each batch. What the replay decides from them, each sample's
class, probabilities and ``queried`` flag and the label requests, is computed and only compared: the
comparison counts the predictions with the recorded class and ``queried`` flag (``predictions_equal``) apart
from those made at their recorded model version (``versions_equal``, the replay following its input;
``reproduced`` needs both, and at least one prediction compared). One thing is not recorded and is
reconstructed: with several ``labels`` partitions, which fetch each label came in. The model versions say
how many labels were applied before each batch; they are taken to be the first ones in timestamp order
(ties by partition and offset), learned by partition and offset, as if all came in the batch's own fetch.
Two cases break that: labels that came in two fetches between the same two batches (a fetch of labels only)
from partitions in descending order, and a label fetched before one stamped earlier in another partition.
The first changes the order of learning (the probabilities then differ, as a rule in the last bits: up to
1.4e-14 in our runs when the order was wrong), the second which labels the model had learned (a
prediction, its ``queried`` flag, and the requests after it may differ); the comparison then says which
requests and predictions differ and shows the first differences. In ten runs of the service on three
partitions (300 and 1000 samples) every replay was exact to the bit. With one ``labels`` partition nothing
is reconstructed. A run with restarts (a sample scored twice, a model restored from an older
checkpoint) is not reproduced past its first restart, nor is a run of several partitions by a service from
before the worker took a batch's partitions in order (it took them in the consumer's random order). The
replay is one all-in-one engine (role ``all``): it reproduces one all-in-one service run, not a scale-out
run (several scorers, each with its own policy state and its own share of the samples, and a learner).
A dead-lettered sample that was the only sample of its fetch was a batch of its own, which the recording
does not show: it is scored in a batch next to it (the one before it, or the last one scored before its
recorded dead letter), and its decision (so the policy's state) may then differ.

Bad input never stops a replay: a sample or label the service would dead-letter is listed in
:attr:`OfflineRun.dead_letters` with the service's reason (``invalid_json``, ``invalid_schema``,
``non_finite``, ``too_large``, ``invalid_encoding``, ``model_error``) and where it came from, and a line of
the file that is no recorded message in :attr:`OfflineRun.bad_lines`.

In a pytest (``run.write(tmp_path)`` also writes ``summary.json`` and ``decisions.jsonl``)::

    def test_production_is_reproduced():
        run = replay_offline(Path("run.jsonl"), load_settings("service.yaml"))
        assert run.mode == "faithful"
        assert run.comparison is not None and run.comparison.reproduced, run.comparison.first_difference

A tiny recording, made here (a recording in the file format is the same: a path, one JSON line per record):

>>> import orjson
>>> from streamal.replay import RecordedMessage
>>> def sample(i, x):
...     value = orjson.dumps({"id": f"s{i}", "features": {"x": x}})
...     return RecordedMessage("samples", 0, i, 1_700_000_000_000 + 1000 * i, f"s{i}".encode(), value)
>>> def label(offset, i, y, at):
...     value = orjson.dumps({"id": f"s{i}", "label": y})
...     return RecordedMessage("labels", 0, offset, 1_700_000_000_000 + at, f"s{i}".encode(), value)
>>> recording = [sample(i, float(i % 4)) for i in range(8)] + [
...     label(0, 0, "low", 500), label(1, 1, "low", 1500), label(2, 3, "high", 3500), label(3, 9, "x", 9000)]
>>> recording.append(RecordedMessage("samples", 0, 8, 1_700_000_009_000, b"s8", b"not json"))
>>> defaults = load_settings(env={})    # (a service's own: load_settings("service.yaml"))
>>> run = replay_offline(recording, defaults)
>>> run.mode, len(run.decisions), len(run.asked), run.labels_learned    # (the warm start asks for all 8)
('recorded', 8, 8, 3)
>>> run.outcomes["applied"], run.outcomes["unknown"], [(d.offset, d.reason) for d in run.dead_letters]
(3, 1, [(8, 'invalid_json')])
>>> [(d.id, d.prediction, d.model_version) for d in run.decisions[3:6]]   # labels learned by then: s0, s1, s3
[('s3', 'low', 2), ('s4', 'low', 3), ('s5', 'low', 3)]
>>> replay_offline(recording, defaults).decisions == run.decisions    # the same on every run
True

With the predictions topic, the replay is faithful. Here the decisions above stand for a service's
predictions (each sample a batch of its own), and the replay finds them again:

>>> from streamal.messages import prediction_message
>>> predictions = [
...     RecordedMessage("predictions", 0, n, None, d.id.encode(), prediction_message(
...         d.id, d.prediction, d.proba, d.uncertainty, d.model_version, d.queried, d.ts))
...     for n, d in enumerate(run.decisions)]
>>> again = replay_offline(recording + predictions, defaults)
>>> again.mode, again.comparison.reproduced, again.comparison.predictions_equal, again.batches
('faithful', True, 8, 8)

From the command line, :func:`run_cli`: ``streamal replay --offline run.jsonl --config service.yaml --out
replayed/`` prints a summary (with an ``ignored: TOPIC N`` line for each topic of the recording it did not
read: a predictions topic of another name is one), writes ``summary.json`` and ``decisions.jsonl``, and
exits with :data:`EXIT_DIFFERS` when a faithful replay does not reproduce the recording (or compares no
prediction); ``--mode faithful`` refuses a recording without the predictions topic. The whole recording
is read into memory, decoded: about seven times the file's size (a 1 GB recording needs about 7 GB).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from streamal.config import Settings, load_settings
from streamal.engine import Decision, Engine
from streamal.errors import ConfigError, DecodeError, InvalidArgument, StreamalError
from streamal.messages import (
    ClassLabel,
    Label,
    Proba,
    Sample,
    decode_label,
    decode_sample,
    encode,
    encode_outputs,
    fits,
    label_request_message,
)
from streamal.pending import LabelOutcome
from streamal.policies import reads_clock
from streamal.replay import RecordedMessage
from streamal.service import build_engine

Mode = Literal["faithful", "recorded"]

#: the exit code of :func:`run_cli` when a faithful replay does not reproduce the recording (1 and 2 are the
#: command line's: an error, a wrong setting)
EXIT_DIFFERS = 3

#: differences listed in a comparison (all are counted)
_MAX_LISTED = 20


# -- what a replay returns --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the service would send to the dead-letter topic, with its reason (a ``DecodeError`` reason)
    and where it came from; ``line`` is its line in the file (None for records given as objects)."""

    topic: str
    partition: int
    offset: int
    line: int | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of the file that is no recorded message (the service never saw it)."""

    line: int
    detail: str


@dataclass(frozen=True, slots=True)
class OfflineDecision:
    """What the replay decided for one sample, with where the sample is in the recording."""

    id: str
    partition: int
    offset: int
    prediction: ClassLabel | None
    proba: Proba
    uncertainty: float
    utility: float
    queried: bool
    model_version: int
    ts: float
    #: the engine call that scored it (0, 1, ...): one per recorded batch (faithful), per sample (recorded)
    batch: int

    def to_json(self) -> bytes:
        return encode(
            {
                "id": self.id,
                "partition": self.partition,
                "offset": self.offset,
                "prediction": self.prediction,
                "proba": self.proba,
                "uncertainty": self.uncertainty,
                "utility": self.utility,
                "queried": self.queried,
                "model_version": self.model_version,
                "ts": self.ts,
                "batch": self.batch,
            }
        )


@dataclass(frozen=True, slots=True)
class Comparison:
    """A faithful replay against the recording: its label requests and its predictions.

    ``requests_order`` is ``"exact"`` when the recorded requests are in one partition (compared in their
    offset order with the replay's in the order it made them), ``"by time"`` when they are in several (both
    sides ordered by the time of the request, ties by where the sample is, partition and offset: the order
    the worker makes the requests of a batch in; the order between partitions is not recorded), and ``"not
    recorded"`` when the recording holds no ``label-requests`` topic (``requests_recorded`` is None, and only
    the predictions, with their ``queried`` flags, are compared).

    Predictions are matched by where their sample is (partition and offset: an id may be sent twice).
    ``predictions_equal`` counts those with the recorded class and ``queried`` flag: the result. The model
    version is no result: the replay takes each batch's from the recording (it learns the labels that reach
    it), and ``versions_equal`` counts the predictions it did reach for; one it did not means that the
    replay could not follow the recording (a label missing, or applied where the original did not).
    """

    requests_recorded: int | None
    requests_replayed: int
    requests_in_order: int  # positions where both sides name the same sample
    requests_order: str
    #: recorded predictions compared (of samples in the recording), and those the replay made too
    predictions_recorded: int
    predictions_replayed: int
    #: replayed predictions with the recorded class and ``queried`` flag
    predictions_equal: int
    classes_equal: int
    queried_equal: int
    #: replayed predictions made at the recorded model version (an input the replay follows)
    versions_equal: int
    #: samples the original scored and dead-lettered (no prediction) that the replay predicted
    unpublished_predicted: int
    max_proba_difference: float
    #: the first differences, as sentences (at most 20; ``differences`` counts them all)
    listed: tuple[str, ...]
    differences: int

    @property
    def reproduced(self) -> bool:
        """At least one recorded prediction compared; every recorded request asked again, in order; every
        recorded prediction made again (class and ``queried`` flag), at its recorded model version; and no
        sample the original dead-lettered predicted."""
        requests = self.requests_recorded is None or (
            self.requests_in_order == self.requests_recorded == self.requests_replayed
        )
        n = self.predictions_recorded
        return (
            n > 0
            and requests
            and self.predictions_equal == self.versions_equal == self.predictions_replayed == n
            and self.unpublished_predicted == 0
        )

    @property
    def first_difference(self) -> str | None:
        if self.listed:
            return self.listed[0]
        if self.predictions_recorded == 0:
            return "no recorded prediction was compared (none readable, or none of a sample in the recording)"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "reproduced": self.reproduced,
            "requests_recorded": self.requests_recorded,
            "requests_replayed": self.requests_replayed,
            "requests_in_order": self.requests_in_order,
            "requests_order": self.requests_order,
            "predictions_recorded": self.predictions_recorded,
            "predictions_replayed": self.predictions_replayed,
            "predictions_equal": self.predictions_equal,
            "classes_equal": self.classes_equal,
            "queried_equal": self.queried_equal,
            "versions_equal": self.versions_equal,
            "unpublished_predicted": self.unpublished_predicted,
            "max_proba_difference": self.max_proba_difference,
            "differences": self.differences,
            "first_differences": list(self.listed),
        }


@dataclass
class OfflineRun:
    """The result of :func:`replay_offline`."""

    mode: Mode
    #: every sample decided, in the order decided (a dead-lettered sample has none)
    decisions: list[OfflineDecision] = field(default_factory=list)
    #: the ids asked for, in the order asked, and when (the engine's clock: the request's ``requested_at``)
    asked: list[str] = field(default_factory=list)
    asked_at: list[float] = field(default_factory=list)
    #: label outcomes: applied, duplicate, conflicting, expired, unknown
    outcomes: dict[str, int] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    labels_learned: int = 0
    model_version: int = 0
    prequential_accuracy: float | None = None
    #: samples in the recording (valid or not), and the engine calls that scored them
    samples: int = 0
    batches: int = 0
    #: faithful: valid samples with no recorded prediction that the original did not score either (after the
    #: last one with a prediction in their partition, with no dead letter recorded)
    unscored: list[str] = field(default_factory=list)
    #: records of topics the replay does not read, by topic: other topics (a predictions topic of another
    #: name among them), and in recorded mode the predictions, label requests and dead letters
    ignored: dict[str, int] = field(default_factory=dict)
    #: what the replay could not take as recorded, in sentences
    notes: list[str] = field(default_factory=list)
    #: faithful: the replay against the recorded label requests and predictions
    comparison: Comparison | None = None

    @property
    def dead_letter_counts(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dead_letters))

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` holds."""
        return {
            "mode": self.mode,
            "samples": self.samples,
            "decided": len(self.decisions),
            "batches": self.batches,
            "asked": len(self.asked),
            "asked_ids": self.asked,
            "labels_learned": self.labels_learned,
            "model_version": self.model_version,
            "outcomes": self.outcomes,
            "prequential_accuracy": self.prequential_accuracy,
            "dead_letters": self.dead_letter_counts,
            "dead_letter_records": [
                {"topic": d.topic, "partition": d.partition, "offset": d.offset, "line": d.line,
                 "reason": d.reason, "detail": d.detail}
                for d in self.dead_letters
            ],
            "bad_lines": [{"line": b.line, "detail": b.detail} for b in self.bad_lines],
            "unscored": self.unscored,
            "ignored": self.ignored,
            "notes": self.notes,
            "comparison": None if self.comparison is None else self.comparison.as_dict(),
        }  # fmt: skip

    def write(self, out_dir: Path | str) -> Path:
        """Write ``summary.json`` and ``decisions.jsonl`` (one line per decision, in order) to ``out_dir``,
        created if needed; returns it."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_bytes(
            orjson.dumps(self.summary(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
        )
        with (out / "decisions.jsonl").open("wb") as fh:
            for d in self.decisions:
                fh.write(d.to_json() + b"\n")
        return out


# -- reading a recording ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Rec:
    msg: RecordedMessage
    line: int | None
    index: int  # position in the file


@dataclass(frozen=True, slots=True)
class _In:
    """A decoded sample or label, with its record."""

    rec: _Rec
    sample: Sample | None = None
    label: Label | None = None


@dataclass(frozen=True, slots=True)
class _Recorded:
    """What the original run published for one sample."""

    id: str
    prediction: Any
    proba: dict[str, float]
    model_version: int
    queried: bool
    ts: float


def _records(source: str | Path | Iterable[RecordedMessage], run: OfflineRun) -> list[_Rec]:
    if not isinstance(source, str | Path):
        return [_Rec(m, None, i) for i, m in enumerate(source)]
    path = Path(source)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise StreamalError(f"{path}: cannot read the recording ({exc.strerror or exc})") from None
    out: list[_Rec] = []
    with fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                msg = RecordedMessage.from_json(raw)
            except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
                run.bad_lines.append(BadLine(n, f"not a recorded message ({exc})"))
                continue
            out.append(_Rec(msg, n, len(out)))
    return out


def _decode(recs: Iterable[_Rec], topic: str, run: OfflineRun) -> list[_In]:
    """The samples or labels of ``recs``, in partition and offset order; the others are dead letters."""
    out: list[_In] = []
    for rec in sorted(recs, key=lambda r: (r.msg.partition, r.msg.offset, r.index)):
        try:
            if topic == "samples":
                out.append(_In(rec, sample=decode_sample(rec.msg.value)))
            else:
                out.append(_In(rec, label=decode_label(rec.msg.value)))
        except DecodeError as exc:
            _dead_letter(run, rec, exc.reason, str(exc))
    return out


def _dead_letter(run: OfflineRun, rec: _Rec, reason: str, detail: str) -> None:
    m = rec.msg
    run.dead_letters.append(DeadLetter(m.topic, m.partition, m.offset, rec.line, reason, detail))


def _recorded_prediction(raw: bytes | None) -> _Recorded | None:
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    sample_id, version, ts = obj.get("id"), obj.get("model_version"), obj.get("ts")
    queried, proba = obj.get("queried"), obj.get("proba")
    if (
        not isinstance(sample_id, str)
        or type(version) is not int
        or not (type(ts) is float or type(ts) is int)
        or type(queried) is not bool
        or not isinstance(proba, dict)
    ):
        return None
    return _Recorded(sample_id, obj.get("prediction"), proba, version, queried, float(ts))


# -- the engine, driven --------------------------------------------------------------------------------------
def _engine(settings: Settings, now: list[float]) -> Engine:
    """The service's engine (role ``all``) on the replay's clock; a policy that reads a clock (the
    labels-per-hour rate limit) reads it too, where the service's reads the wall clock as its engine does."""

    def clock() -> float:
        return now[0]

    if reads_clock(settings.policy.name) and "clock" not in settings.policy.params:
        policy = settings.policy.model_copy(update={"params": {**settings.policy.params, "clock": clock}})
        settings = settings.model_copy(update={"policy": policy})
    return build_engine(settings, clock=clock, role="all")


@dataclass
class _Scored:
    """What one engine call gave: decisions kept, dead letters, requests made (in order)."""

    kept: list[tuple[Decision, _In]] = field(default_factory=list)
    dead: list[tuple[_In, str, str]] = field(default_factory=list)
    asked: list[Decision] = field(default_factory=list)


def _score(engine: Engine, items: Sequence[_In]) -> _Scored:
    """Score ``items`` as one batch, as the worker does: a batch the model fails on is scored one by one
    (the samples it fails on are ``model_error``), and a sample whose output cannot go out is withdrawn."""
    out = _Scored()
    samples = [it.sample for it in items if it.sample is not None]
    try:
        pairs = list(zip(engine.score(samples), items, strict=True))
    except Exception:
        pairs = []
        for it, sample in zip(items, samples, strict=True):
            try:
                pairs += [(d, it) for d in engine.score([sample])]
            except Exception as one:
                out.dead.append((it, "model_error", f"scoring it: {one!r}"))
    strategy, windowed = engine.strategy.name, engine.selector is not None
    for d, it in pairs:
        try:  # the worker's own check (Worker._send_decisions)
            encode_outputs(d, len(it.rec.msg.value or b""), strategy, windowed)
        except DecodeError as exc:
            out.dead.append((it, exc.reason, exc.detail))
            if d.queried or windowed:
                engine.withdraw(d.sample.id)
            continue
        out.kept.append((d, it))
        if d.queried:
            out.asked.append(d)
    for d in engine.take_requests():
        request = label_request_message(
            d.sample, d.prediction, d.proba, d.utility, strategy, d.model_version, d.ts
        )
        if not fits(d.sample.id.encode(), request):
            engine.withdraw(d.sample.id)
            continue
        out.asked.append(d)
    return out


class _Replay:
    def __init__(self, settings: Settings, run: OfflineRun) -> None:
        self.now = [0.0]
        self.engine = _engine(settings, self.now)
        self.run = run

    def learn(self, item: _In, at: float) -> LabelOutcome | None:
        assert item.label is not None
        self.now[0] = at
        try:
            return self.engine.learn(item.label)
        except Exception as exc:  # the model's own failure: as the worker does, dead-lettered
            self.failed(item, exc)
            return None

    def failed(self, item: _In, exc: Exception) -> None:
        _dead_letter(self.run, item.rec, "model_error", f"learning it: {exc!r}")

    def commit(self, scored: _Scored) -> None:
        run, batch = self.run, self.run.batches
        for it, reason, detail in scored.dead:
            _dead_letter(run, it.rec, reason, detail)
        for d, it in scored.kept:
            m = it.rec.msg
            run.decisions.append(
                OfflineDecision(
                    d.sample.id, m.partition, m.offset, d.prediction, d.proba, d.uncertainty, d.utility,
                    d.queried, d.model_version, d.ts, batch,
                )
            )  # fmt: skip
        run.asked += [d.sample.id for d in scored.asked]
        run.asked_at += [d.ts for d in scored.asked]
        run.batches += 1

    def finish(self) -> OfflineRun:
        engine, run = self.engine, self.run
        run.outcomes = {o.value: n for o, n in engine.outcomes.items()}
        run.labels_learned = engine.labels_learned
        run.model_version = engine.model_version
        run.prequential_accuracy = engine.prequential_accuracy
        return run


# -- the two orders --------------------------------------------------------------------------------------
def _replay_recorded(samples: list[_In], labels: list[_In], replay: _Replay) -> None:
    """Every record at its time: each (topic, partition) in offset order, merged by timestamp (ties: samples
    before labels, then by partition and offset). A record stamped earlier than the one before it in its
    partition, or not stamped, takes that one's time (the recording's first time if it is the first), as
    ``streamal replay`` orders them."""
    runs: dict[tuple[int, int], list[_In]] = defaultdict(list)  # (rank, partition): samples 0, labels 1
    for it in samples + labels:  # (each in partition and offset order already)
        runs[(0 if it.sample is not None else 1, it.rec.msg.partition)].append(it)
    stamps = [it.rec.msg.timestamp for it in samples + labels if it.rec.msg.timestamp is not None]
    first = min(stamps, default=0)
    timeline: list[tuple[int, int, int, int, int, _In]] = []
    for (rank, partition), items in runs.items():
        at = first
        for it in items:
            ts = it.rec.msg.timestamp
            at = max(at, ts) if ts is not None else at
            timeline.append((at, rank, partition, it.rec.msg.offset, it.rec.index, it))
    timeline.sort(key=lambda t: t[:5])
    for at_ms, rank, *_, it in timeline:
        if rank == 1:
            replay.learn(it, at_ms / 1000.0)
        else:
            replay.now[0] = at_ms / 1000.0
            replay.commit(_score(replay.engine, [it]))


def _same_class(replayed: ClassLabel | None, recorded: Any) -> bool:
    """Equal as JSON values (``True`` is not ``1``)."""
    return bool(orjson.dumps(replayed) == orjson.dumps(recorded))


#: an original batch: its model version and clock reading, the order it was scored in
_BatchKey = tuple[int, float]


def _stamped(items: list[_In]) -> list[tuple[int, int, int, int, _In]]:
    """The records of one partition (in offset order) with the time each comes at: its timestamp, or the one
    of the record before it when it has none or an earlier one (as ``streamal replay`` orders them)."""
    out: list[tuple[int, int, int, int, _In]] = []
    at = 0
    for it in items:
        m = it.rec.msg
        at = max(at, m.timestamp) if m.timestamp is not None else at
        out.append((at, m.partition, m.offset, it.rec.index, it))
    return out


class _LabelQueue:
    """The recorded labels waiting to be learned, in the order of their timestamps (partitions merged, each
    label at the time :func:`_stamped` gives it)."""

    def __init__(self, labels: list[_In]) -> None:
        parts: dict[int, list[_In]] = defaultdict(list)
        for it in labels:  # (in partition and offset order)
            parts[it.rec.msg.partition].append(it)
        self.partitions = len(parts)
        self._items = [(at, it) for at, *_, it in heapq.merge(*(_stamped(parts[p]) for p in sorted(parts)))]
        self._start = 0  # every label before it is learned
        self._done: set[int] = set()  # positions learned, from _start on

    def _waiting(self) -> Iterator[tuple[int, int, _In]]:
        while self._start < len(self._items) and self._start in self._done:
            self._done.discard(self._start)
            self._start += 1
        for n in range(self._start, len(self._items)):
            if n not in self._done:
                yield n, *self._items[n]

    def _learn(self, replay: _Replay, taken: list[tuple[int, _In]], at: float) -> None:
        """Learn ``taken`` as the worker learns the labels of a fetch: by partition and offset."""
        for n, it in sorted(taken, key=lambda t: (t[1].rec.msg.partition, t[1].rec.msg.offset)):
            self._done.add(n)
            replay.learn(it, at)

    def before(self, replay: _Replay, version: int, at: float) -> None:
        """Learn what the original learned before the batch it scored with ``version`` at ``at``: first every
        label stamped before ``at`` whose request is not waiting (it came before the batch and changes no
        model state: ``unknown``, ``duplicate``, ... as in the original, even when its sample is scored
        later), then the first ones of the queue whose request is waiting (those the engine applies) that
        take the model version to ``version``, with the labels between them; a label that does not apply
        after all (its request expired) is made up for by the next ones, one at a time."""
        engine = replay.engine
        early: list[tuple[int, _In]] = []
        for n, stamp, it in self._waiting():
            if stamp >= at * 1000:
                break
            assert it.label is not None
            if it.label.id not in engine.pending:
                early.append((n, it))
        self._learn(replay, early, at)
        taken: list[tuple[int, _In]] = []
        applying: set[str] = set()
        for n, _, it in self._waiting():
            if len(applying) >= version - engine.model_version:
                break
            assert it.label is not None
            if it.label.id in engine.pending:
                applying.add(it.label.id)
            taken.append((n, it))
        self._learn(replay, taken, at)
        for n, _, it in self._waiting():
            if engine.model_version >= version:
                break
            self._learn(replay, [(n, it)], at)

    def rest(self, replay: _Replay, at: float) -> None:
        """Learn the labels left, each at its time (not before ``at``)."""
        for n, stamp, it in list(self._waiting()):
            at = max(at, stamp / 1000.0)
            self._learn(replay, [(n, it)], at)


def _sample_dead_letters(recs: list[_Rec], samples_topic: str) -> dict[tuple[int, int], RecordedMessage]:
    """The recorded dead letters of samples, by the partition and offset of their sample (the headers
    ``source.topic``, ``source.partition`` and ``source.offset`` the worker gives them)."""
    out: dict[tuple[int, int], RecordedMessage] = {}
    for rec in recs:
        headers = dict(rec.msg.headers)
        try:
            if headers["source.topic"].decode() != samples_topic:
                continue
            where = (int(headers["source.partition"]), int(headers["source.offset"]))
        except (KeyError, ValueError, UnicodeDecodeError):
            continue
        out.setdefault(where, rec.msg)
    return out


def _batch_of_unpublished(
    before: _BatchKey | None,
    after: _BatchKey | None,
    letter: RecordedMessage | None,
    keys: list[_BatchKey],
    rank: dict[_BatchKey, int],
) -> _BatchKey:
    """The original batch of a sample the original scored but published no prediction for, ``before`` and
    ``after`` the batches of the nearest samples of its partition before and after it that have one. With
    both in one batch, that one (a batch holds a range of offsets of each partition); else, with its dead
    letter recorded, the last batch between them scored at or before the dead letter's time (the worker
    dead-letters a sample's output after scoring its batch, before it scores the next), else the batch of
    the one before it (the one after it when it has none)."""
    lo = rank[before] if before is not None else 0
    hi = rank[after] if after is not None else len(keys) - 1
    if letter is not None and letter.timestamp is not None:
        stamp = letter.timestamp
        within = [k for k in keys[lo : hi + 1] if math.floor(k[1] * 1000) <= stamp]
        return within[-1] if within else keys[lo]
    return keys[lo] if before is not None else keys[hi]


def _replay_faithful(
    samples: list[_In],
    labels: list[_In],
    predictions: list[_Rec],
    requests: list[_Rec],
    dead_letters: list[_Rec],
    samples_topic: str,
    replay: _Replay,
) -> None:
    run = replay.run
    # each sample's recorded prediction: the first one for its id (a sample scored again after a restart
    # has more than one; a sample sent twice takes them in turn)
    published: dict[str, list[_Recorded]] = defaultdict(list)
    bad = 0
    for rec in sorted(predictions, key=lambda r: (r.msg.partition, r.msg.offset, r.index)):
        p = _recorded_prediction(rec.msg.value)
        if p is None:
            bad += 1
        else:
            published[p.id].append(p)
    if bad:
        run.notes.append(f"{bad} recorded predictions are not prediction messages: left out")
    for scored_again in published.values():
        scored_again.sort(key=lambda p: (p.model_version, p.ts))
    recorded: dict[int, _Recorded] = {}  # file index of a sample -> its recorded prediction
    for it in samples:
        assert it.sample is not None
        mine = published.get(it.sample.id)
        if mine:
            recorded[it.rec.index] = mine.pop(0)
    left = sum(len(q) for q in published.values())
    if left:
        run.notes.append(
            f"{left} recorded predictions have no sample of their own in the recording (a sample scored "
            "again after a restart, or a recording of samples that starts later): not compared"
        )
    # the original batches: one clock reading (ts) and one model version each, in the order scored; each
    # batch's samples in partition and offset order, as the worker scores them
    batches: dict[_BatchKey, list[_In]] = defaultdict(list)
    key_of: dict[int, _BatchKey] = {}  # file index of a sample -> its batch
    for it in samples:  # (in partition and offset order)
        p = recorded.get(it.rec.index)
        if p is not None:
            key_of[it.rec.index] = (p.model_version, p.ts)
            batches[(p.model_version, p.ts)].append(it)
    # a valid sample with no recorded prediction before a sample of its partition that has one, or with a
    # dead letter recorded: the original scored it in a batch (spending the policy's budget, filling a
    # selector's window) and then dead-lettered it (its output too large or not encodable; or the model
    # failed on it); it is scored in its batch again, and its output checked as the worker checks it
    letters = _sample_dead_letters(dead_letters, samples_topic)
    keys = sorted(batches)
    rank = {k: n for n, k in enumerate(keys)}
    by_partition: dict[int, list[_In]] = defaultdict(list)
    for it in samples:
        by_partition[it.rec.msg.partition].append(it)
    placed: set[int] = set()
    for items in by_partition.values():
        scored = [(it.rec.msg.offset, key_of[it.rec.index]) for it in items if it.rec.index in key_of]
        offsets = [offset for offset, _ in scored]
        for it in items:
            assert it.sample is not None
            m = it.rec.msg
            if it.rec.index in key_of:
                continue
            j = bisect.bisect_left(offsets, m.offset)
            repeated = j < len(offsets) and offsets[j] == m.offset  # a record repeated in the file
            before = scored[j - 1][1] if j > 0 else None
            after = scored[j + repeated][1] if j + repeated < len(scored) else None
            letter = letters.get((m.partition, m.offset))
            if repeated or not keys or (after is None and letter is None):
                run.unscored.append(it.sample.id)
                continue
            key = _batch_of_unpublished(before, after, letter, keys, rank)
            batches[key].append(it)
            placed.add(it.rec.index)
    if placed:
        for items in batches.values():
            items.sort(key=lambda it: (it.rec.msg.partition, it.rec.msg.offset, it.rec.index))
        run.notes.append(
            f"{len(placed)} valid samples have no recorded prediction but were scored by the original (a "
            "later sample of their partition has one, or their dead letter is recorded): scored in their "
            "batch again, and dead-lettered again if their output cannot go out"
        )
    if run.unscored:
        run.notes.append(
            f"{len(run.unscored)} valid samples have no recorded prediction, come after the last one that "
            "has one in their partition and have no dead letter recorded: not scored (the recording ends "
            "before the service got to them)"
        )
    labels_queue = _LabelQueue(labels)
    if labels_queue.partitions > 1:
        run.notes.append(
            f"labels come from {labels_queue.partitions} partitions: which fetch each came in is not "
            "recorded, they are learned in the order of their timestamps, those learned before one batch by "
            "partition and offset"
        )
    short = over = 0
    for version, ts in keys:
        labels_queue.before(replay, version, ts)
        short += replay.engine.model_version < version
        over += replay.engine.model_version > version
        replay.now[0] = ts
        replay.commit(_score(replay.engine, batches[(version, ts)]))
    labels_queue.rest(replay, replay.now[0])
    if short:
        run.notes.append(
            f"{short} batches were scored with a model version the recorded labels do not reach (labels "
            "missing from the recording?)"
        )
    if over:
        run.notes.append(
            f"{over} batches were scored past the recorded model version (a label applied here that the "
            "original did not apply)"
        )
    run.comparison = _compare(run, recorded, placed, samples, requests)


def _compare(
    run: OfflineRun,
    recorded: dict[int, _Recorded],
    placed: set[int],
    samples: list[_In],
    requests: list[_Rec],
) -> Comparison:
    listed: list[str] = []
    differences = 0

    def differ(text: str) -> None:
        nonlocal differences
        differences += 1
        if len(listed) < _MAX_LISTED:
            listed.append(text)

    # where each sample is, to order requests made at one time as the worker makes them (a batch in
    # partition and offset order); a sample id sent twice: where it was first
    where: dict[str, tuple[int, int]] = {}
    for it in samples:
        assert it.sample is not None
        where.setdefault(it.sample.id, (it.rec.msg.partition, it.rec.msg.offset))
    nowhere = (-1, -1)

    def by_time(request: tuple[float, str]) -> tuple[float, tuple[int, int], str]:
        return request[0], where.get(request[1], nowhere), request[1]

    # requests
    asked_at: list[tuple[float, str]] = []
    parts: set[int] = set()
    unreadable = 0
    for rec in sorted(requests, key=lambda r: (r.msg.partition, r.msg.offset, r.index)):
        try:
            obj = orjson.loads(rec.msg.value or b"")
            asked_at.append((float(obj["requested_at"]), str(obj["id"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            unreadable += 1
            continue
        parts.add(rec.msg.partition)
    if unreadable:
        run.notes.append(f"{unreadable} recorded label requests are not label-request messages: left out")
    expected: list[str] | None
    if not requests:
        order, expected, got = "not recorded", None, list(run.asked)
    elif len(parts) <= 1:
        order, expected, got = "exact", [i for _, i in asked_at], list(run.asked)
    else:  # within one time (one batch), the order between partitions is not recorded
        order = "by time"
        expected = [i for _, i in sorted(asked_at, key=by_time)]
        got = [i for _, i in sorted(zip(run.asked_at, run.asked, strict=True), key=by_time)]
    in_order = 0
    if expected is not None:
        in_order = sum(a == b for a, b in zip(expected, got, strict=False))
        for n, (a, b) in enumerate(itertools.zip_longest(expected, got)):
            if a != b:
                differ(f"label request #{n}: recorded {a!r}, replayed {b!r}")
    # predictions, by where their sample is (an id may be sent twice)
    replayed = {(d.partition, d.offset): d for d in run.decisions}
    by_index = {it.rec.index: it for it in samples}
    classes = queried = versions = equal = found = 0
    max_proba = 0.0
    for index, r in recorded.items():
        m = by_index[index].rec.msg
        d = replayed.get((m.partition, m.offset))
        where_text = f"{r.id!r} ({m.topic}[{m.partition}]@{m.offset})"
        if d is None:
            differ(f"sample {where_text}: recorded a prediction, the replay made none")
            continue
        found += 1
        same_class = _same_class(d.prediction, r.prediction)
        classes += same_class
        queried += d.queried == r.queried
        versions += d.model_version == r.model_version
        if same_class and d.queried == r.queried:
            equal += 1
        if not (same_class and d.queried == r.queried and d.model_version == r.model_version):
            differ(
                f"sample {where_text}: recorded {r.prediction!r} queried={r.queried} at model version "
                f"{r.model_version}, replayed {d.prediction!r} queried={d.queried} at version "
                f"{d.model_version}"
            )
        mine = orjson.loads(encode({"p": d.proba}))["p"]
        for key in set(mine) | set(r.proba):
            a, b = mine.get(key), r.proba.get(key)
            diff = abs(a - b) if isinstance(a, float | int) and isinstance(b, float | int) else math.inf
            max_proba = max(max_proba, diff)
    published = 0
    for index in sorted(placed):
        m = by_index[index].rec.msg
        d = replayed.get((m.partition, m.offset))
        if d is not None:
            published += 1
            differ(
                f"sample {d.id!r} ({m.topic}[{m.partition}]@{m.offset}): the original published no "
                f"prediction (dead-lettered), the replay predicted {d.prediction!r} queried={d.queried}"
            )
    return Comparison(
        requests_recorded=None if expected is None else len(expected),
        requests_replayed=len(got),
        requests_in_order=in_order,
        requests_order=order,
        predictions_recorded=len(recorded),
        predictions_replayed=found,
        predictions_equal=equal,
        classes_equal=classes,
        queried_equal=queried,
        versions_equal=versions,
        unpublished_predicted=published,
        max_proba_difference=max_proba,
        listed=tuple(listed),
        differences=differences,
    )


# -- the entry points ------------------------------------------------------------------------------------
def replay_offline(
    source: str | Path | Iterable[RecordedMessage],
    settings: Settings | None = None,
    *,
    mode: Literal["auto", "faithful", "recorded"] = "auto",
) -> OfflineRun:
    """Replay a recording (a file, or its messages) through the service's engine, with no Kafka.

    ``settings``: the service's (default: :func:`~streamal.config.load_settings`, which reads ``STREAMAL_*``
    variables); their ``topics`` name the recording's topics. ``mode``: ``"auto"`` is ``"faithful"`` when the
    recording holds the predictions topic, else ``"recorded"`` (see the module's description).
    Raises ``ConfigError`` when the recording holds no record of the samples topic (the message lists the
    topics it holds), or ``mode="faithful"`` and none of the predictions topic; ``StreamalError`` when the
    file cannot be read, or no line of it is a recorded message; other bad lines and bad values are
    reported, not raised.
    """
    settings = settings if settings is not None else load_settings()
    if mode not in ("auto", "faithful", "recorded"):
        raise InvalidArgument(f"mode {mode!r}: choose auto, faithful or recorded")
    run = OfflineRun(mode="recorded")
    recs = _records(source, run)
    if not recs and run.bad_lines:
        first = run.bad_lines[0]
        raise StreamalError(
            f"{source}: no line is a recorded message ({len(run.bad_lines)} lines; the first, line "
            f"{first.line}: {first.detail}); is it a file `streamal record` wrote?"
        )
    t = settings.topics
    by_topic: dict[str, list[_Rec]] = defaultdict(list)
    for rec in recs:
        by_topic[rec.msg.topic].append(rec)
    held = ", ".join(sorted(by_topic)) or "none"
    if not by_topic.get(t.samples):
        raise ConfigError(
            f"the recording holds no record of the samples topic {t.samples!r} (topics in it: {held}); "
            "topics.samples (STREAMAL_TOPICS__SAMPLES) names it"
        )
    predictions = by_topic.get(t.predictions, [])
    if mode == "faithful" and not predictions:
        raise ConfigError(
            f"a faithful replay needs the predictions topic {t.predictions!r} in the recording (topics in "
            f"it: {held}); topics.predictions (STREAMAL_TOPICS__PREDICTIONS) names it, or record it too"
        )
    run.mode = "faithful" if (mode == "faithful" or (mode == "auto" and predictions)) else "recorded"
    read = {t.samples, t.labels}
    if run.mode == "faithful":
        read |= {t.predictions, t.label_requests, t.dead_letters}
    run.ignored = {topic: len(r) for topic, r in sorted(by_topic.items()) if topic not in read}
    run.samples = len(by_topic[t.samples])
    samples = _decode(by_topic[t.samples], "samples", run)
    labels = _decode(by_topic.get(t.labels, []), "labels", run)
    replay = _Replay(settings, run)
    if run.mode == "faithful":
        requests = by_topic.get(t.label_requests, [])
        dead = by_topic.get(t.dead_letters, [])
        _replay_faithful(samples, labels, predictions, requests, dead, t.samples, replay)
    else:
        _replay_recorded(samples, labels, replay)
    return replay.finish()


def _writable(out: Path) -> None:
    """Create ``out`` (a folder) if needed and check that files can be written in it, before a replay that
    may take minutes; a ``ConfigError`` names it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(f"no permission to write in {out}")
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(
            f"--out {out}: cannot write it ({why}); give a folder that can be written"
        ) from None


def run_cli(
    path: str | Path,
    out: str | Path | None = None,
    config: str | Path | None = None,
    mode: Literal["auto", "faithful", "recorded"] = "auto",
) -> int:
    """``streamal replay --offline FILE [--out DIR] [--config FILE] [--mode MODE]``: replay, print a short
    summary, write ``summary.json`` and ``decisions.jsonl`` to ``out`` (checked, and created, first). Returns
    0, or :data:`EXIT_DIFFERS` when a faithful replay does not reproduce the recording (or compared no
    prediction). A wrong setting raises ``ConfigError``, a file that cannot be read ``StreamalError`` (the
    command line turns them into exit codes 2 and 1)."""
    settings = load_settings(config)
    if out is not None:
        _writable(Path(out))
    run = replay_offline(Path(path), settings, mode=mode)
    for line in _describe(run):
        print(line)
    if out is not None:
        print(f"wrote {run.write(out)}/summary.json and decisions.jsonl")
    c = run.comparison
    return EXIT_DIFFERS if c is not None and not c.reproduced else 0


def _describe(run: OfflineRun) -> Iterator[str]:
    accuracy = "-" if run.prequential_accuracy is None else f"{run.prequential_accuracy:.3f}"
    yield (
        f"{run.mode} replay: {len(run.decisions)} of {run.samples} samples decided in {run.batches} batches, "
        f"{len(run.asked)} label requests, {run.labels_learned} labels learned (model version "
        f"{run.model_version}), prequential accuracy {accuracy}"
    )
    outcomes = ", ".join(f"{k} {v}" for k, v in run.outcomes.items() if v)
    yield f"labels: {outcomes or 'none'}"
    if run.dead_letters:
        yield "dead letters: " + ", ".join(f"{k} {v}" for k, v in sorted(run.dead_letter_counts.items()))
    if run.bad_lines:
        lines = ", ".join(str(b.line) for b in run.bad_lines[:10])
        yield f"{len(run.bad_lines)} lines are no recorded message (lines {lines})"
    for topic, n in run.ignored.items():
        yield f"ignored: {topic} {n}"
    for note in run.notes:
        yield f"note: {note}"
    c = run.comparison
    if c is not None:
        requests = (
            "label requests not recorded"
            if c.requests_recorded is None
            else f"{c.requests_in_order} of {c.requests_recorded} label requests in order "
            f"({c.requests_order}; {c.requests_replayed} made)"
        )
        yield (
            f"against the recording: {requests}, {c.predictions_equal} of {c.predictions_recorded} "
            f"predictions (class, queried), probabilities within {c.max_proba_difference:.2g}; "
            f"{c.versions_equal} of {c.predictions_recorded} scored at the recorded model version"
        )
        if c.reproduced:
            yield "reproduced"
        else:
            yield f"NOT reproduced: {c.differences} differences; the first: {c.first_difference}"
