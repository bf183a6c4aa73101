"""The search stage: `lifelong trainer search --job F --storage URI`.

Architecture search and hyperparameter optimisation together, with Ray Tune. The stage prepares
the data once (and saves it as a snapshot for the train stage), maps the spec's space onto Tune,
runs the spec's strategy within its budgets, and picks the winner from the Pareto front of the
objectives. It writes, in the artifact store:

- `search/trials.jsonl`: one line per finished trial, the moment it finishes;
- `search/progress.json`: runs so far and seconds spent, for the wall-time budget;
- `search/result.json`: the front, the winner, the rule that picked it and why.

A search killed at any point and started again resumes from `search/trials.jsonl`: the trials
logged there are never run again, and the new run's strategy is warmed with them.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from lifelong.api import AutoDLJob, Budget
from lifelong.trainers.data import DataError
from lifelong.trainers.ledger import Ledger, TrialRecord
from lifelong.trainers.pareto import Goal, select
from lifelong.trainers.prepared import Prepared, prepare
from lifelong.trainers.progress import StageMetrics
from lifelong.trainers.space import param_space, relevant
from lifelong.trainers.store import Store, now_rfc3339
from lifelong.trainers.tuning import Outcome, tune_trials

log = logging.getLogger(__name__)

MEASURED = ("latencyMs", "params", "energyJ")
"""Objectives measured on the network rather than scored on validation data."""

QUALITY = {
    "classification": ("accuracy", "balancedAccuracy", "f1", "logLoss"),
    "regression": ("rmse", "mae", "r2"),
}
"""Validation metrics each trial reports, by task type."""

MODES = {"latencyMs": "min", "params": "min", "energyJ": "min"}


@dataclass(frozen=True)
class Plan:
    """Everything the search needs to know, resolved from the spec and the data."""

    job: str
    strategy: str
    goals: list[Goal]
    space: dict[str, Any]
    budget: Budget
    seed: int
    selection: str
    tolerance: float
    address: str | None

    @property
    def primary(self) -> Goal:
        return self.goals[0]


def run(job: AutoDLJob, store: Store, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Run (or resume) the search; return the stage's short result."""
    began = time.monotonic()
    prepared = prepare(job)
    snapshot = prepared.save(store)
    plan = make_plan(job, prepared)
    ledger = Ledger(store)
    run_number, spent, earlier = ledger.runs + 1, ledger.seconds, len(ledger.records)
    ledger.save_progress(run_number, spent)
    metrics = StageMetrics(job.metadata.name, "search")
    try:
        outcome = _trials(plan, prepared, ledger, metrics, run_number=run_number, began=began)

        # The winner comes from every trial logged, this run's and earlier runs'.
        seconds = spent + (time.monotonic() - began)
        ledger.save_progress(run_number, seconds)
        result = choose(plan, prepared, ledger.records, snapshot) | {
            "runs": run_number,
            "seconds": round(seconds, 3),
            "resumed": {"earlierTrials": earlier, "trainedNow": len(outcome.trained)},
            "overhead": outcome.overhead,
            "written": now_rfc3339(),
        }
        store.write_json(result, "search", "result.json")
        metrics.set_seconds(seconds)
    finally:
        metrics.close()
    return summary(result)


def _trials(
    plan: Plan,
    prepared: Prepared,
    ledger: Ledger,
    metrics: StageMetrics,
    *,
    run_number: int,
    began: float,
) -> Outcome:
    """Run the trials that the trial and wall-time budgets still allow."""
    earlier = len(ledger.records)
    remaining = plan.budget.trials - earlier
    left = plan.budget.timeout_seconds - ledger.seconds
    if earlier:
        log.info(
            "Resuming the search: %d of %d trials finished in %d earlier run(s).",
            earlier,
            plan.budget.trials,
            run_number - 1,
        )
    if remaining <= 0:
        return Outcome()
    if left <= 1.0:
        log.warning("The wall-time budget of %s is spent; no more trials.", plan.budget.timeout)
        return Outcome()
    return tune_trials(
        plan,
        prepared,
        ledger,
        metrics,
        run=run_number,
        trials=remaining,
        started=began,
        deadline=began + left,
    )


