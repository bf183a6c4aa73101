"""Benchmark: continual-learning strategies on digits, class-incremental and permuted.

The update strategies of `lifelong.trainers.strategies` (the update stage's own code) learn a
sequence of tasks, one update per task, from the previous model:

- class-incremental: five tasks of two digits each (0-1, 2-3, ...); one growing output head,
  evaluated over every digit seen so far;
- permuted: four tasks of all ten digits, each with its own fixed permutation of the pixels.

`finetune` (no protection), `ewc`, `lwf` and `replay` each see only the new task's training
rows, plus (for replay, and for EWC's Fisher information) a class-balanced replay memory of
`MEMORY` earlier rows, as the serve stage keeps. `joint` trains from scratch on every task so
far: the upper bound. Printed per strategy, as mean ± standard deviation over seeds:

- average accuracy: the mean accuracy over all tasks' test rows after the last task;
- forgetting: the mean, over all but the last task, of the best accuracy a task ever had minus
  its accuracy after the last task.

Run: `python bench/continual.py` (a few minutes on two cores).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from lifelong.trainers.fit import make_optimizer, task_loss, train_epoch
from lifelong.trainers.memory import Example, ReplayMemory
from lifelong.trainers.models import Network, build_model, expand_head
from lifelong.trainers.strategies import Training, UpdateData, make_strategy

SEEDS = (0, 1, 2)
MEMORY = 200
"""Rows in the replay memory (the spec's `memorySize`)."""
CONFIG: dict[str, Any] = {
    "family": "mlp",
    "depth": 2,
    "width": 256,
    "learning_rate": 1e-3,
    "weight_decay": 1e-5,
}
EPOCHS = 20
EWC_LAMBDA = 10_000.0
LWF_ALPHA = 1.0
METHODS = ("finetune", "ewc", "lwf", "replay", "joint")


@dataclass
class Task:
    """One task's training and test rows, already scaled."""

    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def class_incremental(seed: int) -> list[Task]:
    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(train_x[train_y < 2])  # what the first model sees
    tasks = []
    for first in range(0, 10, 2):
        keep, hold = np.isin(train_y, [first, first + 1]), np.isin(test_y, [first, first + 1])
        tasks.append(
            Task(
                *tensors(scaler.transform(train_x[keep]), train_y[keep]),
                *tensors(scaler.transform(test_x[hold]), test_y[hold]),
            )
        )
    return tasks


def permuted(seed: int, count: int = 4) -> list[Task]:
    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(train_x)
    rng = np.random.default_rng(seed)
    orders = [np.arange(64)] + [rng.permutation(64) for _ in range(count - 1)]
    return [
        Task(
            *tensors(scaler.transform(train_x)[:, order], train_y),
            *tensors(scaler.transform(test_x)[:, order], test_y),
        )
        for order in orders
    ]


def accuracy(network: Network, task: Task) -> float:
    network.eval()
    with torch.no_grad():
        return float((network(task.test_x).argmax(1) == task.test_y).float().mean())


def train_from_scratch(x: torch.Tensor, y: torch.Tensor, outputs: int, seed: int) -> Network:
    torch.manual_seed(seed)
    network = build_model(CONFIG, x.shape[1], outputs)
    optimizer = make_optimizer(CONFIG, network.parameters())
    generator = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        train_epoch(network, optimizer, x, y, task_loss(True), batch_size=32, generator=generator)
    return network


def memory_tensors(memory: ReplayMemory) -> tuple[torch.Tensor, torch.Tensor]:
    examples = list(memory)
    x = torch.stack([torch.as_tensor(e.features, dtype=torch.float32) for e in examples])
    return x, torch.tensor([int(e.label) for e in examples], dtype=torch.int64)


def run(method: str, tasks: list[Task], seed: int, outputs: Callable[[int], int]) -> np.ndarray:
    """Accuracy matrix: row t holds every task's test accuracy after learning task t."""
    results = np.zeros((len(tasks), len(tasks)))
    network = train_from_scratch(tasks[0].x, tasks[0].y, outputs(0), seed)
    memory = ReplayMemory(MEMORY, seed=seed)
    training = Training(
        epochs=EPOCHS,
        learning_rate=float(CONFIG["learning_rate"]),
        batch_size=32,
        seed=seed,
        ewc_lambda=EWC_LAMBDA,
        lwf_alpha=LWF_ALPHA,
        config=CONFIG,
    )
    for t, task in enumerate(tasks):
        if t > 0:
            if method == "joint":
                x = torch.cat([k.x for k in tasks[: t + 1]])
                y = torch.cat([k.y for k in tasks[: t + 1]])
                network = train_from_scratch(x, y, outputs(t), seed)
            else:
                teacher = network
                network = copy.deepcopy(teacher)
                torch.manual_seed(seed)
                expand_head(network, outputs(t))
                old_x, old_y = memory_tensors(memory)
                data = UpdateData(task.x, task.y, old_x, old_y)
                make_strategy(method, training).fit(network, teacher, data)
        rows = zip(task.x, task.y, strict=True)
        memory.extend(Example(row.tolist(), int(label)) for row, label in rows)
        results[t, : t + 1] = [accuracy(network, k) for k in tasks[: t + 1]]
    return results


def summary(results: np.ndarray) -> tuple[float, float]:
    last = results[-1]
    forgetting = [results[:-1, j].max() - last[j] for j in range(len(last) - 1)]
    return float(last.mean()), float(np.mean(forgetting))


def main() -> None:
    torch.set_num_threads(1)
    scenarios: dict[str, tuple[Callable[[int], list[Task]], Callable[[int], int]]] = {
        "class-incremental digits (5 tasks of 2 classes)": (class_incremental, lambda t: 2 * t + 2),
        "permuted digits (4 tasks of 10 classes)": (permuted, lambda t: 10),
    }
    print(f"memory {MEMORY} rows, {EPOCHS} epochs per task, EWC lambda {EWC_LAMBDA:g}, ", end="")
    print(f"LwF alpha {LWF_ALPHA:g}, seeds {list(SEEDS)}; mean ± std")
    for scenario, (make, outputs) in scenarios.items():
        print(f"\n{scenario}")
        print(f"  {'strategy':<10} {'average accuracy':>18} {'forgetting':>16} {'seconds':>8}")
        for method in METHODS:
            started = time.monotonic()
            scores = [summary(run(method, make(seed), seed, outputs)) for seed in SEEDS]
            mean, spread = np.mean(scores, axis=0), np.std(scores, axis=0)
            print(
                f"  {method:<10} {mean[0]:>11.3f} ± {spread[0]:.3f}"
                f" {mean[1]:>9.3f} ± {spread[1]:.3f} {time.monotonic() - started:>8.0f}"
            )


if __name__ == "__main__":
    main()
