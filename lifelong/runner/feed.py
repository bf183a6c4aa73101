"""Pushing the stream through the serve stage and reading its metrics back.

The runner feeds records in small chunks, as a client would: it asks for predictions, and sends
each record's label `labelDelay` records later. Between chunks it reads `/metrics` and
`/v1/status`, which is all it knows of the serving stage, as the operator would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lifelong.api.metrics import JOB_LABEL
from lifelong.trainers.data import Record


class ServeError(RuntimeError):
    """The serve stage refused or failed a request the runner made."""


@dataclass
class Feeder:
    """Feeds stream records to the serve stage in order, with delayed labels."""

    records: Sequence[Record]
    label_delay: int
    position: int = 0
    """Records predicted so far."""
    labelled: int = 0
    """Records whose label was sent so far."""

    @property
    def finished(self) -> bool:
        return self.labelled >= len(self.records)

    def feed(self, client: httpx.Client, count: int) -> list[Any]:
        """Predict the next `count` records, then send every label that is now due."""
        chunk = self.records[self.position : self.position + count]
        predictions: list[Any] = []
        if chunk:
            answer = _post(client, "/v1/predict", {
                "instances": [r.features for r in chunk],
                "ids": [r.id for r in chunk],
            })  # fmt: skip
            predictions = list(answer.get("predictions", []))
            self.position += len(chunk)
        due = (
            len(self.records)
            if self.position >= len(self.records)
            else max(self.position - self.label_delay, 0)
        )
        if due > self.labelled:
            labels = self.records[self.labelled : due]
            _post(client, "/v1/feedback", {
                "feedback": [{"id": r.id, "label": r.label} for r in labels],
            })  # fmt: skip
            self.labelled = due
        return predictions


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    if response.status_code >= 400:
        raise ServeError(f"POST {path} answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    return answer


@dataclass
class Scrape:
    """One reading of the serve stage's metrics: value sums by metric and by label set."""

    series: dict[str, list[tuple[dict[str, str], float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def total(self, metric: str, **labels: str) -> float | None:
        """Sum of a metric's series whose labels match; None if it has none."""
        values = [v for s, v in self.series.get(metric, []) if _matches(s, labels)]
        return sum(values) if values else None

    def mean(self, metric: str, **labels: str) -> float | None:
        values = [v for s, v in self.series.get(metric, []) if _matches(s, labels)]
        return sum(values) / len(values) if values else None

    def by_label(self, metric: str, label: str) -> dict[str, float]:
        """A metric's values keyed by one label (summed over the others)."""
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.series.get(metric, []):
            out[labels.get(label, "")] += value
        return dict(out)


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def scrape(client: httpx.Client, job: str) -> Scrape:
    """Read `/metrics` and keep the job's series (histograms as their sample series)."""
    response = client.get("/metrics")
    response.raise_for_status()
    reading = Scrape()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.get(JOB_LABEL, job) != job:
                continue
            reading.series[sample.name].append((labels, float(sample.value)))
    return reading


def status(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/status")
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer
