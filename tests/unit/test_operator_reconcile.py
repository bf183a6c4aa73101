"""One reconcile pass against an in-memory stand-in for the API (the real API server is the
end-to-end tests' part): what it creates, when it announces decisions, and what it reads again."""

from __future__ import annotations

from typing import Any

import pytest

from lifelong.engine.model import Event
from lifelong.operator.config import OperatorConfig
from lifelong.operator.kube import Body, ConflictError, NotFoundError
from lifelong.operator.reconcile import Reconciler

pytestmark = pytest.mark.unit

JOB: Body = {
    "apiVersion": "lifelong.dev/v1alpha1", "kind": "AutoDLJob",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 1,
                 "resourceVersion": "1"},
    "spec": {"data": {"train": {"uri": "builtin://iris"}}},
}  # fmt: skip


class Cluster:
    """The calls a pass makes, answered from dicts, with a count of pod listings."""

    def __init__(self, conflict: bool = False) -> None:
        self.job = {**JOB}
        self.jobs: dict[str, Body] = {}
        self.config_maps: list[Body] = []
        self.conflict = conflict
        self.pod_listings = 0

    def get_job(self, namespace: str, name: str) -> Body:
        return self.job

    def replace_job_status(self, body: Body) -> Body:
        if self.conflict:
            raise ConflictError("autodljob ml/iris: conflict")
        self.job = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}
        return self.job

    def apply_config_map(self, body: Body) -> None:
        self.config_maps.append(body)

    def list_batch_jobs(self, namespace: str, job: str) -> list[Body]:
        return list(self.jobs.values())

    def create_batch_job(self, body: Body) -> Body:
        self.jobs[body["metadata"]["name"]] = {**body, "metadata": {**body["metadata"],
                                                                    "uid": "j-1"}}  # fmt: skip
        return body

    def list_versions(self, namespace: str, job: str) -> list[Body]:
        return []

    def list_pods(self, namespace: str, selector: str) -> list[Body]:
        self.pod_listings += 1
        return []

    def get_deployment(self, namespace: str, name: str) -> Body:
        raise NotFoundError(name)


def reconciler(cluster: Cluster) -> tuple[Reconciler, list[Event]]:
    posted: list[Event] = []
    kube: Any = cluster  # the in-memory stand-in answers the calls a pass makes
    made = Reconciler(kube, OperatorConfig(), lambda body, event: posted.append(event))
    return made, posted


def test_a_new_job_gets_its_manifest_its_search_and_then_its_announcement() -> None:
    cluster = Cluster()
    made, posted = reconciler(cluster)
    outcome = made.reconcile("ml", "iris")
    assert outcome is not None and outcome.phase == "Searching"
    assert list(cluster.jobs) == ["iris-search"]
    assert [m["metadata"]["name"] for m in cluster.config_maps] == ["iris-spec"]
    assert [e.reason for e in posted] == ["SearchStarted"]
    assert outcome.written == "2"


def test_decisions_are_not_announced_when_the_status_could_not_be_recorded() -> None:
    cluster = Cluster(conflict=True)
    made, posted = reconciler(cluster)
    outcome = made.reconcile("ml", "iris")
    assert outcome is not None and not outcome.status_written
    assert posted == []
    assert list(cluster.jobs) == ["iris-search"]  # created; the next pass finds it


def test_an_unchanged_spec_is_not_written_again_and_an_ended_run_is_read_once() -> None:
    cluster = Cluster()
    made, _ = reconciler(cluster)
    made.reconcile("ml", "iris")
    search = cluster.jobs["iris-search"]
    search["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    for _ in range(3):
        made.reconcile("ml", "iris")
    assert len(cluster.config_maps) == 1
    assert cluster.pod_listings == 1
