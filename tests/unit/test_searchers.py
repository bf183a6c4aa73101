"""Each strategy maps to its Ray Tune searcher and scheduler, and a resumed search warms them
with the trials its trial log holds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from lifelong.trainers.evolution import RegularizedEvolution
from lifelong.trainers.ledger import Ledger, TrialRecord
from lifelong.trainers.searchers import StrategyInput, build, evolution_sizes, replay
from lifelong.trainers.store import Store

pytestmark = pytest.mark.unit

SPACE: dict[str, Any] = {
    "family": "mlp",
    "depth": tune.randint(1, 4),
    "learning_rate": tune.loguniform(1e-4, 3e-2),
    "optimizer": tune.choice(["adam", "adamw"]),
    "batch_size": 64,
}


def plan(name: str, trials: int = 12) -> StrategyInput:
    return StrategyInput(
        name=name,
        metric="accuracy",
        mode="max",
        space=SPACE,
        trials=trials,
        parallelism=2,
        max_epochs=9,
        min_epochs=1,
        seed=0,
    )


def record(
    number: int, accuracy: float, history: list[float], status: str = "completed"
) -> TrialRecord:
    config = {
        "family": "mlp",
        "depth": 2,
        "learning_rate": 0.01,
        "optimizer": "adam",
        "batch_size": 64,
    }
    return TrialRecord(
        number=number,
        id=f"t{number}",
        run=1,
        status=status,
        config=config,
        metrics={"accuracy": accuracy},
        epochs=len(history),
        history=history,
    )


@pytest.mark.parametrize(
    ("name", "searcher", "scheduler", "checkpoints"),
    [
        ("random", BasicVariantGenerator, type(None), False),
        ("asha", BasicVariantGenerator, ASHAScheduler, False),
        ("tpe", OptunaSearch, type(None), False),
        ("evolution", RegularizedEvolution, type(None), False),
        ("pbt", BasicVariantGenerator, PopulationBasedTraining, True),
    ],
)
def test_each_strategy_is_a_searcher_and_a_scheduler(
    name: str, searcher: type, scheduler: type, checkpoints: bool
) -> None:
    strategy = build(plan(name), [])

    assert isinstance(strategy.search_alg, searcher)
    assert isinstance(strategy.scheduler, scheduler)
    assert (strategy.checkpoint_every > 0) == checkpoints


def test_searchers_that_hold_the_space_leave_only_constants_to_the_tuner() -> None:
    for name in ("tpe", "evolution"):
        assert build(plan(name), []).param_space == {"family": "mlp", "batch_size": 64}
    assert build(plan("random"), []).param_space is SPACE


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown search strategy"):
        build(plan("hyperband"), [])


def test_asha_replay_refills_the_rungs_so_a_worse_trial_is_stopped() -> None:
    scheduler = ASHAScheduler(
        time_attr="training_iteration", metric="accuracy", mode="max", max_t=9, grace_period=1
    )
    for index in range(3):
        replay(scheduler, f"earlier-{index}", [0.9, 0.95, 0.97], "accuracy")

    newcomer: Any = SimpleNamespace(trial_id="new")
    scheduler.on_trial_add(None, newcomer)  # type: ignore[arg-type]
    decision = scheduler.on_trial_result(
        None,  # type: ignore[arg-type]
        newcomer,
        {"training_iteration": 1, "accuracy": 0.2},
    )

    assert decision == TrialScheduler.STOP


def test_a_fresh_asha_lets_the_same_trial_continue() -> None:
    scheduler = ASHAScheduler(
        time_attr="training_iteration", metric="accuracy", mode="max", max_t=9, grace_period=1
    )
    newcomer: Any = SimpleNamespace(trial_id="new")
    scheduler.on_trial_add(None, newcomer)  # type: ignore[arg-type]

    decision = scheduler.on_trial_result(
        None,  # type: ignore[arg-type]
        newcomer,
        {"training_iteration": 1, "accuracy": 0.2},
    )

    assert decision == TrialScheduler.CONTINUE


def test_tpe_learns_the_earlier_trials_as_completed_points() -> None:
    earlier = [record(0, 0.9, [0.9]), record(1, 0.5, [0.5], status="failed")]

    strategy = build(plan("tpe"), earlier)

    assert isinstance(strategy.search_alg, OptunaSearch)
    study: Any = strategy.search_alg._ot_study  # the study Optuna keeps
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert trials[0].value == pytest.approx(0.9)


def test_evolution_learns_the_earlier_trials_that_finished() -> None:
    earlier = [record(0, 0.9, [0.9]), record(1, 0.5, [0.5], status="failed")]

    strategy = build(plan("evolution"), earlier)

    assert isinstance(strategy.search_alg, RegularizedEvolution)
    assert [value for _, value in strategy.search_alg.population] == [0.9]


def test_evolution_sizes_grow_with_the_budget_within_bounds() -> None:
    assert evolution_sizes(8) == (4, 2)
    assert evolution_sizes(100) == (20, 5)
    assert evolution_sizes(1000) == (20, 5)


def test_the_ledger_reads_back_what_it_appended(tmp_path: Any) -> None:
    store = Store(str(tmp_path))
    ledger = Ledger(store)
    ledger.append(record(0, 0.9, [0.8, 0.9]))
    ledger.append(record(1, 0.0, [], status="failed"))
    ledger.save_progress(2, 12.5)

    again = Ledger(store)

    assert [r.id for r in again.records] == ["t0", "t1"]
    assert again.records[0].history == [0.8, 0.9]
    assert again.counts() == {"completed": 1, "failed": 1}
    assert (again.runs, again.seconds) == (2, 12.5)
    assert again.known("t1")
    assert not again.known("t2")
