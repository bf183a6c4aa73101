"""Kubernetes objects for a job's stages, built as plain dicts from the job and an action.

Pure functions: the same job and action always give the same object, with deterministic names,
owner references to the job, the standard labels, the spec's resources and pod overrides, and a
restrictive security context. The reconciler creates or patches what these return.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from lifelong.api import API_VERSION, AutoDLJob, ModelVersionSpec, PodTemplate, Resources
from lifelong.engine import names
from lifelong.engine.model import Serve, StartStage
from lifelong.operator.config import OperatorConfig

Body = dict[str, Any]

JOB_LABEL = "lifelong.dev/job"
STAGE_LABEL = "lifelong.dev/stage"
SERVING_ANNOTATION = "lifelong.dev/serving"
SPEC_HASH_ANNOTATION = "lifelong.dev/spec-hash"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SPEC_MOUNT = "/etc/lifelong"
JOB_FILE = f"{SPEC_MOUNT}/job.yaml"
CONTAINER = "stage"
STAGE_METRICS_ENV = "LIFELONG_METRICS_PORT"
"""The trainers' knob (trainers/knobs.py) for the port of a stage's progress metrics."""
EXIT_PERMANENT = 2
JOB_BACKOFF_LIMIT = 1
"""Pod retries inside one batch Job; the engine retries whole runs with backoff on top."""


def labels(job: AutoDLJob, stage: str) -> dict[str, str]:
    """The labels of every object a job owns."""
    return {
        "app.kubernetes.io/name": "lifelong",
        "app.kubernetes.io/instance": job.metadata.name,
        "app.kubernetes.io/component": stage,
        "app.kubernetes.io/part-of": "lifelong",
        "app.kubernetes.io/managed-by": "lifelong-operator",
        JOB_LABEL: job.metadata.name,
        STAGE_LABEL: stage,
    }


def owner(job_body: Body) -> dict[str, Any]:
    """An owner reference to the job, so that deleting the job deletes what it owns."""
    meta = job_body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "AutoDLJob",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(job: AutoDLJob, job_body: Body, name: str, stage: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job_body["metadata"]["namespace"],
        "labels": labels(job, stage),
        "ownerReferences": [owner(job_body)],
    }


def storage_uri(job: AutoDLJob, namespace: str, config: OperatorConfig) -> str:
    """The job's root in the artifact store."""
    root = job.spec.storage.uri if job.spec.storage else config.storage_uri
    return f"{root.rstrip('/')}/{namespace}/{job.metadata.name}"


def job_manifest(job: AutoDLJob, namespace: str) -> str:
    """The job as its stages read it (mounted at /etc/lifelong/job.yaml)."""
    document = {
        "apiVersion": API_VERSION,
        "kind": "AutoDLJob",
        "metadata": {"name": job.metadata.name, "namespace": namespace},
        "spec": job.spec.to_wire(),
    }
    return yaml.safe_dump(document, sort_keys=True)


