"""The lifecycle state machine: one pure `step` from (job, observations) to a transition.

A job moves Pending → Searching → Training → Serving, then between Serving and Updating for the
rest of its life; Suspended and Failed are entered from anywhere. Every step recomputes the
desired state from the spec, the status (the engine's only memory) and what was observed, so
running it twice, or after a restart, asks for nothing new: stage runs and versions have
deterministic names and applying an action twice is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from lifelong.api import (
    METRIC_MODES,
    AutoDLJob,
    AutoDLJobStatus,
    Condition,
    Decision,
    GateVerdict,
)
from lifelong.api.job import TriggerState
from lifelong.engine import names
from lifelong.engine.model import (
    Action,
    CanaryReading,
    Event,
    Observations,
    PauseStages,
    RecordVersion,
    Serve,
    SetVersionState,
    Stage,
    StageRun,
    StartStage,
    StopServing,
    Transition,
)
from lifelong.engine.policies import (
    CanaryJudge,
    Evaluation,
    Gate,
    LatchState,
    Retry,
    StormControl,
    TriggerLatch,
)
from lifelong.engine.reasons import Reason

MAX_DECISIONS = 10
DEFAULT_RETRY = Retry()


# --- time ------------------------------------------------------------------------------------


def to_rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


# --- the step ---------------------------------------------------------------------------------


class _Step:
    """One step's working state: the job, what was observed, the new status and the actions."""

    def __init__(self, job: AutoDLJob, obs: Observations, retry: Retry) -> None:
        self.job = job
        self.spec = job.spec
        self.name = job.metadata.name
        self.obs = obs
        self.now = obs.now
        self.retry = retry
        previous = job.status or AutoDLJobStatus()
        self.status = previous.model_copy(deep=True)
        self.actions: list[Action] = []
        self.stall: tuple[str, str] | None = None

    # --- recording -----------------------------------------------------------------------

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def event(
        self, reason: Reason, message: str, *, warning: bool = False, decision: bool = False
    ) -> None:
        self.act(Event("Warning" if warning else "Normal", reason.value, message))
        if decision:
            entry = Decision(time=to_rfc3339(self.now), reason=reason.value, message=message[:1024])
            self.status.recent_decisions = [entry, *self.status.recent_decisions][:MAX_DECISIONS]

    def condition(self, kind: str, value: bool | None, reason: Reason, message: str) -> None:
        status: Literal["True", "False", "Unknown"] = (
            "Unknown" if value is None else ("True" if value else "False")
        )
        existing = next((c for c in self.status.conditions if c.type == kind), None)
        changed = existing is None or existing.status != status
        condition = Condition(
            type=kind,
            status=status,
            reason=reason.value,
            message=message[:1024],
            last_transition_time=to_rfc3339(self.now)
            if changed or existing is None
            else existing.last_transition_time,
            observed_generation=self.obs.generation,
        )
        others = [c for c in self.status.conditions if c.type != kind]
        self.status.conditions = [*others, condition]

    def condition_is(self, kind: str) -> bool:
        return any(c.type == kind and c.status == "True" for c in self.status.conditions)

    # --- helpers -------------------------------------------------------------------------

    @property
    def mode(self) -> Literal["max", "min"]:
        metric = self.spec.task.metric or "accuracy"
        return self.spec.task.mode or METRIC_MODES[metric]

    def attempts(self, stage: Stage) -> int:
        return self.status.stage_attempts.get(stage.value, 0)

    def serve_action(self) -> Serve | None:
        if self.status.serving_version is None:
            return None
        return Serve(
            version=self.status.serving_version,
            canary=self.status.canary_version,
            canary_weight=self.status.canary_weight or 0,
            replicas=self.spec.serving.replicas,
        )

    def keep_serving(self) -> None:
        """Ask for the serving state the status describes (a no-op when nothing serves yet)."""
        serve = self.serve_action()
        if serve is not None:
            self.act(serve)

    def version_spec(self, name: str) -> dict[str, Any]:
        return self.obs.versions.get(name, {})


