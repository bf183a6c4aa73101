"""The search strategies, as the Ray Tune searcher and scheduler each one stands for.

| strategy | searcher | scheduler |
| --- | --- | --- |
| `random` | Tune's random sampling | none: every trial runs its full budget |
| `asha` | Tune's random sampling | ASHA: grace period `minEpochs`, at most `maxEpochs`, rate 3 |
| `tpe` | Optuna's TPE sampler | none |
| `evolution` | Lifelong's regularised evolution | none |
| `pbt` | Tune's random sampling (the first population) | population-based training |

The searchers optimise the primary objective; the other objectives count when the winner is
picked from the Pareto front. A resumed search warms the new run's strategy with the trials that
finished before: TPE and evolution learn them as evaluated points, ASHA's rungs are refilled from
their learning curves, and random sampling and PBT start from a new seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher
from ray.tune.search.sample import Domain

from lifelong.trainers.evolution import RegularizedEvolution
from lifelong.trainers.ledger import TrialRecord
from lifelong.trainers.space import mutations

REDUCTION_FACTOR = 3
"""ASHA keeps the best third of the trials at each rung."""


@dataclass(frozen=True)
class StrategyInput:
    """What a strategy is built from."""

    name: str
    metric: str
    mode: str
    space: dict[str, Any]
    trials: int
    """Trials of the whole search (not only this run)."""

    parallelism: int

    max_epochs: int
    min_epochs: int
    seed: int


@dataclass
class Strategy:
    """A strategy ready for a Tuner."""

    search_alg: Searcher | SearchAlgorithm
    scheduler: TrialScheduler | None
    param_space: dict[str, Any]
    checkpoint_every: int
    """Epochs between trial checkpoints; 0 when the strategy needs none."""


def build(plan: StrategyInput, earlier: Sequence[TrialRecord]) -> Strategy:
    """The searcher and scheduler of a strategy, warmed with the trials that finished before."""
    builders = {
        "random": _random,
        "asha": _asha,
        "tpe": _tpe,
        "evolution": _evolution,
        "pbt": _pbt,
    }
    if plan.name not in builders:
        raise ValueError(f"unknown search strategy {plan.name!r}; use one of {sorted(builders)}")
    return builders[plan.name](plan, earlier)


def evolution_sizes(trials: int) -> tuple[int, int]:
    """Population and tournament sizes for a budget: a population of about a fifth of the
    trials (4 to 20), tournaments of about a quarter of it."""
    population = min(20, max(4, trials // 5))
    return population, max(2, population // 4)


def tpe_startup(trials: int) -> int:
    """Random trials before TPE models the results: a quarter of the budget, 2 to 10."""
    return min(10, max(2, trials // 4))


# --- builders -------------------------------------------------------------------------------


def _random(plan: StrategyInput, earlier: Sequence[TrialRecord]) -> Strategy:
    return Strategy(_sampler(plan), None, plan.space, 0)


def _asha(plan: StrategyInput, earlier: Sequence[TrialRecord]) -> Strategy:
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric=plan.metric,
        mode=plan.mode,
        max_t=plan.max_epochs,
        grace_period=plan.min_epochs,
        reduction_factor=REDUCTION_FACTOR,
    )
    for record in earlier:
        replay(scheduler, f"earlier-{record.number}", record.history, plan.metric)
    return Strategy(_sampler(plan), scheduler, plan.space, 0)


def _tpe(plan: StrategyInput, earlier: Sequence[TrialRecord]) -> Strategy:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    domains = {k: v for k, v in plan.space.items() if isinstance(v, Domain)}
    sampler = optuna.samplers.TPESampler(seed=plan.seed, n_startup_trials=tpe_startup(plan.trials))
    searcher = OptunaSearch(
        space=OptunaSearch.convert_search_space(domains),
        metric=plan.metric,
        mode=plan.mode,
        sampler=sampler,
    )
    for record in earlier:
        value = record.metrics.get(plan.metric, math.nan)
        searcher.add_evaluated_point(
            {k: record.config[k] for k in domains},
            value,
            error=record.status == "failed" or not _finite(value),
            pruned=record.status == "stopped",
        )
    constants = {k: v for k, v in plan.space.items() if k not in domains}
    return Strategy(searcher, None, constants, 0)


def _evolution(plan: StrategyInput, earlier: Sequence[TrialRecord]) -> Strategy:
    population, sample = evolution_sizes(plan.trials)
    searcher = RegularizedEvolution(
        plan.space, plan.metric, plan.mode, population=population, sample=sample, seed=plan.seed
    )
    for record in earlier:
        value = record.metrics.get(plan.metric)
        if record.status != "failed" and _finite(value):
            searcher.add_evaluated_point(record.config, float(value))  # type: ignore[arg-type]
    constants = {k: v for k, v in plan.space.items() if not isinstance(v, Domain)}
    return Strategy(searcher, None, constants, 0)


def _pbt(plan: StrategyInput, earlier: Sequence[TrialRecord]) -> Strategy:
    interval = max(1, plan.max_epochs // 4)
    mutable = mutations(plan.space)
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric=plan.metric,
        mode=plan.mode,
        perturbation_interval=interval,
        hyperparam_mutations=mutable,
        custom_explore_fn=None if mutable else _keep,
        quantile_fraction=0.25,
        resample_probability=0.25,
    )
    return Strategy(_sampler(plan), scheduler, plan.space, interval)


def _sampler(plan: StrategyInput) -> BasicVariantGenerator:
    """Tune's random sampling; it limits its own concurrency (Tune only wraps `Searcher`s)."""
    return BasicVariantGenerator(random_state=plan.seed, max_concurrent=plan.parallelism)


def _keep(config: dict[str, Any]) -> dict[str, Any]:
    """PBT's explore step when nothing is mutable: clone the better trial unchanged."""
    return config


# --- resuming ---------------------------------------------------------------------------------


def replay(scheduler: ASHAScheduler, trial_id: str, history: Sequence[float], metric: str) -> None:
    """Feed an earlier trial's learning curve through ASHA's scheduler hooks, so that its rungs
    hold the values they held before the search was interrupted."""
    stand_in: Any = SimpleNamespace(trial_id=trial_id)
    scheduler.on_trial_add(None, stand_in)  # type: ignore[arg-type]
    for epoch, value in enumerate(history, 1):
        if not _finite(value):
            break
        result = {"training_iteration": epoch, metric: value}
        decision = scheduler.on_trial_result(None, stand_in, result)  # type: ignore[arg-type]
        if decision == TrialScheduler.STOP:
            break
    scheduler.on_trial_remove(None, stand_in)  # type: ignore[arg-type]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
