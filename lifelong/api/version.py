"""The `ModelVersion` resource: one per trained or updated model, with its lineage.

A version's spec records facts fixed when it was made (metrics, artifact, parent, trigger, data
snapshot, seed, image) and never changes; its status records where it stands in the promotion
path and the gate's verdict, so that every autonomous decision keeps its evidence.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from lifelong.api.base import API_VERSION, ApiModel, Condition, ObjectMeta

VersionState = Literal["Candidate", "Canary", "Serving", "Retired", "RolledBack", "Rejected"]


class Artifact(ApiModel):
    """Where a version's files live in the artifact store."""

    uri: str = Field(max_length=2048)
    """Directory URI of the version: weights, preprocessing, config and metrics."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    """SHA-256 over the version's files, as `sha256:HEX`."""


class DataSnapshot(ApiModel):
    """The data a version was trained on."""

    uri: str = Field(max_length=2048)
    """The source URI, or the artifact-store file that holds the update's data."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    """SHA-256 of the rows used."""

    rows: int = Field(ge=0)
    """Number of rows used for training."""


class ModelVersionSpec(ApiModel):
    """Immutable facts about one model version."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "a model version's spec is immutable"}
            ]
        }
    )

    job: str = Field(max_length=63)
    """The `AutoDLJob` that made it."""

    stage: Literal["train", "update"]
    """The stage that made it."""

    parent: str | None = Field(default=None, max_length=253)
    """The version it was updated from; empty for the first."""

    trigger: str | None = Field(default=None, max_length=63)
    """The trigger that started the update that made it."""

    strategy: str | None = Field(default=None, max_length=32)
    """The update strategy (`replay`, `ewc`, ...) or `search` for the first version."""

    artifact: Artifact
    """Its files in the artifact store."""

    metric: str = Field(max_length=64)
    """The primary metric's name."""

    score: float
    """The primary metric on the version's test data."""

    metrics: dict[str, float] = Field(default_factory=dict)
    """Metrics on validation and test data, and for updates on new and old data."""

    objectives: dict[str, float] = Field(default_factory=dict)
    """The search objectives (quality, `latencyMs`, `params`, ...)."""

    config: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-lifelong-free-form": True}
    )
    """The architecture and hyperparameters."""

    data: DataSnapshot | None = None
    """The training data snapshot."""

    seed: int = Field(default=0, ge=0)
    """The random seed."""

    image: str | None = Field(default=None, max_length=1024)
    """The container image that made it, when made in a cluster."""

    code_version: str | None = Field(default=None, max_length=64)
    """The Lifelong version that made it."""

    created: str
    """When it was made, RFC 3339."""

    seconds: float = Field(default=0.0, ge=0.0)
    """Wall-clock seconds the stage took."""


class GateVerdict(ApiModel):
    """The promotion gate's decision about a candidate, with its numbers."""

    decision: Literal["promote", "reject"]
    """`promote` or `reject`."""

    gain: float
    """Candidate minus serving model on held-out recent data."""

    forgetting: float
    """Serving model minus candidate on held-out old data (positive means forgotten)."""

    min_gain: float
    """The gate's `minGain` when it decided."""

    max_forgetting: float
    """The gate's `maxForgetting` when it decided."""

    reason: str = Field(max_length=1024)
    """The decision in a sentence."""


class ModelVersionStatus(ApiModel):
    """Where a version stands."""

    state: VersionState = "Candidate"
    """Candidate, Canary, Serving, Retired, RolledBack or Rejected."""

    gate: GateVerdict | None = None
    """The gate's verdict, for versions made by an update."""

    canary_weight: int | None = Field(default=None, ge=0, le=100)
    """Traffic share in percent while in canary."""

    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Conditions of the version."""

    message: str | None = Field(default=None, max_length=1024)
    """A sentence on the last change of state."""


class ModelVersion(ApiModel):
    """One trained or updated model, its metrics and its lineage."""

    api_version: Literal["lifelong.dev/v1alpha1"] = API_VERSION
    """Always `lifelong.dev/v1alpha1`."""

    kind: Literal["ModelVersion"] = "ModelVersion"
    """Always `ModelVersion`."""

    metadata: ObjectMeta
    """Standard object metadata."""

    spec: ModelVersionSpec
    """Immutable facts."""

    status: ModelVersionStatus | None = None
    """Where the version stands."""