def spec_hash(job: AutoDLJob) -> str:
    text = json.dumps(job.spec.to_wire(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spec_config_map(job: AutoDLJob, job_body: Body) -> Body:
    """The ConfigMap holding the job manifest for the stage pods."""
    namespace = job_body["metadata"]["namespace"]
    meta = _meta(job, job_body, f"{job.metadata.name}-spec", "config")
    meta["annotations"] = {SPEC_HASH_ANNOTATION: spec_hash(job)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {"job.yaml": job_manifest(job, namespace)},
    }


# --- pods ------------------------------------------------------------------------------------


def _resources(resources: Resources) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    limits: dict[str, Any] = {"memory": resources.memory}
    if resources.gpu:
        limits["nvidia.com/gpu"] = resources.gpu
        requests["nvidia.com/gpu"] = resources.gpu
    return {"requests": requests, "limits": limits}


def scrape_annotations(port: int) -> dict[str, str]:
    """The annotations by which Prometheus' pod discovery finds a pod's metrics."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def _env(template: PodTemplate, extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    field_env = [
        ("POD_IP", "status.podIP"),
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ]
    env: list[dict[str, Any]] = [
        {"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}} for n, p in field_env
    ]
    env += [
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *extra,
    ]
    # The spec's variables come last, so that they win over the operator's.
    env += [{"name": e.name, "value": e.value} for e in template.env]
    return env


def _security(config: OperatorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {
        "runAsNonRoot": True,
        "runAsUser": config.run_as_user,
        "runAsGroup": config.run_as_user,
        "fsGroup": config.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def _volumes(
    job: AutoDLJob, config: OperatorConfig, template: PodTemplate, shared_memory: bool
) -> tuple[list[Body], list[Body]]:
    volumes: list[Body] = [
        {"name": "spec", "configMap": {"name": f"{job.metadata.name}-spec"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[Body] = [
        {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    if shared_memory:  # Ray's object store lives in /dev/shm
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if config.storage_claim:
        volumes.append(
            {"name": "store", "persistentVolumeClaim": {"claimName": config.storage_claim}}
        )
        mounts.append({"name": "store", "mountPath": config.storage_mount})
    volumes += template.volumes
    mounts += template.volume_mounts
    return volumes, mounts


def pod_template(
    job: AutoDLJob,
    job_body: Body,
    config: OperatorConfig,
    *,
    stage: str,
    args: list[str],
    template: PodTemplate,
    resources: Resources,
    restart: str,
    ports: list[Body] | None = None,
    probes: dict[str, Body] | None = None,
    annotations: dict[str, str] | None = None,
    env: list[Body] | None = None,
) -> Body:
    """The pod template of a stage, with the spec's overrides merged in."""
    pod_security, container_security = _security(config)
    volumes, mounts = _volumes(job, config, template, shared_memory=stage != "serve")
    container: Body = {
        "name": CONTAINER,
        "image": job.spec.training.image or config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "env": _env(template, env or []),
        "resources": _resources(resources),
        "securityContext": container_security,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if ports:
        container["ports"] = ports
    container.update(probes or {})
    spec: Body = {
        "restartPolicy": restart,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": template.service_account_name is not None,
    }
    optional = {
        "serviceAccountName": template.service_account_name,
        "priorityClassName": template.priority_class_name,
        "nodeSelector": template.node_selector or None,
        "tolerations": template.tolerations or None,
        "affinity": template.affinity,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    pod_labels = {**template.labels, **labels(job, stage)}
    return {
        "metadata": {
            "labels": pod_labels,
            "annotations": {**template.annotations, **(annotations or {})},
        },
        "spec": spec,
    }


# --- batch stages ----------------------------------------------------------------------------


def stage_args(action: StartStage, store: str) -> list[str]:
    """The `lifelong trainer` arguments of a batch stage run."""
    args = ["trainer", action.stage.value, "--job", JOB_FILE, "--storage", store]
    if action.stage.value == "update":
        args += ["--version", action.parent or "", "--name", action.version or ""]
    elif action.version:
        args += ["--name", action.version]
    if action.trigger:
        args += ["--trigger", action.trigger]
    return args


def batch_job(job: AutoDLJob, job_body: Body, action: StartStage, config: OperatorConfig) -> Body:
    """A `batch/v1` Job running one search, train or update stage run."""
    namespace = job_body["metadata"]["namespace"]
    training = job.spec.training
    stage = action.stage.value
    meta = _meta(job, job_body, action.name, stage)
    meta["annotations"] = {SPEC_HASH_ANNOTATION: spec_hash(job)}
    if training.template.queue_name:
        meta["labels"][QUEUE_LABEL] = training.template.queue_name
    # Progress metrics (trials, best objective, epochs) on a port Prometheus finds by annotation.
    port = config.stage_metrics_port
    template = pod_template(
        job, job_body, config,
        stage=stage,
        args=stage_args(action, storage_uri(job, namespace, config)),
        template=training.template,
        resources=training.resources,
        restart="Never",
        ports=[{"name": "metrics", "containerPort": port, "protocol": "TCP"}] if port else None,
        annotations=scrape_annotations(port) if port else None,
        env=[{"name": STAGE_METRICS_ENV, "value": str(port)}] if port else None,
    )  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": JOB_BACKOFF_LIMIT,
            # A stage that exits 2 says its spec can never work: fail at once, no pod retry.
            "podFailurePolicy": {"rules": [{
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                "values": [EXIT_PERMANENT]},
            }]},
            "template": template,
        },
    }  # fmt: skip


# --- serving ---------------------------------------------------------------------------------


def serving_key(serve: Serve | None) -> str:
    """A short text of a serving state, kept in an annotation to compare desired and actual."""
    if serve is None:
        return ""
    if serve.canary:
        return f"{serve.version}|{serve.canary}|{serve.canary_weight}"
    return serve.version


def deployment(
    job: AutoDLJob,
    job_body: Body,
    serve: Serve,
    config: OperatorConfig,
    replicas: int | None = None,
) -> Body:
    """The serving Deployment: it serves `serve.version` (and a canary) and exposes metrics."""
    namespace = job_body["metadata"]["namespace"]
    serving = job.spec.serving
    port = serving.port
    args = ["trainer", "serve", "--job", JOB_FILE,
            "--storage", storage_uri(job, namespace, config),
            "--version", serve.version, "--port", str(port)]  # fmt: skip
    if serve.canary:
        args += ["--canary", serve.canary, "--canary-weight", str(serve.canary_weight)]
    if job.spec.data.stream is not None:
        args.append("--replay")
    annotations = {
        SERVING_ANNOTATION: serving_key(serve),
        SPEC_HASH_ANNOTATION: spec_hash(job),
        **scrape_annotations(port),
    }
    probe = {
        "httpGet": {"path": "/readyz", "port": "http"},
        "periodSeconds": 2,
        "failureThreshold": 3,
    }
    live = {
        "httpGet": {"path": "/healthz", "port": "http"},
        "periodSeconds": 10,
        "failureThreshold": 6,
        "initialDelaySeconds": 30,
    }
    template = pod_template(
        job, job_body, config,
        stage="serve",
        args=args,
        template=serving.template,
        resources=serving.resources,
        restart="Always",
        ports=[{"name": "http", "containerPort": port, "protocol": "TCP"}],
        probes={"readinessProbe": probe, "livenessProbe": live},
        annotations=annotations,
    )  # fmt: skip
    selector = {JOB_LABEL: job.metadata.name, STAGE_LABEL: "serve"}
    meta = _meta(job, job_body, names.serve(job.metadata.name), "serve")
    meta["annotations"] = {SERVING_ANNOTATION: serving_key(serve)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": serve.replicas if replicas is None else replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": template,
        },
    }  # fmt: skip


