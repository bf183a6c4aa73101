"""The small policy objects behind each autonomous decision.

- `TriggerLatch`: hysteresis, so a flapping metric fires once and re-arms only after it has been
  quiet for a while; a `for` duration before it fires at all.
- `StormControl`: whether a fired trigger may start an update now (cooldown, update budget, one
  update at a time, enough recent data).
- `Gate`: whether a candidate replaces the serving model (gain on new data, forgetting on old).
- `Retry`: whether and when a failed stage runs again (exponential backoff, then give up).
- `CanaryJudge`: whether a canary advances, is promoted, rolls back or needs more data.

Each takes plain numbers and returns a decision with its reason, so each is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lifelong.api import CanarySpec, GateSpec, GateVerdict, TriggerSpec, duration_seconds

# --- triggers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatchState:
    """One trigger's memory between evaluations (times in seconds since the epoch)."""

    active_since: float | None = None
    clear_since: float | None = None
    latched: bool = False


@dataclass(frozen=True)
class TriggerLatch:
    """Turns a trigger's condition over time into single firings, acting only on steady signals.

    The condition must hold for `hold` seconds before the trigger fires. Once an update has
    started from it (`latch`), it stays silent until the signal is steady again for `rearm`
    seconds: either clear (the problem went away: the trigger re-arms) or still firing since the
    update ended (the update did not fix it: the trigger may fire again, if storm control lets
    it). A metric flapping around its threshold is steady neither way, so it starts one update,
    not one per flap.
    """

    hold: float = 0.0
    rearm: float = 60.0

    @classmethod
    def of(cls, trigger: TriggerSpec, interval: float) -> TriggerLatch:
        hold = duration_seconds(trigger.for_) if trigger.for_ else 0.0
        window = duration_seconds(trigger.window) if trigger.window else 0.0
        return cls(hold=hold, rearm=max(window, interval))

    def observe(self, state: LatchState, condition: bool, now: float) -> LatchState:
        """The state after seeing the condition at `now`."""
        if condition:
            since = state.active_since if state.active_since is not None else now
            return LatchState(active_since=since, clear_since=None, latched=state.latched)
        clear = state.clear_since if state.clear_since is not None else now
        latched = state.latched and (now - clear) < self.rearm
        return LatchState(active_since=None, clear_since=clear, latched=latched)

    def ready(self, state: LatchState, now: float, settled: float | None = None) -> bool:
        """Whether the trigger wants to fire now.

        `settled` is when the last update ended (None while one runs or before any ended).
        """
        if state.active_since is None or now - state.active_since < self.hold:
            return False
        if not state.latched:
            return True
        return settled is not None and now - max(state.active_since, settled) >= self.rearm

    @staticmethod
    def latch(state: LatchState) -> LatchState:
        """Mark that the trigger started an update."""
        return LatchState(active_since=state.active_since, clear_since=None, latched=True)


@dataclass(frozen=True)
class StormControl:
    """Limits on updates, whatever the triggers say."""

    cooldown: float
    max_updates: int
    min_samples: int

    def refuse(
        self,
        *,
        now: float,
        updates_started: int,
        update_running: bool,
        last_update_end: float | None,
        recent_samples: int | None,
    ) -> str | None:
        """Why an update may not start now, or None when it may."""
        if update_running:
            return "an update is already running"
        if updates_started >= self.max_updates:
            return f"the budget of {self.max_updates} updates is spent"
        if last_update_end is not None and now - last_update_end < self.cooldown:
            left = self.cooldown - (now - last_update_end)
            return f"cooling down for {left:.0f}s more after the last update"
        if recent_samples is not None and recent_samples < self.min_samples:
            return (
                f"only {recent_samples} labelled recent examples; the update needs "
                f"{self.min_samples} (spec.lifelong.update.minSamples)"
            )
        return None


