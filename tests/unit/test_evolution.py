"""Regularised evolution: random until the population fills, then mutants of tournament winners,
with the oldest member aged out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray import tune

from lifelong.trainers.evolution import RegularizedEvolution

pytestmark = pytest.mark.unit

SPACE: dict[str, Any] = {
    "family": tune.choice(["mlp", "cnn"]),
    "depth": tune.randint(1, 4),
    "width": tune.lograndint(32, 257),
    "channels": tune.lograndint(8, 33),
    "learning_rate": tune.loguniform(1e-4, 3e-2),
    "optimizer": tune.choice(["adam", "adamw"]),
    "augmentation": "none",
}


def searcher(population: int = 4, sample: int = 2, seed: int = 0) -> RegularizedEvolution:
    return RegularizedEvolution(
        SPACE, "accuracy", "max", population=population, sample=sample, seed=seed
    )


def finish(evolution: RegularizedEvolution, trial_id: str, value: float) -> dict[str, Any]:
    config = evolution.suggest(trial_id)
    assert config is not None
    evolution.on_trial_complete(trial_id, {"accuracy": value})
    return config


def within_space(config: dict[str, Any]) -> bool:
    return (
        config["family"] in ("mlp", "cnn")
        and 1 <= config["depth"] <= 3
        and 32 <= config["width"] <= 256
        and 8 <= config["channels"] <= 32
        and 1e-4 <= config["learning_rate"] <= 3e-2
        and config["augmentation"] == "none"
    )


def test_suggestions_are_random_until_the_population_is_full() -> None:
    evolution = searcher(population=4)
    configs = [finish(evolution, f"t{i}", 0.5 + i / 10) for i in range(4)]

    assert len({str(sorted(c.items())) for c in configs}) == 4
    assert all(within_space(c) for c in configs)
    assert len(evolution.population) == 4


def test_a_mutant_differs_from_a_member_in_one_parameter_its_family_uses() -> None:
    evolution = searcher(population=4, sample=4, seed=3)
    members = [finish(evolution, f"t{i}", value) for i, value in enumerate([0.1, 0.9, 0.2, 0.3])]
    best = members[1]

    for index in range(20):
        child = evolution.suggest(f"m{index}")
        assert child is not None
        changed = {k for k in SPACE if child[k] != best[k]}
        assert len(changed) == 1
        unused = {"channels"} if best["family"] == "mlp" else {"depth", "width"}
        assert not changed & unused
        assert within_space(child)


def test_the_oldest_member_ages_out_however_good_it_was() -> None:
    evolution = searcher(population=3, sample=3)
    first = finish(evolution, "t0", 0.99)
    for index in range(1, 4):
        finish(evolution, f"t{index}", 0.1)

    assert first not in [member for member, _ in evolution.population]


def test_failed_and_unscored_trials_do_not_join_the_population() -> None:
    evolution = searcher()
    evolution.suggest("a")
    evolution.on_trial_complete("a", None, error=True)
    evolution.suggest("b")
    evolution.on_trial_complete("b", {"accuracy": float("nan")})

    assert len(evolution.population) == 0


def test_minimising_tournaments_pick_the_lowest_value() -> None:
    evolution = RegularizedEvolution(SPACE, "rmse", "min", population=2, sample=2, seed=1)
    low = finish_min(evolution, "a", 1.0)
    finish_min(evolution, "b", 5.0)

    assert evolution.tournament() == low


def finish_min(evolution: RegularizedEvolution, trial_id: str, value: float) -> dict[str, Any]:
    config = evolution.suggest(trial_id)
    assert config is not None
    evolution.on_trial_complete(trial_id, {"rmse": value})
    return config


def test_trials_evaluated_elsewhere_warm_the_population() -> None:
    evolution = searcher(population=2)
    evolution.add_evaluated_point({"family": "mlp", "depth": 2, "width": 64}, 0.8)
    evolution.add_evaluated_point({"family": "cnn", "channels": 16}, 0.7)

    child = evolution.suggest("next")

    assert child is not None
    assert len(evolution.population) == 2
    assert within_space(child)


def test_state_survives_save_and_restore(tmp_path: Path) -> None:
    evolution = searcher(population=3)
    for index in range(3):
        finish(evolution, f"t{index}", index / 10)
    evolution.save(str(tmp_path / "state"))

    restored = searcher(population=3, seed=99)
    restored.restore(str(tmp_path / "state"))

    assert restored.suggest("x") == evolution.suggest("x")


def test_impossible_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="population"):
        RegularizedEvolution(SPACE, "accuracy", "max", population=2, sample=3)