def step(job: AutoDLJob, obs: Observations, retry: Retry = DEFAULT_RETRY) -> Transition:
    """Compute the job's next status and the actions that bring the world towards its spec."""
    s = _Step(job, obs, retry)
    if s.status.phase != "Failed":
        s.status.message = None  # each step says afresh what the job is doing
    generation_changed = (s.status.observed_generation or 0) < obs.generation
    if s.status.phase == "Failed" and generation_changed:
        _restart_after_edit(s)

    if s.spec.suspend:
        _suspend(s)
    elif s.status.phase == "Suspended":
        _resume(s)
    if s.status.phase != "Suspended":
        _PHASES[s.status.phase or "Pending"](s)

    _conclude(s)
    return Transition(status=s.status, actions=s.actions)


# --- phases ----------------------------------------------------------------------------------


def _pending(s: _Step) -> None:
    promql = [t.name for t in s.spec.lifelong.triggers if t.promql is not None]
    if promql and not (s.obs.prometheus or s.spec.lifelong.prometheus.url):
        _stall(
            s,
            Reason.INVALID_SPEC,
            f"triggers {', '.join(promql)} are raw PromQL but no Prometheus server is "
            "configured; set spec.lifelong.prometheus.url or the operator's Prometheus URL",
        )
        return
    s.status.phase = "Searching"
    s.event(
        Reason.SEARCH_STARTED,
        "Searching architectures and hyperparameters with "
        f"strategy {s.spec.search.strategy} and a budget of {s.spec.search.budget.trials} "
        "trials.",
    )
    _searching(s)


def _searching(s: _Step) -> None:
    def done(run: StageRun) -> None:
        result = run.result or {}
        summary = f"Search finished: {_search_summary(result)}."
        s.event(Reason.SEARCH_SUCCEEDED, summary)
        _stage_condition(s, Stage.SEARCH, True, Reason.SEARCH_SUCCEEDED, summary)
        s.status.phase = "Training"
        _clear_attempts(s, Stage.SEARCH)
        s.event(Reason.TRAINING_STARTED, "Training the search's winner at full fidelity.")
        _training(s)

    _batch(s, Stage.SEARCH, names.run(s.name, "search", s.attempts(Stage.SEARCH)), done)


def _training(s: _Step) -> None:
    first = names.version(s.name, 1)

    def done(run: StageRun) -> None:
        spec = dict((run.result or {}).get("version") or {})
        _clear_attempts(s, Stage.TRAIN)
        s.act(RecordVersion(first, spec, "Serving"))
        created = f"Model version {first} created: {_score_text(spec)}."
        s.event(Reason.VERSION_CREATED, created)
        _stage_condition(s, Stage.TRAIN, True, Reason.TRAINING_SUCCEEDED, created)
        s.status.versions = max(s.status.versions, 1)
        _set_serving(s, first, spec)
        s.status.phase = "Serving"
        s.event(Reason.SERVING_STARTED, f"Serving {first}.")
        _serving(s)

    run_name = names.run(s.name, "train", s.attempts(Stage.TRAIN))
    _batch(s, Stage.TRAIN, run_name, done, version=first)


def _serving(s: _Step) -> None:
    serve = s.serve_action()
    if serve is None:  # cannot happen after training; recover by training again
        s.status.phase = "Training"
        return
    s.act(serve)
    fire = _observe_triggers(s, may_fire=True)
    if fire is not None:
        _start_update(s, fire)


def _updating(s: _Step) -> None:
    s.keep_serving()
    _observe_triggers(s, may_fire=False)
    if s.status.canary_version is not None:
        _canary(s, s.status.canary_version)
        return

    # The update in flight is the latest one started; its run name carries the retry count.
    number = s.status.updates.total
    candidate = names.version(s.name, s.status.versions + 1)
    trigger = s.status.last_trigger

    def done(run: StageRun) -> None:
        _clear_attempts(s, Stage.UPDATE)
        _judge_candidate(s, candidate, run.result or {})

    def gave_up(run: StageRun) -> None:
        s.status.updates.failed += 1
        _clear_attempts(s, Stage.UPDATE)
        s.status.active_update = None
        s.status.last_update_end_time = to_rfc3339(s.now)
        s.status.phase = "Serving"
        message = (
            f"Update {number} failed and will not be retried: "
            f"{run.message or 'no reason given'}; {s.status.serving_version} keeps serving."
        )
        s.event(Reason.UPDATE_FAILED, message, warning=True, decision=True)
        _stage_condition(s, Stage.UPDATE, False, Reason.UPDATE_FAILED, message)

    run_name = names.run(s.name, "update", s.attempts(Stage.UPDATE), update=number)
    s.status.active_update = run_name
    _batch(
        s,
        Stage.UPDATE,
        run_name,
        done,
        version=candidate,
        parent=s.status.serving_version,
        trigger=trigger,
        on_give_up=gave_up,
    )


