"""Full-fidelity training of one configuration with Ray Train's `TorchTrainer`.

Each worker takes an equal shard of the training rows (so every worker runs the same number of
batches, which DDP needs), wraps the network in DistributedDataParallel (gloo on CPUs, NCCL on
GPUs) and trains epoch by epoch. After each epoch the first worker scores the validation rows,
reports a checkpoint (weights, optimiser, random state, epoch) and rewrites the run's progress
file in the artifact store. Run again under the same name after a kill, Ray Train hands the
workers the latest checkpoint and they carry on from the epoch after it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from lifelong.trainers.fit import make_optimizer, predict_scores, score, task_loss
from lifelong.trainers.fit import train_epoch as fit_epoch
from lifelong.trainers.models import Network, build_model
from lifelong.trainers.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """What every worker needs: the configuration, the data and where to report progress."""

    config: dict[str, Any]
    arrays: Any
    """A Ray `ObjectRef` of the prepared arrays."""

    task: dict[str, Any]
    image_shape: tuple[int, int, int] | None
    epochs: int
    seed: int
    store: str
    """The job's artifact store, for the progress file."""

    progress: tuple[str, ...]
    """The progress file's path in the store."""


def train_loop(settings: dict[str, Any]) -> None:
    """The training function every Ray Train worker runs."""
    import ray
    import ray.train
    import ray.train.torch

    loop: LoopConfig = settings["loop"]
    torch.set_num_threads(1)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    arrays: dict[str, np.ndarray] = ray.get(loop.arrays)
    x, y = _shard(arrays, loop.task, rank, world, loop.seed)
    x, y = x.to(device), y.to(device)

    torch.manual_seed(loop.seed)
    outputs = len(loop.task["classes"]) if loop.task.get("classes") is not None else 1
    network = build_model(loop.config, x.shape[1], outputs, loop.image_shape).to(device)
    optimizer = make_optimizer(loop.config, network.parameters())
    generator = torch.Generator().manual_seed(loop.seed + rank)
    first = _restore(network, optimizer, generator)
    # DDP averages the gradients of all workers; the loop only sees a module.
    model = cast(Network, ray.train.torch.prepare_model(network))
    loss = task_loss(loop.task["type"] == "classification")
    validation = torch.tensor(arrays["x_validation"]).to(device)

    for epoch in range(first, loop.epochs):
        began = time.perf_counter()
        mean_loss = fit_epoch(
            model,
            optimizer,
            x,
            y,
            loss,
            batch_size=int(loop.config.get("batch_size", 64)),
            generator=generator,
            augmentation=str(loop.config.get("augmentation", "none")),
            image_shape=loop.image_shape,
        )
        metrics: dict[str, Any] = {"epoch": epoch + 1, "loss": mean_loss, "resumedFrom": first}
        if rank == 0:
            scored = score(loop.task, predict_scores(network, validation), arrays["y_validation"])
            metrics |= {f"validation.{k}": v for k, v in scored.items()}
            metrics["seconds"] = time.perf_counter() - began
            _report_with_checkpoint(metrics, network, optimizer, generator)
            _write_progress(loop, metrics)
        else:
            ray.train.report(metrics)
    if first >= loop.epochs and rank == 0:
        _write_progress(loop, {"epoch": first, "resumedFrom": first})


def _shard(
    arrays: dict[str, np.ndarray], task: dict[str, Any], rank: int, world: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """This worker's equal share of the training rows (a fixed shuffle, then every world-th)."""
    rows = len(arrays["y_train"])
    order = np.random.default_rng(seed).permutation(rows)
    share = rows // world
    mine = order[rank::world][:share]
    x = torch.tensor(arrays["x_train"][mine])
    y = torch.tensor(arrays["y_train"][mine])
    return x, (y if task["type"] == "classification" else y.float())


def _report_with_checkpoint(
    metrics: dict[str, Any],
    network: Network,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    import ray.train

    state = {
        "network": {k: v.cpu() for k, v in network.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "epoch": metrics["epoch"],
    }
    with tempfile.TemporaryDirectory(prefix="lifelong-train-") as folder:
        torch.save(state, Path(folder) / "state.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _restore(network: Network, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
    """Load Ray Train's latest checkpoint, if this run has one; return the epoch to start at."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    state = load_state(checkpoint)
    network.load_state_dict(state["network"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["epoch"])


def load_state(checkpoint: Any) -> dict[str, Any]:
    """The state saved in one of this module's checkpoints."""
    with checkpoint.as_directory() as folder:
        state: dict[str, Any] = torch.load(
            Path(folder) / "state.pt", map_location="cpu", weights_only=True
        )
    return state


def _write_progress(loop: LoopConfig, metrics: dict[str, Any]) -> None:
    plain = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    Store(loop.store).write_json({**plain, "epochs": loop.epochs}, *loop.progress)
