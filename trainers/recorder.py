"""A Ray Tune callback that logs every finished trial, keeps the metrics and prints progress.

It runs in the search's driver process. Each finished trial becomes a line of
`search/trials.jsonl` at once, so a search killed a moment later resumes without it; each
result updates the Prometheus series (trials by state, best objectives, epochs) and each
finished trial prints one readable line.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from lifelong.trainers.ledger import Ledger, TrialRecord
from lifelong.trainers.pareto import Goal
from lifelong.trainers.progress import StageMetrics, describe

log = logging.getLogger(__name__)

ERROR_CHARS = 300
"""Longest error text kept per failed trial."""


class TrialRecorder(Callback):
    """Logs finished trials to the ledger, and reports progress."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: StageMetrics,
        *,
        goals: list[Goal],
        max_epochs: int,
        total: int,
        run: int,
        spent: float,
        began: float,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.goals = goals
        self.max_epochs = max_epochs
        self.total = total
        self.run = run
        self.spent = spent
        self.began = began
        self.started: dict[str, float] = {}
        self.histories: dict[str, list[float]] = {}
        self.retries: dict[str, int] = {}
        self.best: dict[str, float] = {}
        self.trained: list[str] = []
        """Ids of the trials this run trained, for the resume report."""

        self._counts()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (with the callbacks) into its experiment folder for
        # `Tuner.restore`, which Lifelong does not use: the ledger and the metrics (locks, a
        # server) stay behind.
        return {k: v for k, v in self.__dict__.items() if k not in ("ledger", "metrics")}

    # --- Tune's hooks -------------------------------------------------------------------------

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.started.setdefault(trial.trial_id, time.monotonic())
        self._counts()

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        epoch = int(result.get("training_iteration", 0))
        history = self.histories.setdefault(trial.trial_id, [])
        del history[max(epoch - 1, 0) :]  # a trial restored from a checkpoint repeats no epoch
        history.append(float(result.get(self.goals[0].metric, math.nan)))
        self.metrics.add_epochs(1)
        for goal in self.goals:
            value = result.get(goal.metric)
            if isinstance(value, int | float) and math.isfinite(value):
                old = self.best.get(goal.metric)
                if old is None or goal.better(float(value), old):
                    self.best[goal.metric] = float(value)
                    self.metrics.set_best(goal.metric, float(value))

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        log.warning(
            "Trial %s failed (attempt %d); retrying it.",
            trial.trial_id,
            self.retries[trial.trial_id],
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.record(trial.trial_id, trial.config, trial.last_result or {}, None)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.record(trial.trial_id, trial.config, trial.last_result or {}, _error(trial))

    # --- records ------------------------------------------------------------------------------

    def record(
        self, trial_id: str, config: dict[str, Any], result: dict[str, Any], error: str | None
    ) -> None:
        """Append one finished trial to the ledger (once) and say so."""
        epochs = int(result.get("training_iteration", 0) or 0)
        if self.ledger.known(trial_id) or (epochs == 0 and not error):
            return  # logged already, or stopped before its first epoch: it did nothing
        status = "failed" if error else ("completed" if epochs >= self.max_epochs else "stopped")
        started = self.started.get(trial_id, time.monotonic())
        record = TrialRecord(
            number=self.ledger.next_number(),
            id=trial_id,
            run=self.run,
            status=status,
            config=_plain(config),
            metrics=_numbers(result),
            epochs=epochs,
            history=self.histories.get(trial_id, []),
            seconds=float(result.get("compute_seconds", 0.0) or 0.0),
            wall=time.monotonic() - started,
            retries=self.retries.get(trial_id, 0),
            error=error,
            finished=time.time(),
        )
        self.ledger.append(record)
        self.ledger.save_progress(self.run, self.spent + time.monotonic() - self.began)
        self.trained.append(trial_id)
        self._counts()
        self._say(record)

    def _counts(self) -> None:
        counts = self.ledger.counts()
        finished = {r.id for r in self.ledger.records}
        counts["running"] = len([t for t in self.started if t not in finished])
        self.metrics.set_trials(counts)

    def _say(self, record: TrialRecord) -> None:
        names = [g.metric for g in self.goals]
        done = len(self.ledger.records)
        if record.error:
            log.info(
                "Trial %d/%d failed after %d retries: %s",
                done,
                self.total,
                record.retries,
                record.error,
            )
            return
        best = describe(self.best, names[:1])
        log.info(
            "Trial %d/%d %s after %d epochs in %.1f s: %s; best so far %s",
            done,
            self.total,
            record.status,
            record.epochs,
            record.wall,
            describe(record.metrics, names),
            best,
        )


def _error(trial: Trial) -> str:
    """The last line of the trial's latest error, from the error file Tune writes locally."""
    path = Path(trial.error_file) if trial.error_file else None
    text = path.read_text(encoding="utf-8", errors="replace") if path and path.exists() else ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:ERROR_CHARS]


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    skip = {"training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid"}
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in skip
        if not k.startswith(("time_since", "iterations_since"))
    }


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v.item() if hasattr(v, "item") else v for k, v in config.items()}
