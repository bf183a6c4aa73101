"""The lifecycle state machine, driven through whole job lives with made-up observations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lifelong.api import AutoDLJob
from lifelong.engine.model import (
    CanaryReading,
    Observations,
    PauseStages,
    RecordVersion,
    Serve,
    SetVersionState,
    StageRun,
    StartStage,
    StopServing,
    Transition,
    TriggerReading,
)
from lifelong.engine.step import step

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0


def make_job(**lifelong: Any) -> AutoDLJob:
    spec: dict[str, Any] = {
        "data": {"train": {"uri": "builtin://digits"}},
        "lifelong": {
            "triggers": [
                {"name": "drop", "metric": "lifelong_online_accuracy", "window": "1m", "below": 0.9}
            ],
            "cooldown": "5m",
            "maxUpdates": 3,
            "update": {"minSamples": 10},
            **lifelong,
        },
    }
    return AutoDLJob.model_validate(
        {
            "apiVersion": "lifelong.dev/v1alpha1",
            "kind": "AutoDLJob",
            "metadata": {"name": "digits"},
            "spec": spec,
        }
    )


def version_result(name: str, score: float) -> dict[str, Any]:
    return {
        "version": {
            "job": "digits",
            "metric": "accuracy",
            "score": score,
            "objectives": {"accuracy": score},
            "name": name,
        }
    }


def update_result(
    serving_new: float, serving_old: float, cand_new: float, cand_old: float
) -> dict[str, Any]:
    return {
        **version_result("c", cand_new),
        "evaluation": {
            "serving": {"new": serving_new, "old": serving_old},
            "candidate": {"new": cand_new, "old": cand_old},
            "metric": "accuracy",
            "mode": "max",
        },
    }


class World:
    """Applies the engine's actions the way a runner would, and remembers the runs."""

    def __init__(self, job: AutoDLJob) -> None:
        self.job = job
        self.runs: dict[str, StageRun] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.states: dict[str, str] = {}
        self.serving: Serve | None = None
        self.now = T0
        self.log: list[Transition] = []

    def step(self, **observed: Any) -> Transition:
        obs = Observations(
            now=self.now,
            runs=dict(self.runs),
            versions=dict(self.versions),
            serving_ready=self.serving is not None,
            **observed,
        )
        transition = step(self.job, obs)
        self.job = self.job.model_copy(update={"status": transition.status})
        for action in transition.actions:
            if isinstance(action, StartStage) and action.name not in self.runs:
                self.runs[action.name] = StageRun(action.name, "running")
            elif isinstance(action, RecordVersion):
                self.versions[action.name] = action.spec
                self.states[action.name] = action.state
            elif isinstance(action, SetVersionState):
                self.states[action.name] = action.state
            elif isinstance(action, Serve):
                self.serving = action
            elif isinstance(action, StopServing):
                self.serving = None
        self.log.append(transition)
        return transition

    def finish(
        self,
        name: str,
        result: dict[str, Any] | None = None,
        *,
        ok: bool = True,
        permanent: bool = False,
    ) -> None:
        if ok:
            self.runs[name] = StageRun(name, "succeeded", result)
        else:
            self.runs[name] = StageRun(name, "failed", None, permanent, "it broke")

    def started(self, transition: Transition) -> list[str]:
        return [a.name for a in transition.of(StartStage)]

    def condition(self, kind: str) -> str:
        status = self.job.status
        assert status is not None
        return next(c.status for c in status.conditions if c.type == kind)

    def reasons(self) -> list[str]:
        return [e.reason for t in self.log for e in t.events]

    def to_serving(self) -> None:
        assert self.started(self.step()) == ["digits-search"]
        self.finish("digits-search", {"trials": 4, "completed": 4})
        assert self.started(self.step()) == ["digits-train"]
        self.finish("digits-train", version_result("digits-v1", 0.97))
        self.step()

    def fire(self, value: float = 0.5) -> Transition:
        return self.step(triggers=[TriggerReading("drop", True, value)], recent_samples=50)


