"""The operator's behaviours over a job's life on the real control plane: its own metrics and
JSON logs, a spec change picked up, suspend and resume, and deletion through the garbage
collector; and leader election between two operator processes.

One operator process, namespaced to this module's namespace, serves one small digits job
that searches, trains and serves once; the tests below then change that job in order, and the
last one deletes it. A job that must never run a stage asks for more CPU than the node has, so
its pods stay Pending and cost nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cluster import Cluster
from kubernetes.client import ApiException

from tests.e2e.operators import (
    GROUP,
    VERSION,
    OperatorProcess,
    apply_crds,
    free_port,
    storage_folder,
)

pytestmark = pytest.mark.e2e

JOB = "digits-tiny"
TINY = f"""
apiVersion: lifelong.dev/v1alpha1
kind: AutoDLJob
metadata: {{name: {JOB}}}
spec:
  task: {{type: classification, target: label, metric: accuracy}}
  data:
    train: {{uri: "builtin://digits"}}
    stream: {{uri: "builtin://digits", order: shuffled, labelDelay: 2, rate: 20}}
  search:
    strategy: random
    budget: {{trials: 2, parallelism: 1, maxEpochs: 2, timeout: 3m}}
    space: {{families: [mlp]}}
  training: {{resources: {{cpu: 100m, memory: 256Mi}}}}
  serving: {{window: 20, resources: {{cpu: 100m, memory: 256Mi}}}}
  lifelong:
    update: {{epochs: 2, memorySize: 100, minSamples: 10}}
"""


def unschedulable(name: str, **spec: Any) -> str:
    """A job whose stage pods ask for more CPU than any node has: they stay Pending."""
    document = yaml.safe_load(TINY)
    document["metadata"]["name"] = name
    document["spec"]["training"]["resources"]["cpu"] = "1000"
    document["spec"].update(spec)
    return yaml.safe_dump(document)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    apply_crds(cluster)


@pytest.fixture(scope="module")
def space(cluster: Cluster) -> Iterator[str]:
    """This module's namespace, which its operator watches."""
    name = cluster.create_namespace("lifecycle")
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, crds: None, space: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with storage_folder() as storage:
        running = OperatorProcess(
            cluster, storage, tmp_path_factory.mktemp("operator") / "operator.log",
            LIFELONG_NAMESPACES=space, LIFELONG_LOG_FORMAT="json",
            LIFELONG_HEALTH_PORT=str(free_port()),
        )  # fmt: skip
        running.start()
        try:
            yield running
        finally:
            running.stop()
            print(f"--- operator log ---\n{running.tail(100)}")


@pytest.fixture(scope="module")
def submitted(cluster: Cluster, space: str, operator: OperatorProcess) -> str:
    """The digits job, applied."""
    cluster.kubectl("apply", "-n", space, "-f", "-", input=TINY)
    return JOB


@pytest.fixture(scope="module")
def serving(cluster: Cluster, space: str, submitted: str) -> str:
    """The digits job, Ready: searched, trained, a version serving."""
    cluster.kubectl(
        "wait", f"autodljob/{JOB}", "-n", space, "--for=condition=Ready", "--timeout=420s",
        timeout=440,
    )  # fmt: skip
    return JOB


def get_job(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    job: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "autodljobs", name
    )
    return job


def patch_spec(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> int:
    """Merge-patch the spec; return the new generation."""
    patched = cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "autodljobs", name, {"spec": spec}
    )
    return int(patched["metadata"]["generation"])


def condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def batch_jobs(cluster: Cluster, namespace: str, owner: str) -> list[str]:
    items = cluster.batch.list_namespaced_job(
        namespace, label_selector=f"lifelong.dev/job={owner}"
    ).items
    return sorted(j.metadata.name for j in items)


def reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    ).items
    return [e.reason for e in events]


def serve_pods(cluster: Cluster, namespace: str, name: str) -> list[Any]:
    selector = f"lifelong.dev/job={name},lifelong.dev/stage=serve"
    return list(cluster.core.list_namespaced_pod(namespace, label_selector=selector).items)


# --- the operator itself ---------------------------------------------------------------------


