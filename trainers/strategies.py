"""Continual-learning strategies: how an update trains a candidate from the serving model.

Each strategy trains `network` (a copy of the serving model, its head already grown for new
classes) on new data, protecting what the serving model (`teacher`) knew in its own way:

- `finetune`: new data only, no protection. The baseline that shows forgetting.
- `replay`: new data mixed with the replay memory of older data (experience replay).
- `ewc`: new data, plus elastic weight consolidation: a quadratic penalty, weighted by the
  diagonal Fisher information on old data, on moving the teacher's weights.
- `lwf`: new data, plus learning without forgetting: the teacher's outputs on the new inputs
  are distilled into the old outputs of the network.

They share one contract, `Strategy.fit(network, teacher, data)`, and are listed in `STRATEGIES`
by their name in `lifelong.update.strategy`. The bench (`bench/continual.py`) and the update stage
call the same code.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.trainers.fit import Loss, make_optimizer, task_loss, train_epoch
from lifelong.trainers.models import Network

log = logging.getLogger(__name__)

FISHER_SAMPLES = 500
"""Most old examples used to estimate EWC's Fisher information."""


@dataclass
class UpdateData:
    """Preprocessed tensors: new (recent) data and old (replay) data."""

    new_x: torch.Tensor
    new_y: torch.Tensor
    old_x: torch.Tensor
    old_y: torch.Tensor


@dataclass(frozen=True)
class Training:
    """How long and how fast a strategy trains, and its regularisation strengths."""

    epochs: int
    learning_rate: float
    batch_size: int = 64
    classification: bool = True
    seed: int = 0
    ewc_lambda: float = 100.0
    lwf_alpha: float = 1.0
    temperature: float = 2.0
    config: dict[str, Any] = field(default_factory=dict)
    """The serving model's configuration: optimizer kind and weight decay."""

    def with_rate(self, learning_rate: float) -> Training:
        return replace(self, learning_rate=learning_rate)


class Strategy(ABC):
    """One way of training a candidate from the serving model."""

    name: ClassVar[str]

    def __init__(self, training: Training) -> None:
        self.training = training

    def inputs(self, data: UpdateData) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples the strategy trains on."""
        return data.new_x, data.new_y

    @abstractmethod
    def loss(self, network: Network, teacher: Network, data: UpdateData) -> Loss:
        """The training loss, built once before the first epoch."""

    def fit(self, network: Network, teacher: Network, data: UpdateData) -> list[float]:
        """Train `network` in place; returns the mean loss of each epoch."""
        settings = self.training
        x, y = self.inputs(data)
        if len(x) == 0:
            raise ValueError(f"the {self.name} strategy has no examples to train on")
        generator = torch.Generator().manual_seed(settings.seed)
        teacher.eval()
        loss = self.loss(network, teacher, data)
        optimizer = make_optimizer(settings.config, network.parameters(), settings.learning_rate)
        losses = []
        for _ in range(settings.epochs):
            value = train_epoch(
                network,
                optimizer,
                x,
                y,
                loss,
                batch_size=settings.batch_size,
                generator=generator,
            )
            losses.append(value)
        log.debug("%s: epoch losses %s", self.name, [round(v, 4) for v in losses])
        return losses


class Finetune(Strategy):
    """New data only: the baseline that forgets."""

    name = "finetune"

    def loss(self, network: Network, teacher: Network, data: UpdateData) -> Loss:
        return task_loss(self.training.classification)


class Replay(Strategy):
    """New data mixed with the replay memory of old data."""

    name = "replay"

    def inputs(self, data: UpdateData) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([data.new_x, data.old_x]), torch.cat([data.new_y, data.old_y])

    def loss(self, network: Network, teacher: Network, data: UpdateData) -> Loss:
        return task_loss(self.training.classification)


def _overlap(parameter: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The part of a (possibly grown) parameter that has the teacher's shape."""
    return parameter[tuple(slice(0, size) for size in shape)]


def fisher_diagonal(
    teacher: Network, x: torch.Tensor, y: torch.Tensor, classification: bool
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher information of the teacher's parameters on (x, y)."""
    fisher = {name: torch.zeros_like(p) for name, p in teacher.named_parameters()}
    if len(x) == 0:
        return fisher
    base = task_loss(classification)
    teacher.eval()
    count = min(len(x), FISHER_SAMPLES)
    for i in range(count):
        teacher.zero_grad()
        base(teacher, x[i : i + 1], y[i : i + 1]).backward()  # type: ignore[no-untyped-call]
        for name, parameter in teacher.named_parameters():
            if parameter.grad is not None:
                fisher[name] += parameter.grad.detach() ** 2
    teacher.zero_grad()
    return {name: value / float(count) for name, value in fisher.items()}


class EWC(Strategy):
    """New data, with a Fisher-weighted penalty on moving the teacher's weights."""

    name = "ewc"

    def loss(self, network: Network, teacher: Network, data: UpdateData) -> Loss:
        settings = self.training
        fisher = fisher_diagonal(teacher, data.old_x, data.old_y, settings.classification)
        anchors = {name: p.detach().clone() for name, p in teacher.named_parameters()}
        base = task_loss(settings.classification)

        def loss(net: Network, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            penalty = torch.zeros(())
            for name, parameter in net.named_parameters():
                anchor = anchors[name]
                moved = _overlap(parameter, anchor.shape) - anchor
                penalty = penalty + (fisher[name] * moved**2).sum()
            return base(net, x, y) + settings.ewc_lambda / 2.0 * penalty

        return loss


class LwF(Strategy):
    """New data, with the teacher's outputs on it distilled into the network's old outputs."""

    name = "lwf"

    def loss(self, network: Network, teacher: Network, data: UpdateData) -> Loss:
        settings = self.training
        old_outputs = teacher.head.out_features
        temperature = settings.temperature

        def loss(net: Network, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = teacher(x)
            out = net(x)
            if settings.classification:
                soft = nn.functional.log_softmax(out[:, :old_outputs] / temperature, dim=1)
                goal = nn.functional.softmax(target / temperature, dim=1)
                distill = nn.functional.kl_div(soft, goal, reduction="batchmean")
                distill = distill * temperature**2
                task = nn.functional.cross_entropy(out, y)
            else:
                distill = nn.functional.mse_loss(out, target)
                task = nn.functional.mse_loss(out[:, 0], y)
            return task + settings.lwf_alpha * distill

        return loss


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Finetune, Replay, EWC, LwF)}
"""Every update strategy, by its name in `lifelong.update.strategy`."""


def make_strategy(name: str, training: Training) -> Strategy:
    """The strategy named `name` (`replay`, `ewc`, `lwf`, `finetune`)."""
    if name not in STRATEGIES:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown update strategy {name!r}; choose one of {known}")
    return STRATEGIES[name](training)
