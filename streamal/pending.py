"""Label requests that await their label: bounded in number and in age, and remembered after they end.

A label is matched to its request by ``id``. What became of a request is remembered for a while (its
answer, or that it expired), so that a late, repeated or contradicting label gets an explicit outcome
instead of being called unknown.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from streamal.messages import ClassLabel, Features


class LabelOutcome(enum.StrEnum):
    APPLIED = "applied"  # matched a pending request; the model learned it
    DUPLICATE = "duplicate"  # the same label again for an answered request
    CONFLICTING = "conflicting"  # another label for an answered request; the first one stands
    EXPIRED = "expired"  # the request was dropped (too old, or pushed out by newer ones)
    UNKNOWN = "unknown"  # no request was ever made for this id (or it is long forgotten)


@dataclass(frozen=True, slots=True)
class PendingRequest:
    features: Features
    prediction: ClassLabel | None
    model_version: int
    requested_at: float


class PendingRequests:
    """Requests by id, oldest first.

    >>> now = [0.0]
    >>> pending = PendingRequests(max_size=2, ttl_seconds=10, clock=lambda: now[0])
    >>> pending.add("a", PendingRequest({"x": 1.0}, None, 0, 0.0))
    >>> [pending.resolve("a", label)[0].value for label in ("cat", "cat", "dog")]
    ['applied', 'duplicate', 'conflicting']
    >>> pending.add("b", PendingRequest({"x": 2.0}, None, 0, 0.0)); now[0] = 11.0
    >>> pending.resolve("b", "cat")[0].value, pending.resolve("zzz", "cat")[0].value
    ('expired', 'unknown')
    """

    def __init__(
        self,
        max_size: int = 100_000,
        ttl_seconds: float = 86_400.0,
        memory: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_size < 0 or memory < 0 or ttl_seconds <= 0:
            raise ValueError("max_size and memory must be >= 0, and ttl_seconds > 0")
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self.memory = memory
        self._clock = clock
        self._pending: OrderedDict[str, PendingRequest] = OrderedDict()
        self._answered: OrderedDict[str, ClassLabel | None] = OrderedDict()
        self._expired: OrderedDict[str, ClassLabel | None] = OrderedDict()
        #: requests pushed out because ``max_size`` was reached, and requests that outlived ``ttl_seconds``
        self.evicted = 0
        self.timed_out = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._pending

    def add(self, sample_id: str, request: PendingRequest) -> None:
        """Record a request; a repeated id (a sample scored again after a restart) replaces the older one.
        With ``max_size`` 0 nothing is kept, and nothing is counted as evicted (a scorer: it learns nothing,
        the learner keeps the requests it reads back from their topic)."""
        if not self.max_size or sample_id in self._answered:
            return  # already answered: a label for it would be a duplicate anyway
        self._pending[sample_id] = request
        self._pending.move_to_end(sample_id)
        self._expired.pop(sample_id, None)
        while len(self._pending) > self.max_size:
            old, _ = self._pending.popitem(last=False)
            self._remember(self._expired, old, None)
            self.evicted += 1

    def expire(self) -> int:
        """Drop the requests older than ``ttl_seconds``; returns how many."""
        limit = self._clock() - self.ttl_seconds
        n = 0
        while self._pending:
            sample_id, request = next(iter(self._pending.items()))
            if request.requested_at > limit:
                break
            self._pending.popitem(last=False)
            self._remember(self._expired, sample_id, None)
            n += 1
        self.timed_out += n
        return n

    def resolve(self, sample_id: str, label: ClassLabel) -> tuple[LabelOutcome, PendingRequest | None]:
        """Match a label to its request; only an ``APPLIED`` outcome returns the request."""
        answered = self._answered.get(sample_id, _MISSING)
        if answered is not _MISSING:
            same = answered == label and type(answered) is type(label)
            return (LabelOutcome.DUPLICATE if same else LabelOutcome.CONFLICTING), None
        request = self._pending.pop(sample_id, None)
        if request is not None:
            if request.requested_at <= self._clock() - self.ttl_seconds:
                self._remember(self._expired, sample_id, None)
                self.timed_out += 1
                return LabelOutcome.EXPIRED, None
            self._remember(self._answered, sample_id, label)
            return LabelOutcome.APPLIED, request
        if sample_id in self._expired:
            return LabelOutcome.EXPIRED, None
        return LabelOutcome.UNKNOWN, None

    def reopen(self, sample_id: str, request: PendingRequest) -> None:
        """Undo :meth:`resolve`'s ``APPLIED`` of ``sample_id``: the label could not be learned (the model
        raised), so the request waits again and a corrected or replayed label for it is applied, not called a
        duplicate. It goes back among the oldest, where :meth:`expire` looks first."""
        self._answered.pop(sample_id, None)
        self._pending[sample_id] = request
        self._pending.move_to_end(sample_id, last=False)

    def withdraw(self, sample_id: str) -> bool:
        """Forget the request for ``sample_id`` as if it had never been made: it was decided but could not be
        sent (its sample went to the dead-letter topic), so nobody can answer it. It is neither pending nor,
        later, timed out, and a label for it is ``UNKNOWN``. Returns whether it was pending.

        >>> pending = PendingRequests(clock=lambda: 0.0)
        >>> pending.add("a", PendingRequest({"x": 1.0}, None, 0, 0.0))
        >>> pending.withdraw("a"), len(pending), pending.resolve("a", "cat")[0].value
        (True, 0, 'unknown')
        """
        return self._pending.pop(sample_id, None) is not None

    def _remember(
        self, memo: OrderedDict[str, ClassLabel | None], key: str, value: ClassLabel | None
    ) -> None:
        if self.memory == 0:
            return
        memo[key] = value
        memo.move_to_end(key)
        while len(memo) > self.memory:
            memo.popitem(last=False)


_MISSING = object()