def _failed(s: _Step) -> None:
    """A stalled job waits for its spec to change; serving, if any, keeps going."""
    s.keep_serving()


_PHASES: dict[str, Callable[[_Step], None]] = {
    "Pending": _pending,
    "Searching": _searching,
    "Training": _training,
    "Serving": _serving,
    "Updating": _updating,
    "Failed": _failed,
}


# --- batch stages ----------------------------------------------------------------------------


def _batch(
    s: _Step,
    stage: Stage,
    run_name: str,
    done: Callable[[StageRun], None],
    *,
    version: str | None = None,
    parent: str | None = None,
    trigger: str | None = None,
    on_give_up: Callable[[StageRun], None] | None = None,
) -> None:
    """Drive one batch stage: start it, wait for it, retry it, or hand its result on."""
    run = s.obs.run(run_name)
    if run.state == "succeeded":
        s.status.next_attempt_time = None
        done(run)
        return
    if run.state == "running":
        s.status.message = f"The {stage.value} stage is running ({run_name})."
        _stage_condition(s, stage, None, _STAGE_STARTED[stage], s.status.message)
        return
    if run.state == "absent":
        retry_at = from_rfc3339(s.status.next_attempt_time)
        if retry_at is not None and s.now < retry_at:
            s.status.message = f"Retrying the {stage.value} stage at {s.status.next_attempt_time}."
            return
        s.status.next_attempt_time = None
        s.act(StartStage(stage, run_name, version=version, parent=parent, trigger=trigger))
        s.status.message = f"Started the {stage.value} stage ({run_name})."
        _stage_condition(s, stage, None, _STAGE_STARTED[stage], s.status.message)
        return

    # The run failed: retry under a new name with backoff, or give up.
    s.status.stage_attempts[stage.value] = s.attempts(stage) + 1
    failures = s.status.stage_failures.get(stage.value, 0) + 1
    s.status.stage_failures[stage.value] = failures
    if s.retry.give_up(failures, run.permanent):
        if on_give_up is not None:
            on_give_up(run)
            return
        why = "it cannot succeed as specified" if run.permanent else f"after {failures} attempts"
        reason = Reason.INVALID_SPEC if run.permanent else Reason.RETRIES_EXHAUSTED
        message = f"The {stage.value} stage failed ({why}): {run.message or 'no reason given'}"
        _stall(s, reason, message)
        _stage_condition(s, stage, False, reason, message)
        return
    delay = s.retry.delay(failures)
    s.status.next_attempt_time = to_rfc3339(s.now + delay)
    why = run.message or "no reason given"
    message = (
        f"The {stage.value} stage failed ({why}); attempt {failures + 1} of "
        f"{s.retry.limit} in {delay:.0f}s."
    )
    s.event(Reason.STAGE_RETRYING, message, warning=True)
    _stage_condition(s, stage, None, Reason.STAGE_RETRYING, message)


_STAGE_CONDITIONS = {Stage.SEARCH: "Searched", Stage.TRAIN: "Trained", Stage.UPDATE: "Updated"}
"""One condition per batch stage: Unknown while it runs, True or False once it has ended. For
updates it tells the latest one's outcome: promoted, rejected, rolled back or failed."""

_STAGE_STARTED = {
    Stage.SEARCH: Reason.SEARCH_STARTED,
    Stage.TRAIN: Reason.TRAINING_STARTED,
    Stage.UPDATE: Reason.UPDATE_STARTED,
}


def _stage_condition(
    s: _Step, stage: Stage, value: bool | None, reason: Reason, message: str
) -> None:
    s.condition(_STAGE_CONDITIONS[stage], value, reason, message)


def _clear_attempts(s: _Step, stage: Stage) -> None:
    s.status.stage_attempts.pop(stage.value, None)
    s.status.stage_failures.pop(stage.value, None)


def _stall(s: _Step, reason: Reason, message: str) -> None:
    s.status.phase = "Failed"
    s.stall = (reason.value, message)
    s.event(reason, message, warning=True, decision=True)


def _restart_after_edit(s: _Step) -> None:
    s.status.stage_failures = {}
    s.status.next_attempt_time = None
    s.status.phase = "Serving" if s.status.serving_version else "Pending"
    s.event(Reason.RESUMED, "The spec changed; trying again.")


