"""Jobs and Deployments behave as on a real node: the controllers create pods, the node agent
runs them as processes on their own loopback addresses, and their status flows back."""

from __future__ import annotations

import ipaddress
import urllib.request
from typing import Any

import kubernetes
import pytest
from cluster import Cluster
from podspecs import python_container, python_job

pytestmark = pytest.mark.cluster

# A web server that answers with its host name, which the node agent sets to the pod's name.
WEB_SERVER = """
import http.server, os, socket
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer((os.environ["POD_IP"], 8080), Hello).serve_forever()
"""


def job_condition(cluster: Cluster, namespace: str, name: str) -> Any:
    """The Job's first Complete or Failed condition that is True, else None."""
    job = cluster.batch.read_namespaced_job(name, namespace)
    finished = ("Complete", "Failed")
    conditions = job.status.conditions or []
    return next((c for c in conditions if c.type in finished and c.status == "True"), None)


def job_pods(cluster: Cluster, namespace: str, name: str) -> list[Any]:
    selector = f"batch.kubernetes.io/job-name={name}"
    pods: list[Any] = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
    return pods


def web_deployment(replicas: int) -> dict[str, Any]:
    container = python_container(
        "web",
        WEB_SERVER,
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        ports=[{"containerPort": 8080, "name": "http"}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container]},
            },
        },
    }


WEB_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
}


def test_a_job_runs_its_command_as_a_process_and_completes(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(python_job("answer", "import os; print('answer', 6 * 7, os.getpid())"), namespace)

    condition = cluster.wait_for(lambda: job_condition(cluster, namespace, "answer"), timeout=60)

    assert condition.type == "Complete"
    [pod] = job_pods(cluster, namespace, "answer")
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    # The process is PID 1 of its own PID namespace, as in a container.
    assert cluster.pod_log(namespace, pod.metadata.name) == "answer 42 1\n"


def test_a_failing_job_is_retried_until_its_backoff_limit_and_then_fails(
    cluster: Cluster, namespace: str
) -> None:
    job = python_job("doomed", "import sys; print('trying'); sys.exit(3)", backoff_limit=1)
    cluster.apply(job, namespace)

    condition = cluster.wait_for(lambda: job_condition(cluster, namespace, "doomed"), timeout=90)

    assert (condition.type, condition.reason) == ("Failed", "BackoffLimitExceeded")
    pods = job_pods(cluster, namespace, "doomed")
    assert [pod.status.phase for pod in pods] == ["Failed", "Failed"]
    exit_codes = {pod.status.container_statuses[0].state.terminated.exit_code for pod in pods}
    assert exit_codes == {3}


def test_a_deployment_gets_ready_pods_on_distinct_loopback_addresses_serving_http(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply([web_deployment(replicas=2), WEB_SERVICE], namespace)

    cluster.wait_for(
        lambda: (
            cluster.apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 2
        ),
        timeout=60,
        message="2 ready replicas",
    )

    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items
    addresses = {pod.status.pod_ip for pod in pods}
    assert len(addresses) == 2
    for pod in pods:
        address = ipaddress.ip_address(pod.status.pod_ip)
        assert address.is_loopback and str(address) != "127.0.0.1"
        assert pod.status.host_ip == "127.0.0.1"
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == ready["ContainersReady"] == "True"
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/", timeout=5) as answer:
            assert answer.read().decode() == pod.metadata.name


def test_a_pod_whose_readiness_probe_fails_runs_but_is_not_ready(
    cluster: Cluster, namespace: str
) -> None:
    container = python_container(
        "main",
        "import time; time.sleep(600)",
        readinessProbe={"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 1},
    )
    pod = {"metadata": {"name": "unready"}, "spec": {"containers": [container]}}
    cluster.core.create_namespaced_pod(namespace, pod)

    def unhealthy() -> bool:
        events = cluster.core.list_namespaced_event(namespace).items
        return any(e.reason == "Unhealthy" for e in events)

    cluster.wait_for(unhealthy, timeout=30, message="a failed readiness probe")

    running = cluster.core.read_namespaced_pod("unready", namespace)
    assert running.status.phase == "Running"
    status = running.status.container_statuses[0]
    assert status.state.running is not None and status.ready is False
    conditions = {c.type: c for c in running.status.conditions}
    assert conditions["Ready"].status == "False"
    assert conditions["Ready"].reason == "ContainersNotReady"


def test_endpointslices_are_made_for_a_service_but_refuse_loopback_pod_addresses(
    cluster: Cluster, namespace: str
) -> None:
    # The endpointslice controller really runs and writes the pod IPs, but the API server's
    # validation refuses loopback endpoint addresses, so no slice lists them; the controller
    # says so in a Warning event on the Service. See docs/testing.md.
    cluster.apply([web_deployment(replicas=1), WEB_SERVICE], namespace)
    discovery = cluster.client(kubernetes.client.DiscoveryV1Api)

    def refusal() -> Any:
        events = cluster.core.list_namespaced_event(
            namespace, field_selector="involvedObject.kind=Service,involvedObject.name=web"
        ).items
        return next((e for e in events if e.reason == "FailedToUpdateEndpointSlices"), None)

    event = cluster.wait_for(refusal, timeout=60, message="the endpoint controller's event")

    assert "may not be in the loopback range" in event.message
    [pod] = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert pod.status.pod_ip in event.message
    # Whether an empty placeholder slice exists depends on whether the controller saw the
    # Service before the pod had an IP; no slice ever holds an endpoint.
    for endpoint_slice in discovery.list_namespaced_endpoint_slice(namespace).items:
        assert endpoint_slice.metadata.owner_references[0].name == "web"
        assert not endpoint_slice.endpoints
