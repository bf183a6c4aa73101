"""One run of the search's trials through Ray Tune, set up to cost little per trial.

What keeps the fixed cost of a trial small on small problems:

- Ray starts lean (`cluster.ray_session`) and Tune's per-trial loggers are off (`knobs`);
- trial actors are reused (`reuse_actors`), so a worker imports torch once, not per trial;
- Ray's workers pay torch's one-off costs as they start, before they are given a trial
  (`trial.warm_up`);
- the prepared arrays go into the object store once, and each worker turns them into tensors on
  its first trial and keeps them (`trial.tensors`);
- trials save checkpoints only when the strategy clones them (PBT);
- Tune's experiment snapshot is rare, since the stage resumes from its own trial log.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifelong.trainers import knobs
from lifelong.trainers.cluster import local_cpus, ray_session
from lifelong.trainers.ledger import Ledger
from lifelong.trainers.prepared import Prepared
from lifelong.trainers.progress import StageMetrics
from lifelong.trainers.recorder import TrialRecorder
from lifelong.trainers.searchers import Strategy, StrategyInput, build
from lifelong.trainers.store import Store
from lifelong.trainers.trial import DataHandle, TrialSetup, run_trial

if TYPE_CHECKING:
    from lifelong.trainers.search import Plan

log = logging.getLogger(__name__)

# Tune's result grid looks for the per-trial result files whose loggers `knobs` turns off, and
# warns about every trial; the stage reads its results from its own trial log instead.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

SEED_STRIDE = 7919
"""Added to the searcher's seed on each resumed run, so it does not draw the same trials."""


@dataclass
class Outcome:
    """What one run of trials did."""

    trained: list[str] = field(default_factory=list)
    """Ids of the trials this run trained."""

    overhead: dict[str, float] = field(default_factory=dict)
    """Ray's start, Tune's wall-clock and the fixed cost per trial, in seconds."""


def tune_trials(
    plan: Plan,
    prepared: Prepared,
    ledger: Ledger,
    metrics: StageMetrics,
    *,
    run: int,
    trials: int,
    started: float,
    deadline: float,
) -> Outcome:
    """Run up to `trials` new trials until the `deadline`, logging each one as it finishes.

    `started` is when the stage started and `deadline` when its wall-time budget ends (both of
    `time.monotonic`); Ray's start counts against the budget."""
    budget = plan.budget
    cpus = local_cpus(budget.parallelism)
    with ray_session(plan.address, cpus, warm_up=f"{run_trial.__module__}.warm_up") as ray_start:
        import ray
        from ray import tune

        strategy = build(
            StrategyInput(
                name=plan.strategy,
                metric=plan.primary.metric,
                mode=plan.primary.mode,
                space=plan.space,
                trials=budget.trials,
                parallelism=budget.parallelism,
                max_epochs=budget.max_epochs,
                min_epochs=budget.min_epochs,
                seed=plan.seed + SEED_STRIDE * (run - 1),
            ),
            ledger.records,
        )
        handle = DataHandle(
            prepared.snapshot, ray.put(prepared.arrays), prepared.task, prepared.image_shape
        )
        setup = TrialSetup(
            epochs=budget.max_epochs,
            checkpoint_every=strategy.checkpoint_every,
            seed=plan.seed,
            faults=knobs.faults(),
            scratch=str(_tune_folder(ledger.store, plan.job)),
        )
        recorder = TrialRecorder(
            ledger,
            metrics,
            goals=plan.goals,
            max_epochs=budget.max_epochs,
            total=budget.trials,
            run=run,
            spent=ledger.seconds,
            began=started,
        )
        tuner = tune.Tuner(
            tune.with_parameters(run_trial, data=handle, setup=setup),
            param_space=strategy.param_space,
            # The searcher and scheduler carry the metric and its mode themselves.
            tune_config=tune.TuneConfig(
                search_alg=strategy.search_alg,
                scheduler=strategy.scheduler,
                num_samples=trials,
                # Tune limits a `Searcher`'s concurrency; random sampling limits its own.
                max_concurrent_trials=budget.parallelism if _limited(strategy) else None,
                time_budget_s=max(deadline - time.monotonic(), 1.0),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"run-{run}",
                storage_path=str(_tune_folder(ledger.store, plan.job)),
                failure_config=tune.FailureConfig(max_failures=budget.max_retries),
                # Every checkpoint is kept until the run ends: a trial restarted on a reused worker
                # can write a checkpoint under a name it used before, so pruning old ones by name
                # deleted the newest, and a PBT exploit of it then failed.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                callbacks=[recorder],
                verbose=0,
            ),
        )
        fitting = time.perf_counter()
        grid = tuner.fit()
        tuned = time.perf_counter() - fitting
        _sweep(grid, recorder)
    _drop_checkpoints(_tune_folder(ledger.store, plan.job) / f"run-{run}")

    return Outcome(recorder.trained, _overhead(ledger, run, ray_start, tuned, budget.parallelism))


def _limited(strategy: Strategy) -> bool:
    from ray.tune.search import Searcher

    return isinstance(strategy.search_alg, Searcher)


def _sweep(grid: Any, recorder: TrialRecorder) -> None:
    """Log the trials Tune ended without a completion callback (the wall-time budget ran out)."""
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id and not recorder.ledger.known(trial_id):
            error = str(result.error).strip().splitlines()[-1] if result.error else None
            recorder.record(trial_id, result.config or {}, result.metrics or {}, error)


def _overhead(
    ledger: Ledger, run: int, ray_start: float, tuned: float, parallelism: int
) -> dict[str, float]:
    """The fixed cost per trial: the slots' wall-clock minus the time spent in epochs, shared
    among the trials this run finished."""
    mine = [r for r in ledger.records if r.run == run]
    compute = sum(r.seconds for r in mine)
    slots = min(parallelism, max(len(mine), 1))
    per_trial = (slots * tuned - compute) / max(len(mine), 1)
    return {
        "rayStartSeconds": round(ray_start, 3),
        "tuneSeconds": round(tuned, 3),
        "computeSeconds": round(compute, 3),
        "perTrialSeconds": round(per_trial, 3),
    }


def _drop_checkpoints(folder: Path) -> None:
    """Delete a finished run's trial checkpoints: only PBT's exploits read them, and a resumed
    search starts from the trial log."""
    for checkpoint in folder.glob("*/checkpoint_*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def _tune_folder(store: Store, job: str) -> Path:
    """Where Tune keeps its working state: in the store when it is a local disk, else in the
    scratch folder (the stage resumes from its trial log, not from this)."""
    if store.is_local:
        return store.local_path("search", "tune")
    folder = knobs.scratch() / "lifelong-tune" / job
    folder.mkdir(parents=True, exist_ok=True)
    return folder