# --- suspend ---------------------------------------------------------------------------------


def _suspend(s: _Step) -> None:
    if s.status.phase != "Suspended":
        s.event(
            Reason.SUSPENDED,
            "Suspended: running stages pause, no new stage starts and serving scales to zero.",
            decision=True,
        )
    s.status.phase = "Suspended"
    s.act(StopServing())
    s.act(PauseStages(paused=True))


def _resume(s: _Step) -> None:
    s.status.phase = "Serving" if s.status.serving_version else "Pending"
    if s.status.active_update:
        s.status.phase = "Updating"
    s.act(PauseStages(paused=False))
    s.event(Reason.RESUMED, f"Resumed in phase {s.status.phase}.", decision=True)


# --- triggers and updates -------------------------------------------------------------------


def _observe_triggers(s: _Step, *, may_fire: bool) -> str | None:
    """Update each trigger's latch; return the name of a trigger that should start an update."""
    lifelong = s.spec.lifelong
    interval = _seconds(lifelong.prometheus.interval)
    readings = {r.name: r for r in s.obs.triggers}
    old = {t.name: t for t in s.status.triggers}
    states: list[TriggerState] = []
    ready: list[str] = []
    for trigger in lifelong.triggers:
        state = old.get(trigger.name, TriggerState(name=trigger.name))
        latch = TriggerLatch.of(trigger, interval)
        memory = LatchState(
            from_rfc3339(state.active_since), from_rfc3339(state.clear_since), state.latched
        )
        reading = readings.get(trigger.name)
        if reading is not None and reading.firing is not None:
            memory = latch.observe(memory, reading.firing, s.now)
        settled = None if s.status.active_update else from_rfc3339(s.status.last_update_end_time)
        # Only a fresh reading can fire: a trigger that could not be evaluated now (Prometheus
        # unreachable, no serving pod) keeps its latch but never fires from an old reading.
        fresh = reading is not None and reading.firing is True
        if fresh and latch.ready(memory, s.now, settled):
            ready.append(trigger.name)
        states.append(
            TriggerState(
                name=trigger.name,
                active_since=_rfc(memory.active_since),
                clear_since=_rfc(memory.clear_since),
                latched=memory.latched,
                value=reading.value if reading is not None else state.value,
                suppressed=state.suppressed,
            )
        )
    s.status.triggers = states
    _trigger_health(s)
    if not ready or not may_fire:
        return None

    storm = StormControl(
        cooldown=_seconds(lifelong.cooldown),
        max_updates=lifelong.max_updates,
        min_samples=lifelong.update.min_samples,
    )
    refusal = storm.refuse(
        now=s.now,
        updates_started=s.status.updates.total,
        update_running=s.status.active_update is not None,
        last_update_end=from_rfc3339(s.status.last_update_end_time),
        recent_samples=s.obs.recent_samples,
    )
    first = next(t for t in states if t.name == ready[0])
    if refusal is not None:
        if first.suppressed != refusal.split(" for ")[0]:
            s.event(
                Reason.TRIGGER_SUPPRESSED,
                f"Trigger {first.name} fired but no update starts: {refusal}.",
                decision=True,
            )
        first.suppressed = refusal.split(" for ")[0]
        return None
    first.suppressed = None
    first.latched = True
    return first.name


def _trigger_health(s: _Step) -> None:
    if not s.spec.lifelong.triggers:
        return
    errors = [f"{r.name}: {r.error}" for r in s.obs.triggers if r.error]
    if s.obs.triggers_error:
        errors.insert(0, s.obs.triggers_error)
    evaluated = {r.name for r in s.obs.triggers if r.firing is not None}
    waiting = [t.name for t in s.spec.lifelong.triggers if t.name not in evaluated]
    if errors:
        s.condition(
            "TriggersHealthy",
            False,
            Reason.TRIGGERS_UNAVAILABLE,
            "Triggers cannot be evaluated, so no update fires: " + "; ".join(errors),
        )
    elif waiting:
        s.condition(
            "TriggersHealthy",
            None,
            Reason.TRIGGERS_WAITING,
            f"Triggers {', '.join(waiting)} have no reading yet (no serving pod answers, or "
            "their window holds no sample).",
        )
    else:
        s.condition(
            "TriggersHealthy", True, Reason.TRIGGERS_HEALTHY, "Every trigger was evaluated."
        )


