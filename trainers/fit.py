"""Training and evaluation helpers shared by the search, train and update stages.

The loops are deliberately plain: one epoch at a time over tensors already in memory, so a
search trial, a full training and an incremental update all cost what their epochs cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

from lifelong.trainers.models import Network

Loss = Callable[[Network, torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(
    config: dict[str, Any], parameters: Any, lr: float | None = None
) -> torch.optim.Optimizer:
    """The optimiser a configuration names, with its learning rate and weight decay."""
    rate = float(lr if lr is not None else config.get("learning_rate", 1e-3))
    decay = float(config.get("weight_decay", 0.0))
    kind = config.get("optimizer", "adam")
    if kind == "sgd":
        return torch.optim.SGD(parameters, lr=rate, momentum=0.9, weight_decay=decay)
    if kind == "adamw":
        return torch.optim.AdamW(parameters, lr=rate, weight_decay=decay)
    return torch.optim.Adam(parameters, lr=rate, weight_decay=decay)


def task_loss(classification: bool) -> Loss:
    """Cross-entropy for classification, mean squared error for regression."""
    if classification:
        ce = nn.CrossEntropyLoss()
        return lambda net, x, y: ce(net(x), y)
    mse = nn.MSELoss()
    return lambda net, x, y: mse(net(x)[:, 0], y)


def augment(
    x: torch.Tensor, kind: str, image_shape: tuple[int, int, int] | None, generator: torch.Generator
) -> torch.Tensor:
    """Training-time augmentation: Gaussian noise, or a one-pixel shift of images."""
    if kind == "noise":
        return x + 0.1 * torch.randn(x.shape, generator=generator)
    if kind == "shift" and image_shape is not None:
        dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=generator))
        images = x.reshape(x.shape[0], *image_shape)
        return torch.roll(images, shifts=(dy, dx), dims=(2, 3)).reshape(x.shape[0], -1)
    return x


def train_epoch(
    network: Network,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Loss,
    *,
    batch_size: int,
    generator: torch.Generator,
    augmentation: str = "none",
    image_shape: tuple[int, int, int] | None = None,
) -> float:
    """One pass over the data in shuffled mini-batches; returns the mean loss."""
    network.train()
    order = torch.randperm(len(x), generator=generator)
    total, batches = 0.0, 0
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        if len(index) < 2 and len(x) >= 2:
            continue  # batch normalisation cannot learn from a single example
        inputs = augment(x[index], augmentation, image_shape, generator)
        optimizer.zero_grad()
        value = loss(network, inputs, y[index])
        value.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        total += float(value.detach())
        batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def predict_scores(network: Network, x: torch.Tensor) -> np.ndarray:
    network.eval()
    out: np.ndarray = network(x).numpy()
    return out


def score(task: dict[str, Any], scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Task metrics for network outputs against encoded targets."""
    if task["type"] == "classification":
        predicted = scores.argmax(axis=1)
        result = {
            "accuracy": float(skm.accuracy_score(y, predicted)),
            "balancedAccuracy": float(skm.balanced_accuracy_score(y, predicted))
            if len(np.unique(y)) > 1
            else float(skm.accuracy_score(y, predicted)),
            "f1": float(skm.f1_score(y, predicted, average="macro")),
        }
        probabilities = torch.softmax(torch.from_numpy(scores), dim=1).numpy()
        labels = list(range(scores.shape[1]))
        result["logLoss"] = float(skm.log_loss(y, probabilities, labels=labels))
        return result
    values = scores[:, 0]
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, values))),
        "mae": float(skm.mean_absolute_error(y, values)),
        "r2": float(skm.r2_score(y, values)) if len(y) > 1 else 0.0,
    }


def latency_ms(network: Network, x: torch.Tensor, repeats: int = 20) -> float:
    """Median time to predict one example, in milliseconds (batch of one, CPU)."""
    network.eval()
    sample = x[:1]
    timings = []
    with torch.no_grad():
        for _ in range(3):
            network(sample)
        for _ in range(repeats):
            start = time.perf_counter()
            network(sample)
            timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000.0)


def better(mode: str, a: float, b: float) -> bool:
    """Whether `a` is better than `b` for a metric improving in `mode`."""
    return a > b if mode == "max" else a < b
