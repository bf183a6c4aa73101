"""`lifelong run`: the lifecycle engine driving each stage as a local process.

The runner plays the part of the operator and of the world around it. It gathers observations
(stage results, the serve stage's metrics), asks the engine for the next step, and applies the
actions: batch stages run to completion, the serve stage restarts when the serving state
changes, and between steps the stream advances a chunk.

Time is the stream's: each record advances a virtual clock by `1 / stream.rate` seconds and
stages take no stream time, so windows, cooldowns and backoffs behave as specified while the
whole loop runs as fast as the machine allows. Everything needed to resume (the job's status,
runs, versions, the stream position) is saved after every step; a re-run continues.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lifelong.api import AutoDLJob, AutoDLJobStatus, TriggerSpec
from lifelong.engine.model import (
    Action,
    CanaryReading,
    Event,
    Observations,
    RecordVersion,
    Serve,
    SetVersionState,
    StageRun,
    StartStage,
    StopServing,
    TriggerReading,
)
from lifelong.engine.step import step
from lifelong.engine.triggers import Sample, evaluate, to_promql
from lifelong.prometheus import PrometheusError, query
from lifelong.runner.console import Console
from lifelong.runner.feed import Feed, Scrape, scrape
from lifelong.runner.processes import ServeProcess, Workspace, run_stage
from lifelong.trainers.data import Record, stream_records
from lifelong.trainers.stream import ServeError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
HISTORY = 10_000
"""Metric samples kept per trigger metric (enough for any window over a demo stream)."""


@dataclass
class Timeline:
    """What happened along the stream, for the report."""

    online: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    drifts: list[dict[str, Any]] = field(default_factory=list)
    phases: list[int] = field(default_factory=list)
    """Stream positions where a new stream phase begins."""


@dataclass
class RunState:
    """Everything a re-run needs to continue where the last one stopped."""

    status: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: float = 0.0
    idle: float = 0.0
    position: int = 0
    starts: int = 0
    """How many times a run of this folder began; a resumed run's request ids carry it."""
    wall: float = 0.0
    failed_updates: list[dict[str, Any]] = field(default_factory=list)
    """Updates whose stage gave up: they made no version, so only this remembers them."""
    timeline: Timeline = field(default_factory=Timeline)

    @classmethod
    def load(cls, path: Path) -> RunState | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        timeline = Timeline(**raw.pop("timeline", {}))
        return cls(**raw, timeline=timeline)

    def save(self, path: Path) -> None:
        data = {k: v for k, v in self.__dict__.items() if k != "timeline"}
        data["timeline"] = self.timeline.__dict__
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        temporary.replace(path)