def _start_update(s: _Step, trigger: str) -> None:
    value = next((t.value for t in s.status.triggers if t.name == trigger), None)
    s.status.updates.total += 1
    s.status.last_trigger = trigger
    s.status.last_trigger_time = to_rfc3339(s.now)
    s.status.phase = "Updating"
    shown = f" (value {value:.4g})" if value is not None else ""
    s.event(
        Reason.TRIGGER_FIRED,
        f"Trigger {trigger} fired{shown}; starting update "
        f"{s.status.updates.total} of at most {s.spec.lifelong.max_updates} from "
        f"{s.status.serving_version} with strategy {s.spec.lifelong.update.strategy}.",
        decision=True,
    )
    _updating(s)


def _judge_candidate(s: _Step, candidate: str, result: dict[str, Any]) -> None:
    spec = dict(result.get("version") or {})
    s.act(RecordVersion(candidate, spec, "Candidate"))
    s.status.versions += 1
    s.status.active_update = None
    s.status.last_update_end_time = to_rfc3339(s.now)
    s.event(Reason.VERSION_CREATED, f"Candidate {candidate} created: {_score_text(spec)}.")

    verdict = Gate.of(s.spec.lifelong.gate).judge(Evaluation.of_result(result, s.mode))
    if verdict.decision == "reject":
        s.status.updates.rejected += 1
        s.status.phase = "Serving"
        s.act(SetVersionState(candidate, "Rejected", verdict.reason, gate=verdict))
        message = (
            f"Candidate {candidate} rejected by the gate. "
            f"{verdict.reason} {s.status.serving_version} keeps serving."
        )
        s.event(Reason.CANDIDATE_REJECTED, message, decision=True)
        _stage_condition(s, Stage.UPDATE, False, Reason.CANDIDATE_REJECTED, message)
        return
    steps = s.spec.lifelong.canary.steps
    if steps:
        s.status.canary_version = candidate
        s.status.canary_weight = steps[0]
        s.status.canary_step = 0
        s.status.canary_step_start = s.obs.canary.canary_samples if s.obs.canary else 0
        s.act(
            SetVersionState(
                candidate, "Canary", verdict.reason, gate=verdict, canary_weight=steps[0]
            )
        )
        message = (
            f"Candidate {candidate} passed the gate and serves "
            f"{steps[0]}% of traffic as a canary. {verdict.reason}"
        )
        s.event(Reason.CANARY_STARTED, message, decision=True)
        _stage_condition(s, Stage.UPDATE, None, Reason.CANARY_STARTED, message)
        s.keep_serving()
        return
    _promote(s, candidate, verdict.reason, verdict)


def _canary(s: _Step, candidate: str) -> None:
    reading = s.obs.canary or CanaryReading(None, None, 0)
    judge = CanaryJudge.of(s.spec.lifelong.canary, s.mode)
    step_index = s.status.canary_step or 0
    in_step = reading.canary_samples - (s.status.canary_step_start or 0)
    move, why = judge.judge(step_index, in_step, reading.stable_score, reading.canary_score)
    if move == "wait":
        s.status.message = f"Canary {candidate} at {s.status.canary_weight}%: {why}."
        return
    if move == "rollback":
        s.status.updates.rolled_back += 1
        s.act(SetVersionState(candidate, "RolledBack", f"Rolled back: {why}."))
        message = (
            f"Canary {candidate} rolled back: {why}; {s.status.serving_version} serves all traffic."
        )
        s.event(Reason.CANARY_ROLLED_BACK, message, warning=True, decision=True)
        _stage_condition(s, Stage.UPDATE, False, Reason.CANARY_ROLLED_BACK, message)
        _end_canary(s)
        return
    if move == "advance":
        step_index += 1
        weight = judge.steps[step_index]
        s.status.canary_step, s.status.canary_weight = step_index, weight
        s.status.canary_step_start = reading.canary_samples
        s.act(
            SetVersionState(
                candidate, "Canary", f"Advanced to {weight}%: {why}.", canary_weight=weight
            )
        )
        s.event(
            Reason.CANARY_ADVANCED,
            f"Canary {candidate} advanced to {weight}%: {why}.",
            decision=True,
        )
        s.keep_serving()
        return
    _end_canary(s)
    _promote(s, candidate, f"Promoted after its canary: {why}.", None)


