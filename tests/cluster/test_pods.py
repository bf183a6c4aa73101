"""What a pod's process sees and how the node agent treats it: environment, mounted volumes,
service-account credentials, termination messages, restarts, failures and deletion."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from podspecs import python_container, python_pod

pytestmark = pytest.mark.cluster

REPORT_ENVIRONMENT = """
import json, os, pathlib
names = ["POD_NAME", "POD_NAMESPACE", "POD_UID", "APP", "NODE", "ACCOUNT", "POD_IP", "MODE",
         "TOKEN", "GREETING", "CFG_mode", "PYTHONUNBUFFERED", "KUBERNETES_SERVICE_HOST",
         "KUBERNETES_SERVICE_PORT"]
report = {name: os.environ.get(name) for name in names}
report["cwd"] = os.getcwd()
report["job"] = pathlib.Path("job.yaml").read_text()
report["labels"] = pathlib.Path("/etc/podinfo/labels").read_text()
pathlib.Path("/dev/termination-log").write_text(json.dumps(report))
"""

LIST_PODS_IN_CLUSTER = """
import json, pathlib
from kubernetes import client, config
config.load_incluster_config()
namespace = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text()
try:
    items = client.CoreV1Api().list_namespaced_pod(namespace).items
    result = {"pods": sorted(pod.metadata.name for pod in items)}
except client.ApiException as error:
    result = {"status": error.status}
pathlib.Path("/dev/termination-log").write_text(json.dumps(result))
"""


def field(path: str) -> dict[str, Any]:
    return {"fieldRef": {"fieldPath": path}}


def finished_message(cluster: Cluster, namespace: str, name: str) -> Any:
    """Wait for the pod to end and return its first container's termination state."""
    pod = cluster.wait_for_pod(namespace, name)
    return pod.status.container_statuses[0].state.terminated


