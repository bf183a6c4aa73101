"""Kopf handlers: thin. They notice that something about a job changed and reconcile it.

A job is reconciled when it changes, when one of its children (Jobs, the serving Deployment)
changes, and every `LIFELONG_RECONCILE_INTERVAL` seconds (trigger evaluation). The handlers are
watch-event handlers and a background loop, not Kopf's change-tracking handlers or timers: those
would write annotations and a finalizer onto the user's object, and a GitOps tool would then see
the object in the cluster differ from the one in git.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf
import prometheus_client

from lifelong.api import GROUP, VERSION
from lifelong.engine.model import Event
from lifelong.operator import metrics
from lifelong.operator.config import OperatorConfig
from lifelong.operator.kube import Body, Kube, KubeError
from lifelong.operator.reconcile import Reconciler

log = logging.getLogger(__name__)

MANAGED = {"app.kubernetes.io/managed-by": "lifelong-operator"}


class Operator:
    """The operator's process-wide state: the reconciler, locks, and the jobs it knows."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.reconciler: Reconciler | None = None
        self.locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.phases: dict[tuple[str, str], str | None] = {}
        self.loop_task: asyncio.Task[None] | None = None

    def start(self) -> Reconciler:
        if self.reconciler is None:
            self.reconciler = Reconciler(Kube(), self.config, post_event)
        return self.reconciler

    async def reconcile(self, namespace: str, name: str) -> None:
        """Reconcile one job, one pass at a time per job."""
        key = (namespace, name)
        reconciler = self.start()
        async with self.locks[key]:
            began = time.perf_counter()
            try:
                outcome = await asyncio.to_thread(reconciler.reconcile, namespace, name)
            except KubeError as error:
                metrics.RECONCILES.labels(outcome="error").inc()
                metrics.ERRORS.labels(kind=type(error).__name__).inc()
                log.warning(
                    "Reconciling %s/%s failed (%s); the next pass retries.", namespace, name, error
                )
                return
            except Exception:
                metrics.RECONCILES.labels(outcome="error").inc()
                metrics.ERRORS.labels(kind="unexpected").inc()
                log.exception(
                    "Reconciling %s/%s failed unexpectedly; the next pass retries.", namespace, name
                )
                return
            finally:
                metrics.DURATION.observe(time.perf_counter() - began)
        if outcome is None:
            metrics.RECONCILES.labels(outcome="gone").inc()
            self.forget(namespace, name)
            return
        metrics.RECONCILES.labels(outcome="ok").inc()
        self.phases[key] = outcome.phase
        metrics.count_phases(self.phases)

    def forget(self, namespace: str, name: str) -> None:
        self.phases.pop((namespace, name), None)
        self.locks.pop((namespace, name), None)
        metrics.count_phases(self.phases)

    async def periodically(self) -> None:
        """Reconcile every known job every interval (triggers, canaries, progress)."""
        while True:
            await asyncio.sleep(self.config.interval)
            for namespace, name in list(self.phases):
                await self.reconcile(namespace, name)


OPERATOR = Operator(OperatorConfig.from_env())


def post_event(body: Body, event: Event) -> None:
    """Post a Kubernetes event about the job (best effort, through Kopf's event poster)."""
    raw: Any = body
    kopf.event(kopf.Body(raw), type=event.type, reason=event.reason, message=event.message[:1024])


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = OPERATOR.config
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True
    if config.metrics_port:
        address = os.environ.get("POD_IP", "0.0.0.0")  # a pod binds its own address
        prometheus_client.start_http_server(config.metrics_port, addr=address)
    OPERATOR.loop_task = asyncio.create_task(OPERATOR.periodically())


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if OPERATOR.loop_task is not None:
        OPERATOR.loop_task.cancel()


@kopf.on.event(GROUP, VERSION, "autodljobs")
async def job_changed(type: str, namespace: str | None, name: str, **_: Any) -> None:
    if namespace is None:
        return
    if type == "DELETED":
        OPERATOR.forget(namespace, name)
        return
    OPERATOR.phases.setdefault((namespace, name), None)
    await OPERATOR.reconcile(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def batch_job_changed(
    type: str, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> None:
    await _child_changed(type, namespace, labels)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(
    type: str, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> None:
    await _child_changed(type, namespace, labels)


async def _child_changed(type: str, namespace: str | None, labels: Mapping[str, str]) -> None:
    """A child changed: reconcile the job that owns it (if this operator knows that job)."""
    owner = labels.get("lifelong.dev/job")
    if owner and namespace and type != "DELETED" and (namespace, owner) in OPERATOR.phases:
        await OPERATOR.reconcile(namespace, owner)