def test_a_job_goes_from_search_through_training_to_serving() -> None:
    world = World(make_job())
    first = world.step()
    assert world.started(first) == ["digits-search"]
    assert world.job.status is not None and world.job.status.phase == "Searching"
    assert world.condition("Ready") == "False" and world.condition("Reconciling") == "True"

    world.finish("digits-search", {"trials": 4, "completed": 4})
    assert world.started(world.step()) == ["digits-train"]
    world.finish("digits-train", version_result("digits-v1", 0.97))
    world.step()

    status = world.job.status
    assert status.phase == "Serving"
    assert status.serving_version == "digits-v1" and status.score == 0.97
    assert status.message == "digits-v1 serves."
    assert world.states == {"digits-v1": "Serving"}
    assert world.serving == Serve("digits-v1", replicas=1)
    world.step()
    assert world.condition("Ready") == "True" and world.condition("Reconciling") == "False"
    assert world.condition("Stalled") == "False"


def test_stepping_again_on_the_same_observations_asks_for_the_same_names() -> None:
    world = World(make_job())
    world.step()
    again = step(world.job, Observations(now=T0 + 1, runs={}))
    assert [a.name for a in again.of(StartStage)] == ["digits-search"]


def test_a_trigger_starts_an_update_that_the_gate_promotes() -> None:
    world = World(make_job())
    world.to_serving()
    transition = world.fire()
    [update] = transition.of(StartStage)
    assert (update.name, update.version, update.parent, update.trigger) == (
        "digits-update-1",
        "digits-v2",
        "digits-v1",
        "drop",
    )

    world.finish("digits-update-1", update_result(0.5, 0.97, 0.95, 0.96))
    world.now += 60
    world.step()
    status = world.job.status
    assert status is not None
    assert status.serving_version == "digits-v2" and status.updates.promoted == 1
    assert world.states == {"digits-v1": "Retired", "digits-v2": "Serving"}
    assert "CandidatePromoted" in world.reasons()
    assert status.recent_decisions[0].reason == "CandidatePromoted"


def test_a_candidate_that_forgets_is_rejected_and_the_old_model_keeps_serving() -> None:
    world = World(make_job())
    world.to_serving()
    world.fire()
    world.finish("digits-update-1", update_result(0.5, 0.97, 0.99, 0.40))
    world.step()
    status = world.job.status
    assert status is not None
    assert status.serving_version == "digits-v1" and status.updates.rejected == 1
    assert world.states["digits-v2"] == "Rejected"
    [verdict] = [a.gate for t in world.log for a in t.of(SetVersionState) if a.gate]
    assert verdict is not None and verdict.forgetting == pytest.approx(0.57)


def test_triggers_respect_the_cooldown_and_report_the_suppression_once() -> None:
    world = World(make_job())
    world.to_serving()
    world.fire()
    world.finish("digits-update-1", update_result(0.5, 0.97, 0.95, 0.96))
    world.step()
    for _ in range(3):  # the metric clears long enough to re-arm, but the cooldown holds
        world.now += 10
        world.step(triggers=[TriggerReading("drop", False, 0.95)])
        world.now += 70
        world.step(triggers=[TriggerReading("drop", False, 0.95)])
        world.now += 10
        transition = world.fire()
        assert transition.of(StartStage) == []
    assert world.reasons().count("TriggerSuppressed") == 1
    world.now += 300
    assert world.started(world.fire()) == ["digits-update-2"]


def test_the_update_budget_is_never_exceeded() -> None:
    world = World(make_job(maxUpdates=1, cooldown="0s"))
    world.to_serving()
    world.fire()
    world.finish("digits-update-1", update_result(0.5, 0.97, 0.99, 0.40))
    world.step()
    for _ in range(2):
        world.now += 100
        world.step(triggers=[TriggerReading("drop", False, 0.95)])
    world.now += 100
    assert world.fire().of(StartStage) == []
    assert world.job.status is not None and world.job.status.updates.total == 1


def test_a_transient_failure_is_retried_with_backoff_then_stalls() -> None:
    world = World(make_job())
    world.step()
    world.finish("digits-search", ok=False)
    world.step()
    assert world.job.status is not None and world.job.status.next_attempt_time is not None
    assert world.started(world.step()) == []  # still backing off
    world.now += 10
    assert world.started(world.step()) == ["digits-search-r1"]
    world.finish("digits-search-r1", ok=False)
    world.step()
    world.now += 20
    assert world.started(world.step()) == ["digits-search-r2"]
    world.finish("digits-search-r2", ok=False)
    world.step()
    assert world.job.status.phase == "Failed"
    assert world.condition("Stalled") == "True"
    assert "RetriesExhausted" in world.reasons()