def processes_mentioning(marker: str) -> list[int]:
    """Process ids whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_pod_sees_its_config_map_at_its_mount_path_and_its_environment_resolved(
    cluster: Cluster, namespace: str
) -> None:
    settings = {"job.yaml": "name: digits\n", "mode": "fast"}
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": settings}
    )
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}
    )
    env = [
        {"name": "POD_NAME", "valueFrom": field("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
        {"name": "POD_UID", "valueFrom": field("metadata.uid")},
        {"name": "APP", "valueFrom": field("metadata.labels['app']")},
        {"name": "NODE", "valueFrom": field("spec.nodeName")},
        {"name": "ACCOUNT", "valueFrom": field("spec.serviceAccountName")},
        {"name": "POD_IP", "valueFrom": field("status.podIP")},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "GREETING", "value": "hello $(POD_NAME)"},
    ]
    container = {
        "env": env,
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "workingDir": "/etc/lifelong",
        "volumeMounts": [
            {"name": "job", "mountPath": "/etc/lifelong", "readOnly": True},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
        ],
    }
    volumes = [
        {
            "name": "job",
            "configMap": {"name": "settings", "items": [{"key": "job.yaml", "path": "job.yaml"}]},
        },
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
            },
        },
    ]
    manifest = python_pod(
        "env", REPORT_ENVIRONMENT, labels={"app": "env-test"}, container=container, volumes=volumes
    )
    cluster.apply(manifest, namespace)

    terminated = finished_message(cluster, namespace, "env")

    assert terminated.exit_code == 0, terminated.message
    report = json.loads(terminated.message)
    pod = cluster.core.read_namespaced_pod("env", namespace)
    assert report == {
        "POD_NAME": "env",
        "POD_NAMESPACE": namespace,
        "POD_UID": pod.metadata.uid,
        "APP": "env-test",
        "NODE": "node-1",
        "ACCOUNT": "default",
        "POD_IP": pod.status.pod_ip,
        "MODE": "fast",
        "TOKEN": "s3cr3t",
        "GREETING": "hello env",
        "CFG_mode": "fast",
        "PYTHONUNBUFFERED": "1",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": cluster.server.rsplit(":", 1)[1],
        "cwd": "/etc/lifelong",
        "job": "name: digits\n",
        "labels": 'app="env-test"',
    }
    # The mounts exist for the pod's process only.
    assert not Path("/etc/lifelong").exists()
    assert not Path("/dev/termination-log").exists()


def test_an_in_cluster_client_uses_the_projected_token_and_is_bound_by_rbac(
    cluster: Cluster, namespace: str
) -> None:
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "lister"}})
    pod = python_pod("before", LIST_PODS_IN_CLUSTER, serviceAccountName="lister")
    cluster.apply(pod, namespace)
    assert json.loads(finished_message(cluster, namespace, "before").message) == {"status": 403}

    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    cluster.rbac.create_namespaced_role(namespace, {"metadata": {"name": "pods"}, "rules": [rule]})
    subject = {"kind": "ServiceAccount", "name": "lister", "namespace": namespace}
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods"}
    binding = {"metadata": {"name": "lister"}, "subjects": [subject], "roleRef": role}
    cluster.rbac.create_namespaced_role_binding(namespace, binding)
    cluster.apply(python_pod("after", LIST_PODS_IN_CLUSTER, serviceAccountName="lister"), namespace)

    result = json.loads(finished_message(cluster, namespace, "after").message)
    assert result == {"pods": ["after", "before"]}


def test_a_termination_message_comes_from_its_file_or_else_from_the_log_on_error(
    cluster: Cluster, namespace: str
) -> None:
    custom_path = "/var/log/lifelong/result.json"
    writes = f"open({custom_path!r}, 'w').write('{{\"accuracy\": 0.97}}')"
    cluster.apply(
        python_pod("writes", writes, container={"terminationMessagePath": custom_path}),
        namespace,
    )
    fails = "import sys; print('loading data'); sys.exit('data source not found')"
    policy = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    cluster.apply(python_pod("fails", fails, container=policy), namespace)

    written = finished_message(cluster, namespace, "writes")
    failed = finished_message(cluster, namespace, "fails")

    assert (written.exit_code, written.message) == (0, '{"accuracy": 0.97}')
    assert (failed.exit_code, failed.reason) == (1, "Error")
    assert failed.message == "loading data\ndata source not found"


def test_a_container_that_fails_is_restarted_with_its_volumes_kept_under_on_failure(
    cluster: Cluster, namespace: str
) -> None:
    code = (
        "import pathlib, sys\n"
        "marker = pathlib.Path('/scratch/tried')\n"
        "if marker.exists(): print('second run'); sys.exit(0)\n"
        "marker.write_text('1'); print('first run'); sys.exit(1)\n"
    )
    container = {"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}
    pod = python_pod(
        "flaky",
        code,
        restart_policy="OnFailure",
        container=container,
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    cluster.apply(pod, namespace)

    done = cluster.wait_for_pod(namespace, "flaky")

    status = done.status.container_statuses[0]
    assert done.status.phase == "Succeeded"
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
    assert cluster.pod_log(namespace, "flaky") == "second run\n"
    assert cluster.pod_log(namespace, "flaky", previous=True) == "first run\n"
    # kubectl reads the same files through the API server and the agent's log endpoint.
    assert cluster.kubectl("logs", "-n", namespace, "flaky").stdout == "second run\n"
    previous = cluster.kubectl("logs", "-n", namespace, "flaky", "--previous")
    assert previous.stdout == "first run\n"


def test_a_pod_that_cannot_run_fails_with_a_clear_reason_and_the_agent_carries_on(
    cluster: Cluster, namespace: str
) -> None:
    no_entrypoint = {"name": "web", "image": "nginx:1.27"}
    no_program = {"name": "tool", "image": "busybox", "command": ["no-such-program"]}
    pod = {
        "metadata": {"name": "broken"},
        "spec": {"restartPolicy": "Never", "containers": [no_entrypoint, no_program]},
    }
    cluster.core.create_namespaced_pod(namespace, pod)

    failed = cluster.wait_for_pod(namespace, "broken")

    assert failed.status.phase == "Failed"
    states = {s.name: s.state.terminated for s in failed.status.container_statuses}
    assert states["web"].reason == states["tool"].reason == "StartError"
    assert "has no known entrypoint" in states["web"].message
    assert "no-such-program" in states["tool"].message

    volume = {"name": "data", "csi": {"driver": "csi.example.com"}}
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    cluster.apply(python_pod("unmountable", "", container=mount, volumes=[volume]), namespace)
    unmountable = cluster.wait_for_pod(namespace, "unmountable")
    assert unmountable.status.phase == "Failed"
    terminated = unmountable.status.container_statuses[0].state.terminated
    assert terminated.reason == "StartError"
    assert "not supported by the test node agent" in terminated.message

    cluster.apply(python_pod("fine", "print('still here')"), namespace)
    assert cluster.wait_for_pod(namespace, "fine").status.phase == "Succeeded"


def test_deleting_a_pod_sends_sigterm_and_removes_it_once_its_process_has_ended(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    code = (
        "import pathlib, signal, sys, time\n"
        "def stop(signum, frame):\n"
        "    pathlib.Path('/out/stopped').write_text(signal.Signals(signum).name)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "pathlib.Path('/out/started').write_text('yes')\n"
        f"time.sleep(600)  # {marker}\n"
    )
    container = {"volumeMounts": [{"name": "out", "mountPath": "/out"}]}
    volumes = [{"name": "out", "hostPath": {"path": str(tmp_path), "type": "Directory"}}]
    cluster.apply(python_pod("sleeper", code, container=container, volumes=volumes), namespace)
    cluster.wait_for((tmp_path / "started").exists, timeout=30)
    assert processes_mentioning(marker)

    cluster.core.delete_namespaced_pod("sleeper", namespace)

    cluster.wait_for(lambda: not cluster.core.list_namespaced_pod(namespace).items, timeout=30)
    assert (tmp_path / "stopped").read_text() == "SIGTERM"
    assert processes_mentioning(marker) == []


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(
    cluster: Cluster, namespace: str
) -> None:
    marker = uuid.uuid4().hex
    # As PID 1 of its namespace, a process without a SIGTERM handler ignores SIGTERM.
    code = f"import time; time.sleep(600)  # {marker}"
    cluster.apply(python_pod("stubborn", code, terminationGracePeriodSeconds=2), namespace)
    cluster.wait_for_pod(namespace, "stubborn", phases=["Running"])
    cluster.wait_for(lambda: processes_mentioning(marker), timeout=10)

    started = time.monotonic()
    cluster.core.delete_namespaced_pod("stubborn", namespace)
    cluster.wait_for(lambda: not cluster.core.list_namespaced_pod(namespace).items, timeout=30)

    assert time.monotonic() - started >= 1.5
    assert processes_mentioning(marker) == []


def test_a_pod_gets_a_bound_service_account_token_with_the_cluster_ca_and_namespace(
    cluster: Cluster, namespace: str
) -> None:
    code = (
        "import base64, json, pathlib\n"
        "folder = pathlib.Path('/var/run/secrets/kubernetes.io/serviceaccount')\n"
        "token = (folder / 'token').read_text()\n"
        "claims = json.loads(base64.urlsafe_b64decode(token.split('.')[1] + '=='))\n"
        "report = {'claims': claims, 'ca': (folder / 'ca.crt').read_text(),\n"
        "          'namespace': (folder / 'namespace').read_text()}\n"
        "open('/dev/termination-log', 'w').write(json.dumps(report)[:4000])\n"
    )
    cluster.apply(python_pod("token", code), namespace)

    report = json.loads(finished_message(cluster, namespace, "token").message)

    pod = cluster.core.read_namespaced_pod("token", namespace)
    bound = report["claims"]["kubernetes.io"]
    assert bound["pod"] == {"name": "token", "uid": pod.metadata.uid}
    assert bound["node"]["name"] == "node-1"
    assert bound["serviceaccount"]["name"] == "default"
    assert report["ca"] == cluster.control_plane.ca_cert.read_text()
    assert report["namespace"] == namespace


def test_a_container_without_a_command_runs_the_lifelong_entrypoint_for_a_lifelong_image(
    cluster: Cluster, namespace: str
) -> None:
    container = python_container("main", "")
    del container["command"]
    container.update(image="ghcr.io/lifelong/lifelong:dev", args=["--help"])
    pod = {
        "metadata": {"name": "cli"},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }
    cluster.core.create_namespaced_pod(namespace, pod)

    done = cluster.wait_for_pod(namespace, "cli")

    assert done.status.phase == "Succeeded"
    assert "usage: lifelong" in cluster.pod_log(namespace, "cli")


def test_init_containers_run_to_completion_before_the_main_container_starts(
    cluster: Cluster, namespace: str
) -> None:
    shared = {"volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
    prepare = python_container(
        "prepare", "open('/shared/data.txt', 'w').write('prepared')", **shared
    )
    pod = python_pod(
        "staged",
        "print(open('/shared/data.txt').read())",
        container=shared,
        initContainers=[prepare],
        volumes=[{"name": "shared", "emptyDir": {}}],
    )
    cluster.apply(pod, namespace)

    done = cluster.wait_for_pod(namespace, "staged")

    assert done.status.phase == "Succeeded"
    assert done.status.init_container_statuses[0].state.terminated.reason == "Completed"
    assert cluster.pod_log(namespace, "staged", container="main") == "prepared\n"


def test_a_container_that_fails_its_liveness_probe_is_restarted(
    cluster: Cluster, namespace: str
) -> None:
    probe = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 1}
    pod = python_pod(
        "hung",
        "import time; time.sleep(600)",
        restart_policy="Always",
        container={"livenessProbe": probe},
        terminationGracePeriodSeconds=1,
    )
    cluster.apply(pod, namespace)

    def restarted() -> bool:
        statuses = cluster.core.read_namespaced_pod("hung", namespace).status.container_statuses
        return bool(statuses and statuses[0].restart_count >= 1)

    cluster.wait_for(restarted, timeout=30, message="a restart after the failed liveness probe")
    status = cluster.core.read_namespaced_pod("hung", namespace).status.container_statuses[0]
    assert status.last_state.terminated.exit_code == 137


def test_kubectl_logs_follows_a_running_container_until_it_ends(
    cluster: Cluster, namespace: str
) -> None:
    code = "import time\nfor i in range(3):\n    print('tick', i)\n    time.sleep(0.5)\n"
    cluster.apply(python_pod("ticker", code), namespace)
    cluster.wait_for_pod(namespace, "ticker", phases=["Running", "Succeeded"])

    followed = cluster.kubectl("logs", "--follow", "-n", namespace, "ticker", timeout=30)

    assert followed.stdout == "tick 0\ntick 1\ntick 2\n"


def test_a_volume_over_the_checkout_does_not_hide_the_lifelong_image(
    cluster: Cluster, namespace: str
) -> None:
    # The `lifelong` image is the project's checkout and environment on this machine. A volume
    # mounted above them (as an emptyDir at /tmp hides a checkout under /tmp) must leave them in
    # view, as an image's files would be.
    root = Path(__file__).resolve().parents[2]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "image"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{
                "name": "main",
                "image": "lifelong:dev",
                "args": ["validate", str(root / "examples" / "digits.yaml")],
                "volumeMounts": [{"name": "scratch", "mountPath": str(root.parent)}],
            }],
        },
    }  # fmt: skip
    cluster.apply(pod, namespace)
    cluster.wait_for_pod(namespace, "image", timeout=90)
    status = cluster.core.read_namespaced_pod("image", namespace).status
    assert status.phase == "Succeeded", cluster.pod_log(namespace, "image")
    assert "ok: AutoDLJob digits" in cluster.pod_log(namespace, "image")
