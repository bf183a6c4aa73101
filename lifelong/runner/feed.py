"""Pushing the stream through the serve stage and reading its metrics back.

The runner feeds records in small chunks through the trainers' `StreamDriver`, as a client
would: predictions first, each label `labelDelay` records later. Between chunks it reads the
serve stage's `/metrics`, which is all it knows of serving, as the operator would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from lifelong.api.metrics import JOB_LABEL
from lifelong.trainers.data import Record
from lifelong.trainers.stream import ServeClient, StreamDriver


@dataclass
class Feed:
    """The stream's position, and a driver pushing it through whichever serve stage runs."""

    records: Sequence[Record]
    label_delay: int
    chunk: int
    position: int = 0
    """Records predicted so far (saved, so a re-run continues from here)."""
    driver: StreamDriver | None = None
    flushed: bool = False

    def attach(self, client: ServeClient) -> None:
        """Drive through `client` from the current position (the serve stage may restart)."""
        if self.driver is None:
            self.driver = StreamDriver(
                client,
                self.records[self.position :],
                label_delay=self.label_delay,
                batch_size=self.chunk,
            )
        else:
            self.driver.client = client

    @property
    def finished(self) -> bool:
        return self.position >= len(self.records) and (self.flushed or not self.records)

    def advance(self) -> None:
        """Push the next chunk; after the last record, send the labels still due."""
        if self.driver is None:
            raise RuntimeError("the stream has no serve stage to go to")
        self.position += self.driver.step(self.chunk)
        if self.driver.exhausted and not self.flushed:
            self.driver.flush()
            self.flushed = True


@dataclass
class Scrape:
    """One reading of the serve stage's metrics: the job's series, by metric name."""

    series: dict[str, list[tuple[dict[str, str], float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def _values(self, metric: str, labels: dict[str, str]) -> list[float]:
        return [v for s, v in self.series.get(metric, []) if _matches(s, labels)]

    def total(self, metric: str, **labels: str) -> float | None:
        """Sum of a metric's series whose labels match; None if it has none."""
        values = self._values(metric, labels)
        return sum(values) if values else None

    def mean(self, metric: str, **labels: str) -> float | None:
        values = self._values(metric, labels)
        return sum(values) / len(values) if values else None

    def by_label(self, metric: str, label: str) -> dict[str, float]:
        """A metric's values keyed by one label (summed over the others)."""
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.series.get(metric, []):
            out[labels.get(label, "")] += value
        return dict(out)


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    """Label matching with Prometheus' `!=`: a wanted value `!x` excludes x (and keeps absent)."""
    for key, value in wanted.items():
        actual = labels.get(key, "")
        if value.startswith("!"):
            if actual == value[1:]:
                return False
        elif actual != value:
            return False
    return True


def scrape(client: ServeClient, job: str) -> Scrape:
    """Read `/metrics` and keep the job's series (histograms as their sample series)."""
    reading = Scrape()
    for family in text_string_to_metric_families(client.metrics()):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.get(JOB_LABEL, job) != job:
                continue
            reading.series[sample.name].append((labels, float(sample.value)))
    return reading
