"""The chart against the real test control plane: the API server accepts every object of every
scenario (a server-side dry run), and its authoriser gives the operator's ServiceAccount exactly
the RBAC table and nothing beyond it, in namespaced and in cluster mode.

The Prometheus Operator's kinds (ServiceMonitor, PodMonitor, PrometheusRule) are left out of the
dry run: their CRDs are not installed in the test cluster. Running the operator itself under the
chart's ServiceAccount is the end-to-end tests' part (tests/e2e).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from cluster import Cluster

from tests.deploy.rendering import CHART, SCENARIOS, Object, helm
from tests.deploy.test_rbac import CLUSTER_ONLY, NAMESPACED

MONITORING = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def template(release: str, namespace: str, values: Path | None, *settings: str) -> list[Object]:
    args: list[str | Path] = ["template", release, CHART, "--namespace", namespace]
    args += ["--values", str(values)] if values else []
    for setting in settings:
        args += ["--set", setting]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    """The chart's CRDs (Lifelong's and Kopf's peering CRDs), established."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", path)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/autodljobs.lifelong.dev", "crd/clusterkopfpeerings.kopf.dev",
        "crd/kopfpeerings.kopf.dev",
    )  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_the_api_server_accepts_every_object_of_every_scenario(
    cluster: Cluster, namespace: str, crds: None, scenario: Path
) -> None:
    release = f"dry-{uuid.uuid4().hex[:6]}"
    objects = template(release, namespace, scenario, f"watchNamespaces={{{namespace}}}")
    objects = [o for o in objects if o["kind"] not in MONITORING]
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects)
    )
    assert result.stdout.count("(server dry run)") == len(objects), result.stdout


# --- what the operator's identity may do -----------------------------------------------------


def allowed(
    cluster: Cluster, user: str, group: str, resource: str, verb: str, namespace: str = ""
) -> bool:
    resource, _, subresource = resource.partition("/")
    review = kubernetes.client.V1SubjectAccessReview(
        spec=kubernetes.client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=kubernetes.client.V1ResourceAttributes(
                group=group,
                resource=resource,
                subresource=subresource or None,
                verb=verb,
                namespace=namespace or None,
            ),
        )
    )
    api = cluster.client(kubernetes.client.AuthorizationV1Api)
    answer = api.create_subject_access_review(review)
    return bool(answer.status.allowed)


@pytest.fixture
def installed(cluster: Cluster, namespace: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The chart's ServiceAccount and RBAC applied for real; yields the account's user name."""
    scope: str = request.param
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    objects = template(
        release, namespace, None, f"rbac.scope={scope}", f"watchNamespaces={{{namespace}}}"
    )
    kinds = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    rbac = [o for o in objects if o["kind"] in kinds]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    (account,) = [o["metadata"]["name"] for o in rbac if o["kind"] == "ServiceAccount"]
    user = f"system:serviceaccount:{namespace}:{account}"
    try:
        # The authoriser learns of new roles through its informers, a moment after the write.
        cluster.wait_for(
            lambda: allowed(cluster, user, "", "events", "create", namespace),
            timeout=30,
            message=f"the {scope} RBAC of {user} to take effect",
        )
        yield user
    finally:
        for obj in rbac:
            if obj["kind"].startswith("Cluster"):
                cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)


@pytest.mark.parametrize("installed", ["namespaced"], indirect=True)
def test_a_namespaced_install_lets_the_operator_do_its_work_in_its_namespace_only(
    cluster: Cluster, namespace: str, installed: str
) -> None:
    other = cluster.create_namespace("elsewhere")
    try:
        for group, resource, verb in sorted(NAMESPACED):
            assert allowed(cluster, installed, group, resource, verb, namespace), (resource, verb)
            assert not allowed(cluster, installed, group, resource, verb, other), (resource, verb)
        for group, resource, verb in sorted(CLUSTER_ONLY):
            assert not allowed(cluster, installed, group, resource, verb)
    finally:
        cluster.delete_namespace(other)


@pytest.mark.parametrize("installed", ["namespaced", "cluster"], indirect=True)
def test_the_operator_can_never_read_secrets_create_pods_or_delete_anything(
    cluster: Cluster, namespace: str, installed: str
) -> None:
    for where in (namespace, "kube-system", "default"):
        assert not allowed(cluster, installed, "", "secrets", "get", where)
        assert not allowed(cluster, installed, "", "secrets", "list", where)
        assert not allowed(cluster, installed, "", "pods", "create", where)
        assert not allowed(cluster, installed, "", "pods/exec", "create", where)
        assert not allowed(cluster, installed, "lifelong.dev", "autodljobs", "update", where)
        assert not allowed(cluster, installed, "batch", "jobs", "delete", where)
    assert not allowed(cluster, installed, "", "nodes", "list")
    assert not allowed(cluster, installed, "rbac.authorization.k8s.io", "clusterroles", "bind")


@pytest.mark.parametrize("installed", ["cluster"], indirect=True)
def test_a_cluster_install_grants_the_table_in_every_namespace_and_crd_watches(
    cluster: Cluster, namespace: str, installed: str
) -> None:
    for group, resource, verb in sorted(NAMESPACED):
        for where in (namespace, "default", ""):
            assert allowed(cluster, installed, group, resource, verb, where), (resource, where)
    for group, resource, verb in sorted(CLUSTER_ONLY):
        assert allowed(cluster, installed, group, resource, verb)
