"""One reconciliation of one job: observe, ask the engine, apply its actions, write the status.

Everything here is idempotent: child names are deterministic, creating what exists is a no-op,
and the status is written with the resourceVersion it was computed from, so two reconcilers
(an operator restarting, two replicas) can never make a second Job or lose a decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lifelong.api import AutoDLJob, AutoDLJobStatus
from lifelong.engine import names
from lifelong.engine.model import (
    Action,
    Event,
    PauseStages,
    RecordVersion,
    Serve,
    SetVersionState,
    StartStage,
    StopServing,
)
from lifelong.engine.reasons import Reason
from lifelong.engine.step import from_rfc3339, step, to_rfc3339
from lifelong.operator import builders
from lifelong.operator.config import OperatorConfig
from lifelong.operator.kube import Body, ConflictError, Kube, NotFoundError
from lifelong.operator.logs import JobLogger
from lifelong.operator.observe import Observer

logger = logging.getLogger(__name__)

TIMED_PHASES = ("Serving", "Updating")
"""Phases in which time alone changes what the engine decides (triggers, canaries)."""

EventSink = Callable[[Body, Event], None]


@dataclass
class Outcome:
    """What one reconciliation did, for logs and the operator's metrics."""

    phase: str | None
    actions: int
    status_written: bool
    wake: float | None = None
    """When the job must be reconciled again even if nothing about it changes (seconds since
    the epoch); None when only a change of the job or its children matters."""
    written: str | None = None
    """The job's resourceVersion after the status was written: the watch event that echoes
    this write brings nothing new."""


def wake_time(status: AutoDLJobStatus, now: float, interval: float) -> float | None:
    """When time alone next changes the engine's answer: every `interval` while a model serves
    (triggers, canary), at a retry's backoff deadline, else never."""
    if status.phase in TIMED_PHASES:
        return now + interval
    retry_at = from_rfc3339(status.next_attempt_time)
    return None if retry_at is None else max(retry_at, now)


def parse_job(body: Body, log: logging.Logger | JobLogger = logger) -> AutoDLJob:
    """The job from its object; a status written by another version is dropped, not fatal."""
    document = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {
            "name": body["metadata"]["name"],
            "namespace": body["metadata"].get("namespace"),
        },
        "spec": body.get("spec") or {},
    }
    job = AutoDLJob.model_validate(document)
    try:
        status = AutoDLJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        log.warning("Ignoring the job's unreadable status; it will be rebuilt.")
        status = None
    return job.model_copy(update={"status": status})


