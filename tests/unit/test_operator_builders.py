"""The operator's builders: the Kubernetes objects a job's stages become."""

from __future__ import annotations

from typing import Any

import pytest

from lifelong.api import AutoDLJob
from lifelong.engine.model import Serve, Stage, StartStage
from lifelong.operator import builders
from lifelong.operator.config import OperatorConfig

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig(image="registry.example/lifelong:1", storage_uri="s3://bucket/lifelong")
BODY = {"metadata": {"name": "digits", "namespace": "ml", "uid": "1234"}}


def make_job(**spec: Any) -> AutoDLJob:
    return AutoDLJob.model_validate({
        "apiVersion": "lifelong.dev/v1alpha1", "kind": "AutoDLJob",
        "metadata": {"name": "digits", "namespace": "ml"},
        "spec": {"data": {"train": {"uri": "builtin://digits"}}, **spec},
    })  # fmt: skip


def container(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = body["spec"]["template"]["spec"]["containers"][0]
    return result


def test_a_search_job_is_owned_labelled_and_named_after_the_run() -> None:
    job = builders.batch_job(make_job(), BODY, StartStage(Stage.SEARCH, "digits-search"), CONFIG)
    meta = job["metadata"]
    assert meta["name"] == "digits-search" and meta["namespace"] == "ml"
    assert meta["ownerReferences"][0]["uid"] == "1234"
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["lifelong.dev/job"] == "digits"
    assert meta["labels"]["app.kubernetes.io/component"] == "search"
    assert container(job)["args"] == [
        "trainer", "search", "--job", "/etc/lifelong/job.yaml",
        "--storage", "s3://bucket/lifelong/ml/digits",
    ]  # fmt: skip
    assert container(job)["image"] == "registry.example/lifelong:1"


def test_a_stage_that_exits_2_fails_its_job_at_once() -> None:
    job = builders.batch_job(make_job(), BODY, StartStage(Stage.TRAIN, "digits-train"), CONFIG)
    [rule] = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [2]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_pods_run_unprivileged_with_a_read_only_root() -> None:
    job = builders.batch_job(make_job(), BODY, StartStage(Stage.TRAIN, "digits-train"), CONFIG)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container(job)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container(job)["volumeMounts"]}
    assert {"/tmp", "/etc/lifelong"} <= mounts


AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
            ]
        }
    }
}


def test_resources_gpus_and_pod_overrides_come_from_the_spec() -> None:
    spec = {"training": {
        "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1},
        "template": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "affinity": AFFINITY,
            "priorityClassName": "batch-low",
            "serviceAccountName": "trainer",
            "queueName": "team-a",
            "env": [{"name": "EXTRA", "value": "1"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
    }}  # fmt: skip
    job = builders.batch_job(make_job(**spec), BODY, StartStage(Stage.TRAIN, "t"), CONFIG)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container(job)["resources"]["requests"] == {
        "cpu": "2",
        "memory": "4Gi",
        "nvidia.com/gpu": 1,
    }
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["affinity"] == AFFINITY
    assert pod["priorityClassName"] == "batch-low"
    assert pod["serviceAccountName"] == "trainer"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert {"name": "EXTRA", "value": "1"} in container(job)["env"]
    assert any(v["name"] == "data" for v in pod["volumes"])


def test_an_update_run_names_its_parent_candidate_and_trigger() -> None:
    action = StartStage(
        Stage.UPDATE, "digits-update-1", version="digits-v2", parent="digits-v1", trigger="drop"
    )
    args = container(builders.batch_job(make_job(), BODY, action, CONFIG))["args"]
    assert args[-6:] == ["--version", "digits-v1", "--name", "digits-v2", "--trigger", "drop"]


def test_the_serving_deployment_carries_the_canary_and_replays_the_stream() -> None:
    job = make_job(
        data={"train": {"uri": "builtin://digits"}, "stream": {"uri": "builtin://digits"}}
    )
    deployment = builders.deployment(job, BODY, Serve("digits-v1", "digits-v2", 10), CONFIG)
    args = container(deployment)["args"]
    assert args[args.index("--version") + 1] == "digits-v1"
    assert args[args.index("--canary") + 1 :][:3] == ["digits-v2", "--canary-weight", "10"]
    assert "--replay" in args
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["lifelong.dev/serving"] == "digits-v1|digits-v2|10"
    assert container(deployment)["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_suspending_scales_the_deployment_to_zero() -> None:
    deployment = builders.deployment(make_job(), BODY, Serve("digits-v1"), CONFIG, replicas=0)
    assert deployment["spec"]["replicas"] == 0


def test_a_model_version_keeps_only_the_fields_the_api_knows() -> None:
    spec = {
        "metric": "accuracy",
        "score": 0.97,
        "unknownField": 1,
        "created": "2026-01-01T00:00:00Z",
        "artifact": {"uri": "file:///x", "digest": "sha256:" + "0" * 64},
    }
    version = builders.model_version(make_job(), BODY, "digits-v1", spec, "train")
    assert "unknownField" not in version["spec"]
    assert version["spec"]["job"] == "digits" and version["spec"]["stage"] == "train"
    assert version["metadata"]["ownerReferences"][0]["name"] == "digits"


def test_the_job_manifest_for_the_stages_round_trips() -> None:
    text = builders.job_manifest(make_job(), "ml")
    from lifelong.manifests import parse_documents

    [document] = parse_documents(text)
    assert AutoDLJob.model_validate(document.data).metadata.namespace == "ml"


def test_stage_pods_serve_their_progress_metrics_where_prometheus_finds_them() -> None:
    config = OperatorConfig(stage_metrics_port=9110)
    job = builders.batch_job(make_job(), BODY, StartStage(Stage.SEARCH, "digits-search"), config)
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["LIFELONG_METRICS_PORT"] == "9110"
    assert {"name": "metrics", "containerPort": 9110, "protocol": "TCP"} in container(job)["ports"]
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9110"


def test_a_zero_stage_metrics_port_leaves_stage_pods_unscraped() -> None:
    config = OperatorConfig(stage_metrics_port=0)
    job = builders.batch_job(make_job(), BODY, StartStage(Stage.TRAIN, "digits-train"), config)
    assert "LIFELONG_METRICS_PORT" not in {e["name"] for e in container(job)["env"]}
    assert "ports" not in container(job)
    assert "prometheus.io/scrape" not in job["spec"]["template"]["metadata"]["annotations"]


def test_the_specs_variables_win_over_the_operators() -> None:
    template = {"env": [{"name": "LIFELONG_METRICS_PORT", "value": "9999"}]}
    job = make_job(training={"template": template})
    body = builders.batch_job(job, BODY, StartStage(Stage.SEARCH, "digits-search"), CONFIG)
    values = [
        e.get("value") for e in container(body)["env"] if e["name"] == "LIFELONG_METRICS_PORT"
    ]
    assert values[-1] == "9999"  # the last of two equal names is the one a container gets


def test_a_service_differs_only_in_what_the_spec_decides() -> None:
    desired = builders.service(make_job(), BODY)
    current = {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "clusterIP": "10.0.0.9",
            "selector": dict(desired["spec"]["selector"]),
            "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    assert not builders.service_differs(current, desired)

    moved = builders.service(make_job(serving={"port": 9000}), BODY)
    assert builders.service_differs(current, moved)
    replaced = builders.converged_service(current, moved)
    assert replaced["spec"]["ports"][0]["port"] == 9000
    assert replaced["spec"]["clusterIP"] == "10.0.0.9"
    assert replaced["metadata"]["resourceVersion"] == "7"
    assert replaced["metadata"]["ownerReferences"][0]["uid"] == "1234"