# --- the promotion gate ---------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The metric of the serving model and of the candidate on new and on old held-out data."""

    serving_new: float
    serving_old: float | None
    candidate_new: float
    candidate_old: float | None
    mode: Literal["max", "min"] = "max"

    @classmethod
    def of_result(cls, result: dict[str, Any], mode: Literal["max", "min"]) -> Evaluation | None:
        """Read an update stage's result (its `evaluation` block); None when it holds no score
        on new data, which the gate then refuses to judge as a pass."""
        evaluation = result.get("evaluation") or {}
        serving, candidate = evaluation.get("serving") or {}, evaluation.get("candidate") or {}
        if serving.get("new") is None or candidate.get("new") is None:
            return None
        return cls(
            serving_new=float(serving["new"]),
            serving_old=_optional_float(serving.get("old")),
            candidate_new=float(candidate["new"]),
            candidate_old=_optional_float(candidate.get("old")),
            mode=evaluation.get("mode", mode),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Gate:
    """Promote a candidate only if it gains enough on new data and forgets little of the old.

    For a metric that is maximised (accuracy), gain is candidate minus serving on new data and
    forgetting is serving minus candidate on old data. For a minimised metric (rmse) the signs
    flip and both are relative to the serving model's value, so that `maxForgetting: 0.05`
    means "at most 5% worse on old data" whatever the metric's unit.
    """

    min_gain: float
    max_forgetting: float

    @classmethod
    def of(cls, spec: GateSpec) -> Gate:
        return cls(min_gain=spec.min_gain, max_forgetting=spec.max_forgetting)

    def judge(self, e: Evaluation | None) -> GateVerdict:
        if e is None:
            return GateVerdict(
                decision="reject",
                gain=0.0,
                forgetting=0.0,
                min_gain=self.min_gain,
                max_forgetting=self.max_forgetting,
                reason="Rejected: the update reported no evaluation of the candidate and the "
                "serving model on held-out new data, so the gate has nothing to judge.",
            )
        if e.mode == "max":
            gain = e.candidate_new - e.serving_new
            forgetting = (
                e.serving_old - e.candidate_old
                if e.serving_old is not None and e.candidate_old is not None
                else 0.0
            )
        else:
            gain = (e.serving_new - e.candidate_new) / max(abs(e.serving_new), 1e-12)
            forgetting = (
                (e.candidate_old - e.serving_old) / max(abs(e.serving_old), 1e-12)
                if e.serving_old is not None and e.candidate_old is not None
                else 0.0
            )
        problems = []
        if gain < self.min_gain:
            problems.append(f"gain {gain:+.4f} on new data is below minGain {self.min_gain:g}")
        if forgetting > self.max_forgetting:
            problems.append(
                f"forgetting {forgetting:.4f} on old data exceeds maxForgetting "
                f"{self.max_forgetting:g}"
            )
        if e.serving_old is None or e.candidate_old is None:
            problems_old = "no old data was held out, so forgetting was not measured"
        else:
            problems_old = ""
        decision: Literal["promote", "reject"] = "reject" if problems else "promote"
        if problems:
            reason = "Rejected: " + "; ".join(problems) + "."
        else:
            reason = (
                f"Promoted: gain {gain:+.4f} on new data (minGain {self.min_gain:g}), "
                f"forgetting {forgetting:.4f} on old data (maxForgetting {self.max_forgetting:g})."
            )
        if problems_old:
            reason += f" Note: {problems_old}."
        return GateVerdict(
            decision=decision,
            gain=gain,
            forgetting=forgetting,
            min_gain=self.min_gain,
            max_forgetting=self.max_forgetting,
            reason=reason,
        )


# --- retries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """Exponential backoff for failed stages: `base`, `2*base`, ... capped at `cap` seconds."""

    limit: int = 3
    base: float = 10.0
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure."""
        return float(min(self.cap, self.base * 2.0 ** max(failures - 1, 0)))

    def give_up(self, failures: int, permanent: bool) -> bool:
        """Whether to stop retrying after `failures` failures."""
        return permanent or failures >= self.limit


# --- canaries --------------------------------------------------------------------------------

CanaryMove = Literal["wait", "advance", "promote", "rollback"]


@dataclass(frozen=True)
class CanaryJudge:
    """Decides a canary's next move from the online metrics of both versions."""

    steps: tuple[int, ...]
    min_samples: int
    tolerance: float
    mode: Literal["max", "min"] = "max"

    @classmethod
    def of(cls, spec: CanarySpec, mode: Literal["max", "min"]) -> CanaryJudge:
        return cls(tuple(spec.steps), spec.min_samples, spec.tolerance, mode)

    def judge(
        self, step: int, samples_in_step: int, stable: float | None, canary: float | None
    ) -> tuple[CanaryMove, str]:
        if samples_in_step < self.min_samples or stable is None or canary is None:
            return "wait", (
                f"the canary has {samples_in_step} of {self.min_samples} labelled predictions "
                "needed at this step"
            )
        shortfall = (stable - canary) if self.mode == "max" else (canary - stable)
        if shortfall > self.tolerance:
            return "rollback", (
                f"the canary's online metric {canary:.4f} is worse than the serving model's "
                f"{stable:.4f} by {shortfall:.4f}, beyond the tolerance {self.tolerance:g}"
            )
        verdict = (
            f"the canary's online metric {canary:.4f} holds against the serving model's "
            f"{stable:.4f}"
        )
        if step + 1 < len(self.steps):
            return "advance", verdict
        return "promote", verdict
