"""Drive a stream of records through a serve stage over HTTP: predict, then label later.

`StreamDriver` predicts each record and sends its label `label_delay` records later, as the
live stream would. With `rate` it paces records in real time (the serve stage's `--replay`);
without, it pushes batches as fast as the server answers (the local runner). `step(n)` pushes the
next n records, so a caller can interleave its own checks; `drive()` runs a whole stream.

`ServeClient` is a small synchronous client of the serving API (httpx) on one kept-alive
connection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from lifelong.trainers.data import Record

log = logging.getLogger(__name__)


class ServeError(RuntimeError):
    """The serve stage refused a request or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class ServeClient:
    """The serving API at `base_url` (`http://host:port`), over one kept-alive connection."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected a URL such as http://127.0.0.1:8080, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        # One retry covers a kept-alive connection the server closed between two requests.
        transport = httpx.HTTPTransport(retries=1)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request; return the status code and the body."""
        try:
            answer = self._http.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise ServeError(0, f"{self.base_url}{path} is unreachable: {error}") from error
        return answer.status_code, answer.content

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """A request whose answer must be 2xx JSON; else ServeError with the server's message."""
        status, data = self.request(method, path, body)
        if status >= 300:
            try:
                message = json.loads(data).get("error", data.decode(errors="replace"))
            except (ValueError, AttributeError):
                message = data.decode(errors="replace")[:500]
            raise ServeError(status, str(message))
        return json.loads(data)

    def predict(self, instances: list[Any], ids: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"instances": instances}
        if ids is not None:
            body["ids"] = ids
        result: dict[str, Any] = self.call("POST", "/v1/predict", body)
        return result

    def feedback(self, labels: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        body = {"feedback": [{"id": i, "label": y} for i, y in labels]}
        result: dict[str, Any] = self.call("POST", "/v1/feedback", body)
        return result

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/v1/status")
        return result

    def save(self) -> None:
        """Ask the serve stage to write its state (memories, windows) to the store now."""
        self.call("POST", "/v1/save")

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz")[0] == 200
        except ServeError:
            return False

    def metrics(self) -> str:
        status, data = self.request("GET", "/metrics")
        if status != 200:
            raise ServeError(status, data.decode(errors="replace")[:500])
        return data.decode()


def read_status(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """`GET /v1/status` of a serve stage: versions, online metrics, drift, memories."""
    with ServeClient(base_url, timeout) as client:
        return client.status()


@dataclass
class DriveReport:
    """What a driver pushed, and how its predictions fared (as the client saw them)."""

    predicted: int = 0
    labelled: int = 0
    correct: int = 0
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


class StreamDriver:
    """Pushes records through a serve stage: predict each, label it `label_delay` records later.

    Batches of up to `batch_size` records are predicted in one request; after each batch, the
    labels of every record at least `label_delay` records old are sent. With `rate` (records per
    second), batches hold one record and are paced in real time. `stop` ends `run` early.
    """

    def __init__(
        self,
        client: ServeClient,
        records: Iterable[Record],
        *,
        label_delay: int,
        batch_size: int = 64,
        rate: float | None = None,
        stop: threading.Event | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self._records: Iterator[Record] = iter(records)
        self.label_delay = label_delay
        self.batch_size = 1 if rate else max(1, batch_size)
        self.rate = rate
        self.stop = stop or threading.Event()
        self.on_batch = on_batch
        self.report = DriveReport()
        self._waiting: deque[tuple[Record, Any]] = deque()
        self._started: float | None = None
        self.exhausted = False

    def _next_batch(self, limit: int) -> list[Record]:
        batch = []
        for record in self._records:
            batch.append(record)
            if len(batch) >= limit:
                break
        if len(batch) < limit:
            self.exhausted = True
        return batch

    def _pace(self) -> None:
        if self.rate is None:
            return
        if self._started is None:
            self._started = time.monotonic() - self.report.predicted / self.rate
        due = self._started + self.report.predicted / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)

    def _label(self, keep: int) -> None:
        """Send the labels of waiting records beyond the newest `keep`."""
        ready = []
        while len(self._waiting) > keep:
            ready.append(self._waiting.popleft())
        if not ready:
            return
        self.client.feedback([(record.id, record.label) for record, _ in ready])
        self.report.labelled += len(ready)
        self.report.correct += sum(1 for record, guess in ready if guess == record.label)

    def step(self, count: int) -> int:
        """Push up to `count` more records; returns how many were pushed."""
        started, pushed = time.monotonic(), 0
        while pushed < count and not self.exhausted and not self.stop.is_set():
            self._pace()
            batch = self._next_batch(min(self.batch_size, count - pushed))
            if not batch:
                break
            answer = self.client.predict([r.features for r in batch], [r.id for r in batch])
            self._waiting.extend(zip(batch, answer["predictions"], strict=True))
            self.report.predicted += len(batch)
            pushed += len(batch)
            self._label(self.label_delay)
            if self.on_batch is not None:
                self.on_batch(len(batch))
        self.report.seconds += time.monotonic() - started
        return pushed

    def flush(self) -> None:
        """Send every label still waiting, as if the stream's last labels had arrived."""
        self._label(0)

    def run(self, *, flush: bool = True) -> DriveReport:
        """Push every record (until `stop`), then optionally the outstanding labels."""
        while not self.exhausted and not self.stop.is_set():
            self.step(self.batch_size * 16)
        if flush and not self.stop.is_set():
            self.flush()
        return self.report


def drive(
    base_url: str,
    records: Iterable[Record],
    *,
    label_delay: int,
    batch_size: int = 64,
    rate: float | None = None,
    flush: bool = True,
) -> DriveReport:
    """Push a whole stream through the serve stage at `base_url`; see `StreamDriver`."""
    with ServeClient(base_url) as client:
        driver = StreamDriver(
            client, records, label_delay=label_delay, batch_size=batch_size, rate=rate
        )
        return driver.run(flush=flush)
