"""The reasons Lifelong gives for its decisions: event reasons and condition reasons, one list.

Every autonomous decision is announced with one of these, so people and alerting can match on
a fixed vocabulary.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why something happened. Used as Kubernetes event reasons and condition reasons."""

    # stages
    SEARCH_STARTED = "SearchStarted"
    SEARCH_SUCCEEDED = "SearchSucceeded"
    TRAINING_STARTED = "TrainingStarted"
    TRAINING_SUCCEEDED = "TrainingSucceeded"
    STAGE_FAILED = "StageFailed"
    STAGE_RETRYING = "StageRetrying"
    SERVING_STARTED = "ServingStarted"
    SERVING_READY = "ServingReady"
    SERVING_NOT_READY = "ServingNotReady"

    # the lifelong loop
    TRIGGER_FIRED = "TriggerFired"
    TRIGGER_SUPPRESSED = "TriggerSuppressed"
    TRIGGERS_UNAVAILABLE = "TriggersUnavailable"
    TRIGGERS_HEALTHY = "TriggersHealthy"
    TRIGGERS_WAITING = "TriggersWaiting"
    UPDATE_STARTED = "UpdateStarted"
    UPDATE_FAILED = "UpdateFailed"
    VERSION_CREATED = "VersionCreated"
    CANDIDATE_PROMOTED = "CandidatePromoted"
    CANDIDATE_REJECTED = "CandidateRejected"
    CANARY_STARTED = "CanaryStarted"
    CANARY_ADVANCED = "CanaryAdvanced"
    CANARY_ROLLED_BACK = "CanaryRolledBack"
    VERSION_RETIRED = "VersionRetired"

    # the job as a whole
    PENDING = "Pending"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    STALLED = "Stalled"
    INVALID_SPEC = "InvalidSpec"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    RECONCILED = "Reconciled"