def service(job: AutoDLJob, job_body: Body) -> Body:
    """The Service in front of the serving pods."""
    port = job.spec.serving.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(job, job_body, names.serve(job.metadata.name), "serve"),
        "spec": {
            "selector": {JOB_LABEL: job.metadata.name, STAGE_LABEL: "serve"},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def service_differs(current: Body, desired: Body) -> bool:
    """Whether a Service's ports or selector differ from the desired ones (fields the API server
    fills in, such as the cluster IP or a port's default protocol, do not count)."""

    def ports(service: Body) -> list[tuple[Any, ...]]:
        return sorted(
            (p.get("name"), p.get("port"), str(p.get("targetPort", p.get("port"))),
             p.get("protocol", "TCP"))
            for p in (service.get("spec") or {}).get("ports") or []
        )  # fmt: skip

    selector = (current.get("spec") or {}).get("selector") or {}
    return ports(current) != ports(desired) or selector != desired["spec"]["selector"]


def converged_service(current: Body, desired: Body) -> Body:
    """The current Service with the desired ports, selector and labels: what the API server
    assigned (cluster IP, families) is kept, and the resourceVersion guards the replace."""
    meta = {**desired["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
    spec = {**current["spec"], "ports": desired["spec"]["ports"],
            "selector": desired["spec"]["selector"]}  # fmt: skip
    return {**desired, "metadata": meta, "spec": spec}


# --- model versions --------------------------------------------------------------------------

_SPEC_FIELDS = {f.alias or n for n, f in ModelVersionSpec.model_fields.items()}


def model_version(
    job: AutoDLJob, job_body: Body, name: str, spec: dict[str, Any], stage: str
) -> Body:
    """A `ModelVersion` from a stage's result; fields the API does not know are dropped."""
    known = {k: v for k, v in spec.items() if k in _SPEC_FIELDS}
    known.setdefault("job", job.metadata.name)
    known.setdefault("stage", stage)
    known.setdefault("metric", job.spec.task.metric or "accuracy")
    known.setdefault("score", 0.0)
    validated = ModelVersionSpec.model_validate(known)
    meta = _meta(job, job_body, name, "version")
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": meta,
        "spec": validated.to_wire(),
    }