def test_a_permanent_failure_stalls_at_once_with_its_reason() -> None:
    world = World(make_job())
    world.step()
    world.finish("digits-search", ok=False, permanent=True)
    world.step()
    status = world.job.status
    assert status is not None and status.phase == "Failed"
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert stalled.status == "True" and stalled.reason == "InvalidSpec"
    assert "it broke" in stalled.message
    world.now += 1000
    assert world.step().of(StartStage) == []  # stays stalled until the spec changes


def test_an_edited_spec_gets_a_stalled_job_going_again() -> None:
    world = World(make_job())
    world.step()
    world.finish("digits-search", ok=False, permanent=True)
    world.step()
    transition = step(world.job, Observations(now=T0 + 5, generation=2, runs=dict(world.runs)))
    assert transition.status.phase == "Searching"


def test_a_raw_promql_trigger_without_prometheus_stalls_the_job() -> None:
    world = World(make_job(triggers=[{"name": "raw", "promql": "up == 0"}]))
    world.step()
    status = world.job.status
    assert status is not None and status.phase == "Failed"
    assert "Prometheus" in next(c.message for c in status.conditions if c.type == "Stalled")


def test_a_raw_promql_trigger_with_prometheus_is_fine() -> None:
    job = make_job(triggers=[{"name": "raw", "promql": "up == 0"}])
    transition = step(job, Observations(now=T0, prometheus=True))
    assert transition.status.phase == "Searching"


def test_suspend_stops_serving_and_starts_nothing_until_resumed() -> None:
    world = World(make_job())
    world.to_serving()
    world.job = world.job.model_copy(
        update={"spec": world.job.spec.model_copy(update={"suspend": True})}
    )
    suspended = world.fire()
    assert suspended.of(StopServing) and not suspended.of(StartStage)
    assert suspended.of(PauseStages) == [PauseStages(paused=True)]
    assert world.job.status is not None and world.job.status.phase == "Suspended"
    world.job = world.job.model_copy(
        update={"spec": world.job.spec.model_copy(update={"suspend": False})}
    )
    resumed = world.step()
    assert resumed.of(PauseStages) == [PauseStages(paused=False)]
    assert world.job.status is not None
    assert world.job.status.phase == "Serving" and world.serving is not None


def test_a_failing_update_is_given_up_and_the_job_keeps_serving() -> None:
    world = World(make_job())
    world.to_serving()
    world.fire()
    for attempt, name in enumerate(["digits-update-1", "digits-update-1-r1", "digits-update-1-r2"]):
        world.finish(name, ok=False)
        world.step()
        world.now += 10 * 2**attempt
        world.step()
    status = world.job.status
    assert status is not None
    assert status.phase == "Serving" and status.updates.failed == 1
    assert "UpdateFailed" in world.reasons()


def test_a_canary_advances_then_is_promoted() -> None:
    world = World(make_job(canary={"steps": [10, 50], "minSamples": 20}))
    world.to_serving()
    world.fire()
    world.finish("digits-update-1", update_result(0.5, 0.97, 0.95, 0.96))
    world.step(canary=CanaryReading(None, None, 0))
    assert world.serving == Serve("digits-v1", "digits-v2", 10)
    world.step(canary=CanaryReading(0.6, 0.93, 25))
    assert world.serving == Serve("digits-v1", "digits-v2", 50)
    world.step(canary=CanaryReading(0.6, 0.93, 30))  # only 5 more samples: wait
    assert world.serving == Serve("digits-v1", "digits-v2", 50)
    world.step(canary=CanaryReading(0.6, 0.93, 60))
    assert world.serving == Serve("digits-v2")
    assert world.states["digits-v2"] == "Serving"


def test_a_canary_worse_than_the_serving_model_is_rolled_back() -> None:
    world = World(make_job(canary={"steps": [10], "minSamples": 20}))
    world.to_serving()
    world.fire()
    world.finish("digits-update-1", update_result(0.5, 0.97, 0.95, 0.96))
    world.step(canary=CanaryReading(None, None, 0))
    world.step(canary=CanaryReading(0.95, 0.70, 25))
    assert world.serving == Serve("digits-v1")
    assert world.states["digits-v2"] == "RolledBack"
    assert world.job.status is not None and world.job.status.updates.rolled_back == 1


def test_unavailable_triggers_show_in_a_condition_and_fire_nothing() -> None:
    world = World(make_job())
    world.to_serving()
    transition = world.step(triggers_error="Prometheus at http://p:9090 is unreachable")
    assert transition.of(StartStage) == []
    assert world.condition("TriggersHealthy") == "False"


