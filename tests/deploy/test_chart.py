"""The Helm chart, linted and rendered by the real `helm`: one test per toggle and per scenario."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifelong.api import AutoDLJob
from lifelong.engine.model import Serve, Stage, StartStage
from lifelong.operator import builders
from lifelong.operator.config import OperatorConfig
from tests.deploy.rendering import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    SCENARIOS,
    Object,
    env,
    helm,
    kinds,
    of_kind,
    one,
    operator_container,
    refused,
    render,
)

pytestmark = pytest.mark.integration

FULLNAME = f"{RELEASE}"  # the release name holds the chart name, so it is the full name
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
SELECTOR = {
    "app.kubernetes.io/name": "lifelong",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "operator",
}


@pytest.fixture(scope="module")
def default() -> list[Object]:
    return render()


# --- scenarios -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_helm_lint_accepts_every_ci_scenario(scenario: Path) -> None:
    result = helm("lint", "--strict", CHART, "--values", scenario, "--namespace", NAMESPACE)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_every_object_of_every_scenario_carries_the_standard_labels(scenario: Path) -> None:
    for obj in render(scenario):
        meta = obj["metadata"]
        labels = meta["labels"]
        assert labels["helm.sh/chart"] == "lifelong-0.1.0"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "lifelong"
        assert {k: labels[k] for k in SELECTOR} == SELECTOR
        assert len(meta["name"]) <= 63
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta["namespace"], f"{obj['kind']} {meta['name']} has no namespace"


def test_the_default_install_is_the_operator_its_account_and_cluster_rbac(
    default: list[Object],
) -> None:
    assert sorted(o["kind"] for o in default) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    account = one(default, "ServiceAccount")["metadata"]
    binding = one(default, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == one(default, "ClusterRole")["metadata"]["name"]
    pod = one(default, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]


def test_the_release_notes_say_where_the_operator_runs_and_what_it_watches() -> None:
    result = helm(
        "install", RELEASE, CHART, "--dry-run=client", "--namespace", NAMESPACE,
        "--values", CHART / "ci" / "namespaced-values.yaml", "--set", "replicaCount=2",
    )  # fmt: skip
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "reconciles AutoDLJobs in ml-team-a, ml-team-b" in notes
    assert "2 replicas electing a leader" in notes
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes


# --- the CRDs --------------------------------------------------------------------------------


def test_the_chart_and_gitops_crds_are_the_generated_crds() -> None:
    generated = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert generated
    for copy in (CHART / "crds", ROOT / "examples" / "gitops" / "crds"):
        copied = {p.name: p.read_text() for p in copy.glob("lifelong.dev_*.yaml")}
        assert copied == generated, f"{copy} differs from crds/; run `make crds`"
    extra = sorted(p.name for p in (CHART / "crds").iterdir() if p.name not in generated)
    assert extra == ["kopf.dev_peerings.yaml"]


def test_the_peering_crds_define_what_kopf_watches() -> None:
    documents = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()))
    found = {
        (d["spec"]["group"], d["spec"]["names"]["plural"], d["spec"]["scope"]) for d in documents
    }
    assert found == {
        ("kopf.dev", "clusterkopfpeerings", "Cluster"),
        ("kopf.dev", "kopfpeerings", "Namespaced"),
    }


# --- the operator Deployment -----------------------------------------------------------------


def test_the_operator_runs_unprivileged_on_a_read_only_root(default: list[Object]) -> None:
    pod = one(default, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(default)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"memory": "512Mi"}


def test_the_operator_runs_lifelong_operator_with_probes_on_its_health_port(
    default: list[Object],
) -> None:
    container = operator_container(default)
    assert "command" not in container  # the image's entrypoint is `lifelong`
    assert container["args"] == ["operator"]
    assert container["image"] == "ghcr.io/lifelong-dev/lifelong:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert env(default)["POD_IP"] == "fieldRef:status.podIP"
    assert env(default)["POD_ID"] == "fieldRef:metadata.name"


def test_values_become_the_operator_configuration_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(
        **{
            "watchNamespaces": ["ml-a", "ml-b"],
            "rbac.scope": "namespaced",
            "replicaCount": 2,
            "stageImage.repository": "registry.example/lifelong-gpu",
            "stageImage.pullPolicy": "Always",
            "storage.uri": "s3://bucket/lifelong",
            "storage.claimName": "shared",
            "prometheus.url": "http://prometheus.monitoring:9090",
            "operator.reconcileInterval": 3,
            "operator.scrapeTimeout": 2.5,
            "operator.logFormat": "plain",
            "metrics.port": 9100,
            "health.port": 9101,
        }
    )
    values = {k: v for k, v in env(objects).items() if not str(v).startswith("fieldRef:")}
    for name in list(os.environ):
        if name.startswith("LIFELONG_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    config = OperatorConfig.from_env()
    assert config == OperatorConfig(
        image="registry.example/lifelong-gpu:0.1.0",
        image_pull_policy="Always",
        storage_uri="s3://bucket/lifelong",
        storage_claim="shared",
        storage_mount="/var/lib/lifelong",
        prometheus_url="http://prometheus.monitoring:9090",
        interval=3.0,
        metrics_port=9100,
        health_port=9101,
        log_format="plain",
        namespaces=("ml-a", "ml-b"),
        peering=RELEASE,
        scrape_timeout=2.5,
        run_as_user=65532,
    )
    assert values["LIFELONG_HEALTH_PORT"] == "9101"
    ports = {p["name"]: p["containerPort"] for p in operator_container(objects)["ports"]}
    assert ports == {"metrics": 9100, "health": 9101}


def test_the_chart_sets_only_variables_the_operator_reads(default: list[Object]) -> None:
    sources = "".join(p.read_text() for p in (ROOT / "operator").glob("*.py"))
    read = set(re.findall(r"LIFELONG_[A-Z_]+", sources))
    chart = {name for name in env(default) if name.startswith("LIFELONG_")}
    assert chart - read == set()
    optional = {"LIFELONG_PEERING", "LIFELONG_STORAGE_CLAIM", "LIFELONG_PROMETHEUS_URL"}
    # Left at the operator's defaults; a priority set in the template would tie every replica.
    defaults = {"LIFELONG_RESYNC_INTERVAL", "LIFELONG_STAGE_METRICS_PORT",
                "LIFELONG_PEERING_PRIORITY", "LIFELONG_PEERING_LIFETIME"}  # fmt: skip
    assert optional | defaults >= read - chart, (
        "the chart leaves operator knobs unset that only optional values fill"
    )


# --- toggles ---------------------------------------------------------------------------------


def test_a_service_monitor_is_made_only_when_asked_and_scrapes_the_metrics_port(
    default: list[Object],
) -> None:
    assert "ServiceMonitor" not in kinds(default)
    objects = render(
        **{
            "metrics.serviceMonitor.enabled": True,
            "metrics.serviceMonitor.labels": {"release": "kps"},
        }
    )
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"] == SELECTOR
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = one(objects, "Service")
    assert service["spec"]["selector"] == SELECTOR
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, and matchExpressions with In) picks `labels`."""
    exact = all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In"
        exact = exact and labels.get(expression["key"]) in expression["values"]
    return exact


