"""One search trial, as it runs inside a Ray Tune worker.

The prepared arrays travel to the workers once, through Ray's object store; each worker turns
them into tensors on its first trial and keeps them for every later trial it runs (Tune reuses
the worker's actor). A trial builds the configured network, trains it epoch by epoch and reports
the validation metrics and the measured objectives after each epoch, so that schedulers can stop
it early. It saves checkpoints only when the strategy needs them (population-based training
exploits and clones them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from lifelong.trainers import knobs
from lifelong.trainers.fit import latency_ms, make_optimizer, predict_scores, score, task_loss
from lifelong.trainers.fit import train_epoch as fit_epoch
from lifelong.trainers.models import Network, build_model, parameter_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataHandle:
    """What a worker needs to find the prepared arrays: the snapshot's name, the object-store
    reference of its arrays and the facts of the task."""

    key: str
    arrays: Any
    """A Ray `ObjectRef` of the dict of arrays; fetched once per worker."""

    task: dict[str, Any]
    image_shape: tuple[int, int, int] | None


@dataclass(frozen=True)
class TrialSetup:
    """Settings every trial of one search shares."""

    epochs: int
    checkpoint_every: int
    """Save a checkpoint every this many epochs; 0 never (only PBT needs them)."""

    seed: int
    faults: tuple[int, int] = (0, 1)
    """(attempts, every) from `LIFELONG_FAULTS`, for fault-injection tests."""

    scratch: str = ""
    """A folder the driver and the workers share, where injected faults count attempts."""


@dataclass
class Tensors:
    """The prepared arrays as tensors, kept by a worker between trials."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_validation: torch.Tensor
    y_validation: np.ndarray
    task: dict[str, Any]
    image_shape: tuple[int, int, int] | None

    @property
    def inputs(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def outputs(self) -> int:
        classes = self.task.get("classes")
        return len(classes) if classes is not None else 1


class InjectedFaultError(RuntimeError):
    """A failure injected by `LIFELONG_FAULTS` to test retries."""


_CACHE: dict[str, Tensors] = {}
"""The tensors of the snapshot this worker served last, by snapshot name."""


def tensors(handle: DataHandle) -> Tensors:
    """The snapshot's tensors, fetched and converted on this worker's first trial only."""
    cached = _CACHE.get(handle.key)
    if cached is not None:
        return cached
    import ray

    arrays: dict[str, np.ndarray] = ray.get(handle.arrays)
    classification = handle.task["type"] == "classification"
    made = Tensors(
        x_train=torch.tensor(arrays["x_train"]),
        y_train=torch.tensor(arrays["y_train"]),
        x_validation=torch.tensor(arrays["x_validation"]),
        y_validation=np.array(arrays["y_validation"]),
        task=handle.task,
        image_shape=handle.image_shape,
    )
    if not classification:
        made.y_train = made.y_train.float()
    _CACHE.clear()
    _CACHE[handle.key] = made
    return made


def run_trial(config: dict[str, Any], *, data: DataHandle, setup: TrialSetup) -> None:
    """Train one configuration, reporting to Ray Tune after every epoch."""
    began = time.perf_counter()
    entered = time.time()
    torch.set_num_threads(1)
    held = tensors(data)
    _maybe_fail(config, setup)
    torch.manual_seed(setup.seed)
    generator = torch.Generator().manual_seed(setup.seed)
    network = build_model(config, held.inputs, held.outputs, held.image_shape)
    optimizer = make_optimizer(config, network.parameters())
    first = _restore(network, optimizer, generator, config)
    fixed = objectives(network, held.x_validation)
    loss = task_loss(held.task["type"] == "classification")
    setup_seconds = time.perf_counter() - began
    compute = 0.0

    for epoch in range(first, setup.epochs):
        start = time.perf_counter()
        mean_loss = fit_epoch(
            network,
            optimizer,
            held.x_train,
            held.y_train,
            loss,
            batch_size=int(config.get("batch_size", 64)),
            generator=generator,
            augmentation=str(config.get("augmentation", "none")),
            image_shape=held.image_shape,
        )
        quality = score(held.task, predict_scores(network, held.x_validation), held.y_validation)
        compute += time.perf_counter() - start
        metrics = {
            **quality,
            **fixed,
            "loss": mean_loss,
            "epoch": epoch + 1,
            "compute_seconds": compute,
            "setup_seconds": setup_seconds,
            "entered": entered,
            "reported": time.time(),
        }
        every = setup.checkpoint_every
        if every and ((epoch + 1) % every == 0 or epoch + 1 == setup.epochs):
            _report_with_checkpoint(metrics, network, optimizer, generator, epoch + 1)
        else:
            tune.report(metrics)


def objectives(network: Network, sample: torch.Tensor) -> dict[str, float]:
    """The measured objectives besides quality: latency, size and estimated energy."""
    latency = latency_ms(network, sample)
    return {
        "latencyMs": latency,
        "params": float(parameter_count(network)),
        "energyJ": latency / 1000.0 * knobs.cpu_watts(),
    }


# --- checkpoints (population-based training) ---------------------------------------------------


def _report_with_checkpoint(
    metrics: dict[str, Any],
    network: Network,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
) -> None:
    state = {
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "epoch": epoch,
    }
    with tempfile.TemporaryDirectory(prefix="lifelong-trial-") as folder:
        torch.save(state, Path(folder) / "state.pt")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _restore(
    network: Network,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: dict[str, Any],
) -> int:
    """Continue from Tune's checkpoint when there is one (a retry, or a PBT exploit); return
    the epoch to start from."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / "state.pt", weights_only=True)
    network.load_state_dict(state["network"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    # An exploited trial carries on with the weights it cloned and its own new hyperparameters.
    for group in optimizer.param_groups:
        group["lr"] = float(config.get("learning_rate", group["lr"]))
        group["weight_decay"] = float(config.get("weight_decay", group["weight_decay"]))
    return int(state["epoch"])


# --- fault injection --------------------------------------------------------------------------


def _maybe_fail(config: dict[str, Any], setup: TrialSetup) -> None:
    """Raise in the first attempts of chosen trials when `LIFELONG_FAULTS` asks for it."""
    attempts, every = setup.faults
    if attempts <= 0:
        return
    text = json.dumps(config, sort_keys=True, default=str)
    if int(hashlib.sha256(text.encode()).hexdigest(), 16) % every != 0:
        return
    marker = Path(setup.scratch) / f"attempts-{tune.get_context().get_trial_id()}"
    done = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(done + 1))
    if done < attempts:
        raise InjectedFaultError(f"injected failure {done + 1} of {attempts} (LIFELONG_FAULTS)")


def warm_up() -> None:
    """Pay a worker's one-off costs before its first trial: torch's lazy imports (an
    optimiser's first construction imports its compiler), the first forward and backward."""
    torch.set_num_threads(1)
    network = build_model({"family": "mlp", "depth": 1, "width": 8}, 4, 2)
    optimizer = make_optimizer({"optimizer": "adam"}, network.parameters())
    loss = task_loss(True)(network, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