def test_status_stays_bounded() -> None:
    world = World(make_job(maxUpdates=50, cooldown="0s"))
    world.to_serving()
    for number in range(1, 16):
        world.now += 100
        world.step(triggers=[TriggerReading("drop", False, 0.95)])
        world.now += 100
        world.step(triggers=[TriggerReading("drop", False, 0.95)])
        world.now += 100
        world.fire()
        world.finish(f"digits-update-{number}", update_result(0.5, 0.97, 0.99, 0.40))
        world.step()
    status = world.job.status
    assert status is not None and status.updates.rejected == 15
    assert len(status.recent_decisions) == 10
    assert len(status.model_dump_json()) < 8_000


def test_observations_are_not_mutated() -> None:
    obs = Observations(now=T0)
    step(make_job(), obs)
    assert obs == replace(obs)


def test_a_trigger_never_fires_from_a_stale_reading() -> None:
    world = World(make_job(cooldown="0s"))
    world.to_serving()
    world.step(triggers=[TriggerReading("drop", True, 0.5)], recent_samples=5)  # too few
    world.now += 100
    transition = world.step(
        triggers_error="Prometheus at http://p:9090 is unreachable", recent_samples=50
    )
    assert transition.of(StartStage) == []


def test_triggers_without_a_reading_are_waiting_not_healthy() -> None:
    world = World(make_job())
    world.to_serving()
    world.step(triggers=[])
    assert world.condition("TriggersHealthy") == "Unknown"
    world.step(triggers=[TriggerReading("drop", False, 0.95)])
    assert world.condition("TriggersHealthy") == "True"


def test_each_stage_has_a_condition_that_tells_how_it_went() -> None:
    world = World(make_job(canary={"steps": [10], "minSamples": 20}))
    world.step()
    assert world.condition("Searched") == "Unknown"
    world.finish("digits-search", {"trials": 4, "completed": 4})
    world.step()
    assert (world.condition("Searched"), world.condition("Trained")) == ("True", "Unknown")
    world.finish("digits-train", version_result("digits-v1", 0.97))
    world.step()
    assert world.condition("Trained") == "True"
    status = world.job.status
    assert status is not None and "Updated" not in {c.type for c in status.conditions}

    # A rejected candidate, then a canary that is rolled back, then a failed update.
    world.fire()
    assert world.condition("Updated") == "Unknown"
    world.finish("digits-update-1", update_result(0.5, 0.97, 0.99, 0.40))
    world.step()
    assert world.condition("Updated") == "False"
    assert _condition(world, "Updated").reason == "CandidateRejected"

    world.now += 3600
    world.fire()
    world.finish("digits-update-2", update_result(0.5, 0.97, 0.95, 0.96))
    world.step(canary=CanaryReading(None, None, 0))
    assert _condition(world, "Updated").reason == "CanaryStarted"
    world.step(canary=CanaryReading(0.95, 0.70, 25))
    assert (_condition(world, "Updated").status, _condition(world, "Updated").reason) == (
        "False",
        "CanaryRolledBack",
    )


def test_a_promoted_update_and_a_stalled_search_show_in_their_conditions() -> None:
    world = World(make_job())
    world.to_serving()
    world.fire()
    world.finish("digits-update-1", update_result(0.5, 0.97, 0.95, 0.96))
    world.step()
    assert (_condition(world, "Updated").status, _condition(world, "Updated").reason) == (
        "True",
        "CandidatePromoted",
    )

    stalled = World(make_job())
    stalled.step()
    stalled.finish("digits-search", ok=False, permanent=True)
    stalled.step()
    searched = _condition(stalled, "Searched")
    assert (searched.status, searched.reason) == ("False", "InvalidSpec")
    assert "it broke" in searched.message


def _condition(world: World, kind: str) -> Any:
    status = world.job.status
    assert status is not None
    return next(c for c in status.conditions if c.type == kind)


def test_an_update_that_reports_no_evaluation_is_rejected_not_promoted() -> None:
    world = World(make_job())
    world.to_serving()
    world.fire()
    world.finish("digits-update-1", version_result("digits-v2", 0.99))
    world.step()
    assert world.states["digits-v2"] == "Rejected"
    assert world.serving == Serve("digits-v1")
    assert "no evaluation" in _condition(world, "Updated").message
