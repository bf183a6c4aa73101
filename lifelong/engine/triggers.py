"""Structured triggers: compiled to PromQL for a Prometheus server, or evaluated over samples
the caller collected from the serving stage's own `/metrics` when there is none.

Both paths give the same answer for the same samples, so a job behaves alike on a laptop and
in a cluster.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lifelong.api import TriggerSpec, duration_seconds
from lifelong.api.metrics import JOB_LABEL

DEFAULT_WINDOW = "2m"
DEFAULT_AGGREGATE = "avg"

_PROMQL_AGGREGATE = {
    "avg": "avg_over_time",
    "min": "min_over_time",
    "max": "max_over_time",
    "last": "last_over_time",
    "sum": "sum_over_time",
    "rate": "rate",
    "increase": "increase",
}


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def to_promql(trigger: TriggerSpec, job: str, namespace: str | None = None) -> str:
    """The PromQL expression of a trigger; it returns samples exactly while it fires.

    Several series (replicas) are reduced to one value per job with `avg` (or `sum` for
    counters' `rate`/`increase`), so the trigger fires on the job, not on one pod. A canary's
    series are left out.
    """
    if trigger.promql is not None:
        return trigger.promql
    window = trigger.window or DEFAULT_WINDOW
    aggregate = trigger.aggregate or DEFAULT_AGGREGATE
    # The canary's series are left out: a trigger watches the version that serves.
    selector = f'{JOB_LABEL}="{_label_value(job)}",role!="canary"'
    if namespace:
        selector += f',namespace="{_label_value(namespace)}"'
    inner = f"{_PROMQL_AGGREGATE[aggregate]}({trigger.metric}{{{selector}}}[{window}])"
    across = "sum" if aggregate in ("rate", "increase", "sum") else "avg"
    if trigger.below is not None:
        return f"{across}({inner}) < {trigger.below!r}"
    return f"{across}({inner}) > {trigger.above!r}"


@dataclass(frozen=True)
class Sample:
    """One observation of a metric: seconds since the epoch and the value."""

    time: float
    value: float


def aggregate(kind: str, samples: Sequence[Sample], window: float, now: float) -> float | None:
    """A structured trigger's aggregate over the samples in `(now - window, now]`.

    `rate` and `increase` treat the samples as a counter (resets count from zero, as Prometheus
    does). Returns None when the window holds too few samples to say anything.
    """
    inside = [s for s in samples if now - window < s.time <= now and not math.isnan(s.value)]
    if not inside:
        return None
    values = [s.value for s in inside]
    if kind == "avg":
        return sum(values) / len(values)
    if kind == "min":
        return min(values)
    if kind == "max":
        return max(values)
    if kind == "last":
        return values[-1]
    if kind == "sum":
        return sum(values)
    if len(inside) < 2:
        return None
    increase = 0.0
    for before, after in itertools.pairwise(values):
        increase += after - before if after >= before else after
    if kind == "increase":
        return increase
    span = inside[-1].time - inside[0].time
    return increase / span if span > 0 else None


def evaluate(
    trigger: TriggerSpec, samples: Sequence[Sample], now: float
) -> tuple[bool | None, float | None]:
    """Whether a structured trigger fires over the samples, and its aggregate value."""
    if trigger.metric is None:
        raise ValueError(f"trigger {trigger.name} is raw PromQL and needs a Prometheus server")
    window = duration_seconds(trigger.window or DEFAULT_WINDOW)
    value = aggregate(trigger.aggregate or DEFAULT_AGGREGATE, samples, window, now)
    if value is None:
        return None, None
    if trigger.below is not None:
        return value < trigger.below, value
    return value > (trigger.above if trigger.above is not None else math.inf), value
