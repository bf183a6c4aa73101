"""What the operator sees of a job's world, turned into the engine's `Observations`.

Stage runs come from the job's batch Jobs and their pods' termination messages, serving from
the Deployment's status, versions from `ModelVersion` objects, and trigger readings from
Prometheus, or, when none is configured, from the serving pods' own `/metrics` kept as short
series in the operator's memory.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lifelong.api import AutoDLJob
from lifelong.api.metrics import JOB_LABEL, MEMORY_EXAMPLES, ONLINE_ACCURACY, ONLINE_ERROR
from lifelong.engine import names
from lifelong.engine.model import CanaryReading, Observations, StageRun, TriggerReading
from lifelong.engine.triggers import Sample, evaluate, to_promql
from lifelong.operator.builders import EXIT_PERMANENT, SERVING_ANNOTATION, serving_key
from lifelong.operator.config import OperatorConfig
from lifelong.operator.kube import Body, Kube, NotFoundError
from lifelong.prometheus import PrometheusError, query

log = logging.getLogger(__name__)

HISTORY = 2_000


# --- batch stage runs ------------------------------------------------------------------------


def _condition(job: Body, kind: str) -> Body | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _terminated(pod: Body) -> Body | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


def _message(terminated: Body | None) -> dict[str, Any]:
    text = (terminated or {}).get("message") or ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"error": text.strip()[-500:]} if text.strip() else {}
    return value if isinstance(value, dict) else {}


def stage_run(kube: Kube, namespace: str, job: Body) -> StageRun:
    """How one batch Job ended (or that it still runs), with the stage's result."""
    name = job["metadata"]["name"]
    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    if complete is None and failed is None:
        return StageRun(name, "running")
    pods = kube.list_pods(namespace, f"batch.kubernetes.io/job-name={name}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    ended = [(_terminated(p), p) for p in pods]
    if complete is not None:
        for terminated, _ in reversed(ended):
            if terminated and terminated.get("exitCode") == 0:
                return StageRun(name, "succeeded", _message(terminated))
        return StageRun(name, "succeeded", {})
    exits = [t.get("exitCode") for t, _ in ended if t]
    permanent = EXIT_PERMANENT in exits or (failed or {}).get("reason") == "PodFailurePolicy"
    last = next((t for t, _ in reversed(ended) if t), None)
    message = _message(last).get("error") or (failed or {}).get("message") or "the Job failed"
    return StageRun(name, "failed", None, permanent=permanent, message=str(message))


# --- metrics ---------------------------------------------------------------------------------


@dataclass
class PodReading:
    """The serving pods' metrics and status at one moment."""

    series: dict[str, list[tuple[dict[str, str], float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    statuses: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def values(self, metric: str, **labels: str) -> list[float]:
        """The metric's values whose labels match (`"!x"` matches any value but x)."""
        return [
            v
            for s, v in self.series.get(metric, [])
            if all(_match(s.get(k, ""), w) for k, w in labels.items()) and not math.isnan(v)
        ]


def _match(actual: str, wanted: str) -> bool:
    return actual != wanted[1:] if wanted.startswith("!") else actual == wanted


class MetricsMemory:
    """Short per-job series scraped from serving pods, for triggers without Prometheus."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str, str], deque[Sample]] = defaultdict(
            lambda: deque(maxlen=HISTORY)
        )

    def add(self, key: tuple[str, str, str], sample: Sample) -> None:
        self.samples[key].append(sample)

    def get(self, key: tuple[str, str, str]) -> list[Sample]:
        return list(self.samples.get(key, ()))

    def forget(self, namespace: str, job: str) -> None:
        for key in [k for k in self.samples if k[:2] == (namespace, job)]:
            del self.samples[key]


def scrape_pods(kube: Kube, namespace: str, job: str, timeout: float) -> PodReading:
    """Read `/metrics` and `/v1/status` of every running serving pod of a job."""
    reading = PodReading()
    pods = kube.list_pods(namespace, f"lifelong.dev/job={job},lifelong.dev/stage=serve")
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        port = _port(pod)
        if not ip or (pod.get("status") or {}).get("phase") != "Running" or port is None:
            continue
        base = f"http://{ip}:{port}"
        try:
            metrics = httpx.get(f"{base}/metrics", timeout=timeout)
            metrics.raise_for_status()
            for family in text_string_to_metric_families(metrics.text):
                for sample in family.samples:
                    labels = dict(sample.labels)
                    if labels.get(JOB_LABEL, job) == job:
                        reading.series[sample.name].append((labels, float(sample.value)))
            answer = httpx.get(f"{base}/v1/status", timeout=timeout)
            if answer.status_code == 200:
                reading.statuses.append(answer.json())
        except (httpx.HTTPError, ValueError) as error:
            reading.errors.append(f"pod {pod['metadata']['name']}: {error}")
    return reading


def _port(pod: Body) -> int | None:
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports") or []:
            if port.get("name") == "http":
                return int(port["containerPort"])
    return None


# --- the whole picture -----------------------------------------------------------------------


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="observe")


@dataclass
class Observer:
    """Builds a job's observations from the cluster, Prometheus and the serving pods.

    Independent reads go out at once through `pool`. A stage run that ended never changes, so
    how it ended is kept (by the Job's uid) instead of reading its pods on every pass."""

    kube: Kube
    config: OperatorConfig
    memory: MetricsMemory = field(default_factory=MetricsMemory)
    pool: ThreadPoolExecutor = field(default_factory=_pool)
    ended: dict[tuple[str, str], dict[str, StageRun]] = field(default_factory=dict)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a job that is gone."""
        self.memory.forget(namespace, name)
        self.ended.pop((namespace, name), None)

    def runs(self, namespace: str, name: str) -> dict[str, StageRun]:
        """The job's stage runs by name, from its batch Jobs."""
        kept = self.ended.setdefault((namespace, name), {})
        runs = {}
        for job in self.kube.list_batch_jobs(namespace, name):
            uid = job["metadata"].get("uid", "")
            run = kept.get(uid) or stage_run(self.kube, namespace, job)
            if run.state in ("succeeded", "failed") and uid:
                kept[uid] = run
            runs[job["metadata"]["name"]] = run
        return runs

    def prometheus_url(self, job: AutoDLJob) -> str | None:
        return job.spec.lifelong.prometheus.url or self.config.prometheus_url

    def observe(self, job: AutoDLJob, body: Body) -> Observations:
        namespace = body["metadata"]["namespace"]
        name = job.metadata.name
        listed_runs = self.pool.submit(self.runs, namespace, name)
        listed_versions = self.pool.submit(self.kube.list_versions, namespace, name)
        ready = self._serving_ready(namespace, job)
        runs = listed_runs.result()
        versions = {
            v["metadata"]["name"]: dict(v.get("spec") or {}) for v in listed_versions.result()
        }
        triggers: list[TriggerReading] = []
        triggers_error: str | None = None
        canary: CanaryReading | None = None
        recent: int | None = None
        if ready:
            pods = scrape_pods(self.kube, namespace, name, self.config.scrape_timeout)
            recent = _recent(pods)
            canary = _canary(job, pods)
            triggers, triggers_error = self._triggers(job, namespace, pods)
        return Observations(
            now=time.time(),
            generation=int(body["metadata"].get("generation") or 1),
            runs=runs,
            serving_ready=ready,
            triggers=triggers,
            canary=canary,
            recent_samples=recent,
            triggers_error=triggers_error,
            prometheus=self.prometheus_url(job) is not None,
            versions=versions,
        )

    def _serving_ready(self, namespace: str, job: AutoDLJob) -> bool:
        status = job.status
        if status is None or status.serving_version is None:
            return False
        try:
            deployment = self.kube.get_deployment(namespace, names.serve(job.metadata.name))
        except NotFoundError:
            return False
        from lifelong.engine.model import Serve

        desired = serving_key(
            Serve(status.serving_version, status.canary_version, status.canary_weight or 0)
        )
        annotations = deployment["metadata"].get("annotations") or {}
        state = deployment.get("status") or {}
        wanted = deployment["spec"].get("replicas", 1)
        return (
            annotations.get(SERVING_ANNOTATION) == desired
            and state.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
            and state.get("updatedReplicas", 0) >= wanted
            and state.get("readyReplicas", 0) >= min(wanted, 1)
            and state.get("replicas", 0) <= wanted + 0  # the old pods are gone
        )

    def _triggers(
        self, job: AutoDLJob, namespace: str, pods: PodReading
    ) -> tuple[list[TriggerReading], str | None]:
        url = self.prometheus_url(job)
        readings = []
        if url is not None:
            for trigger in job.spec.lifelong.triggers:
                expression = to_promql(trigger, job.metadata.name, namespace)
                try:
                    results = query(url, expression, self.config.scrape_timeout)
                except PrometheusError as error:
                    return [], str(error)
                value = results[0].value if results else None
                readings.append(TriggerReading(trigger.name, bool(results), value))
            return readings, None

        if pods.errors and not pods.series:
            return [], "the serving pods' metrics could not be read: " + "; ".join(pods.errors)
        now = time.time()
        for trigger in job.spec.lifelong.triggers:
            if trigger.metric is None:
                readings.append(
                    TriggerReading(trigger.name, None, None, "raw PromQL needs a Prometheus server")
                )
                continue
            values = pods.values(trigger.metric, role="!canary")  # as the compiled PromQL
            key = (namespace, job.metadata.name, trigger.metric)
            if values:
                counter = trigger.metric.endswith("_total")
                self.memory.add(
                    key, Sample(now, sum(values) if counter else sum(values) / len(values))
                )
            firing, value = evaluate(trigger, self.memory.get(key), now)
            readings.append(TriggerReading(trigger.name, firing, value))
        return readings, None


def _recent(pods: PodReading) -> int | None:
    values = pods.values(MEMORY_EXAMPLES.name, memory="recent")
    return int(min(values)) if values else None


def _canary(job: AutoDLJob, pods: PodReading) -> CanaryReading | None:
    status = job.status
    if status is None or status.canary_version is None:
        return None
    metric = ONLINE_ERROR.name if job.spec.task.type == "regression" else ONLINE_ACCURACY.name
    stable = pods.values(metric, role="stable")
    canary = pods.values(metric, role="canary")
    labelled = 0
    for answer in pods.statuses:
        for version in answer.get("versions", []):
            if version.get("name") == status.canary_version:
                labelled += int(version.get("labelled", 0))
    return CanaryReading(
        stable_score=sum(stable) / len(stable) if stable else None,
        canary_score=sum(canary) / len(canary) if canary else None,
        canary_samples=labelled,
    )
