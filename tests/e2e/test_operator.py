"""The operator end to end on the real control plane: stages become pods that run as processes,
versions appear, the job turns Ready, a trigger starts an update and a second version serves.

The operator runs as a local process with an admin kubeconfig here;
`tests/e2e/test_chart_install.py` runs it in the cluster under the chart's own service account.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import Cluster

from tests.e2e.operators import OperatorProcess, apply_crds, storage_folder

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "lifelong.dev", "v1alpha1"


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    apply_crds(cluster)


@pytest.fixture
def operator(cluster: Cluster, crds: None, tmp_path: Path) -> Iterator[OperatorProcess]:
    with storage_folder() as storage:
        running = OperatorProcess(
            cluster, storage, tmp_path / "operator.log", LIFELONG_RECONCILE_INTERVAL="2"
        )
        running.start()
        try:
            yield running
        finally:
            running.stop()
            print(f"--- operator log ---\n{running.tail(200)}")
            stop_serving(cluster)


def stop_serving(cluster: Cluster) -> None:
    """Stop every serving pod and wait for it: each saves its state into the store as it stops,
    so the store may only go once they are gone."""
    selector = "lifelong.dev/stage=serve"
    for deployment in cluster.apps.list_deployment_for_all_namespaces(
        label_selector=selector
    ).items:
        cluster.apps.delete_namespaced_deployment(
            deployment.metadata.name, deployment.metadata.namespace
        )
    cluster.wait_for(
        lambda: not cluster.core.list_pod_for_all_namespaces(label_selector=selector).items,
        timeout=90,
        message="the serving pods did not stop",
    )


def get_job(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    job: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "autodljobs", name
    )
    return job


def batch_jobs(cluster: Cluster, namespace: str) -> list[str]:
    return sorted(j.metadata.name for j in cluster.batch.list_namespaced_job(namespace).items)


def versions(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions"
    )["items"]
    return {v["metadata"]["name"]: v for v in items}


def condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def small_job(namespace: str, **changes: Any) -> str:
    document = yaml.safe_load((ROOT / "examples" / "digits-small.yaml").read_text())
    document["metadata"]["namespace"] = namespace
    document["spec"].update(changes)
    return yaml.safe_dump(document)


def test_a_job_searches_trains_serves_and_promotes_an_update(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    name = "digits-small"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=small_job(namespace))

    # The search runs as a pod; restarting the operator meanwhile makes no second Job.
    cluster.wait_for(
        lambda: f"{name}-search" in batch_jobs(cluster, namespace),
        timeout=60,
        message="the search Job was not created",
    )
    cluster.wait_for(
        lambda: _pod_running(cluster, namespace, f"{name}-search"),
        timeout=60,
        message="the search pod did not start",
    )
    search_job = cluster.batch.read_namespaced_job(f"{name}-search", namespace).metadata.uid
    search_pods = _pod_uids(cluster, namespace, f"{name}-search")
    operator.stop(kill=True)
    operator.start()
    cluster.wait_for(
        lambda: f"{name}-train" in batch_jobs(cluster, namespace),
        timeout=400,
        interval=2,
        message=f"training never started:\n{operator.tail()}",
    )
    assert batch_jobs(cluster, namespace) == [f"{name}-search", f"{name}-train"]
    # The very same Job and pod carried the search through the restart, to its end.
    assert cluster.batch.read_namespaced_job(f"{name}-search", namespace).metadata.uid == search_job
    assert _pod_uids(cluster, namespace, f"{name}-search") == search_pods

    # Training produces the first version, serving starts, and the job turns Ready.
    cluster.kubectl(
        "wait",
        f"autodljob/{name}",
        "-n",
        namespace,
        "--for=condition=Ready",
        "--timeout=400s",
        timeout=420,
    )
    job = get_job(cluster, namespace, name)
    assert job["status"]["servingVersion"] == f"{name}-v1"
    assert (condition(job, "Searched")["status"], condition(job, "Trained")["status"]) == (
        "True",
        "True",
    )
    assert versions(cluster, namespace)[f"{name}-v1"]["status"]["state"] in ("Serving", "Retired")
    serve_pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="lifelong.dev/stage=serve"
    ).items
    assert serve_pods and serve_pods[0].status.pod_ip.startswith("127.")

    # The stream brings new digits, the accuracy trigger fires, an update Job runs, and the
    # gate promotes the candidate, which then serves.
    cluster.wait_for(
        lambda: any(j.startswith(f"{name}-update-") for j in batch_jobs(cluster, namespace)),
        timeout=300,
        interval=2,
        message=f"no update started:\n{operator.tail()}",
    )
    cluster.wait_for(
        lambda: get_job(cluster, namespace, name)["status"].get("servingVersion") == f"{name}-v2",
        timeout=400,
        interval=2,
        message=f"no second version was promoted:\n{operator.tail()}",
    )
    updated = condition(get_job(cluster, namespace, name), "Updated")
    assert (updated["status"], updated["reason"]) == ("True", "CandidatePromoted")
    promoted = versions(cluster, namespace)[f"{name}-v2"]
    assert promoted["spec"]["parent"] == f"{name}-v1"
    assert promoted["spec"]["trigger"] == "accuracy-drop"
    assert promoted["status"]["gate"]["decision"] == "promote"
    reasons = _event_reasons(cluster, namespace, name)
    assert {"TriggerFired", "CandidatePromoted", "VersionCreated"} <= reasons

    # Each stage's pod ran as a real process and ended as Kubernetes reports it.
    for stage in ("search", "train"):
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={name}-{stage}"
        ).items
        assert any(p.status.phase == "Succeeded" for p in pods), stage
        message = json.loads(pods[-1].status.container_statuses[0].state.terminated.message)
        assert message, stage

    # The printer columns say what a person wants to know.
    table = cluster.kubectl("get", "autodljobs", "-n", namespace).stdout
    assert "PHASE" in table and "SERVING" in table and f"{name}-v2" in table


def _pod_running(cluster: Cluster, namespace: str, job: str) -> bool:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    ).items
    return any(p.status.phase == "Running" for p in pods)


def _pod_uids(cluster: Cluster, namespace: str, job: str) -> set[str]:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    ).items
    return {p.metadata.uid for p in pods}


def _event_reasons(cluster: Cluster, namespace: str, name: str) -> set[str]:
    events = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    ).items
    return {e.reason for e in events}


def test_a_job_whose_data_does_not_exist_stalls_with_a_reason_and_a_warning(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    data = {"train": {"uri": "file:///nonexistent/data.csv"}}
    manifest = small_job(namespace, data=data).replace("digits-small", "missing-data")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def stalled() -> dict[str, Any] | None:
        found = condition(get_job(cluster, namespace, "missing-data"), "Stalled")
        return found if found.get("status") == "True" else None

    found = cluster.wait_for(
        stalled, timeout=240, interval=2, message=f"the job never stalled:\n{operator.tail()}"
    )
    assert found is not None
    assert "/nonexistent/data.csv" in found["message"]
    assert found["reason"] == "InvalidSpec"
    warnings = cluster.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=missing-data,type=Warning"
    ).items
    assert any("/nonexistent/data.csv" in (e.message or "") for e in warnings)
    job = get_job(cluster, namespace, "missing-data")
    assert job["status"]["phase"] == "Failed"
    assert batch_jobs(cluster, namespace) == ["missing-data-search"]


def test_the_api_server_refuses_a_bad_field_with_its_path(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    bad = small_job(namespace).replace("trials: 4", "trials: -4")
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "spec.search.budget.trials" in result.stderr

    typo = small_job(namespace).replace("  search:", "  serach: {}\n  search:", 1)
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=typo, check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.serach"' in result.stderr

    cel = small_job(namespace).replace("parallelism: 2", "parallelism: 9")
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cel, check=False)
    assert result.returncode != 0
    assert "parallelism must not exceed trials" in result.stderr


def test_kubectl_explain_describes_the_fields(cluster: Cluster, crds: None) -> None:
    text = cluster.kubectl("explain", "autodljob.spec.search.budget").stdout
    assert "trials" in text and "Configurations to evaluate" in text
    text = cluster.kubectl("explain", "modelversion.status.gate").stdout
    assert "forgetting" in text


def test_wait_for_ready_works_on_the_status_conditions(cluster: Cluster, crds: None) -> None:
    # `kubectl wait --for=condition=Ready` reads status.conditions, which the CRD declares.
    text = cluster.kubectl("explain", "autodljob.status.conditions").stdout
    assert "lastTransitionTime" in text and "observedGeneration" in text