class Reconciler:
    """Reconciles jobs against the cluster."""

    def __init__(self, kube: Kube, config: OperatorConfig, post_event: EventSink) -> None:
        self.kube = kube
        self.config = config
        self.observer = Observer(kube, config)
        self.post_event = post_event
        self.manifests: dict[tuple[str, str], tuple[str, float]] = {}
        """The spec hash of each job's ConfigMap as last applied, and when."""

    def reconcile(self, namespace: str, name: str) -> Outcome | None:
        """Reconcile one job now; None when it no longer exists or is being deleted."""
        try:
            body = self.kube.get_job(namespace, name)
        except NotFoundError:
            self.observer.forget(namespace, name)
            self.manifests.pop((namespace, name), None)
            return None
        if body["metadata"].get("deletionTimestamp"):
            return None
        log = JobLogger(logger, namespace, name, body["metadata"].get("uid", ""))
        try:
            job = parse_job(body, log)
        except ValidationError as error:
            return self._invalid(body, error, log)

        # The stages' manifest and the observations are independent reads and writes: at once.
        manifest = self.observer.pool.submit(self._apply_manifest, job, body)
        observations = self.observer.observe(job, body)
        manifest.result()
        transition = step(job, observations)
        for action in transition.actions:
            if not isinstance(action, Event):
                self._apply(job, body, action, log)
        wake = wake_time(transition.status, observations.now, self.config.interval)
        phase, count = transition.status.phase, len(transition.actions)

        # Announce the decisions once they are recorded: when another writer changed the job
        # meanwhile, the next pass decides again from its state and announces that instead.
        try:
            written = self._write_status(body, transition.status.to_wire())
        except ConflictError:
            log.debug("The job changed while reconciling; the next pass starts from the new state.")
            return Outcome(phase, count, False, wake, None)
        for event in transition.events:
            self.post_event(body, event)
        return Outcome(phase, count, written is not None, wake, written)

    def _apply_manifest(self, job: AutoDLJob, body: Body) -> None:
        """Bring the job's ConfigMap to its spec; skipped while the spec is the one last
        applied, checked again every resync interval."""
        key = (body["metadata"]["namespace"], job.metadata.name)
        digest = f"{body['metadata'].get('uid')}/{builders.spec_hash(job)}"
        applied, when = self.manifests.get(key, ("", 0.0))
        if applied == digest and time.time() - when < self.config.resync_interval:
            return
        self.kube.apply_config_map(builders.spec_config_map(job, body))
        self.manifests[key] = (digest, time.time())

    # --- actions -------------------------------------------------------------------------

    def _apply(self, job: AutoDLJob, body: Body, action: Action, log: JobLogger) -> None:
        namespace = body["metadata"]["namespace"]
        if isinstance(action, StartStage):
            try:
                self.kube.create_batch_job(builders.batch_job(job, body, action, self.config))
                log.info("Created the %s Job %s.", action.stage.value, action.name)
            except ConflictError:
                log.debug("The Job %s exists already.", action.name)
        elif isinstance(action, Serve):
            self._serve(job, body, action, None, log)
        elif isinstance(action, StopServing):
            self._stop_serving(job, body, log)
        elif isinstance(action, PauseStages):
            self._pause_stages(job, body, action.paused, log)
        elif isinstance(action, RecordVersion):
            self._record_version(job, body, action, log)
        elif isinstance(action, SetVersionState):
            status: dict[str, Any] = {"state": action.state, "message": action.message[:1024]}
            if action.gate is not None:
                status["gate"] = action.gate.to_wire()
            if action.canary_weight is not None:
                status["canaryWeight"] = action.canary_weight
            try:
                self.kube.patch_version_status(namespace, action.name, status)
            except NotFoundError:
                log.warning(
                    "The ModelVersion %s is gone; its state %s is not recorded.",
                    action.name,
                    action.state,
                )

    def _serve(
        self, job: AutoDLJob, body: Body, serve: Serve, replicas: int | None, log: JobLogger
    ) -> None:
        namespace = body["metadata"]["namespace"]
        desired = builders.deployment(job, body, serve, self.config, replicas)
        self._apply_service(builders.service(job, body), log)
        try:
            current = self.kube.get_deployment(namespace, names.serve(job.metadata.name))
        except NotFoundError:
            self.kube.create_deployment(desired)
            log.info("Created the serving Deployment for %s.", builders.serving_key(serve))
            return
        same_args = _container(current).get("args") == _container(desired).get("args")
        same_replicas = current["spec"].get("replicas") == desired["spec"]["replicas"]
        same_template = _annotations(current) == _annotations(desired)
        if same_args and same_replicas and same_template:
            return
        desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            self.kube.replace_deployment(desired)
            log.info(
                "Rolled the serving Deployment to %s with %d replicas.",
                builders.serving_key(serve),
                desired["spec"]["replicas"],
            )
        except ConflictError:
            log.debug("The serving Deployment changed meanwhile; the next pass retries.")

    def _apply_service(self, desired: Body, log: JobLogger) -> None:
        """Create the serving Service, or bring its ports and selector to the spec's."""
        meta = desired["metadata"]
        try:
            current = self.kube.get_service(meta["namespace"], meta["name"])
        except NotFoundError:
            try:
                self.kube.create_service(desired)
            except ConflictError:
                log.debug("The serving Service was created meanwhile; the next pass checks it.")
            return
        if not builders.service_differs(current, desired):
            return
        try:
            self.kube.replace_service(builders.converged_service(current, desired))
            log.info("Updated the serving Service to port %s.", desired["spec"]["ports"][0]["port"])
        except ConflictError:
            log.debug("The serving Service changed meanwhile; the next pass retries.")

    def _stop_serving(self, job: AutoDLJob, body: Body, log: JobLogger) -> None:
        status = job.status
        if status is None or status.serving_version is None:
            return
        serve = Serve(status.serving_version, status.canary_version, status.canary_weight or 0)
        try:
            self.kube.get_deployment(body["metadata"]["namespace"], names.serve(job.metadata.name))
        except NotFoundError:
            return
        self._serve(job, body, serve, 0, log)

    def _pause_stages(self, job: AutoDLJob, body: Body, paused: bool, log: JobLogger) -> None:
        """Suspend (or unsuspend) the job's unfinished stage Jobs: Kubernetes stops a suspended
        Job's pods and starts them again when it is unsuspended."""
        namespace = body["metadata"]["namespace"]
        for batch in self.kube.list_batch_jobs(namespace, job.metadata.name):
            name = batch["metadata"]["name"]
            finished = any(
                c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for c in (batch.get("status") or {}).get("conditions") or []
            )
            if finished or bool((batch.get("spec") or {}).get("suspend")) == paused:
                continue
            try:
                self.kube.suspend_batch_job(namespace, name, paused)
                log.info("%s the Job %s.", "Paused" if paused else "Resumed", name)
            except NotFoundError:
                log.debug("The Job %s is gone.", name)

    def _record_version(
        self, job: AutoDLJob, body: Body, action: RecordVersion, log: JobLogger
    ) -> None:
        namespace = body["metadata"]["namespace"]
        stage = "train" if names.version_number(action.name) == 1 else "update"
        version = builders.model_version(job, body, action.name, action.spec, stage)
        try:
            self.kube.create_version(version)
        except ConflictError:
            log.debug("The ModelVersion %s exists already.", action.name)
        self.kube.patch_version_status(namespace, action.name, {"state": action.state})

    # --- status --------------------------------------------------------------------------

    def _write_status(self, body: Body, status: dict[str, Any]) -> str | None:
        """Replace the status if it changed; return the job's new resourceVersion. Raises
        `ConflictError` when the job changed since `body` was read."""
        if (body.get("status") or {}) == status:
            return None
        replaced = self.kube.replace_job_status({**body, "status": status})
        version: str = replaced["metadata"]["resourceVersion"]
        return version

    def _invalid(self, body: Body, error: ValidationError, log: JobLogger) -> Outcome:
        """A spec the CRD let through but the models refuse: say so in a Stalled condition."""
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        status = dict(body.get("status") or {})
        status.update(phase="Failed", message=f"The spec is invalid: {problems}"[:1024])
        reason, now = Reason.INVALID_SPEC.value, to_rfc3339(time.time())
        generation = body["metadata"].get("generation")
        status["observedGeneration"] = generation
        status["conditions"] = [
            {"type": "Stalled", "status": "True", "reason": reason, "message": status["message"],
             "lastTransitionTime": now, "observedGeneration": generation},
            {"type": "Ready", "status": "False", "reason": reason, "message": status["message"],
             "lastTransitionTime": now, "observedGeneration": generation},
        ]  # fmt: skip
        try:
            written = self._write_status(body, status)
        except ConflictError:
            log.debug("The job changed while reconciling; the next pass reads it again.")
            return Outcome("Failed", 0, False)
        if written:
            log.warning("%s", status["message"])
            self.post_event(body, Event("Warning", reason, status["message"]))
        return Outcome("Failed", 0, written is not None, None, written)


def _container(deployment: Body) -> Body:
    containers: list[Body] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if containers else {}


def _annotations(deployment: Body) -> dict[str, str]:
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"].get("annotations")
    return annotations or {}
