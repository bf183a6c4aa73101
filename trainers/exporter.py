"""Prometheus series of one job, registered from the names declared in `lifelong.api.metrics`.

`Exporter` owns a private registry (so several exporters can live in one test process) and
hands out children already labelled with `job_name`. Stages never spell a metric name
themselves: they pass the declared `MetricName`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from lifelong.api.metrics import JOB_LABEL, LABEL_DELAY, PREDICTION_LATENCY, MetricName

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The exposition format every Prometheus server reads."""

BUCKETS: dict[str, tuple[float, ...]] = {
    PREDICTION_LATENCY.name: (
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
    ),
    LABEL_DELAY.name: (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0),
}
"""Histogram buckets in seconds, by metric name."""

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class Exporter:
    """The registered series of one job."""

    def __init__(self, job_name: str, metrics: Iterable[MetricName]) -> None:
        self.job_name = job_name
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        for metric in metrics:
            self._metrics[metric.name] = self._register(metric)

    def _register(self, metric: MetricName) -> Any:
        labels = (JOB_LABEL, *metric.labels)
        if metric.kind == "counter":
            return Counter(metric.name, metric.help, labels, registry=self.registry)
        if metric.kind == "histogram":
            buckets = BUCKETS.get(metric.name, Histogram.DEFAULT_BUCKETS)
            return Histogram(
                metric.name, metric.help, labels, registry=self.registry, buckets=buckets
            )
        return Gauge(metric.name, metric.help, labels, registry=self.registry)

    def series(self, metric: MetricName, **labels: str) -> Any:
        """The child of `metric` with these labels (and the job's name)."""
        missing = set(metric.labels) - set(labels)
        if missing or set(labels) - set(metric.labels):
            raise ValueError(f"{metric.name} takes labels {metric.labels}, got {sorted(labels)}")
        return self._metrics[metric.name].labels(**{JOB_LABEL: self.job_name, **labels})

    def remove(self, metric: MetricName, **labels: str) -> None:
        """Drop one labelled series (a version that is no longer served)."""
        values = [self.job_name, *(labels[name] for name in metric.labels)]
        with contextlib.suppress(KeyError):
            self._metrics[metric.name].remove(*values)

    def text(self) -> bytes:
        """Every series in Prometheus' text format."""
        return generate_latest(self.registry)
