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
        return x + 0.1 * torch.randn(x.shape, generator=generator).to(x.device)
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
    out: np.ndarray = network(x).cpu().numpy()
    return out


def score(task: dict[str, Any], scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Task metrics for network outputs against encoded targets.

    Plain numpy with scikit-learn's definitions (macro F1 over the classes in either labels or
    predictions, balanced accuracy over the classes in the labels, log loss with probabilities
    clipped at machine epsilon): a search scores every epoch of every trial, and this costs a
    fraction of scikit-learn's checks.
    """
    if task["type"] == "classification":
        return _classification(scores, np.asarray(y).astype(np.int64))
    return _regression(scores[:, 0].astype(np.float64), np.asarray(y, dtype=np.float64))


def _classification(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    predicted = scores.argmax(axis=1)
    labels = np.union1d(y, predicted)
    hits = np.array([np.sum((predicted == c) & (y == c)) for c in labels], dtype=np.float64)
    truth = np.array([np.sum(y == c) for c in labels], dtype=np.float64)
    guessed = np.array([np.sum(predicted == c) for c in labels], dtype=np.float64)
    present = truth > 0
    f1 = np.divide(2 * hits, truth + guessed, out=np.zeros_like(hits), where=truth + guessed > 0)

    shifted = scores - scores.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    eps = np.finfo(probabilities.dtype).eps
    chosen = np.clip(probabilities[np.arange(len(y)), y], eps, 1 - eps)
    return {
        "accuracy": float(np.mean(predicted == y)),
        "balancedAccuracy": float(np.mean(hits[present] / truth[present])),
        "f1": float(np.mean(f1)),
        "logLoss": float(-np.mean(np.log(chosen))),
    }


def _regression(values: np.ndarray, y: np.ndarray) -> dict[str, float]:
    error = values - y
    residual = float(np.sum(error**2))
    total = float(np.sum((y - y.mean()) ** 2))
    if len(y) < 2:
        r2 = 0.0
    elif total > 0:
        r2 = 1.0 - residual / total
    else:
        r2 = 1.0 if residual == 0 else 0.0
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": r2,
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
