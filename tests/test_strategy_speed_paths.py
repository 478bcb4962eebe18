"""The fast paths of the strategies give the utilities of the plain formulas.

A decision must cost a few µs (``scripts/bench_decisions.py``), so the committee strategies score a batch
with numpy (and BALD, and KL divergence given the members' array, one sample by a quicker formula), and
density and diversity have a path for a batch of one and a vectorised window. Here each path is held
against the formula it replaced, written out plainly (the code before the fast paths), on random
committees and streams: to 1e-12, and to the last bit where utilities pile up and tie (near 0 and 1),
which is what leaves every decision of a replay unchanged.
"""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamal.messages import ClassLabel, Features, Proba
from streamal.models import CommitteeProba
from streamal.strategies import BALD, DensityWeighted, Diversity, KLDivergence, VoteEntropy
from streamal.strategies._space import FeatureSpace, fill_missing, inverse_variance, squared_distances, widen
from streamal.strategies.committee import BATCH, EDGE, QUICK_FROM, quick_information

TOLERANCE = 1e-12
SETTINGS = settings(max_examples=60, derandomize=True, deadline=None)


# -- the plain formulas -------------------------------------------------------------------------------
def plain_entropy(ps) -> float:
    h = 0.0
    for p in ps:
        if p > 0.0:
            h -= p * math.log(p)
    return h


def plain_vote_entropy(proba: Proba, tie_break: float = 0.1) -> float:
    k = len(proba)
    if k < 2:
        return 1.0
    consensus = plain_entropy(proba.values()) / math.log(k)
    members = getattr(proba, "members", None)
    if not members or len(members) < 2:
        return min(1.0, max(0.0, consensus))
    votes: dict[int, int] = {}
    for row in members:
        best = row.index(max(row))
        votes[best] = votes.get(best, 0) + 1
    n = len(members)
    ve = plain_entropy([v / n for v in votes.values()]) / math.log(min(n, k)) if len(votes) > 1 else 0.0
    return min(1.0, max(0.0, (1.0 - tie_break) * ve + tie_break * consensus))


def plain_kl(proba: Proba) -> float:
    k = len(proba)
    if k < 2:
        return 1.0
    consensus = plain_entropy(proba.values())
    members = getattr(proba, "members", None)
    if not members or len(members) < 2:
        return min(1.0, max(0.0, consensus / math.log(k)))
    n = len(members)
    h_members = plain_entropy(p for row in members for p in row)
    return min(1.0, max(0.0, (consensus - h_members / n) / math.log(min(n, k))))


def plain_bald(proba: Proba) -> float:
    def entropy(ps) -> float:
        return -math.fsum(p * math.log(p) for p in ps if p > 0.0)

    k = len(proba)
    if k < 2:
        return 1.0
    members = getattr(proba, "members", None)
    if not members or len(members) < 2:
        return min(1.0, max(0.0, entropy(proba.values()) / math.log(k)))
    n = len(members)
    mean = [math.fsum(row[j] for row in members) / n for j in range(k)]
    information = entropy(mean) - math.fsum(entropy(row) for row in members) / n
    return min(1.0, max(0.0, information / math.log(min(n, k))))


def plain_margin(proba: Proba) -> float:
    if len(proba) < 2:
        return 1.0
    first = second = 0.0
    for p in proba.values():
        if p > first:
            first, second = p, first
        elif p > second:
            second = p
    return min(1.0, max(0.0, 1.0 - (first - second)))


PLAIN = {VoteEntropy: plain_vote_entropy, KLDivergence: plain_kl, BALD: plain_bald}


# -- random committees --------------------------------------------------------------------------------
# exact zeros, ties and tiny probabilities, as well as any value
weights = st.one_of(st.sampled_from([0.0, 0.0, 0.5, 1.0, 1e-300]), st.floats(0.0, 1.0))


@st.composite
def distributions(draw: st.DrawFn, k: int) -> list[float]:
    w = draw(st.lists(weights, min_size=k, max_size=k))
    total = sum(w)
    return [v / total for v in w] if total > 0 else [1.0 / k] * k if k else []


