"""The test control plane is a real one: TLS on loopback, certificate and token authentication,
RBAC, running controllers, and a node that keeps itself Ready."""

from __future__ import annotations

import datetime
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cluster import Cluster
from controlplane import ControlPlane

pytestmark = pytest.mark.cluster


def service_account_client(cluster: Cluster, namespace: str, account: str) -> Any:
    """An API client that authenticates with a fresh token of `account`."""
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    request = {"spec": {"expirationSeconds": 600}}
    token = cluster.core.create_namespaced_service_account_token(account, namespace, request)
    configuration = kubernetes.client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.control_plane.ca_cert)
    configuration.api_key = {"authorization": f"Bearer {token.status.token}"}
    return kubernetes.client.ApiClient(configuration)


def test_the_api_server_listens_with_tls_on_loopback_and_forbids_anonymous_requests(
    cluster: Cluster,
) -> None:
    assert cluster.server.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cluster.control_plane.ca_cert))

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.server}/api/v1/secrets", context=context, timeout=5)

    assert refused.value.code == 403
    assert "system:anonymous" in refused.value.read().decode()


def test_a_service_account_may_list_secrets_only_after_a_role_binding_allows_it(
    cluster: Cluster, namespace: str
) -> None:
    client = kubernetes.client.CoreV1Api(service_account_client(cluster, namespace, "reader"))

    with pytest.raises(kubernetes.client.ApiException) as forbidden:
        client.list_namespaced_secret(namespace)
    assert forbidden.value.status == 403

    rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}
    cluster.rbac.create_namespaced_role(
        namespace, {"metadata": {"name": "secrets"}, "rules": [rule]}
    )
    subject = {"kind": "ServiceAccount", "name": "reader", "namespace": namespace}
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets"}
    binding = {"metadata": {"name": "reader"}, "subjects": [subject], "roleRef": role}
    cluster.rbac.create_namespaced_role_binding(namespace, binding)

    def allowed() -> bool:
        try:
            client.list_namespaced_secret(namespace)
        except kubernetes.client.ApiException as error:
            if error.status != 403:
                raise
            return False
        return True

    cluster.wait_for(allowed, timeout=10, message="the RoleBinding to take effect")
    with pytest.raises(kubernetes.client.ApiException) as elsewhere:
        client.list_namespaced_secret("default")
    assert elsewhere.value.status == 403


def test_the_node_agent_registers_a_ready_node_with_its_capacity_and_renews_its_lease(
    cluster: Cluster,
) -> None:
    node = cluster.core.read_node(cluster.node.name)

    assert node.status.capacity["cpu"] == "32"
    assert node.status.capacity["pods"] == "110"
    assert "nvidia.com/gpu" not in node.status.capacity
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    leases = cluster.client(kubernetes.client.CoordinationV1Api)
    lease = leases.read_namespaced_lease(cluster.node.name, "kube-node-lease")
    assert lease.spec.holder_identity == cluster.node.name
    age = datetime.datetime.now(datetime.UTC) - lease.spec.renew_time
    assert age < datetime.timedelta(seconds=lease.spec.lease_duration_seconds)


def test_the_controllers_publish_the_cluster_ca_into_each_namespace(
    cluster: Cluster, namespace: str
) -> None:
    config_map = cluster.core.read_namespaced_config_map("kube-root-ca.crt", namespace)

    assert config_map.data["ca.crt"] == cluster.control_plane.ca_cert.read_text()


def test_a_second_control_plane_starts_beside_the_first_and_leaves_no_process_when_stopped(
    cluster: Cluster, tmp_path: Path
) -> None:
    with ControlPlane(tmp_path) as second:
        assert second.server != cluster.server
        pids = [process.pid for process in second.processes.values()]
        result = cluster.kubectl("get", "namespaces", kubeconfig=second.admin_kubeconfig)
        assert "kube-system" in result.stdout

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