def test_pod_monitors_select_the_serving_and_the_stage_pods_on_the_ports_they_open(
    default: list[Object],
) -> None:
    assert "PodMonitor" not in kinds(default)
    monitors = {
        m["metadata"]["name"].rsplit("-", 1)[-1]: m
        for m in of_kind(render(**{"metrics.podMonitor.enabled": True}), "PodMonitor")
    }
    assert set(monitors) == {"serving", "stages"}
    job = AutoDLJob.model_validate(
        yaml.safe_load((ROOT / "examples/digits-small.yaml").read_text())
    )
    body = {**job.model_dump(by_alias=True, exclude_none=True),
            "metadata": {"name": job.metadata.name, "namespace": "ml", "uid": "u1"}}  # fmt: skip
    config = OperatorConfig()
    serving = builders.deployment(job, body, Serve(f"{job.metadata.name}-v1"), config)
    pods = {"serve": serving["spec"]["template"]}
    for kind in (Stage.SEARCH, Stage.TRAIN, Stage.UPDATE):
        made = builders.batch_job(job, body, StartStage(kind, f"x-{kind.value}"), config)
        pods[kind.value] = made["spec"]["template"]
    for stage, pod in pods.items():
        labels = pod["metadata"]["labels"]
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        chosen = [n for n, m in monitors.items() if selects(m["spec"]["selector"], labels)]
        assert chosen == (["serving"] if stage == "serve" else ["stages"]), stage
        assert monitors[chosen[0]]["spec"]["podMetricsEndpoints"][0]["port"] in ports, stage
    assert monitors["serving"]["spec"]["namespaceSelector"] == {"any": True}
    watched = render(**{"metrics.podMonitor.enabled": True, "watchNamespaces": ["ml"]})
    for monitor in of_kind(watched, "PodMonitor"):
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    alone = render(**{"metrics.podMonitor.enabled": True, "metrics.podMonitor.stages": False})
    assert [m["metadata"]["name"] for m in of_kind(alone, "PodMonitor")] == [
        monitors["serving"]["metadata"]["name"]
    ]


def test_the_prometheus_rule_is_the_shipped_rules_file(default: list[Object]) -> None:
    assert "PrometheusRule" not in kinds(default)
    rule = one(render(**{"metrics.prometheusRule.enabled": True}), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "rules.yaml").read_text())


def test_the_dashboard_config_map_carries_the_sidecar_label_and_the_dashboard(
    default: list[Object],
) -> None:
    assert "ConfigMap" not in kinds(default)
    config_map = one(render(**{"grafana.dashboard.enabled": True}), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "dashboard.json").read_text())
    assert json.loads(config_map["data"]["lifelong-job.json"]) == shipped