@st.composite
def probas(draw: st.DrawFn, shape: tuple[int, int] | None = None) -> Proba:
    """A model's output: empty, one class, plain probabilities, or a committee of ``n`` members (none,
    one, several), with or without the members' array."""
    n, k = shape if shape else (draw(st.integers(0, 6)), draw(st.integers(0, 7)))
    labels = [f"c{j}" for j in range(k)]
    if not shape and draw(st.booleans()):
        return dict(zip(labels, draw(distributions(k)) if k else [], strict=True))
    members = [draw(distributions(k)) for _ in range(n)] if k else [[] for _ in range(n)]
    if members and k and draw(st.booleans()):  # members that agree but for rounding, as kNN's often do
        scales = draw(st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n))
        members = [[v * c / math.fsum(w * c for w in members[0]) for v in members[0]] for c in scales]
    consensus = [math.fsum(row[j] for row in members) / n for j in range(k)] if n else draw(distributions(k))
    array = np.array(members, dtype=np.float64).reshape(n, k) if draw(st.booleans()) else None
    return CommitteeProba(dict(zip(labels, consensus, strict=True)), members, array)


@st.composite
def batches(draw: st.DrawFn) -> list[Proba]:
    """At least :data:`BATCH` samples (the numpy path), of a few committee shapes and other outputs."""
    shapes = draw(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 7)), min_size=1, max_size=3))
    kinds = st.one_of(st.sampled_from(shapes).flatmap(probas), probas())
    return draw(st.lists(kinds, min_size=BATCH, max_size=3 * BATCH))


def assert_agree(fast: list[float], plain: list[float]) -> None:
    """Within :data:`TOLERANCE`, and to the last bit near 0 and 1, where ties make it count."""
    assert fast == pytest.approx(plain, abs=TOLERANCE, rel=0)
    for u, v in zip(fast, plain, strict=True):
        if not EDGE / 2 < v < 1.0 - EDGE / 2:  # well inside the band the formula decides
            assert u == v


@pytest.mark.parametrize("cls", [VoteEntropy, KLDivergence, BALD])
@SETTINGS
@given(batch=batches())
def test_committee_batch_one_sample_and_plain_formula_agree(cls, batch):
    s = cls()
    plain = [PLAIN[cls](p) for p in batch]
    one = [s.utility(p) for p in batch]
    assert [s._formula(p) if len(p) >= 2 else 1.0 for p in batch] == plain  # the reference, to the last bit
    if cls is VoteEntropy:  # one sample by the formula itself
        assert one == plain
    else:  # one sample by a quick formula (BALD; qbc_kl given the members' array), the plain one near 0, 1
        assert_agree(one, plain)
    assert [s.utilities([{}], [p])[0] for p in batch] == one  # a batch of one, the simulator's
    assert_agree(s.utilities([{}] * len(batch), batch), plain)
    # and without the members' arrays (a proba that was pickled)
    lists = [CommitteeProba(dict(p), p.members) if isinstance(p, CommitteeProba) else p for p in batch]
    assert_agree(s.utilities([{}] * len(lists), lists), plain)
    # a small batch takes the one-sample path
    assert s.utilities([{}] * 3, batch[:3]) == one[:3]


@SETTINGS
@given(shape=st.tuples(st.integers(2, 6), st.integers(2, 7)), data=st.data())
def test_kl_term_by_term_in_numpy_is_the_formula_to_the_last_bit(shape, data):
    batch = data.draw(st.lists(probas(shape), min_size=1, max_size=12))
    members = np.array([p.members for p in batch], dtype=np.float64)
    consensus = np.array([list(p.values()) for p in batch], dtype=np.float64)
    assert KLDivergence()._formula_batch(batch, consensus, members).tolist() == [plain_kl(p) for p in batch]


