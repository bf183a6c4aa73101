"""One conformance suite, run against every update strategy."""

from __future__ import annotations

import copy
import typing
from functools import cache

import pytest
import torch

from lifelong.api.job import UpdateStrategyName
from lifelong.trainers.models import Network, build_model, expand_head
from lifelong.trainers.strategies import (
    STRATEGIES,
    Training,
    UpdateData,
    fisher_diagonal,
    make_strategy,
)

pytestmark = pytest.mark.unit

NAMES = sorted(STRATEGIES)
CONFIG = {"family": "mlp", "depth": 1, "width": 16, "learning_rate": 0.01}


def blobs(classes: list[int], per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in classes:
        centre = torch.zeros(4)
        centre[c % 4] = 3.0
        xs.append(centre + torch.randn(per_class, 4, generator=generator))
        ys.append(torch.full((per_class,), c, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def teacher_and_data() -> tuple[Network, UpdateData]:
    teacher, data = _trained_teacher()
    return copy.deepcopy(teacher), data


@cache
def _trained_teacher() -> tuple[Network, UpdateData]:
    torch.manual_seed(0)
    teacher = build_model(CONFIG, 4, 2)
    old_x, old_y = blobs([0, 1], 40, seed=1)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.02)
    for _ in range(100):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(teacher(old_x), old_y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    new_x, new_y = blobs([2], 40, seed=2)
    return teacher, UpdateData(new_x, new_y, old_x, old_y)


def student(teacher: Network, outputs: int = 3) -> Network:
    network = copy.deepcopy(teacher)
    torch.manual_seed(1)  # the grown head's new rows start from the global generator
    expand_head(network, outputs)
    return network


def accuracy(network: Network, x: torch.Tensor, y: torch.Tensor) -> float:
    network.eval()
    with torch.no_grad():
        return float((network(x).argmax(1) == y).float().mean())


TRAINING = Training(epochs=20, learning_rate=0.01, batch_size=16, ewc_lambda=100.0)


def test_every_strategy_of_the_spec_is_implemented() -> None:
    assert set(typing.get_args(UpdateStrategyName)) == set(STRATEGIES)


@pytest.mark.parametrize("name", NAMES)
def test_strategy_learns_the_new_class_through_a_grown_head(name: str) -> None:
    teacher, data = teacher_and_data()
    network = student(teacher)
    losses = make_strategy(name, TRAINING).fit(network, teacher, data)
    assert len(losses) == TRAINING.epochs
    assert losses[-1] < losses[0]
    assert accuracy(network, data.new_x, data.new_y) > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_strategy_leaves_the_teacher_unchanged(name: str) -> None:
    teacher, data = teacher_and_data()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    make_strategy(name, TRAINING).fit(student(teacher), teacher, data)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", NAMES)
def test_strategy_is_deterministic_for_a_seed(name: str) -> None:
    teacher, data = teacher_and_data()
    first, second = student(teacher), student(teacher)
    make_strategy(name, TRAINING).fit(first, teacher, data)
    make_strategy(name, TRAINING).fit(second, teacher, data)
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )


@pytest.mark.parametrize("name", NAMES)
def test_strategy_trains_without_old_data(name: str) -> None:
    teacher, data = teacher_and_data()
    empty = UpdateData(data.new_x, data.new_y, data.old_x[:0], data.old_y[:0])
    network = student(teacher)
    make_strategy(name, TRAINING).fit(network, teacher, empty)
    assert accuracy(network, data.new_x, data.new_y) > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_strategy_trains_a_regressor(name: str) -> None:
    torch.manual_seed(0)
    teacher = build_model(CONFIG, 4, 1)
    x, _ = blobs([0, 1, 2], 30, seed=3)
    y = x.sum(dim=1)
    data = UpdateData(x[:60], y[:60], x[60:], y[60:])
    network = copy.deepcopy(teacher)
    settings = Training(epochs=30, learning_rate=0.01, batch_size=16, classification=False)
    losses = make_strategy(name, settings).fit(network, teacher, data)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_strategy_refuses_to_train_on_nothing(name: str) -> None:
    teacher, data = teacher_and_data()
    nothing = UpdateData(data.new_x[:0], data.new_y[:0], data.old_x[:0], data.old_y[:0])
    with pytest.raises(ValueError, match="no examples"):
        make_strategy(name, TRAINING).fit(student(teacher), teacher, nothing)


def test_replay_keeps_old_classes_that_finetuning_forgets() -> None:
    teacher, data = teacher_and_data()
    scores = {}
    for name in ("finetune", "replay"):
        network = student(teacher)
        make_strategy(name, TRAINING).fit(network, teacher, data)
        scores[name] = accuracy(network, data.old_x, data.old_y)
    assert scores["finetune"] < 0.5
    assert scores["replay"] > 0.9


def test_fisher_information_is_positive_where_the_old_data_pulls() -> None:
    teacher, data = teacher_and_data()
    fisher = fisher_diagonal(teacher, data.old_x, data.old_y, classification=True)
    assert set(fisher) == {name for name, _ in teacher.named_parameters()}
    assert all(float(v.min()) >= 0 for v in fisher.values())
    assert float(fisher["head.weight"].sum()) > 0


def test_an_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="choose one of ewc, finetune, lwf, replay"):
        make_strategy("magic", TRAINING)