def test_stage_pods_serve_their_progress_where_their_annotations_point(
    cluster: Cluster, space: str, submitted: str
) -> None:
    def scraped() -> str | None:
        pods = cluster.core.list_namespaced_pod(
            space, label_selector=f"lifelong.dev/job={submitted},lifelong.dev/stage!=serve"
        ).items
        for pod in pods:
            notes = pod.metadata.annotations or {}
            if pod.status.phase != "Running" or notes.get("prometheus.io/scrape") != "true":
                continue
            url = f"http://{pod.status.pod_ip}:{notes['prometheus.io/port']}"
            try:
                text = httpx.get(url + notes["prometheus.io/path"], timeout=2).text
            except httpx.HTTPError:
                continue
            if "# TYPE lifelong_search_trials gauge" in text:
                return text
        return None

    cluster.wait_for(
        scraped, timeout=300, interval=0.5, message="no stage pod answered on its metrics port"
    )


def test_the_operator_serves_its_metrics_and_health(
    operator: OperatorProcess, serving: str
) -> None:
    samples = operator.metrics()
    assert samples['lifelong_operator_reconciles_total{outcome="ok"}'] > 0
    assert samples["lifelong_operator_reconcile_duration_seconds_count"] > 0
    assert samples['lifelong_operator_jobs{phase="Serving"}'] == 1
    assert samples['lifelong_operator_jobs{phase="Searching"}'] == 0
    assert samples["lifelong_operator_leader"] == 1
    text = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).text
    assert "# TYPE lifelong_operator_errors_total counter" in text
    health = operator.env["LIFELONG_HEALTH_PORT"]
    assert httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=5).status_code == 200


def test_every_log_line_is_json_and_names_the_job_in_a_field(
    operator: OperatorProcess, space: str, serving: str
) -> None:
    entries = [json.loads(line) for line in operator.log.read_text().splitlines() if line]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    created = [e for e in entries if e["message"] == f"Created the search Job {JOB}-search."]
    assert len(created) == 1
    assert created[0]["object"]["name"] == JOB and created[0]["object"]["namespace"] == space
    assert created[0]["logger"] == "lifelong.operator.reconcile"


# --- a job's life ----------------------------------------------------------------------------


def test_a_spec_change_reaches_the_status_and_what_the_operator_does(
    cluster: Cluster, space: str, operator: OperatorProcess, serving: str
) -> None:
    job = get_job(cluster, space, serving)
    assert job["status"]["observedGeneration"] == job["metadata"]["generation"]
    assert not job["status"].get("triggers")

    # A trigger that always fires, with no update budget: it is evaluated but starts nothing.
    trigger = {"name": "always", "metric": "lifelong_online_accuracy", "window": "10s",
               "aggregate": "last", "below": 2}  # fmt: skip
    generation = patch_spec(cluster, space, serving, {"lifelong": {"triggers": [trigger],
                                                                   "maxUpdates": 0}})  # fmt: skip

    def suppressed() -> dict[str, Any] | None:
        job = get_job(cluster, space, serving)
        states = {t["name"]: t for t in job["status"].get("triggers") or []}
        spent = (states.get("always") or {}).get("suppressed") == "the budget of 0 updates is spent"
        read = condition(job, "TriggersHealthy").get("status") == "True"
        return job if spent and read and job["status"]["observedGeneration"] == generation else None

    cluster.wait_for(
        suppressed, timeout=120, interval=1, message=f"never suppressed:\n{operator.tail()}"
    )
    assert "TriggerSuppressed" in reasons(cluster, space, serving)
    assert not any("update" in j for j in batch_jobs(cluster, space, serving))

    # One update allowed: the same trigger now starts an update Job. A new serving port reaches
    # the Service as well as the Deployment.
    generation = patch_spec(
        cluster, space, serving, {"lifelong": {"maxUpdates": 1}, "serving": {"port": 8090}}
    )
    cluster.wait_for(
        lambda: any("update" in j for j in batch_jobs(cluster, space, serving)),
        timeout=120, interval=1, message=f"no update started:\n{operator.tail()}",
    )  # fmt: skip
    status = get_job(cluster, space, serving)["status"]
    assert status["observedGeneration"] == generation
    assert status["updates"]["total"] == 1 and status["lastTrigger"] == "always"
    cluster.wait_for(
        lambda: cluster.core.read_namespaced_service(f"{serving}-serve", space).spec.ports[0].port
        == 8090,
        timeout=30, interval=1, message="the Service kept its old port",
    )  # fmt: skip