@pytest.mark.parametrize("cls", [VoteEntropy, KLDivergence, BALD])
def test_committee_edge_cases_agree(cls):
    s = cls()
    cases: list[Proba] = [
        {},
        {"a": 1.0},
        {"a": 0.5, "b": 0.5},
        CommitteeProba({"a": 0.5, "b": 0.5}, []),
        CommitteeProba({"a": 0.9, "b": 0.1}, [[0.9, 0.1]]),
        CommitteeProba({"a": 1.0}, [[1.0], [1.0]]),
        CommitteeProba({"a": 0.5, "b": 0.5}, [[1.0, 0.0], [0.0, 1.0]]),
        CommitteeProba({"a": 0.5, "b": 0.5, "c": 0.0}, [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]),
        CommitteeProba(
            {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        ),
        # a committee that agrees but for rounding: the formula's noise, to the last bit
        CommitteeProba(
            {"a": 1 / 42, "b": 41 / 42}, [[1 / 42, 41 / 42], [0.0238095238095238, 0.9761904761904762]]
        ),
        # committees of at least QUICK_FROM probabilities: one-hot, agreeing, and split with zeros
        CommitteeProba(dict.fromkeys("abcd", 0.25), np.eye(4).tolist()),
        CommitteeProba(dict(zip("abcd", [0.1, 0.2, 0.3, 0.4], strict=True)), [[0.1, 0.2, 0.3, 0.4]] * 5),
        CommitteeProba(
            dict.fromkeys("abcd", 0.25),
            [[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 0.0, 0.5]],
        ),
    ]
    # and each committee with its members' array, as the torch models hand them out (numpy's quick path)
    arrays: list[Proba] = [
        CommitteeProba(
            dict(p), p.members, np.array(p.members, dtype=np.float64).reshape(len(p.members), len(p))
        )
        for p in cases
        if isinstance(p, CommitteeProba)
    ]
    assert sum(len(p) * len(getattr(p, "members", ())) >= QUICK_FROM for p in cases) == 3
    batch = (cases + arrays) * 2
    plain = [PLAIN[cls](p) for p in batch]
    one = [s.utility(p) for p in batch]
    if cls is VoteEntropy:  # the formula itself
        assert one == plain
    else:  # a quick formula inside (0, 1), the formula at the edges
        assert_agree(one, plain)
    assert [s.utilities([{}], [p])[0] for p in batch] == one
    assert s.utilities([{}] * len(batch), batch) == plain
    assert s.utilities([], []) == []


@SETTINGS
@given(shape=st.tuples(st.integers(2, 6), st.integers(2, 7)), data=st.data())
def test_quick_information_is_the_kl_formula_from_the_rows_and_from_the_array(shape, data):
    p = data.draw(probas(shape))
    n, k = shape
    rows = CommitteeProba(dict(p), p.members)
    array = CommitteeProba(dict(p), p.members, np.array(p.members, dtype=np.float64).reshape(n, k))
    for q in (rows, array):
        assert quick_information(q) == pytest.approx(plain_kl(p), abs=TOLERANCE, rel=0)


def test_quick_information_leaves_to_the_formula_what_it_cannot_take():
    """NaN (which no policy band holds, so the formula decides) past 512 terms, where the product's rounding
    errors add up, for a negative "probability" (numpy warns of it in an array) and for fewer than two
    classes; KL and BALD then score the formula's value, from the rows and from the array alike."""
    big = CommitteeProba({"a": 0.25, "b": 0.75}, [[0.25, 0.75], [0.3, 0.7], [0.2, 0.8]] * 100)
    bad = CommitteeProba({"a": 0.5, "b": 0.5}, [[1.25, -0.25], [-0.25, 1.25]])
    nan = CommitteeProba({"a": math.nan, "b": 0.5}, [[0.5, 0.5], [0.5, 0.5]])
    for p in (big, bad, nan):
        with_array = CommitteeProba(dict(p), p.members, np.array(p.members, dtype=np.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # (numpy's, for the negative "probability")
            quick = [quick_information(p), quick_information(with_array)]
            kl = [KLDivergence().utility(p), KLDivergence().utility(with_array)]
            bald = [BALD().utility(p), BALD().utility(with_array)]
        assert all(math.isnan(q) for q in quick)
        assert kl == [plain_kl(p)] * 2
        assert bald == [plain_bald(p)] * 2
    with pytest.warns(RuntimeWarning, match="invalid value"):
        quick_information(CommitteeProba(dict(bad), bad.members, np.array(bad.members)))
    assert math.isnan(quick_information({"a": -0.5, "b": 1.5}))
    few: list[Proba] = [{"a": 1.0}, {}, CommitteeProba({"a": 1.0}, [[1.0], [1.0]])]
    for one in few:
        assert math.isnan(quick_information(one))


def test_quick_information_reads_the_rows_of_an_array_that_is_not_float64():
    # a float32 array is within 1e-8 of the rows, not 1e-15: the rows decide
    rows = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]
    consensus: dict[ClassLabel, float] = {c: math.fsum(r[j] for r in rows) / 3 for j, c in enumerate("abc")}
    plain = quick_information(CommitteeProba(consensus, rows))
    assert quick_information(CommitteeProba(consensus, rows, np.array(rows, dtype=np.float32))) == plain
    assert quick_information(CommitteeProba(consensus, rows, np.array(rows))) == pytest.approx(
        plain, abs=1e-15
    )


@pytest.mark.parametrize("name", ["committee", "torch_mc_dropout", "torch_ensemble"])
def test_every_committee_model_hands_out_its_members_mean_as_the_consensus(name):
    # BALD scores one sample from the consensus (quick_information): it must be the members' mean
    if name.startswith("torch_"):
        pytest.importorskip("torch")
    from streamal.models import build_model

    model = build_model(name, {"seed": 1} if name == "committee" else {"hidden": 8, "seed": 1})
    for i in range(60):
        model.learn_one({"x": i / 10, "y": (i % 7) / 3}, "abc"[i % 3])
    probas = model.predict_proba_many([{"x": i / 9, "y": (i % 5) / 2} for i in range(40)])
    for p in probas:
        assert isinstance(p, CommitteeProba)
        for j, value in enumerate(p.values()):
            assert value == pytest.approx(math.fsum(r[j] for r in p.members) / len(p.members), abs=1e-15)


def test_a_committee_proba_pickles_its_members_and_not_their_array():
    p = CommitteeProba({"a": 0.6, "b": 0.4}, [[0.7, 0.3], [0.5, 0.5]], np.array([[0.7, 0.3], [0.5, 0.5]]))
    q = pickle.loads(pickle.dumps(p))  # noqa: S301 - bytes this test just made
    assert q == p
    assert q.members == p.members
    assert q.members_array is None
    assert CommitteeProba({"a": 1.0}, [[1.0]]).members_array is None


def test_the_torch_committees_hand_out_their_members_array():
    pytest.importorskip("torch")
    from streamal.models import build_model

    # passes x 2 classes: qbc_kl's quick path for one sample
    model = build_model("torch_mc_dropout", {"hidden": 8, "mc_passes": QUICK_FROM // 2})
    for i in range(20):
        model.learn_one({"x": i / 10, "y": -i / 10}, "ab"[i % 3 == 0])
    batch = model.predict_proba_many([{"x": i / 7, "y": 1.0} for i in range(2 * BATCH)])
    for p in batch:
        assert isinstance(p, CommitteeProba)
        assert p.members_array is not None
        assert p.members_array.tolist() == p.members
    plain = [plain_bald(p) for p in batch]
    for s in (BALD(), KLDivergence()):  # (on a committee the two are one quantity)
        assert s.utilities([{}] * len(batch), batch) == pytest.approx(plain, abs=1e-12)
        assert [s.utilities([{}], [p])[0] for p in batch] == pytest.approx(plain, abs=1e-12)


# -- the feature space --------------------------------------------------------------------------------
class PlainSpace(FeatureSpace):
    """The feature space without its fast paths."""

    def row(self, x: dict[str, float]) -> np.ndarray | None:
        return None

    def rows(self, xs: Sequence[dict[str, float]]) -> np.ndarray:
        known = set(self.names)
        for x in xs:
            for name in x:
                if name not in known:
                    known.add(name)
                    self.names.append(name)
        return np.array([[x.get(k, math.nan) for k in self.names] for x in xs], dtype=np.float64).reshape(
            len(xs), len(self.names)
        )


values = st.one_of(st.floats(-5.0, 5.0), st.sampled_from([0.0, math.nan]))


@st.composite
def samples(draw: st.DrawFn, names: Sequence[str] = ("a", "b", "c")) -> Features:
    """Mostly every feature (in any order), sometimes one missing, sometimes a new one."""
    keys = draw(st.permutations(list(names)))
    if draw(st.integers(0, 9)) == 0:
        keys = keys[1:]
    if draw(st.integers(0, 19)) == 0:
        keys = [*keys, draw(st.sampled_from(["d", "e"]))]
    return {k: draw(st.floats(-5.0, 5.0) if draw(st.integers(0, 29)) else values) for k in keys}


@SETTINGS
@given(xss=st.lists(st.lists(samples(), max_size=5), max_size=8))
def test_feature_space_rows_are_the_plain_rows(xss):
    fast, plain = FeatureSpace(), PlainSpace()
    for xs in xss:
        if len(xs) == 1 and (row := fast.row(xs[0])) is not None:
            np.testing.assert_array_equal(row, plain.rows(xs)[0])
        np.testing.assert_array_equal(fast.rows(xs), plain.rows(xs))
        assert fast.names == plain.names


def test_feature_space_pickled_without_its_getter_still_works():
    space = FeatureSpace()
    space.rows([{"a": 1.0, "b": 2.0}])
    space.__dict__.pop("_getter", None)  # as one pickled before the getter existed
    old = pickle.loads(pickle.dumps(space))  # noqa: S301 - bytes this test just made
    np.testing.assert_array_equal(old.row({"b": 3.0, "a": 4.0}), [4.0, 3.0])
    np.testing.assert_array_equal(old.rows([{"a": 1.0, "b": 2.0}]), [[1.0, 2.0]])
    assert old.row({"a": math.nan, "b": 1.0}) is None
    assert FeatureSpace().row({"a": 1.0}) is None


# -- density and diversity, against their batch-by-batch code as it was -------------------------------
class PlainDensity(DensityWeighted):
    """Density weighting as written before the fast paths: each row pushed and tested one by one."""

    def __init__(self, window: int = 100, beta: float = 1.0) -> None:
        super().__init__(window=window, beta=beta)
        self._space = PlainSpace()

    def utilities(self, xs: Sequence[Features], probas: Sequence[Proba]) -> list[float]:
        m = self._space.rows(xs)
        width = m.shape[1]
        if self._recent.shape[1] < width:
            self._recent = widen(self._recent, width)
            self._weights = np.append(self._weights, np.ones(width - self._weights.shape[0]))
            self._mean = np.append(self._mean, np.zeros(width - self._mean.shape[0]))
        fill_missing(m, self._mean)
        out = [plain_margin(p) for p in probas]
        n = self._filled
        if n >= 10:
            d2 = squared_distances(m, self._recent[:n], self._weights)
            density = (np.exp(d2 * (-0.5 / max(width, 1))).sum(axis=1) / n).tolist()
            alpha = 1.0 / self.window
            mean = self._mean_density or density[0]
            for j, (p, dens) in enumerate(zip(probas, density, strict=True)):
                if len(p) >= 2 and dens < mean:
                    out[j] *= (dens / mean) ** self.beta
                mean += alpha * (dens - mean)
            self._mean_density = mean
        for row in m[-self.window :]:
            self._recent[self._next] = row
            self._next = (self._next + 1) % self.window
            self._filled = min(self._filled + 1, self.window)
            if self._next == 0 or (self._filled < self.window and self._filled & (self._filled - 1) == 0):
                window = self._recent[: self._filled]
                self._weights = inverse_variance(window)
                self._mean = window.mean(axis=0)
        return out


class PlainDiversity(Diversity):
    def __init__(self, window: int = 500) -> None:
        super().__init__(window=window)
        self._space = PlainSpace()

    def utilities(self, xs: Sequence[Features], probas: Sequence[Proba]) -> list[float]:
        n = self._filled
        if n == 0:
            return [1.0] * len(xs)
        m = self._space.rows(xs)
        self._widen(m.shape[1])
        fill_missing(m, self._mean)
        nearest = np.sqrt(squared_distances(m, self._labelled[:n], self._weights).min(axis=1)).tolist()
        out = []
        typical, alpha = self._typical, self.smoothing
        for d in nearest:
            if typical <= 0.0:
                typical = d
            out.append(d / (d + typical) if d > 0.0 else 0.0)
            typical += alpha * (d - typical)
        self._typical = typical
        return out


def assert_same_state(a, b) -> None:
    assert a._space.names == b._space.names
    for name, value in vars(b).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(a, name), value, err_msg=name)
        elif isinstance(value, (int, float)):
            assert getattr(a, name) == pytest.approx(value, abs=TOLERANCE, rel=0), name


proba_2 = st.sampled_from([{}, {"a": 1.0}, {"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}, {"a": 0.3, "b": 0.7}])
stream_batches = st.lists(
    st.lists(st.tuples(samples(), proba_2, st.booleans()), min_size=1, max_size=30).filter(
        lambda b: len(b) <= 3 or len(b) > 7  # single samples and real batches mostly
    ),
    max_size=25,
)


@SETTINGS
@given(stream=stream_batches, window=st.integers(2, 12), beta=st.sampled_from([0.5, 1.0, 2.0]))
def test_density_paths_are_the_plain_batch_code(stream, window, beta):
    fast, plain = DensityWeighted(window=window, beta=beta), PlainDensity(window=window, beta=beta)
    for batch in stream:
        xs, ps = [x for x, _, _ in batch], [p for _, p, _ in batch]
        assert fast.utilities(xs, ps) == plain.utilities(xs, ps)
        assert_same_state(fast, plain)
    restored = pickle.loads(pickle.dumps(fast))  # noqa: S301 - bytes this test just made
    x: list[Features] = [{"a": 0.5, "b": -1.0, "c": 2.0}]
    p: list[Proba] = [{"a": 0.5, "b": 0.5}]
    assert restored.utilities(x, p) == plain.utilities(x, p)


@SETTINGS
@given(stream=stream_batches, window=st.integers(1, 12))
def test_diversity_paths_are_the_plain_batch_code(stream, window):
    fast, plain = Diversity(window=window), PlainDiversity(window=window)
    for batch in stream:
        xs, ps = [x for x, _, _ in batch], [p for _, p, _ in batch]
        assert fast.utilities(xs, ps) == plain.utilities(xs, ps)
        for x, _, labelled in batch:
            if labelled:
                fast.observe_label(x, "a")
                plain.observe_label(x, "a")
        assert_same_state(fast, plain)


def test_density_of_a_long_stream_sample_by_sample_and_in_polls():
    rng = np.random.default_rng(3)
    xs = [{"x": float(a), "y": float(b), "z": float(c)} for a, b, c in rng.normal(size=(700, 3))]
    ps: list[Proba] = [{"a": float(p), "b": 1.0 - float(p)} for p in rng.uniform(size=700)]
    for size in (1, 100, 250):
        fast, plain = DensityWeighted(), PlainDensity()
        for start in range(0, len(xs), size):
            chunk_x, chunk_p = xs[start : start + size], ps[start : start + size]
            assert fast.utilities(chunk_x, chunk_p) == plain.utilities(chunk_x, chunk_p)
        assert_same_state(fast, plain)


def test_kl_formula_batch_is_the_formula_to_the_bit():
    """The vectorised formula (used near 0 and 1) takes ``math.log``'s logarithms, which numpy's differ from
    in the last bit now and then: on committees that disagree and committees that agree up to rounding,
    every value is the formula's."""
    rng = np.random.default_rng(1)
    strategy = KLDivergence()
    probas: list[CommitteeProba] = []
    for _ in range(2000):
        n, k = 5, int(rng.integers(2, 8))
        members = rng.dirichlet(np.ones(k), size=n)
        if rng.random() < 0.5:  # a committee that agrees, up to rounding
            members = np.repeat(members[:1], n, axis=0) * rng.uniform(0.999999, 1.000001, (n, 1))
            members /= members.sum(axis=1, keepdims=True)
        consensus: dict[ClassLabel, float] = dict(
            zip(map(str, range(k)), members.mean(axis=0).tolist(), strict=True)
        )
        probas.append(CommitteeProba(consensus, members.tolist()))
    vectorised = [
        strategy._formula_batch([p], np.array([list(p.values())]), np.array([p.members]))[0] for p in probas
    ]
    assert vectorised == [strategy._formula(p) for p in probas]
