"""Progress of the search, train and update stages: Prometheus metrics and readable log lines.

The metrics are those declared in `lifelong.api.metrics` (trials by state, best objective so
far, epochs, stage seconds), each with the `job_name` label. They are served on
`LIFELONG_METRICS_PORT` when it is set, and rewritten to `LIFELONG_METRICS_FILE` (the node
exporter's textfile format) when that is set. Terminal progress is plain log lines, one per
finished trial or epoch: no cursor tricks, so a pod's log reads as well as a terminal.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

from lifelong.api.metrics import (
    JOB_LABEL,
    SEARCH_BEST,
    SEARCH_TRIALS,
    STAGE_SECONDS,
    TRAIN_EPOCHS,
    MetricName,
)
from lifelong.trainers import knobs
from lifelong.trainers.knobs import Settings

log = logging.getLogger(__name__)

TRIAL_STATES = ("running", "completed", "stopped", "failed")
"""Trial states the search reports: `stopped` means ended early by the scheduler or the wall
time budget."""


def _metric(spec: MetricName, registry: CollectorRegistry) -> Any:
    labels = (JOB_LABEL, *spec.labels)
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, labels, registry=registry)
    return Gauge(spec.name, spec.help, labels, registry=registry)


def _serve(port: int, stage: str, registry: CollectorRegistry) -> Any:
    """Serve the metrics on the pod's own address (`POD_IP`, else loopback), as the serve stage
    binds. Metrics are a side channel: a port already taken costs them, never the stage."""
    from prometheus_client import start_http_server

    address = Settings.from_env().host
    try:
        server, _ = start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        log.warning(
            "Cannot serve the %s stage's metrics on %s:%d (%s); running without them.",
            stage, address, port, error,
        )  # fmt: skip
        return None
    log.info("Serving the %s stage's metrics on %s:%d.", stage, address, port)
    return server


class StageMetrics:
    """The Prometheus metrics of one search, train or update stage run."""

    def __init__(self, job: str, stage: str) -> None:
        self.job = job
        self.stage = stage
        self.registry = CollectorRegistry()
        self.trials = _metric(SEARCH_TRIALS, self.registry)
        self.best = _metric(SEARCH_BEST, self.registry)
        self.epochs = _metric(TRAIN_EPOCHS, self.registry)
        self.seconds = _metric(STAGE_SECONDS, self.registry)
        self.server: Any = None
        port = knobs.metrics_port()
        if port is not None:
            self.server = _serve(port, stage, self.registry)

    def set_trials(self, counts: dict[str, int]) -> None:
        for state in TRIAL_STATES:
            self.trials.labels(self.job, state).set(counts.get(state, 0))
        self.flush()

    def set_best(self, objective: str, value: float) -> None:
        self.best.labels(self.job, objective).set(value)

    def add_epochs(self, count: int) -> None:
        if count > 0:
            self.epochs.labels(self.job, self.stage).inc(count)

    def set_seconds(self, seconds: float) -> None:
        self.seconds.labels(self.job, self.stage).set(seconds)
        self.flush()

    def flush(self) -> None:
        path = knobs.metrics_file()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(path), self.registry)

    def close(self) -> None:
        self.flush()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def describe(values: dict[str, Any], names: list[str]) -> str:
    """`accuracy 0.9731, latencyMs 0.121` for the named values present."""
    parts = []
    for name in names:
        value = values.get(name)
        if isinstance(value, int | float):
            parts.append(f"{name} {value:.4g}")
    return ", ".join(parts)