def make_plan(job: AutoDLJob, prepared: Prepared) -> Plan:
    search = job.spec.search
    return Plan(
        job=job.metadata.name,
        strategy=search.strategy,
        goals=goals(job, prepared),
        space=param_space(search.space, prepared.image_shape),
        budget=search.budget,
        seed=prepared.seed,
        selection=search.selection,
        tolerance=search.tolerance,
        address=search.ray_address,
    )


def goals(job: AutoDLJob, prepared: Prepared) -> list[Goal]:
    """The objectives, checked against what the trials measure; the task metric by default."""
    task = prepared.task
    known = (*QUALITY[task["type"]], *MEASURED)
    objectives = job.spec.search.objectives
    if not objectives:
        return [Goal(task["metric"], task["mode"])]
    found = []
    for index, objective in enumerate(objectives):
        if objective.metric not in known:
            raise DataError(
                f"spec.search.objectives[{index}].metric: {objective.metric!r} is not measured "
                f"for a {task['type']} task; use one of {', '.join(known)}"
            )
        found.append(Goal(objective.metric, objective.mode))
    return found


def choose(
    plan: Plan, prepared: Prepared, records: list[TrialRecord], snapshot: str
) -> dict[str, Any]:
    """Pick the winner among the trials at the highest fidelity any trial reached."""
    finished = [r for r in records if r.status != "failed" and r.metrics]
    if not finished:
        errors = "; ".join(sorted({r.error or "" for r in records})[:3])
        raise RuntimeError(
            f"none of the {len(records)} trials finished"
            + (f"; their errors: {errors}" if errors else "")
            + f". The wall-time budget is {plan.budget.timeout}."
        )
    fidelity = max(r.epochs for r in finished)
    pool = [r for r in finished if r.epochs == fidelity]
    points = [{**r.metrics, "number": r.number} for r in pool]
    choice = select(points, plan.goals, plan.selection, plan.tolerance)
    by_number = {r.number: r for r in pool}
    winner = by_number[int(choice.winner["number"])]
    return {
        "strategy": plan.strategy,
        "rule": {
            "selection": choice.rule,
            "tolerance": plan.tolerance,
            "objectives": [{"metric": g.metric, "mode": g.mode} for g in plan.goals],
            "fidelity": fidelity,
            "reason": choice.reason,
        },
        "winner": _entry(winner, plan.goals),
        "front": [_entry(by_number[int(p["number"])], plan.goals) for p in choice.front],
        "trials": _counts(records, plan.budget.trials),
        "budget": plan.budget.model_dump(mode="json", by_alias=True),
        "task": prepared.task,
        "data": {
            "snapshot": snapshot,
            "source": prepared.source,
            "digest": prepared.digest,
            "rows": prepared.rows("train"),
            "seed": prepared.seed,
        },
    }


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The stage's short result (the termination message): counts, winner and objectives."""
    trials = result["trials"]
    return {
        "trials": trials["finished"],
        "completed": trials["completed"] + trials["stopped"],
        "stopped": trials["stopped"],
        "failed": trials["failed"],
        "winner": result["winner"]["config"],
        "objectives": result["winner"]["objectives"],
        "rule": result["rule"]["selection"],
    }


def _entry(record: TrialRecord, goals: list[Goal]) -> dict[str, Any]:
    return {
        "number": record.number,
        "id": record.id,
        "config": relevant(record.config),
        "objectives": {g.metric: _round(record.metrics.get(g.metric)) for g in goals},
        "metrics": {k: _round(v) for k, v in record.metrics.items() if k in _REPORTED},
        "epochs": record.epochs,
    }


_REPORTED = {*QUALITY["classification"], *QUALITY["regression"], *MEASURED, "loss"}


def _counts(records: list[TrialRecord], budget: int) -> dict[str, int]:
    statuses = [r.status for r in records]
    return {
        "budget": budget,
        "finished": len(records),
        "completed": statuses.count("completed"),
        "stopped": statuses.count("stopped"),
        "failed": statuses.count("failed"),
        "retries": sum(r.retries for r in records),
    }


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    return value
