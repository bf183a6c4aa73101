"""The chart's RBAC grants exactly what the operator uses: the table below, which is also what
the operator's code calls (read from operator/kube.py and operator/handlers.py). Adding a
permission means changing the table, the chart and the code together."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lifelong.api import GROUP
from tests.deploy.rendering import CHART, ROOT, Object, of_kind, one, render

pytestmark = pytest.mark.integration

Grant = tuple[str, str, str]  # (API group, resource, verb)

# What the operator may do in each namespace it watches, and why.
NAMESPACED: set[Grant] = {
    # Kopf watches jobs; the reconciler reads each before acting.
    ("lifelong.dev", "autodljobs", "get"),
    ("lifelong.dev", "autodljobs", "list"),
    ("lifelong.dev", "autodljobs", "watch"),
    # The status is written with the resourceVersion it was computed from (PUT).
    ("lifelong.dev", "autodljobs/status", "update"),
    # Versions are listed by label and created from stage results; their state is patched.
    ("lifelong.dev", "modelversions", "list"),
    ("lifelong.dev", "modelversions", "create"),
    ("lifelong.dev", "modelversions/status", "patch"),
    # Stage runs: watched by Kopf, created with deterministic names, suspended with the job.
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "patch"),
    # Termination messages of stage pods; the serving pods to scrape.
    ("", "pods", "list"),
    # The serving Deployment: watched, read, created, rolled.
    ("apps", "deployments", "get"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "update"),
    # The serving Service: read, created, and replaced when the spec's port changes.
    ("", "services", "get"),
    ("", "services", "create"),
    ("", "services", "update"),
    # The job manifest the stages mount.
    ("", "configmaps", "get"),
    ("", "configmaps", "create"),
    ("", "configmaps", "update"),
    # Events for every autonomous decision.
    ("", "events", "create"),
}

# Only with leader election, where the chart grants list, watch and a patch of its own object:
# the operator's periodic pass reads the peering object to stand by as Kopf does.
LEADER_ELECTION: set[Grant] = {
    ("kopf.dev", "clusterkopfpeerings", "list"),
    ("kopf.dev", "kopfpeerings", "list"),
}

# Only in cluster mode: Kopf notices CRDs appearing and disappearing.
CLUSTER_ONLY: set[Grant] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}

NEVER = {"secrets", "serviceaccounts", "roles", "rolebindings", "clusterroles", "nodes"}


def grants(role: Object) -> set[Grant]:
    """The (group, resource, verb) triples a Role or ClusterRole grants without resourceNames."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        if not rule.get("resourceNames")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def named_grants(role: Object) -> set[tuple[str, str, str, str]]:
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for name in rule.get("resourceNames", [])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# --- what the code calls ---------------------------------------------------------------------

_VERBS = {
    "get": "get",
    "read": "get",
    "delete": "delete",
    "list": "list",
    "create": "create",
    "replace": "update",
    "patch": "patch",
}
_GROUPS = {"core": "", "apps": "apps", "batch": "batch"}
_CUSTOM_GROUPS = {"GROUP": GROUP, "PEERING_GROUP": "kopf.dev"}
_PLURALS = {
    "JOBS": "autodljobs",
    "VERSIONS": "modelversions",
    "PEERINGS": "kopfpeerings",
    "CLUSTER_PEERINGS": "clusterkopfpeerings",
}
_METHOD = re.compile(r"^([a-z]+)_(?:namespaced_|cluster_)?(.+)$")


def _names(node: ast.Call) -> list[str]:
    return [a.id for a in node.args if isinstance(a, ast.Name)]


def calls_in_kube_module() -> set[Grant]:
    """The API calls operator/kube.py makes, as RBAC triples."""
    tree = ast.parse((ROOT / "operator" / "kube.py").read_text())
    found: set[Grant] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "_call":
            continue
        method = node.args[1]
        assert isinstance(method, ast.Attribute) and isinstance(method.value, ast.Attribute)
        api, name = method.value.attr, method.attr
        match = _METHOD.match(name)
        assert match, name
        verb, rest = match.groups()
        subresource = "/status" if rest.endswith("_status") else ""
        rest = rest.removesuffix("_status")
        if api == "custom":
            (group,) = [_CUSTOM_GROUPS[n] for n in _names(node) if n in _CUSTOM_GROUPS]
            (resource,) = [_PLURALS[n] for n in _names(node) if n in _PLURALS]
        else:
            group, resource = _GROUPS[api], rest.replace("_", "") + "s"
        found.add((group, resource + subresource, _VERBS[verb]))
    return found


def watches_in_handlers() -> set[Grant]:
    """What Kopf lists and watches for the handlers, and the events it posts."""
    source = (ROOT / "operator" / "handlers.py").read_text()
    found: set[Grant] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "kopf.on.event":
            group, _, plural = (ast.unparse(a).strip("'\"") for a in node.args[:3])
            group = GROUP if group == "GROUP" else group
            found |= {(group, plural, "list"), (group, plural, "watch")}
    if "kopf.event(" in source:
        found.add(("", "events", "create"))
    return found


# --- tests -----------------------------------------------------------------------------------


def test_the_operator_code_uses_exactly_the_namespaced_and_leader_election_tables() -> None:
    used = calls_in_kube_module() | watches_in_handlers()
    granted = NAMESPACED | LEADER_ELECTION
    assert used - granted == set(), "the operator calls this: grant it in _helpers.tpl and here"
    assert granted - used == set(), "granted but never called: take it out"


def test_cluster_mode_grants_the_table_and_kopf_crd_scanning_only() -> None:
    objects = render()
    role = one(objects, "ClusterRole")
    assert grants(role) == NAMESPACED | CLUSTER_ONLY
    assert named_grants(role) == set()
    assert of_kind(objects, "Role") == []


def test_namespaced_mode_grants_the_table_in_each_namespace_and_nothing_cluster_wide() -> None:
    objects = render(CHART / "ci" / "namespaced-values.yaml")
    assert not {"ClusterRole", "ClusterRoleBinding"} & {o["kind"] for o in objects}
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-team-a", "ml-team-b"]
    for role in roles:
        assert grants(role) == NAMESPACED
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml-team-a", "ml-team-b"]


@pytest.mark.parametrize(
    ("values", "resource"),
    [(None, "clusterkopfpeerings"), (CHART / "ci" / "namespaced-values.yaml", "kopfpeerings")],
)
def test_leader_election_adds_peering_watches_and_a_patch_of_its_own_object(
    values: Path | None, resource: str
) -> None:
    objects = render(values, replicaCount=2)
    for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role"):
        extra = grants(role) - NAMESPACED - CLUSTER_ONLY
        assert extra == {("kopf.dev", resource, "list"), ("kopf.dev", resource, "watch")}
        assert ("kopf.dev", resource, "list") in LEADER_ELECTION
        assert named_grants(role) == {("kopf.dev", resource, "patch", "lifelong")}


@pytest.mark.parametrize("values", [None, CHART / "ci" / "namespaced-values.yaml"])
def test_no_mode_grants_secrets_pods_creation_wildcards_or_escalation(values: Path | None) -> None:
    for role in [o for o in render(values, replicaCount=2) if o["kind"] in ("Role", "ClusterRole")]:
        for group, resource, verb in grants(role) | {g[:3] for g in named_grants(role)}:
            assert "*" not in (group, resource, verb)
            assert resource not in NEVER
            assert verb not in ("escalate", "bind", "impersonate", "delete", "deletecollection")
            assert (resource, verb) != ("pods", "create")