def _end_canary(s: _Step) -> None:
    s.status.canary_version = None
    s.status.canary_weight = None
    s.status.canary_step = None
    s.status.canary_step_start = None
    s.status.phase = "Serving"
    s.keep_serving()


def _promote(s: _Step, candidate: str, message: str, verdict: GateVerdict | None) -> None:
    previous = s.status.serving_version
    if previous is not None:
        s.act(SetVersionState(previous, "Retired", f"Replaced by {candidate}."))
    s.act(SetVersionState(candidate, "Serving", message, gate=verdict))
    s.status.updates.promoted += 1
    s.status.phase = "Serving"
    _set_serving(s, candidate, s.version_spec(candidate))
    promoted = f"Candidate {candidate} promoted and now serves in place of {previous}. {message}"
    s.event(Reason.CANDIDATE_PROMOTED, promoted, decision=True)
    _stage_condition(s, Stage.UPDATE, True, Reason.CANDIDATE_PROMOTED, promoted)
    s.keep_serving()


def _set_serving(s: _Step, version: str, spec: dict[str, Any]) -> None:
    s.status.serving_version = version
    if spec:
        s.status.metric = spec.get("metric")
        s.status.score = _float(spec.get("score"))
        s.status.best = {k: float(v) for k, v in (spec.get("objectives") or {}).items()}


# --- conditions ------------------------------------------------------------------------------


def _conclude(s: _Step) -> None:
    """Set the kstatus conditions (Ready, Reconciling, Stalled) and observedGeneration."""
    phase = s.status.phase or "Pending"
    if s.stall is not None:
        s.condition("Stalled", True, Reason(s.stall[0]), s.stall[1])
        s.status.message = s.stall[1]
    elif phase != "Failed":
        s.condition("Stalled", False, Reason.RECONCILED, "The job is making progress.")

    busy = phase in ("Pending", "Searching", "Training", "Updating")
    if busy:
        s.condition("Reconciling", True, _busy_reason(phase), s.status.message or f"Phase {phase}.")
    else:
        s.condition("Reconciling", False, Reason.RECONCILED, "No stage is in progress.")

    serving = s.status.serving_version is not None and phase in ("Serving", "Updating")
    if serving and s.obs.serving_ready:
        s.condition(
            "Ready", True, Reason.SERVING_READY, f"{s.status.serving_version} serves predictions."
        )
    elif phase == "Suspended":
        s.condition("Ready", False, Reason.SUSPENDED, "The job is suspended.")
    elif serving:
        s.condition(
            "Ready",
            False,
            Reason.SERVING_NOT_READY,
            f"Waiting for the serving stage to answer with {s.status.serving_version}.",
        )
    else:
        s.condition(
            "Ready",
            False,
            _busy_reason(phase),
            s.status.message or f"Phase {phase}: no model serves yet.",
        )
    if phase in ("Serving", "Updating") and not s.status.message:
        s.status.message = f"{s.status.serving_version} serves."
    s.status.observed_generation = s.obs.generation


def _busy_reason(phase: str) -> Reason:
    return {
        "Pending": Reason.PENDING,
        "Searching": Reason.SEARCH_STARTED,
        "Training": Reason.TRAINING_STARTED,
        "Updating": Reason.UPDATE_STARTED,
        "Failed": Reason.STALLED,
    }.get(phase, Reason.RECONCILED)


# --- small conversions -----------------------------------------------------------------------


def _seconds(text: str) -> float:
    from lifelong.api import duration_seconds

    return duration_seconds(text)


def _rfc(seconds: float | None) -> str | None:
    return None if seconds is None else to_rfc3339(seconds)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _score_text(spec: dict[str, Any]) -> str:
    if "score" in spec:
        return f"{spec.get('metric', 'score')} {float(spec['score']):.4f} on its test data"
    return "no score reported"


def _search_summary(result: dict[str, Any]) -> str:
    if not result:
        return "no summary reported"
    parts = [f"{result.get('completed', '?')} of {result.get('trials', '?')} trials completed"]
    if result.get("failed"):
        parts.append(f"{result['failed']} failed")
    objectives = result.get("objectives") or {}
    if objectives:
        parts.append(", ".join(f"{k} {float(v):.4g}" for k, v in objectives.items()))
    return "; ".join(parts)
