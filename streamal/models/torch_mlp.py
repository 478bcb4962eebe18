"""Neural models on torch: an MLP that learns online from a replay buffer, with MC dropout or a deep ensemble.

One class, :class:`TorchMLP`, registered under three names (:mod:`streamal.models`):

* ``torch_mlp``: one MLP. Each label is learned by ``steps`` Adam steps, each on a minibatch of the new
  sample plus ``batch_size - 1`` samples drawn from a replay buffer of the last ``replay_size`` labels, so
  the network neither forgets at once nor retrains from scratch. The steps run when the model next
  predicts (the engine also asks for an empty batch after the labels of a poll without samples: a
  learner's), or once ``group`` labels wait, label after label; but a burst of labels (an annotator
  answering a batch, the oracle of the throughput benchmark) costs at most ``max_steps`` steps: beyond
  that, the waiting labels share minibatches, ``steps`` steps per chunk of them (a step costs a few hundred
  µs however small the network), which keeps the service scoring at full speed. The waiting labels are part
  of the pickled state, so a checkpoint changes no decision.
* ``torch_mc_dropout``: the same MLP with dropout; it predicts ``mc_passes`` dropout masks' mean (Gal and
  Ghahramani 2016) and returns a :class:`~streamal.models.committee.CommitteeProba` whose members are the
  passes, which BALD (``bald``) and the committee strategies (``qbc_vote_entropy``, ``qbc_kl``) read. The
  masks are *consistent* (Kirsch et al. 2019): drawn once per model version from the seed and the number of
  labels learned, and shared by every sample, so a prediction does not depend on how samples are batched,
  and every copy of a model (a restored checkpoint, a scorer's snapshot) predicts the same.
* ``torch_ensemble``: ``members`` MLPs from different random initialisations, each learning every label
  with a Poisson(1) weight (online bagging, Oza and Russell 2001; a deep ensemble, Lakshminarayanan et al.
  2017), also returned as a committee.

The members' weights are stacked (a ``members x fan_in x fan_out`` tensor per layer), so a whole batch is
scored by every member, or every dropout mask, in one forward pass of a few batched matrix products.

The loss is cross-entropy with label smoothing (0.1 by default): a network trained on a few hundred labels
is otherwise near-certain everywhere, and an uncertainty strategy then asks for too little where it is
wrong. The defaults (one hidden layer of 128, Adam at 0.01, 4 steps, minibatches of 32 from the last 2,000
labels) were chosen on the built-in suite at budget 0.1 (``scripts/compare_models.py``, ``docs/torch.md``).

Features are dicts: their order is fixed when a name is first seen in a label, and they are standardised
by a running mean and variance of the labelled samples (as :mod:`streamal.models.knn` scales); a missing
feature takes the running mean, one never labelled is ignored. Classes appear as labels arrive: the output
layer grows by a column for each new class (and the input layer by a zero row for each new feature), the
optimizer's moments are carried over, so nothing learned is lost. Untrained, it knows no class:

>>> m = TorchMLP(hidden=16, seed=1)
>>> m.predict_proba_one({"x": 0.0})
{}
>>> for i in range(40):                     # a stream: a prediction, now and then a label
...     p = m.predict_proba_one({"x": i % 2 + i / 100})
...     m.learn_one({"x": i % 2 + i / 100}, "odd" if i % 2 else "even")
>>> p = m.predict_proba_one({"x": 1.1})
>>> max(p, key=p.get), round(p["odd"], 2), m.classes
('odd', 0.92, ['even', 'odd'])
>>> p = TorchMLP(hidden=16, dropout=0.2, mc_passes=4, seed=1)
>>> p.learn_one({"x": 0.0}, "a"); p.learn_one({"x": 1.0}, "b")
>>> len(p.predict_proba_one({"x": 0.5}).members)
4

Pickling (the signed checkpoint, model snapshots) saves the network and the optimizer as state dicts with
``torch.save`` and loads them with ``torch.load(..., weights_only=True)``: the bytes of the network are never
unpickled as arbitrary objects. ``torch.set_num_threads(n_threads)`` is called when the model is built or
restored: it is a setting of the process, and one intra-op thread measured faster for these small networks
than two on the service's machines.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from streamal.messages import ClassLabel, Features, Proba
from streamal.models.base import Model
from streamal.models.committee import CommitteeProba

_EPS = 1e-9


class _StackedMLP(nn.Module):
    """``members`` ReLU MLPs of one shape, weights stacked: a forward pass is one batched matmul per layer."""

    def __init__(self, members: int, sizes: list[int], generator: torch.Generator) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            last = i == len(sizes) - 2
            self.weights.append(nn.Parameter(_init((members, fan_in, fan_out), fan_in, last, generator)))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, fan_out)))

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits ``(members or masks, batch, classes)`` for ``x`` of shape ``(batch, features)``;
        ``masks[i]`` (broadcastable to ``(members, batch, hidden_i)``) scales hidden layer ``i``'s output."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            # one member and no masks yet: a plain (cheaper) addmm
            h = torch.addmm(b[0], h, w[0]) if h.dim() == 2 and w.shape[0] == 1 else torch.matmul(h, w) + b
            if i < last:
                h = torch.relu(h)
                if masks is not None:
                    h = h * masks[i]
        return h if h.dim() == 3 else h.unsqueeze(0)

    @torch.no_grad()
    def grow(self, n_in: int, n_out: int, generator: torch.Generator) -> None:
        """Widen the input layer (zero rows: a new feature changes nothing until it is learned) and the
        output layer (new columns initialised as the others: a new class)."""
        first = self.weights[0]
        if first.shape[1] < n_in:
            self.weights[0] = nn.Parameter(_pad(first.data, (first.shape[0], n_in, first.shape[2])))
        last = self.weights[-1]
        members, fan_in, fan_out = last.shape
        if fan_out < n_out:
            fresh = _init((members, fan_in, n_out - fan_out), fan_in, True, generator)
            self.weights[-1] = nn.Parameter(torch.cat([last.data, fresh], dim=2))
            self.biases[-1] = nn.Parameter(_pad(self.biases[-1].data, (members, 1, n_out)))


def _init(shape: tuple[int, int, int], fan_in: int, last: bool, generator: torch.Generator) -> torch.Tensor:
    """He-uniform for the ReLU layers, LeCun-uniform for the logits, from the model's own generator."""
    bound = math.sqrt((3.0 if last else 6.0) / max(fan_in, 1))
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def _pad(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``t`` in the corner of a zero tensor of ``shape`` (``t`` itself if it has that shape)."""
    if tuple(t.shape) == tuple(shape):
        return t
    out = torch.zeros(tuple(shape), dtype=t.dtype)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


class TorchMLP(Model):
    """An MLP (or a stacked ensemble of them) that learns each label with a few Adam steps over a replay
    buffer; with ``mc_passes`` or ``members`` above 1 it predicts a :class:`CommitteeProba`."""

    def __init__(
        self,
        hidden: int = 128,
        layers: int = 1,
        lr: float = 0.01,
        steps: int = 4,
        batch_size: int = 32,
        replay_size: int = 2000,
        group: int = 256,
        max_steps: int = 32,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.1,
        dropout: float = 0.0,
        mc_passes: int = 0,
        members: int = 1,
        n_threads: int = 1,
        seed: int | None = 0,
        name: str = "torch_mlp",
    ) -> None:
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be at least 1, got {hidden} and {layers}")
        if lr <= 0 or min(steps, batch_size, replay_size, group) < 1 or max_steps < steps:
            raise ValueError(
                "lr must be positive, steps, batch_size, replay_size, group at least 1, max_steps >= steps"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if mc_passes < 0 or mc_passes == 1 or (mc_passes and dropout == 0.0):
            raise ValueError("mc_passes must be 0 (no MC dropout) or at least 2, with dropout > 0")
        if members < 1 or (members > 1 and mc_passes):
            raise ValueError("members must be at least 1, and an ensemble takes no mc_passes")
        if n_threads < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}")
        self.hidden = hidden
        self.layers = layers
        self.lr = lr
        self.steps = steps
        self.batch_size = batch_size
        self.replay_size = replay_size
        self.group = group
        self.max_steps = max_steps
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.dropout = dropout
        self.mc_passes = mc_passes
        self.members = members
        self.n_threads = n_threads
        self.seed = seed
        self.name = name
        torch.set_num_threads(n_threads)
        # the first optimizer of a process costs a second and more (torch imports its compiler lazily):
        # pay it now, when the service starts, not on the first label while samples queue up
        torch.optim.Adam([nn.Parameter(torch.zeros(1))], fused=True)
        self._gen = torch.Generator()
        self._gen.manual_seed(seed if seed is not None else int(torch.seed()))
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._classes: list[ClassLabel] = []
        self._class_index: dict[ClassLabel, int] = {}
        # running mean and variance of the labelled samples (Chan et al.'s update, as the kNN's)
        self._count = 0
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        # the replay buffer: a ring of labelled rows (imputed, unscaled), their classes and bagging weights
        self._X = np.zeros((replay_size, 0), dtype=np.float32)
        self._y = np.zeros(replay_size, dtype=np.int64)
        self._w = np.ones((members, replay_size), dtype=np.float32)
        self._filled = 0
        self._next = 0
        self.labels_learned = 0
        #: buffer positions of the labels learned but not trained on yet (see the module's description)
        self._untrained: list[int] = []
        self._net: _StackedMLP | None = None
        self._opt: torch.optim.Adam | None = None
        self._masks: list[torch.Tensor] | None = None
        self._getter: Any = None

    @property
    def classes(self) -> list[ClassLabel]:
        return list(self._classes)

    def __repr__(self) -> str:
        return (
            f"TorchMLP(hidden={self.hidden}, layers={self.layers}, lr={self.lr}, steps={self.steps}, "
            f"batch_size={self.batch_size}, replay_size={self.replay_size}, dropout={self.dropout}, "
            f"mc_passes={self.mc_passes}, members={self.members}, seed={self.seed!r})"
        )

    # -- features ---------------------------------------------------------------------------------
    def _matrix(self, xs: Sequence[Features]) -> np.ndarray:
        """The known features of ``xs`` as rows (NaN where missing; names never labelled are ignored)."""
        names = self._names
        if not names:
            return np.zeros((len(xs), 0))
        getter = self._getter
        if getter is None:
            getter = self._getter = itemgetter(*names)
        try:  # the common case, every known feature present: one C-level lookup per sample
            m = np.array([getter(x) for x in xs], dtype=np.float64)
        except KeyError:
            m = np.array([[x.get(k, math.nan) for k in names] for x in xs], dtype=np.float64)
        return m.reshape(len(xs), len(names))

    def _imputed(self, m: np.ndarray) -> np.ndarray:
        missing = np.isnan(m)
        if missing.any():
            m = m.copy()
            m[missing] = np.broadcast_to(self._mean, m.shape)[missing]
        return m

    def _standardised(self, m: np.ndarray) -> torch.Tensor:
        if self._count >= 2:
            std = np.sqrt(self._m2 / self._count)
            inv = np.where(std > _EPS, 1.0 / np.maximum(std, _EPS), 1.0)
        else:
            inv = np.ones(len(self._names))
        return torch.from_numpy(((m - self._mean) * inv).astype(np.float32))

    def _observe(self, row: np.ndarray) -> None:
        self._count += 1
        delta = row - self._mean
        self._mean = self._mean + delta / self._count
        self._m2 = self._m2 + delta * (row - self._mean)

    # -- the model's interface --------------------------------------------------------------------
    def predict_proba_many(self, xs: Sequence[Features]) -> list[Proba]:
        if self._untrained:  # also on an empty batch: how the engine says a batch of labels has ended
            self._train()
        if not xs:
            return []
        net = self._net
        if net is None:
            return [{} for _ in xs]
        x = self._standardised(self._imputed(self._matrix(xs)))
        with torch.inference_mode():
            logits = net(x, self._mc_masks())  # (members or passes, batch, classes)
            probs = torch.softmax(logits.double(), dim=-1)  # in float64: each row sums to 1 within 1e-15
        classes = self._classes
        if probs.shape[0] == 1:
            return [dict(zip(classes, row, strict=True)) for row in probs[0].tolist()]
        consensus = probs.mean(dim=0).tolist()
        stacked = probs.transpose(0, 1).numpy()  # (batch, members, classes), for the committee strategies
        return [
            CommitteeProba(dict(zip(classes, c, strict=True)), members, array)
            for c, members, array in zip(consensus, stacked.tolist(), stacked, strict=True)
        ]

    def learn_one(self, x: Features, y: ClassLabel) -> None:
        for name in x:
            if name not in self._index:
                self._add_feature(name)
        if y not in self._class_index:
            self._class_index[y] = len(self._classes)
            self._classes.append(y)
        self._ensure_net()
        row = self._imputed(self._matrix([x]))[0]
        self._observe(row)
        i = self._next
        self._X[i] = row
        self._y[i] = self._class_index[y]
        if self.members > 1:  # online bagging: each member counts this label Poisson(1) times
            self._w[:, i] = torch.poisson(torch.ones(self.members), generator=self._gen).numpy()
        self._next = (i + 1) % self.replay_size
        self._filled = min(self._filled + 1, self.replay_size)
        self._untrained.append(i)
        self.labels_learned += 1
        self._masks = None
        if len(self._untrained) >= min(self.group, self.replay_size):
            self._train()

    # -- learning ---------------------------------------------------------------------------------
    def _add_feature(self, name: str) -> None:
        self._index[name] = len(self._names)
        self._names.append(name)
        self._getter = None
        self._mean = np.append(self._mean, 0.0)
        self._m2 = np.append(self._m2, 0.0)
        self._X = np.hstack([self._X, np.zeros((self.replay_size, 1), dtype=np.float32)])

    def _ensure_net(self) -> None:
        n_in, n_out = len(self._names), len(self._classes)
        if self._net is None:
            sizes = [n_in, *([self.hidden] * self.layers), n_out]
            self._net = _StackedMLP(self.members, sizes, self._gen)
            self._opt = self._optimizer()
            return
        first, last = self._net.weights[0], self._net.weights[-1]
        if first.shape[1] == n_in and last.shape[2] == n_out:
            return
        old = list(self._net.parameters())
        assert self._opt is not None
        moments = [self._opt.state.get(p) for p in old]
        self._net.grow(n_in, n_out, self._gen)
        self._opt = self._optimizer()
        for p, state in zip(self._net.parameters(), moments, strict=True):
            if state:  # Adam's moments of the old shape, zero-padded to the new one
                self._opt.state[p] = {k: _pad(v, p.shape) if v.dim() else v for k, v in state.items()}

    def _optimizer(self) -> torch.optim.Adam:
        assert self._net is not None
        return torch.optim.Adam(
            self._net.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True
        )

    def _train(self) -> None:
        """Learn the waiting labels: ``steps`` Adam steps per label, each on the label plus ``batch_size - 1``
        replayed ones, as long as that makes at most ``max_steps`` steps; beyond, the labels are taken in
        chunks, ``steps`` steps per chunk, so that a burst costs ``max_steps`` steps at most."""
        waiting = np.array(self._untrained, dtype=np.int64)
        self._untrained = []
        if len(self._classes) < 2:
            return  # one class: nothing to tell apart yet
        chunk = -(-len(waiting) * self.steps // self.max_steps)  # ceil: 1 unless the steps would be too many
        for start in range(0, len(waiting), chunk):
            self._steps(waiting[start : start + chunk])

    def _steps(self, new: np.ndarray) -> None:
        net, opt = self._net, self._opt
        assert net is not None
        assert opt is not None
        n_classes = len(self._classes)
        others = min(self.batch_size - 1, self._filled - 1)
        for _ in range(self.steps):
            drawn = torch.randint(0, self._filled, (others,), generator=self._gen).numpy()
            idx = np.concatenate([new, drawn])
            x = self._standardised(self._X[idx].astype(np.float64))
            masks = self._train_masks(len(idx))
            logits = net(x, masks)  # (members, batch, classes)
            loss = functional.cross_entropy(
                logits.reshape(-1, n_classes),
                torch.from_numpy(self._y[idx]).repeat(self.members),
                reduction="none",
                label_smoothing=self.label_smoothing,
            ).reshape(self.members, -1)
            w = torch.from_numpy(self._w[:, idx])
            per_member = (loss * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
            opt.zero_grad()
            per_member.sum().backward()  # type: ignore[no-untyped-call]
            opt.step()

    def _train_masks(self, batch: int) -> list[torch.Tensor] | None:
        """Inverted dropout masks, one per sample and member, from the model's generator."""
        if self.dropout == 0.0:
            return None
        keep = 1.0 - self.dropout
        return [
            (torch.rand(self.members, batch, self.hidden, generator=self._gen) < keep).float() / keep
            for _ in range(self.layers)
        ]

    def _mc_masks(self) -> list[torch.Tensor] | None:
        """The ``mc_passes`` consistent dropout masks of this model version, shape (passes, 1, hidden)."""
        if not self.mc_passes:
            return None
        if self._masks is None:
            gen = torch.Generator()
            gen.manual_seed((self.seed or 0) * 1_000_003 + self.labels_learned)
            keep = 1.0 - self.dropout
            self._masks = [
                (torch.rand(self.mc_passes, 1, self.hidden, generator=gen) < keep).float() / keep
                for _ in range(self.layers)
            ]
        return self._masks

    # -- pickling: the network and the optimizer as state dicts, loaded with weights_only=True --------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        tensors: dict[str, Any] = {"generator": self._gen.get_state()}
        if self._net is not None and self._opt is not None:
            tensors["net"] = self._net.state_dict()
            tensors["optimizer"] = self._opt.state_dict()
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        state["_torch"] = buffer.getvalue()
        for key in ("_gen", "_net", "_opt", "_masks", "_getter"):
            state[key] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blob: bytes = state.pop("_torch")
        self.__dict__.update(state)
        tensors = load_tensors(blob)
        torch.set_num_threads(self.n_threads)
        self._gen = torch.Generator()
        self._gen.set_state(tensors["generator"])
        if "net" in tensors:
            sizes = [len(self._names), *([self.hidden] * self.layers), len(self._classes)]
            self._net = _StackedMLP(self.members, sizes, torch.Generator())
            self._net.load_state_dict(tensors["net"])
            self._opt = self._optimizer()
            self._opt.load_state_dict(tensors["optimizer"])


def load_tensors(blob: bytes) -> dict[str, Any]:
    """What ``torch.save`` wrote, loaded with ``weights_only=True``: tensors and plain containers only,
    anything else (a pickled object that would run code) is refused with ``pickle.UnpicklingError``."""
    loaded = torch.load(io.BytesIO(blob), weights_only=True)
    if not isinstance(loaded, dict):
        raise TypeError(f"expected a dict of tensors, got {type(loaded).__name__}")
    return loaded
