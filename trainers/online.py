"""Online learning signals and online adaptation for the serve stage.

- `Prequential`: test-then-train metrics over a sliding window of labelled predictions: accuracy
  for a classifier, root mean squared error for a regressor.
- `FeatureMonitor`: how far recent inputs sit from the training data, in standard deviations.
- `HeadAdapter`: `serving.adaptation.mode: head`. The served version's output layer takes one
  SGD step per label (with a rehearsal batch from the memories) and grows for classes it has
  never seen, so a served model can follow new classes between updates. The stored version never
  changes.

Each keeps its state as plain data (`state()` / `restore()`), which the serve stage persists.
"""

from __future__ import annotations

import copy
import io
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong.api import AdaptationSpec
from lifelong.trainers.bundle import ModelBundle

Z_CLIP = 10.0
"""Largest |z-score| one feature contributes, so a constant training column cannot dominate."""

STD_FLOOR = 1e-3
"""Smallest standard deviation used for a feature (constant columns in the training data)."""


class Prequential:
    """A sliding window of the last `size` labelled predictions of one served version."""

    def __init__(self, size: int, classification: bool) -> None:
        self.size = size
        self.classification = classification
        self.errors: deque[float] = deque(maxlen=size)
        """0/1 errors (classification) or squared errors (regression), oldest first."""
        self.labelled = 0

    def update(self, truth: Any, prediction: Any) -> float:
        """Score one prediction against its label; returns its error (0/1, or absolute)."""
        if self.classification:
            error = 0.0 if truth == prediction else 1.0
            self.errors.append(error)
        else:
            error = abs(float(truth) - float(prediction))
            self.errors.append(error * error)
        self.labelled += 1
        return error

    @property
    def value(self) -> float | None:
        """Accuracy (classification) or RMSE (regression) over the window; None when empty."""
        if not self.errors:
            return None
        mean = sum(self.errors) / len(self.errors)
        return 1.0 - mean if self.classification else math.sqrt(mean)

    def state(self) -> dict[str, Any]:
        return {"errors": list(self.errors), "labelled": self.labelled}

    def restore(self, state: dict[str, Any]) -> None:
        self.errors.clear()
        self.errors.extend(float(e) for e in state.get("errors", []))
        self.labelled = int(state.get("labelled", len(self.errors)))


class FeatureMonitor:
    """Input statistics against the training data's, on preprocessed features.

    `shift` is the mean over features of |recent mean - training mean| / training std, where the
    recent mean is an exponential moving average with the span of `window` records.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, window: int) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.maximum(np.asarray(std, dtype=np.float64), STD_FLOOR)
        self.rate = 2.0 / (window + 1.0)
        self.recent: np.ndarray | None = None
        self.seen = 0

    @classmethod
    def from_training(cls, features: np.ndarray, window: int) -> FeatureMonitor:
        return cls(features.mean(axis=0), features.std(axis=0), window)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Each row's mean absolute z-score (the value feature detectors watch)."""
        z = np.clip(np.abs((features - self.mean) / self.std), 0.0, Z_CLIP)
        out: np.ndarray = z.mean(axis=1)
        return out

    def update(self, features: np.ndarray) -> np.ndarray:
        """Fold a batch of rows into the moving mean; return their scores."""
        rows = features.astype(np.float64)
        if len(rows) == 0:
            return np.zeros(0)
        if self.recent is None:
            self.recent = rows[0].copy()
        # The moving mean after n rows, in closed form: old mean decayed n times plus the rows,
        # each decayed by how many rows came after it.
        keep = 1.0 - self.rate
        weights = self.rate * keep ** np.arange(len(rows) - 1, -1, -1, dtype=np.float64)
        self.recent = keep ** len(rows) * self.recent + weights @ rows
        self.seen += len(rows)
        return self.scores(rows)

    @property
    def shift(self) -> float:
        if self.recent is None:
            return 0.0
        z = np.clip(np.abs((self.recent - self.mean) / self.std), 0.0, Z_CLIP)
        return float(z.mean())

    def state(self) -> dict[str, Any]:
        recent = None if self.recent is None else self.recent.tolist()
        return {"recent": recent, "seen": self.seen}

    def restore(self, state: dict[str, Any]) -> None:
        recent = state.get("recent")
        if recent is not None and len(recent) == len(self.mean):
            self.recent = np.asarray(recent, dtype=np.float64)
        self.seen = int(state.get("seen", 0))


class HeadAdapter:
    """The served version's output layer, adapted online from labelled feedback."""

    def __init__(self, bundle: ModelBundle, spec: AdaptationSpec) -> None:
        self.bundle = bundle
        self.spec = spec
        self.head: nn.Linear = copy.deepcopy(bundle.network.head)
        self.classes: list[Any] | None = list(bundle.classes) if bundle.classes else None
        self.steps = 0
        self._optimizer = self._new_optimizer()

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.head.parameters(), lr=self.spec.learning_rate)

    @torch.no_grad()
    def _embed(self, features: np.ndarray) -> torch.Tensor:
        network = self.bundle.network
        network.eval()
        tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        return network.embed(tensor)

    @torch.no_grad()
    def predict_features(self, features: np.ndarray) -> list[Any]:
        out = self.head(self._embed(features)).numpy()
        if self.classes is None:
            return [float(v) for v in out[:, 0]]
        return [self.classes[i] for i in out.argmax(axis=1)]

    def _grow(self, labels: Sequence[Any]) -> None:
        if self.classes is None:
            return
        new = [c for c in dict.fromkeys(labels) if c not in self.classes]
        if not new:
            return
        old = self.head
        head = nn.Linear(old.in_features, old.out_features + len(new))
        with torch.no_grad():
            head.weight.zero_()
            head.weight[: old.out_features] = old.weight
            head.bias.fill_(float(old.bias.min()) - 1.0)
            head.bias[: old.out_features] = old.bias
        self.head = head
        self.classes = [*self.classes, *new]
        self._optimizer = self._new_optimizer()

    def _targets(self, labels: Sequence[Any]) -> torch.Tensor:
        if self.classes is None:
            return torch.tensor([float(v) for v in labels], dtype=torch.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index[v] for v in labels], dtype=torch.int64)

    def learn(self, features: np.ndarray, labels: Sequence[Any]) -> float:
        """One SGD step on a batch of labelled rows (preprocessed features); returns the loss."""
        if len(labels) == 0:
            return 0.0
        self._grow(labels)
        embedded = self._embed(features)
        target = self._targets(labels)
        out = self.head(embedded)
        if self.classes is None:
            loss = nn.functional.mse_loss(out[:, 0], target)
        else:
            loss = nn.functional.cross_entropy(out, target)
        self._optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        self._optimizer.step()
        self.steps += 1
        return float(loss.detach())

    def state(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {"head": self.head.state_dict(), "classes": self.classes, "steps": self.steps}, buffer
        )
        return buffer.getvalue()

    def restore(self, data: bytes) -> None:
        saved = torch.load(io.BytesIO(data), weights_only=True)
        classes = saved["classes"]
        if classes is not None:
            self._grow(list(classes))
        self.head.load_state_dict(saved["head"])
        self.classes = classes
        self.steps = int(saved["steps"])
        self._optimizer = self._new_optimizer()