def test_a_network_policy_admits_scrapers_and_probes_and_limits_egress_when_given(
    default: list[Object],
) -> None:
    open_to_all = one(default, "NetworkPolicy")["spec"]["ingress"]
    assert open_to_all == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}]},
        {"ports": [{"port": "health", "protocol": "TCP"}]},
    ]
    assert "NetworkPolicy" not in kinds(render(**{"networkPolicy.enabled": False}))
    scrapers = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    policy = one(
        render(**{"networkPolicy.enabled": True, "networkPolicy.metricsFrom": scrapers}),
        "NetworkPolicy",
    )
    assert policy["spec"]["podSelector"]["matchLabels"] == SELECTOR
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    metrics, health = policy["spec"]["ingress"]
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": scrapers}
    assert health == {"ports": [{"port": "health", "protocol": "TCP"}]}

    egress = [{"ports": [{"port": 53, "protocol": "UDP"}]}, {"ports": [{"port": 6443}]}]
    limited = one(
        render(**{"networkPolicy.enabled": True, "networkPolicy.egress": egress}), "NetworkPolicy"
    )
    assert limited["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert limited["spec"]["egress"] == egress


def test_one_replica_runs_alone_without_peering_or_disruption_budget(default: list[Object]) -> None:
    assert not {"PodDisruptionBudget", "ClusterKopfPeering", "KopfPeering"} & kinds(default)
    assert "LIFELONG_PEERING" not in env(default)
    assert one(default, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_two_replicas_elect_a_leader_and_keep_one_through_drains() -> None:
    objects = render(replicaCount=2)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    peering = one(objects, "ClusterKopfPeering")
    assert env(objects)["LIFELONG_PEERING"] == peering["metadata"]["name"]
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": SELECTOR}}
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100


def test_leader_election_can_be_asked_for_with_one_replica() -> None:
    objects = render(**{"leaderElection.enabled": True, "leaderElection.peeringName": "ops"})
    assert env(objects)["LIFELONG_PEERING"] == "ops"
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "ops"
    assert "PodDisruptionBudget" not in kinds(objects)


def test_namespaced_replicas_peer_in_each_watched_namespace() -> None:
    objects = render(CHART / "ci" / "namespaced-values.yaml", replicaCount=2)
    peerings = of_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["ml-team-a", "ml-team-b"]
    assert "ClusterKopfPeering" not in kinds(objects)
    assert env(objects)["LIFELONG_NAMESPACES"] == "ml-team-a,ml-team-b"


def test_rbac_and_the_service_account_can_be_left_to_the_cluster_admin() -> None:
    objects = render(
        **{"rbac.create": False, "serviceAccount.create": False, "serviceAccount.name": "ops"}
    )
    assert kinds(objects) == {"Deployment", "Service", "NetworkPolicy"}
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_an_image_digest_pins_operator_and_stage_images() -> None:
    digest = "sha256:" + "a" * 64
    objects = render(**{"image.digest": digest, "image.tag": "0.1.1"})
    image = f"ghcr.io/lifelong-dev/lifelong:0.1.1@{digest}"
    assert operator_container(objects)["image"] == image
    assert env(objects)["LIFELONG_IMAGE"] == image


# --- values and schema -----------------------------------------------------------------------


def _value_lines() -> dict[str, int]:
    """Dotted key path -> line index of every key in values.yaml."""
    paths: dict[str, int] = {}
    stack: list[tuple[int, str]] = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, match.group(2)))
        paths[".".join(k for _, k in stack)] = number
    return paths


def _schema_leaves(schema: dict[str, Any], prefix: str = "") -> list[str]:
    leaves = []
    for name, node in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if "properties" in node:
            leaves += _schema_leaves(node, f"{path}.")
        else:
            leaves.append(path)
    return leaves


def test_every_value_has_a_comment_and_a_schema_entry() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    paths = _value_lines()
    leaves = [p for p in _schema_leaves(schema) if p != "global"]
    missing = [p for p in leaves if p not in paths]
    assert missing == [], "in the schema but not in values.yaml"
    undocumented = [p for p in leaves if not lines[paths[p] - 1].lstrip().startswith("#")]
    assert undocumented == []
    unknown = [p for p in paths if not any(p == q or p.startswith(f"{q}.") for q in leaves)]
    unknown = [p for p in unknown if not any(q.startswith(f"{p}.") for q in leaves)]
    assert unknown == [], "in values.yaml but not in the schema"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rbac.scope": "everything"}, "/rbac/scope"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"operator.logFormat": "xml"}, "/operator/logFormat"),
        ({"storage.uri": "/var/lib/lifelong"}, "/storage/uri"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"image.digest": "latest"}, "/image/digest"),
        ({"imag": {"tag": "x"}}, "imag"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_the_schema_refuses_a_wrong_value_and_names_it(
    settings: dict[str, Any], message: str
) -> None:
    assert message in refused(**settings)


def test_namespaced_rbac_without_namespaces_is_refused_with_the_fix() -> None:
    error = refused(**{"rbac.scope": "namespaced"})
    assert "needs watchNamespaces" in error and "rbac.scope=cluster" in error
