"""Kopf handlers: thin. They notice that something about a job changed and reconcile it.

A job is reconciled when it changes, when one of its children (a stage Job that ended, the
serving Deployment) changes, and on the operator's own clock: every `LIFELONG_RECONCILE_INTERVAL`
seconds while time alone changes the engine's answer (triggers, canaries, a retry's backoff), and
every `LIFELONG_RESYNC_INTERVAL` seconds otherwise. The handlers are watch-event handlers and a
background loop, not Kopf's change-tracking handlers or timers: those would write annotations and
a finalizer onto the user's object, and a GitOps tool would then see the object in the cluster
differ from the one in git.

With leader election, Kopf stops the watches of a replica that stands by; the loop asks
`Leadership` before each round, so a standby reconciles nothing on its clock either.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import prometheus_client

from lifelong.api import GROUP, VERSION
from lifelong.engine.model import Event
from lifelong.operator import metrics
from lifelong.operator.config import OperatorConfig
from lifelong.operator.kube import Body, Kube, KubeError
from lifelong.operator.logs import JobLogger
from lifelong.operator.peering import Leadership, Standing
from lifelong.operator.reconcile import Reconciler

logger = logging.getLogger(__name__)

MANAGED = {"app.kubernetes.io/managed-by": "lifelong-operator"}
TICK = 1.0
"""Seconds between two looks at which jobs are due, at most (the interval, if shorter)."""
PARALLEL = 4
"""Jobs the loop reconciles at once (each pass runs in a worker thread)."""


@dataclass
class Known:
    """What the operator remembers of a job between passes."""

    phase: str | None = None
    due: float = 0.0
    """When the loop reconciles it next (seconds since the epoch)."""
    written: str | None = None
    """The resourceVersion of the last status this operator wrote."""


class Operator:
    """The operator's process-wide state: the reconciler, locks, and the jobs it knows."""

    def __init__(self, config: OperatorConfig | None = None) -> None:
        self.config = config or OperatorConfig()
        self.reconciler: Reconciler | None = None
        self.leadership: Leadership | None = None
        self.standing = Standing(True, "not asked yet")
        self.locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.jobs: dict[tuple[str, str], Known] = {}
        self.loop_task: asyncio.Task[None] | None = None

    def start(self) -> tuple[Reconciler, Leadership]:
        """The reconciler and the leadership check, made on first use (they need the cluster)."""
        if self.reconciler is None or self.leadership is None:
            kube = Kube()
            self.reconciler = Reconciler(kube, self.config, functools.partial(post_event, kube))
            self.leadership = Leadership(kube, self.config)
        return self.reconciler, self.leadership

    def know(self, namespace: str, name: str) -> None:
        self.jobs.setdefault((namespace, name), Known())

    async def reconcile(self, namespace: str, name: str) -> None:
        """Reconcile one job, one pass at a time per job."""
        key = (namespace, name)
        reconciler, _ = self.start()
        log = JobLogger(logger, namespace, name)
        async with self.locks[key]:
            began = time.perf_counter()
            try:
                outcome = await asyncio.to_thread(reconciler.reconcile, namespace, name)
            except KubeError as error:
                self._failed(key, type(error).__name__)
                log.warning("Reconciling failed (%s); retrying in %.0fs.", error, self._retry)
                return
            except Exception:
                self._failed(key, "unexpected")
                log.exception("Reconciling failed unexpectedly; retrying in %.0fs.", self._retry)
                return
            finally:
                metrics.DURATION.observe(time.perf_counter() - began)
        if outcome is None:
            metrics.RECONCILES.labels(outcome="gone").inc()
            self.forget(namespace, name)
            return
        metrics.RECONCILES.labels(outcome="ok").inc()
        known = self.jobs.setdefault(key, Known())
        known.phase = outcome.phase
        known.written = outcome.written or known.written
        resync = time.time() + self.config.resync_interval
        known.due = resync if outcome.wake is None else min(outcome.wake, resync)
        metrics.count_phases(k.phase for k in self.jobs.values())

    @property
    def _retry(self) -> float:
        return self.config.interval

    def _failed(self, key: tuple[str, str], kind: str) -> None:
        metrics.RECONCILES.labels(outcome="error").inc()
        metrics.ERRORS.labels(kind=kind).inc()
        if key in self.jobs:
            self.jobs[key].due = time.time() + self._retry

    def forget(self, namespace: str, name: str) -> None:
        self.jobs.pop((namespace, name), None)
        self.locks.pop((namespace, name), None)
        metrics.count_phases(k.phase for k in self.jobs.values())

    async def lead(self) -> bool:
        """Whether this replica reconciles now; a change is logged, and a replica that stands
        by forgets its jobs (Kopf lists them again when it resumes)."""
        _, leadership = self.start()
        try:
            standing = await asyncio.to_thread(leadership.standing)
        except KubeError as error:
            logger.warning("Could not read the peering object (%s); asking again soon.", error)
            return self.standing.leads
        if standing.leads != self.standing.leads:
            verb = "Leading" if standing.leads else "Standing by"
            logger.info("%s: %s.", verb, standing.why)
        self.standing = standing
        metrics.LEADER.set(1 if standing.leads else 0)
        if not standing.leads and self.jobs:
            self.jobs.clear()
            metrics.count_phases(())
        return standing.leads

    async def periodically(self) -> None:
        """Reconcile every known job when it is due, while this replica leads."""
        tick = min(TICK, self.config.interval)
        turns = asyncio.Semaphore(PARALLEL)
        checked = 0.0
        while True:
            await asyncio.sleep(tick)
            now = time.time()
            if now - checked >= self.config.interval:
                checked = now
                if not await self.lead():
                    continue
            elif not self.standing.leads:
                continue
            due = [key for key, known in self.jobs.items() if known.due <= now]
            if due:
                await asyncio.gather(*(self._in_turn(turns, *key) for key in due))

    async def _in_turn(self, turns: asyncio.Semaphore, namespace: str, name: str) -> None:
        async with turns:
            await self.reconcile(namespace, name)


