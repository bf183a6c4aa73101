"""The serve stage's core, without HTTP: routing, validation, online signals, memories, state.

`ServingState` answers predict and feedback requests given as parsed JSON, and raises
`RequestError` (status, reason, message) for anything malformed before it touches a model, a
window or a memory. It keeps:

- one `Served` per version (the stable one and an optional canary that gets `weight` percent of
  requests, chosen by a hash of the request id so a retried id lands on the same version), each
  with its own prequential window and optional online-adapted head;
- predictions waiting for their label, matched by id when feedback arrives;
- the drift detectors, on the stable version's errors or on every input's feature score;
- the recent and replay memories for the next update;
- everything above, persisted under `serving/state/` by `save()` and read back by `open_state`.

TODO: replicas of one job share `serving/state/`, so with `serving.replicas` above 1 the last
replica to save wins; each replica needs its own state folder and the update stage a merge.

`lifelong.trainers.serve` puts it behind aiohttp; tests drive it directly.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lifelong.api import AutoDLJob
from lifelong.api import metrics as m
from lifelong.trainers.bundle import ModelBundle
from lifelong.trainers.data import build_streams, infer_task, load_table, split
from lifelong.trainers.detectors import Detector, make_detectors
from lifelong.trainers.exporter import Exporter
from lifelong.trainers.knobs import Settings
from lifelong.trainers.memory import (
    STATE_DIR,
    Example,
    Memories,
    RecentMemory,
    ReplayMemory,
    examples_of,
)
from lifelong.trainers.online import FeatureMonitor, HeadAdapter, Prequential
from lifelong.trainers.store import Store

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
DETECTORS_FILE = "detectors.pkl"
MAX_ID_LENGTH = 256


class RequestError(Exception):
    """A request the server refuses: its HTTP status, a short reason label and a sentence."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def bad_shape(message: str) -> RequestError:
    return RequestError(400, "bad-shape", message)


@dataclass
class Served:
    """One version being served, with its online window and optional adapted head."""

    name: str
    role: str
    weight: int
    bundle: ModelBundle
    window: Prequential
    adapter: HeadAdapter | None = None
    predictions: int = 0

    def predict_features(self, features: np.ndarray) -> list[Any]:
        if self.adapter is not None:
            return self.adapter.predict_features(features)
        return self.bundle.predict_features(features)


@dataclass
class Pending:
    """A prediction waiting for its label."""

    version: str
    prediction: Any
    features: list[Any]
    time: float


# --- validation --------------------------------------------------------------------------------


class Inputs:
    """Checks raw rows and labels against what a model takes, before anything uses them."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.names = list(bundle.feature_names)
        self.numeric = _numeric_columns(bundle)
        self.classes = bundle.classes

    def rows(self, instances: list[Any]) -> list[list[Any]]:
        return [self._row(i, row) for i, row in enumerate(instances)]

    def _row(self, index: int, row: Any) -> list[Any]:
        width = len(self.names)
        if isinstance(row, dict):
            missing = [c for c in self.names if c not in row]
            unknown = [str(c) for c in row if c not in self.names]
            if missing or unknown:
                what = f"lacks features {missing[:5]}" if missing else f"has unknown {unknown[:5]}"
                raise RequestError(422, "feature-count", f"instance {index} {what}")
            values = [row[c] for c in self.names]
        elif isinstance(row, list):
            if len(row) != width:
                raise RequestError(
                    422,
                    "feature-count",
                    f"instance {index} has {len(row)} features; the model takes {width}",
                )
            values = list(row)
        else:
            raise RequestError(
                422,
                "type",
                f"instance {index} must be a list of {width} values or an object by feature name",
            )
        return [self._value(index, name, v) for name, v in zip(self.names, values, strict=True)]

    def _value(self, index: int, name: str, value: Any) -> Any:
        where = f"instance {index}, feature {name!r}"
        if value is None:
            return None  # a missing value, imputed as in training
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            kind = type(value).__name__
            raise RequestError(422, "type", f"{where}: a {kind} is not a feature value")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(
                422,
                "non-finite",
                f"{where}: {value} is not a usable number; send null for a missing value",
            )
        if name in self.numeric:
            if isinstance(value, str):
                raise RequestError(422, "type", f"{where} must be a number, got {value[:40]!r}")
            return value
        return str(value)

    def label(self, value: Any, where: str) -> Any:
        """A label of the task's kind, or RequestError(422, bad-label)."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise RequestError(422, "bad-label", f"{where}: {value!r} is not a label")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(422, "bad-label", f"{where}: {value} is not a usable label")
        if self.classes is None:
            if isinstance(value, str):
                raise RequestError(422, "bad-label", f"{where}: a regression label is a number")
            return float(value)
        if all(isinstance(c, str) for c in self.classes):
            if not isinstance(value, str):
                raise RequestError(422, "bad-label", f"{where}: class labels here are strings")
            return value
        if isinstance(value, str):
            raise RequestError(422, "bad-label", f"{where}: class labels here are numbers")
        if all(isinstance(c, int) for c in self.classes):
            if float(value) != int(value):
                raise RequestError(422, "bad-label", f"{where}: class labels here are integers")
            return int(value)
        return value


