"""What the engine reads and what it returns: observations in, a transition out.

The local runner and the operator gather `Observations` (stage runs, serving readiness, trigger
readings, canary numbers) and apply the `Action`s of a `Transition`. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from lifelong.api import AutoDLJobStatus, GateVerdict, VersionState


class Stage(StrEnum):
    """The stages a job runs."""

    SEARCH = "search"
    TRAIN = "train"
    SERVE = "serve"
    UPDATE = "update"


RunState = Literal["absent", "running", "succeeded", "failed"]


@dataclass(frozen=True)
class StageRun:
    """What is known of one run of a batch stage (search, train or update)."""

    name: str
    state: RunState = "absent"
    result: dict[str, Any] | None = None
    """The stage's JSON result (see docs/architecture.md), once it succeeded."""
    permanent: bool = False
    """The run failed in a way retrying cannot fix (exit code 2: bad data, bad spec)."""
    message: str = ""
    """Why it failed, in a sentence."""


@dataclass(frozen=True)
class TriggerReading:
    """A trigger's expression evaluated now."""

    name: str
    firing: bool | None
    """Whether the condition holds; None when it could not be evaluated."""
    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class CanaryReading:
    """Online metrics of the serving and the canary version while a canary runs."""

    stable_score: float | None
    canary_score: float | None
    canary_samples: int
    """Labelled predictions the canary has made so far (cumulative)."""


@dataclass(frozen=True)
class Observations:
    """Everything the engine needs to know about the world at one moment."""

    now: float
    """Seconds since the epoch (wall time in a cluster, the stream's virtual time locally)."""
    generation: int = 1
    runs: dict[str, StageRun] = field(default_factory=dict)
    """Batch stage runs by name; a name missing here has never been started."""
    serving_ready: bool = False
    """Whether the serving stage answers with the version the engine asked for."""
    triggers: list[TriggerReading] = field(default_factory=list)
    canary: CanaryReading | None = None
    recent_samples: int | None = None
    """Labelled examples in the serving stage's recent memory, when known."""
    triggers_error: str | None = None
    """Why triggers could not be evaluated at all (for example Prometheus unreachable)."""
    prometheus: bool = False
    """Whether a Prometheus server is configured (raw PromQL triggers need one)."""
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Specs of the job's model versions by name (camelCase, as in the ModelVersion)."""

    def run(self, name: str) -> StageRun:
        return self.runs.get(name, StageRun(name))


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartStage:
    """Start a batch stage run under a deterministic name (starting it twice is a no-op)."""

    stage: Stage
    name: str
    version: str | None = None
    """train and update: the version to produce."""
    parent: str | None = None
    """update: the serving version it starts from."""
    trigger: str | None = None
    """update: the trigger that started it."""


@dataclass(frozen=True)
class Serve:
    """The desired serving state; applying it when already so is a no-op."""

    version: str
    canary: str | None = None
    canary_weight: int = 0
    replicas: int = 1


@dataclass(frozen=True)
class StopServing:
    """Scale serving to zero (suspend)."""


@dataclass(frozen=True)
class PauseStages:
    """Pause the stage runs still in progress (suspend), or let them go on (resume). A paused
    run's pods stop; resumed, it continues from what it saved (the search's ledger, the
    training's checkpoint)."""

    paused: bool


@dataclass(frozen=True)
class RecordVersion:
    """A new model version exists: record it with its facts and initial state."""

    name: str
    spec: dict[str, Any]
    state: VersionState


@dataclass(frozen=True)
class SetVersionState:
    """A version moved along the promotion path."""

    name: str
    state: VersionState
    message: str
    gate: GateVerdict | None = None
    canary_weight: int | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes event (and a line in the job's decision log)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = StartStage | Serve | StopServing | PauseStages | RecordVersion | SetVersionState | Event


@dataclass
class Transition:
    """The engine's answer: the new status and what to do."""

    status: AutoDLJobStatus
    actions: list[Action] = field(default_factory=list)

    def of(self, kind: type[Any]) -> list[Any]:
        """The actions of one kind, in order."""
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def events(self) -> list[Event]:
        return self.of(Event)