def test_suspending_scales_serving_to_zero_and_resuming_brings_it_back(
    cluster: Cluster, space: str, operator: OperatorProcess, serving: str
) -> None:
    deployment = f"{serving}-serve"
    patch_spec(cluster, space, serving, {"suspend": True})
    cluster.wait_for(
        lambda: get_job(cluster, space, serving)["status"]["phase"] == "Suspended",
        timeout=60, interval=1, message=f"never suspended:\n{operator.tail()}",
    )  # fmt: skip
    cluster.wait_for(
        lambda: cluster.apps.read_namespaced_deployment(deployment, space).spec.replicas == 0
        and not serve_pods(cluster, space, serving),
        timeout=120, interval=1, message="serving did not scale to zero",
    )  # fmt: skip
    ready = condition(get_job(cluster, space, serving), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")

    patch_spec(cluster, space, serving, {"suspend": False})
    cluster.kubectl(
        "wait", f"autodljob/{serving}", "-n", space, "--for=condition=Ready", "--timeout=300s",
        timeout=320,
    )  # fmt: skip
    assert cluster.apps.read_namespaced_deployment(deployment, space).spec.replicas == 1
    # The job's "always" trigger may start an update at once, whose promotion rolls the serving
    # pods over: a Running one comes back within a rollout, not necessarily at the first look.
    cluster.wait_for(
        lambda: any(p.status.phase == "Running" for p in serve_pods(cluster, space, serving)),
        timeout=120, interval=1, message="no serving pod runs after the resume",
    )  # fmt: skip
    assert {"Suspended", "Resumed"} <= set(reasons(cluster, space, serving))


def test_a_job_created_suspended_starts_no_stage_until_resumed_and_suspends_its_running_stage(
    cluster: Cluster, space: str, operator: OperatorProcess
) -> None:
    name = "paused"
    cluster.kubectl("apply", "-n", space, "-f", "-", input=unschedulable(name, suspend=True))
    cluster.wait_for(
        lambda: (get_job(cluster, space, name).get("status") or {}).get("phase") == "Suspended",
        timeout=60, interval=1, message=f"never suspended:\n{operator.tail()}",
    )  # fmt: skip
    time.sleep(3)  # three reconcile intervals
    assert batch_jobs(cluster, space, name) == []

    patch_spec(cluster, space, name, {"suspend": False})
    cluster.wait_for(
        lambda: batch_jobs(cluster, space, name) == [f"{name}-search"],
        timeout=60, interval=1, message=f"the search never started:\n{operator.tail()}",
    )  # fmt: skip

    # Suspended again mid-search, the search Job is suspended with it, and resumed after.
    def search_suspended() -> bool:
        return bool(cluster.batch.read_namespaced_job(f"{name}-search", space).spec.suspend)

    patch_spec(cluster, space, name, {"suspend": True})
    cluster.wait_for(search_suspended, timeout=60, interval=1,
                     message=f"the search Job was not suspended:\n{operator.tail()}")  # fmt: skip
    patch_spec(cluster, space, name, {"suspend": False})
    cluster.wait_for(lambda: not search_suspended(), timeout=60, interval=1,
                     message=f"the search Job was not resumed:\n{operator.tail()}")  # fmt: skip
    assert batch_jobs(cluster, space, name) == [f"{name}-search"]
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, space, "autodljobs", name)


def children(cluster: Cluster, namespace: str, job: str) -> dict[str, int]:
    """How many objects of each kind carry the job's label."""
    selector = f"lifelong.dev/job={job}"
    found: dict[str, Any] = {
        "jobs": cluster.batch.list_namespaced_job(namespace, label_selector=selector),
        "deployments": cluster.apps.list_namespaced_deployment(namespace, label_selector=selector),
        "services": cluster.core.list_namespaced_service(namespace, label_selector=selector),
        "configmaps": cluster.core.list_namespaced_config_map(namespace, label_selector=selector),
        "pods": cluster.core.list_namespaced_pod(namespace, label_selector=selector),
    }
    counts = {kind: len(answer.items) for kind, answer in found.items()}
    versions = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions", label_selector=selector
    )
    counts["modelversions"] = len(versions["items"])
    return counts