class LocalRunner:
    """Runs one job's whole life on this machine."""

    def __init__(
        self,
        job: AutoDLJob,
        job_file: Path,
        output: Path,
        *,
        fresh: bool = False,
        console: Console | None = None,
        chunk: int | None = None,
    ) -> None:
        if fresh and output.exists():
            shutil.rmtree(output)
        output.mkdir(parents=True, exist_ok=True)
        self.workspace = Workspace(output.resolve())
        self.console = console or Console()
        # The job comes validated by the same loader as `lifelong validate`; the stages read the
        # file as it was written, so the copy is the user's text, not a re-serialisation.
        self.job = job
        self.workspace.job.write_text(job_file.read_text(encoding="utf-8"), encoding="utf-8")
        loaded = RunState.load(output / STATE_FILE)
        self.resumed = loaded is not None
        self.state = loaded or RunState(origin=time.time())
        self.state.starts += 1
        self.records = self._records()
        chunk = chunk or max(5, min(25, self.job.spec.serving.window // 10))
        self.feed = Feed(self.records, self._label_delay(), chunk, self.state.position)
        self.serve = ServeProcess(self.workspace)
        self.samples: dict[str, deque[Sample]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.last_scrape: Scrape | None = None
        self.last_status: dict[str, Any] = {}
        self.started = time.monotonic()

    # --- setup ---------------------------------------------------------------------------

    def _records(self) -> list[Record]:
        records = list(stream_records(self.job.spec.data, self.job.spec.task))
        if self.state.starts > 1:
            # Records predicted just before an interruption may still await their label in the
            # serve stage; a resumed run asks again under fresh ids rather than reuse those.
            records = [replace(r, id=f"{r.id}.{self.state.starts}") for r in records]
        starts = [i for i, r in enumerate(records) if i == 0 or r.phase != records[i - 1].phase]
        self.state.timeline.phases = starts
        return records

    def _label_delay(self) -> int:
        stream = self.job.spec.data.stream
        return stream.label_delay if stream else 0

    # --- time ----------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The virtual clock: the stream's time plus time spent waiting for retries."""
        rate = self.job.spec.data.stream.rate if self.job.spec.data.stream else 1.0
        return self.state.origin + self.feed.position / rate + self.state.idle

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the stream ends (or the job fails); return the exit code."""
        self.console.begin(
            self.job, self.workspace.root, resumed=self.resumed, records=len(self.records)
        )
        try:
            return self._loop()
        except KeyboardInterrupt:
            self.console.note("Interrupted. Run the same command again to continue from here.")
            return 130
        finally:
            self.state.wall += time.monotonic() - self.started
            self.started = time.monotonic()
            self._save()
            self.serve.close()

    def _loop(self) -> int:
        while True:
            before = self.state.status
            transition = step(self._job(), self._observe())
            self.state.status = transition.status.to_wire()
            busy = self._apply(transition.actions)
            self._save()
            phase = transition.status.phase
            if phase == "Failed":
                return 1
            if phase == "Suspended":
                self.console.note("The job is suspended (spec.suspend); nothing more to do.")
                return 0
            if busy:
                continue
            if self._waiting_for_retry(transition.status):
                continue
            if phase in ("Serving", "Updating") and not self.feed.finished:
                self._advance()
                continue
            if phase == "Serving":
                return 0
            if self.feed.finished and self.state.status == before:
                # Nothing is left to move the job on (a canary waiting for traffic, say): the
                # stream is over, so the run ends here rather than step forever.
                self.console.note(_stopped_text(transition.status))
                return 0

    def _job(self) -> AutoDLJob:
        status = AutoDLJobStatus.model_validate(self.state.status) if self.state.status else None
        return self.job.model_copy(update={"status": status})

    def _waiting_for_retry(self, current: AutoDLJobStatus) -> bool:
        """Jump the clock to a pending retry; stages take no stream time."""
        from lifelong.engine.step import from_rfc3339

        retry_at = from_rfc3339(current.next_attempt_time)
        if retry_at is None or retry_at <= self.now:
            return False
        self.state.idle += retry_at - self.now
        return True

    # --- observing -----------------------------------------------------------------------

    def _observe(self) -> Observations:
        runs = {name: StageRun(name, **run) for name, run in self.state.runs.items()}
        versions = {name: v["spec"] for name, v in self.state.versions.items()}
        ready = self.serve.alive and self.serve.current is not None
        return Observations(
            now=self.now,
            runs=runs,
            versions=versions,
            serving_ready=ready,
            triggers=self._triggers() if ready else [],
            canary=self._canary(),
            recent_samples=self._recent_samples(),
            prometheus=self.job.spec.lifelong.prometheus.url is not None,
        )

    def _triggers(self) -> list[TriggerReading]:
        readings = []
        url = self.job.spec.lifelong.prometheus.url
        for trigger in self.job.spec.lifelong.triggers:
            if url is not None:
                readings.append(self._prometheus_trigger(url, trigger))
                continue
            firing, value = evaluate(trigger, list(self.samples[trigger.metric or ""]), self.now)
            readings.append(TriggerReading(trigger.name, firing, value))
        return readings

    def _prometheus_trigger(self, url: str, trigger: TriggerSpec) -> TriggerReading:
        expression = to_promql(trigger, self.job.metadata.name)
        try:
            results = query(url, expression)
        except PrometheusError as error:
            return TriggerReading(trigger.name, None, None, str(error))
        value = results[0].value if results else None
        return TriggerReading(trigger.name, bool(results), value)

    def _canary(self) -> CanaryReading | None:
        serve = self.serve.current
        if serve is None or serve.canary is None or self.last_scrape is None:
            return None
        metric = _online_metric(self.job)
        versions = self.last_status.get("versions", [])
        labelled = {v.get("name"): int(v.get("labelled", 0)) for v in versions if v.get("name")}
        return CanaryReading(
            stable_score=self.last_scrape.mean(metric, role="stable"),
            canary_score=self.last_scrape.mean(metric, role="canary"),
            canary_samples=labelled.get(serve.canary, 0),
        )

    def _recent_samples(self) -> int | None:
        memory = self.last_status.get("memory") or {}
        recent = memory.get("recent")
        return int(recent) if recent is not None else None

    # --- acting --------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> bool:
        """Apply the engine's actions; return True if anything ran that needs a new step."""
        busy = False
        for action in actions:
            if isinstance(action, Event):
                self._event(action)
            elif isinstance(action, RecordVersion):
                self.state.versions[action.name] = {
                    "spec": action.spec, "state": action.state, "gate": None, "message": "",
                }  # fmt: skip
            elif isinstance(action, SetVersionState):
                entry = self.state.versions.setdefault(action.name, {"spec": {}})
                entry.update(state=action.state, message=action.message)
                if action.gate is not None:
                    entry["gate"] = action.gate.to_wire()
            elif isinstance(action, StartStage):
                self._run_stage(action)
                busy = True
            elif isinstance(action, Serve):
                if self.serve.ensure(action):
                    self.console.note(_serving_text(action))
                    busy = True
            elif isinstance(action, StopServing):
                self.serve.stop()
            # PauseStages needs nothing here: local stages run in the foreground, so none is
            # in progress while the engine steps.
        return busy

    def _run_stage(self, action: StartStage) -> None:
        if action.name in self.state.runs:
            return
        self._save()
        if action.stage.value == "update" and self.serve.alive:
            self.serve.client.save()  # the update reads the memories the serve stage saved
        self.console.stage_started(action)
        began = time.monotonic()
        run = run_stage(self.workspace, action, self.console.stage_line)
        self.console.stage_ended(action, run, time.monotonic() - began)
        self.state.runs[action.name] = {
            "state": run.state, "result": run.result, "permanent": run.permanent,
            "message": run.message,
        }  # fmt: skip

    def _event(self, event: Event) -> None:
        seconds = round(self.now - self.state.origin, 3)
        entry = {
            "time": seconds,
            "position": self.feed.position,
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
        }
        self.state.timeline.events.append(entry)
        if event.reason == "UpdateFailed":
            status = self.state.status
            self.state.failed_updates.append({
                "trigger": status.get("lastTrigger"), "parent": status.get("servingVersion"),
                "strategy": self.job.spec.lifelong.update.strategy, "reason": event.message,
            })  # fmt: skip
        with (self.workspace.root / "events.jsonl").open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(entry) + "\n")
        self.console.event(event, self.feed.position, seconds)

    # --- the stream ----------------------------------------------------------------------

    def _advance(self) -> None:
        """Feed one chunk of the stream and read the serve stage's metrics back."""
        self.feed.attach(self.serve.client)
        try:
            self.feed.advance()
            self.last_scrape = scrape(self.serve.client, self.job.metadata.name)
            self.last_status = self.serve.client.status()
        except ServeError as error:
            raise RuntimeError(f"the serve stage failed the stream: {error}") from error
        self.state.position = self.feed.position
        self._record_samples(self.last_scrape)

    def _record_samples(self, reading: Scrape) -> None:
        now = self.now
        for trigger in self.job.spec.lifelong.triggers:
            if trigger.metric is None:
                continue
            counter = trigger.metric.endswith("_total")
            # As the compiled PromQL does: the job's series, the canary's left out.
            series = {"role": "!canary"}
            value = (
                reading.total(trigger.metric, **series)
                if counter
                else reading.mean(trigger.metric, **series)
            )
            if value is not None:
                self.samples[trigger.metric].append(Sample(now, value))

        metric = _online_metric(self.job)
        online = reading.mean(metric, role="stable")
        drifts = reading.by_label("lifelong_drift_detected_total", "detector")
        serving = self.serve.current.version if self.serve.current else None
        point = {
            "position": self.feed.position,
            "time": round(now - self.state.origin, 3),
            "value": online,
            "serving": serving,
        }
        self.state.timeline.online.append(point)
        previous = self.state.timeline.drifts[-1]["counts"] if self.state.timeline.drifts else {}
        if drifts != previous:
            self.state.timeline.drifts.append({"position": self.feed.position, "counts": drifts})
            fired = sorted(d for d, count in drifts.items() if count > previous.get(d, 0))
            if fired and previous:
                self.console.drift(self.feed.position, fired)
        self.console.progress(self.feed.position, len(self.records), online, metric, serving)

    def _save(self) -> None:
        self.state.position = self.feed.position
        self.state.save(self.workspace.root / STATE_FILE)


def _online_metric(job: AutoDLJob) -> str:
    task = job.spec.task.type
    metric = job.spec.task.metric
    regression = task == "regression" or metric in ("rmse", "mae", "r2")
    return "lifelong_online_error" if regression else "lifelong_online_accuracy"


def _serving_text(serve: Serve) -> str:
    if serve.canary:
        return (
            f"Serving {serve.version}, with {serve.canary} as a canary on "
            f"{serve.canary_weight}% of traffic."
        )
    return f"Serving {serve.version}."


def _stopped_text(status: AutoDLJobStatus) -> str:
    waiting = [c.message for c in status.conditions if c.type == "Reconciling" and c.message]
    detail = f": {waiting[0]}" if waiting else ""
    return f"The stream ended while the job was {status.phase}{detail}. Nothing more can happen."
