"""Names of the Prometheus metrics that Lifelong exports, declared once.

Triggers name these metrics, the operator compiles structured triggers into PromQL over them,
and the stages register them. Every series of a job carries the label `job_name`; units are in
the names (`_seconds`, `_total`). Label sets are bounded: versions, detectors and endpoints, never
request ids or feature values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

JOB_LABEL = "job_name"
"""The label that names the AutoDLJob on every series."""


@dataclass(frozen=True)
class MetricName:
    """One exported metric: its full name, kind, labels beyond `job_name`, and help text."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str


# --- serving ---------------------------------------------------------------------------------

ONLINE_ACCURACY = MetricName(
    "lifelong_online_accuracy",
    "gauge",
    ("version", "role"),
    "Prequential accuracy over the last `serving.window` labelled predictions (classification).",
)
ONLINE_ERROR = MetricName(
    "lifelong_online_error",
    "gauge",
    ("version", "role"),
    "Prequential root mean squared error over the sliding window (regression).",
)
PREDICTIONS = MetricName(
    "lifelong_predictions_total", "counter", ("version", "role"), "Predictions served."
)
FEEDBACK = MetricName(
    "lifelong_feedback_total", "counter", ("outcome",), "Labels received, by outcome."
)
BAD_REQUESTS = MetricName(
    "lifelong_bad_requests_total",
    "counter",
    ("endpoint", "reason"),
    "Requests refused with a 4xx answer, by endpoint and reason.",
)
PREDICTION_LATENCY = MetricName(
    "lifelong_prediction_latency_seconds",
    "histogram",
    (),
    "Time to answer one predict request.",
)
LABEL_DELAY = MetricName(
    "lifelong_label_delay_seconds",
    "histogram",
    (),
    "Time between a prediction and the arrival of its label.",
)
DRIFT_DETECTED = MetricName(
    "lifelong_drift_detected_total",
    "counter",
    ("detector",),
    "Drifts signalled by each detector.",
)
DRIFT_ACTIVE = MetricName(
    "lifelong_drift_active",
    "gauge",
    ("detector",),
    "1 from a detector's last drift signal until `serving.window` records later, else 0.",
)
FEATURE_SHIFT = MetricName(
    "lifelong_feature_shift",
    "gauge",
    (),
    "Mean absolute z-score of recent inputs against the training data's statistics.",
)
MEMORY_EXAMPLES = MetricName(
    "lifelong_memory_examples",
    "gauge",
    ("memory",),
    "Examples held in the recent and replay memories.",
)
SERVING_INFO = MetricName(
    "lifelong_serving_info",
    "gauge",
    ("version", "role", "weight"),
    "1 for each version being served, with its role (stable or canary) and traffic weight.",
)
STREAM_RECORDS = MetricName(
    "lifelong_stream_records_total", "counter", (), "Stream records consumed by replay."
)

# --- search and training ---------------------------------------------------------------------

SEARCH_TRIALS = MetricName("lifelong_search_trials", "gauge", ("state",), "Search trials by state.")
SEARCH_BEST = MetricName(
    "lifelong_search_best_objective",
    "gauge",
    ("objective",),
    "Best value of each objective found so far.",
)
TRAIN_EPOCHS = MetricName(
    "lifelong_train_epochs_total", "counter", ("stage",), "Epochs completed by training stages."
)
STAGE_SECONDS = MetricName(
    "lifelong_stage_seconds", "gauge", ("stage",), "Wall-clock seconds of the last stage run."
)

SERVING_METRICS = (
    ONLINE_ACCURACY,
    ONLINE_ERROR,
    PREDICTIONS,
    FEEDBACK,
    BAD_REQUESTS,
    PREDICTION_LATENCY,
    LABEL_DELAY,
    DRIFT_DETECTED,
    DRIFT_ACTIVE,
    FEATURE_SHIFT,
    MEMORY_EXAMPLES,
    SERVING_INFO,
    STREAM_RECORDS,
)
TRAINING_METRICS = (SEARCH_TRIALS, SEARCH_BEST, TRAIN_EPOCHS, STAGE_SECONDS)
ALL_METRICS = SERVING_METRICS + TRAINING_METRICS