OPERATOR = Operator()


def post_event(kube: Kube, body: Body, event: Event) -> None:
    """Post a Kubernetes event about the job, best effort: a failure is logged, never raised.

    Not through Kopf's `kopf.event`: it works only inside Kopf's own handlers, and most passes run
    in the operator's periodic loop (a trigger firing, a canary step), where it raised and so
    failed the whole pass, again on every pass.
    """
    try:
        kube.create_event(body, event.type, event.reason, event.message[:1024])
    except KubeError as error:
        JobLogger(logger, body["metadata"]["namespace"], body["metadata"]["name"]).warning(
            "Could not post the event %s (%s); carrying on.", event.reason, error
        )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = OPERATOR.config
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # Watching named namespaces needs no scan of the cluster's CRDs and namespaces, which the
    # namespaced install does not grant; CRDs installed after the operator starts need a restart.
    settings.scanning.disabled = bool(config.namespaces)
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
        settings.peering.standalone = False
        settings.peering.lifetime = config.peering_lifetime
    else:
        settings.peering.standalone = True
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port, addr=config.bind_address)
    OPERATOR.loop_task = asyncio.create_task(OPERATOR.periodically())


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if OPERATOR.loop_task is not None:
        OPERATOR.loop_task.cancel()


@kopf.on.event(GROUP, VERSION, "autodljobs")
async def job_changed(
    type: str, namespace: str | None, name: str, meta: kopf.Meta, **_: Any
) -> None:
    if namespace is None:
        return
    if type == "DELETED":
        OPERATOR.forget(namespace, name)
        return
    known = OPERATOR.jobs.get((namespace, name))
    if known is not None and known.written == meta.get("resourceVersion"):
        return  # the echo of this operator's own status write
    OPERATOR.know(namespace, name)
    await OPERATOR.reconcile(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def batch_job_changed(
    type: str, namespace: str | None, labels: Mapping[str, str], status: kopf.Status, **_: Any
) -> None:
    # A stage run matters to its job when it ends; its progress is the stage's own business.
    ended = any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    if ended:
        await _child_changed(type, namespace, labels)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(
    type: str, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> None:
    await _child_changed(type, namespace, labels)


async def _child_changed(type: str, namespace: str | None, labels: Mapping[str, str]) -> None:
    """A child changed: reconcile the job that owns it (if this operator knows that job)."""
    owner = labels.get("lifelong.dev/job")
    if owner and namespace and type != "DELETED" and (namespace, owner) in OPERATOR.jobs:
        await OPERATOR.reconcile(namespace, owner)
