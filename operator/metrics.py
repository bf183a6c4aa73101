"""The operator's own Prometheus metrics, declared once: reconciliations, their errors and
durations, and jobs by phase. Labels are bounded (outcome, phase), never job names."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "lifelong_operator_reconciles_total",
    "Reconciliations of AutoDLJobs, by outcome (ok, gone, error).",
    ["outcome"],
)
ERRORS = Counter(
    "lifelong_operator_errors_total",
    "Reconciliations that failed, by the kind of error.",
    ["kind"],
)
DURATION = Histogram(
    "lifelong_operator_reconcile_duration_seconds",
    "Time one reconciliation of one job takes.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
JOBS = Gauge(
    "lifelong_operator_jobs",
    "AutoDLJobs known to this operator, by phase.",
    ["phase"],
)
LEADER = Gauge(
    "lifelong_operator_leader",
    "1 while this replica reconciles (it runs standalone or leads its peering), 0 on standby.",
)
PHASES = ("Pending", "Searching", "Training", "Serving", "Updating", "Suspended", "Failed")


def count_phases(phases: Iterable[str | None]) -> None:
    """Set the jobs-by-phase gauge from the last known phase of every job."""
    counts = dict.fromkeys(PHASES, 0)
    for phase in phases:
        counts[phase or "Pending"] = counts.get(phase or "Pending", 0) + 1
    for phase in PHASES:
        JOBS.labels(phase=phase).set(counts[phase])