def _numeric_columns(bundle: ModelBundle) -> set[str]:
    transformers = getattr(bundle.preprocess, "transformers_", [])
    return {str(c) for name, _, columns in transformers if name == "numeric" for c in columns}


def route(request_id: str, weight: int) -> bool:
    """Whether a request goes to the canary: a stable hash of its id, below `weight` percent."""
    return zlib.crc32(request_id.encode()) % 100 < weight


def _ids(body: dict[str, Any], count: int) -> list[str]:
    ids = body.get("ids")
    if ids is None:
        return [uuid.uuid4().hex for _ in range(count)]
    if not isinstance(ids, list) or len(ids) != count:
        raise bad_shape(f'"ids" must be a list with one id per instance ({count})')
    out = []
    for i, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise bad_shape(f"ids[{i}] must be a non-empty string")
        if len(str(value)) > MAX_ID_LENGTH:
            raise bad_shape(f"ids[{i}] is longer than {MAX_ID_LENGTH} characters")
        out.append(str(value))
    if len(set(out)) != len(out):
        raise RequestError(409, "duplicate-id", "the same id appears twice in one request")
    return out


# --- the state ---------------------------------------------------------------------------------


class ServingState:
    """Everything the serve stage knows; requests go in as parsed JSON."""

    def __init__(
        self,
        *,
        job: AutoDLJob,
        served: list[Served],
        memories: Memories,
        detectors: list[Detector],
        monitor: FeatureMonitor,
        exporter: Exporter,
        settings: Settings,
    ) -> None:
        self.job = job
        self.served = served
        self.stable = served[0]
        self.memories = memories
        self.detectors = detectors
        self.monitor = monitor
        self.exporter = exporter
        self.settings = settings
        self.inputs = Inputs(self.stable.bundle)
        self.target = str(self.stable.bundle.task["target"])
        self.classification = self.stable.bundle.classes is not None
        self.pending: dict[str, Pending] = {}
        self.counts = {"predicted": 0, "labelled": 0, "refused": 0, "expired": 0}
        self.delay_sum = 0.0
        self.stream_position = 0
        self.stream_done = False
        self.rng = random.Random(job.spec.data.seed)
        self._export_info()

    @property
    def window(self) -> int:
        return self.job.spec.serving.window

    def version(self, name: str) -> Served | None:
        return next((s for s in self.served if s.name == name), None)

    # --- predict ------------------------------------------------------------------------------

    def predict(self, body: Any) -> dict[str, Any]:
        """Answer a predict request: `{"instances": [...], "ids": [...]?}`."""
        started = time.perf_counter()
        if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
            raise bad_shape('the body must be an object with "instances": a list of rows')
        instances = body["instances"]
        if not instances:
            raise bad_shape('"instances" is empty')
        if len(instances) > self.settings.max_batch:
            raise RequestError(
                413,
                "too-large",
                f"{len(instances)} instances in one request; at most {self.settings.max_batch}",
            )
        ids = _ids(body, len(instances))
        taken = [i for i in ids if i in self.pending]
        if taken:
            raise RequestError(
                409, "duplicate-id", f"id {taken[0]!r} is already waiting for a label"
            )
        rows = self.inputs.rows(instances)
        frame = pd.DataFrame(rows, columns=self.inputs.names)

        # Route each row, predict per version, and watch every input's features.
        features = self.stable.bundle.transform(frame)
        scores = self.monitor.update(features)
        predictions: list[Any] = [None] * len(rows)
        versions: list[str] = [self.stable.name] * len(rows)
        for served, index in self._groups(ids):
            part = (
                features[index]
                if served is self.stable
                else served.bundle.transform(frame.iloc[index])
            )
            for i, value in zip(index, served.predict_features(part), strict=True):
                predictions[i], versions[i] = value, served.name
            served.predictions += len(index)
            self.exporter.series(m.PREDICTIONS, version=served.name, role=served.role).inc(
                len(index)
            )
        self._watch_features(scores)

        # Remember each prediction until its label comes.
        now = time.time()
        for request_id, row, value, name in zip(ids, rows, predictions, versions, strict=True):
            self.pending[request_id] = Pending(name, value, row, now)
        self._expire()
        self.counts["predicted"] += len(rows)
        self.exporter.series(m.PREDICTION_LATENCY).observe(time.perf_counter() - started)
        self.exporter.series(m.FEATURE_SHIFT).set(self.monitor.shift)
        return {"predictions": predictions, "ids": ids, "versions": versions}

    def _groups(self, ids: Sequence[str]) -> list[tuple[Served, list[int]]]:
        canary = self.served[1] if len(self.served) > 1 else None
        if canary is None or canary.weight <= 0:
            return [(self.stable, list(range(len(ids))))]
        chosen = [route(i, canary.weight) for i in ids]
        groups = [
            (self.stable, [i for i, c in enumerate(chosen) if not c]),
            (canary, [i for i, c in enumerate(chosen) if c]),
        ]
        return [(served, index) for served, index in groups if index]

    def _watch_features(self, scores: np.ndarray) -> None:
        for detector in self.detectors:
            if detector.input == "features":
                for value in scores:
                    self._observe(detector, float(value))

    def _expire(self) -> None:
        while len(self.pending) > self.settings.max_pending:
            self.pending.pop(next(iter(self.pending)))
            self.counts["expired"] += 1

    # --- feedback -----------------------------------------------------------------------------

    def feedback(self, body: Any) -> dict[str, Any]:
        """Take labels for earlier predictions: `{"feedback": [{"id": ..., "label": ...}]}`.

        The whole request is checked first; a single bad item refuses all of it, so nothing of a
        malformed request reaches the windows, the detectors or the memories.
        """
        items = self._labels(body)
        now = time.time()
        learned: dict[str, list[Example]] = {}
        for request_id, label in items:
            pending = self.pending.pop(request_id)
            served = self.version(pending.version)
            example = Example(pending.features, label)
            self.memories.recent.add(example)
            delay = max(0.0, now - pending.time)
            self.delay_sum += delay
            self.exporter.series(m.LABEL_DELAY).observe(delay)
            if served is None:
                continue  # answered by a version no longer served: memory only
            error = served.window.update(label, pending.prediction)
            if served is self.stable:
                for detector in self.detectors:
                    if detector.input == "error":
                        self._observe(detector, error)
            if served.adapter is not None:
                learned.setdefault(served.name, []).append(example)
        self._adapt(learned)
        self.counts["labelled"] += len(items)
        self.exporter.series(m.FEEDBACK, outcome="accepted").inc(len(items))
        self._export_windows()
        return {"accepted": len(items)}

    def _labels(self, body: Any) -> list[tuple[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
            raise bad_shape('the body must be an object with "feedback": a list of {id, label}')
        entries = body["feedback"]
        if not entries:
            raise bad_shape('"feedback" is empty')
        if len(entries) > self.settings.max_batch:
            raise RequestError(
                413,
                "too-large",
                f"{len(entries)} labels in one request; at most {self.settings.max_batch}",
            )
        items, seen = [], set()
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "id" not in entry or "label" not in entry:
                raise bad_shape(f'feedback[{i}] must be an object with "id" and "label"')
            request_id = str(entry["id"])
            if request_id in seen:
                raise RequestError(409, "duplicate-id", f"feedback[{i}]: id {request_id!r} repeats")
            if request_id not in self.pending:
                raise RequestError(
                    404,
                    "unknown-id",
                    f"feedback[{i}]: no prediction with id {request_id[:80]!r} is waiting for a "
                    "label (never made, already labelled, or expired)",
                )
            seen.add(request_id)
            items.append((request_id, self.inputs.label(entry["label"], f"feedback[{i}].label")))
        return items

    def _adapt(self, learned: dict[str, list[Example]]) -> None:
        """One online step per label on each adapted head, with a rehearsal batch each."""
        for name, examples in learned.items():
            served = self.version(name)
            if served is None or served.adapter is None:
                continue
            size = served.adapter.spec.rehearsal
            batches = []
            for example in examples:
                rehearsal = self.memories.recent.sample(size - size // 2, self.rng)
                rehearsal += self.memories.replay.sample(size // 2, self.rng)
                batches.append([example, *rehearsal])
            flat = [e for batch in batches for e in batch]
            frame = pd.DataFrame([e.features for e in flat], columns=self.inputs.names)
            features = served.bundle.transform(frame)
            start = 0
            for batch in batches:
                part = features[start : start + len(batch)]
                served.adapter.learn(part, [e.label for e in batch])
                start += len(batch)

    # --- detectors and metrics ----------------------------------------------------------------

    def _observe(self, detector: Detector, value: float) -> None:
        detector.update(value)
        if detector.drift_detected:
            self.exporter.series(m.DRIFT_DETECTED, detector=detector.name).inc()
        self.exporter.series(m.DRIFT_ACTIVE, detector=detector.name).set(
            1.0 if self._active(detector) else 0.0
        )

    def _active(self, detector: Detector) -> bool:
        last = detector.last_detection
        return last is not None and detector.seen - last < self.window

    def _export_windows(self) -> None:
        metric = m.ONLINE_ACCURACY if self.classification else m.ONLINE_ERROR
        for served in self.served:
            value = served.window.value
            if value is not None:
                self.exporter.series(metric, version=served.name, role=served.role).set(value)
        self.exporter.series(m.MEMORY_EXAMPLES, memory="recent").set(len(self.memories.recent))
        self.exporter.series(m.MEMORY_EXAMPLES, memory="replay").set(len(self.memories.replay))

    def _export_info(self) -> None:
        for served in self.served:
            self.exporter.series(
                m.SERVING_INFO, version=served.name, role=served.role, weight=str(served.weight)
            ).set(1.0)
        for detector in self.detectors:
            self.exporter.series(m.DRIFT_DETECTED, detector=detector.name).inc(0)
            self.exporter.series(m.DRIFT_ACTIVE, detector=detector.name).set(
                1.0 if self._active(detector) else 0.0
            )
        self._export_windows()
        self.exporter.series(m.FEATURE_SHIFT).set(self.monitor.shift)

    def refused(self, endpoint: str, error: RequestError) -> None:
        """Count a refused request."""
        self.counts["refused"] += 1
        self.exporter.series(m.BAD_REQUESTS, endpoint=endpoint, reason=error.reason).inc()
        if endpoint == "feedback":
            self.exporter.series(m.FEEDBACK, outcome=error.reason).inc()

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What `GET /v1/status` answers."""
        metric = "accuracy" if self.classification else "rmse"
        labelled = self.counts["labelled"]
        return {
            "job": self.job.metadata.name,
            "metric": metric,
            "window": self.window,
            "versions": [
                {
                    "name": s.name,
                    "role": s.role,
                    "weight": s.weight,
                    "predictions": s.predictions,
                    "labelled": s.window.labelled,
                    "windowSize": len(s.window.errors),
                    metric: s.window.value,
                    "adaptedSteps": s.adapter.steps if s.adapter is not None else None,
                }
                for s in self.served
            ],
            "records": {**self.counts, "pending": len(self.pending)},
            "labelDelaySeconds": self.delay_sum / labelled if labelled else None,
            "featureShift": self.monitor.shift,
            "drift": [
                {
                    "name": d.name,
                    "type": d.spec.type,
                    "input": d.input,
                    "seen": d.seen,
                    "detections": d.detections,
                    "lastDetection": d.last_detection,
                    "active": self._active(d),
                }
                for d in self.detectors
            ],
            "memory": {
                "version": self.memories.version,
                "recent": len(self.memories.recent),
                "recentCapacity": self.memories.recent.capacity,
                "replay": len(self.memories.replay),
                "replayCapacity": self.memories.replay.capacity,
                "replayClasses": {str(k): n for k, n in self.memories.replay.classes.items()},
            },
            "stream": {"position": self.stream_position, "done": self.stream_done},
        }

    # --- persistence --------------------------------------------------------------------------

    def save(self, store: Store) -> None:
        """Write the memories, detectors and adapted heads, then `state.json` last.

        TODO: this writes every file whole, on the event loop: fine for memories of thousands of
        rows (milliseconds), slow for millions, which would need appending files in a thread.
        """
        started = time.perf_counter()
        self.memories.save(store, self.inputs.names, self.target)
        detectors = {d.name: (d.spec.model_dump_json(), d) for d in self.detectors}
        store.write_bytes(
            pickle.dumps({"version": self.stable.name, "detectors": detectors}),
            STATE_DIR,
            DETECTORS_FILE,
        )
        for served in self.served:
            if served.adapter is not None:
                store.write_bytes(served.adapter.state(), STATE_DIR, f"adapted-{served.name}.pt")
        state = {
            "stable": self.stable.name,
            "versions": {
                s.name: {"window": s.window.state(), "predictions": s.predictions}
                for s in self.served
            },
            "pending": [
                [i, p.version, p.prediction, p.features, p.time] for i, p in self.pending.items()
            ],
            "counts": self.counts,
            "delaySum": self.delay_sum,
            "monitor": self.monitor.state(),
            "stream": {"position": self.stream_position, "done": self.stream_done},
        }
        store.write_bytes(json.dumps(state).encode(), STATE_DIR, STATE_FILE)
        log.debug("Saved the serving state in %.3fs.", time.perf_counter() - started)

    def restore(self, store: Store) -> None:
        """Read back what `save` wrote; parts that no longer fit (another version) are left."""
        if not store.exists(STATE_DIR, STATE_FILE):
            return
        state = json.loads(store.read_bytes(STATE_DIR, STATE_FILE))
        for served in self.served:
            saved = state["versions"].get(served.name)
            if saved is not None:
                served.window.restore(saved["window"])
                served.predictions = int(saved.get("predictions", 0))
            if served.adapter is not None and store.exists(STATE_DIR, f"adapted-{served.name}.pt"):
                served.adapter.restore(store.read_bytes(STATE_DIR, f"adapted-{served.name}.pt"))
        # Labels of predictions made by a version no longer served still feed the memory.
        for request_id, version, prediction, features, moment in state["pending"]:
            self.pending[str(request_id)] = Pending(version, prediction, features, moment)
        self.counts.update({k: int(v) for k, v in state["counts"].items()})
        self.delay_sum = float(state.get("delaySum", 0.0))
        self.monitor.restore(state.get("monitor", {}))
        stream = state.get("stream", {})
        self.stream_position = int(stream.get("position", 0))
        self.stream_done = bool(stream.get("done", False))
        if state.get("stable") == self.stable.name:
            self._restore_detectors(store)
        self._export_info()
        log.info(
            "Restored the serving state: %d recent and %d replay examples, %d pending labels.",
            len(self.memories.recent),
            len(self.memories.replay),
            len(self.pending),
        )

    def _restore_detectors(self, store: Store) -> None:
        if not store.exists(STATE_DIR, DETECTORS_FILE):
            return
        # Our own file in the job's store, written by `save`; never loaded from elsewhere.
        saved = pickle.loads(store.read_bytes(STATE_DIR, DETECTORS_FILE))
        if saved.get("version") != self.stable.name:
            return
        for i, detector in enumerate(self.detectors):
            spec, old = saved["detectors"].get(detector.name, (None, None))
            if spec == detector.spec.model_dump_json():
                self.detectors[i] = old


# --- building the state ------------------------------------------------------------------------


def training_rows(job: AutoDLJob) -> pd.DataFrame:
    """The rows the first version trained on: the training split of the stream's training part.

    TODO: the serve stage reads the training data at every start for the feature statistics
    (and, on the first start, the replay seed); a version could carry these statistics instead.
    """
    table = load_table(job.spec.data.train)
    task = infer_task(table, job.spec.task)
    streams = build_streams(job.spec.data, table, task)
    labelled = streams.train[streams.train[task.target].notna()]
    return split(labelled, task, job.spec.data).train


def _served(store: Store, job: AutoDLJob, name: str, role: str, weight: int) -> Served:
    bundle = ModelBundle.load(store, name)
    window = Prequential(job.spec.serving.window, bundle.classes is not None)
    adaptation = job.spec.serving.adaptation
    adapter = HeadAdapter(bundle, adaptation) if adaptation.mode == "head" else None
    return Served(name, role, weight, bundle, window, adapter)


def open_state(
    job: AutoDLJob,
    store: Store,
    version: str,
    *,
    canary: str | None = None,
    canary_weight: int = 0,
    settings: Settings | None = None,
) -> ServingState:
    """Load the versions, build the detectors and memories, and restore any saved state."""
    settings = settings or Settings.from_env()
    with_canary = bool(canary) and canary != version
    served = [_served(store, job, version, "stable", 100 - canary_weight if with_canary else 100)]
    if canary and with_canary:
        served.append(_served(store, job, canary, "canary", canary_weight))
    stable = served[0].bundle
    classification = stable.classes is not None
    detectors = make_detectors(job.spec.serving.detectors, binary_errors=classification)

    # The training rows give the feature statistics and, on a first start, the replay seed.
    rows = training_rows(job)
    names, target = stable.feature_names, str(stable.task["target"])
    monitor = FeatureMonitor.from_training(stable.transform(rows[names]), job.spec.serving.window)
    memories = Memories.load(
        store,
        names,
        target,
        recent_capacity=job.spec.serving.recent_memory,
        replay_capacity=job.spec.lifelong.update.memory_size,
    )
    if memories is None:
        replay = ReplayMemory(
            job.spec.lifelong.update.memory_size, balanced=classification, seed=job.spec.data.seed
        )
        replay.extend(examples_of(rows, names, target))
        memories = Memories(RecentMemory(job.spec.serving.recent_memory), replay, version)
    memories.rebase(version)

    exporter = Exporter(job.metadata.name, m.SERVING_METRICS)
    state = ServingState(
        job=job,
        served=served,
        memories=memories,
        detectors=detectors,
        monitor=monitor,
        exporter=exporter,
        settings=settings,
    )
    state.restore(store)
    return state