def test_deleting_a_job_removes_everything_it_owns(
    cluster: Cluster, space: str, operator: OperatorProcess, serving: str
) -> None:
    before = children(cluster, space, serving)
    assert all(before[k] >= 1 for k in ("deployments", "services", "configmaps", "modelversions"))
    assert before["jobs"] >= 2  # search and train, and the update the spec change started

    cluster.kubectl("delete", "autodljob", serving, "-n", space, "--wait=false")
    cluster.wait_for(
        lambda: not any(children(cluster, space, serving).values()),
        timeout=120, interval=1,
        message="the garbage collector left some of the job's children",
    )  # fmt: skip
    with pytest.raises(ApiException) as gone:
        get_job(cluster, space, serving)
    assert gone.value.status == 404
    cluster.wait_for(
        lambda: operator.metric('lifelong_operator_jobs{phase="Serving"}') == 0,
        timeout=30,
        message="the operator still counts the deleted job",
    )


# --- leader election -------------------------------------------------------------------------


def reconciles(operator: OperatorProcess) -> float:
    return operator.metric('lifelong_operator_reconciles_total{outcome="ok"}')


def growth(operators: list[OperatorProcess], seconds: float) -> list[float]:
    """How many passes each operator made over `seconds`."""
    before = [reconciles(o) for o in operators]
    time.sleep(seconds)
    return [reconciles(o) - b for o, b in zip(operators, before, strict=True)]


def test_only_the_leader_reconciles_and_another_takes_over_when_it_dies(
    cluster: Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    peering = "lifelong-e2e"
    cluster.apply(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
         "metadata": {"name": peering, "namespace": namespace}},
        namespace,
    )  # fmt: skip

    def replica(name: str, priority: int, storage: Path) -> OperatorProcess:
        return OperatorProcess(
            cluster, storage, tmp_path / f"{name}.log",
            LIFELONG_NAMESPACES=namespace, LIFELONG_PEERING=peering, POD_ID=name,
            LIFELONG_PEERING_PRIORITY=str(priority), LIFELONG_PEERING_LIFETIME="8",
            LIFELONG_RESYNC_INTERVAL="1",
        )  # fmt: skip

    with storage_folder() as storage:
        first, second = replica("first", 100, storage), replica("second", 50, storage)
        try:
            first.start()
            cluster.wait_for(
                lambda: first.metric("lifelong_operator_leader") == 1,
                timeout=60, interval=0.5, message=f"the first never led:\n{first.tail()}",
            )  # fmt: skip
            second.start()
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=unschedulable("idle"))
            cluster.wait_for(
                lambda: reconciles(first) > 0 and second.metric("lifelong_operator_leader") == 0
                and "Standing by" in second.tail(),
                timeout=60, interval=0.5, message=f"no leader:\n{first.tail()}\n{second.tail()}",
            )  # fmt: skip
            led, stood_by = growth([first, second], 4)
            assert led > 0 and stood_by == 0

            # The leader dies without a goodbye; its keep-alive lapses and the other takes over.
            first.stop(kill=True)
            cluster.wait_for(
                lambda: second.metric("lifelong_operator_leader") == 1 and reconciles(second) > 0,
                timeout=60, interval=0.5, message=f"no takeover:\n{second.tail()}",
            )  # fmt: skip

            # A replica of higher priority joins: the one that led stands by, its loop included.
            first = replica("first-again", 100, storage)
            first.start()
            cluster.wait_for(
                lambda: first.metric("lifelong_operator_leader") == 1
                and second.metric("lifelong_operator_leader") == 0,
                timeout=60, interval=0.5, message=f"no handover:\n{first.tail()}\n{second.tail()}",
            )  # fmt: skip
            stood_by, led = growth([second, first], 4)
            assert led > 0 and stood_by == 0
            assert second.metric('lifelong_operator_jobs{phase="Searching"}') == 0
            assert batch_jobs(cluster, namespace, "idle") == ["idle-search"]
        finally:
            for replica_process in (first, second):
                replica_process.stop()
            print(f"--- first ---\n{first.tail(40)}\n--- second ---\n{second.tail(40)}")
