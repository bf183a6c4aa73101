"""The smallest useful Kopf operator, the baseline of `bench/operator_scale.py`: on the creation
of a `Widget` (group `bench.lifelong.dev`), it creates one batch Job owned by it. Kopf's defaults
otherwise: change handlers, which record progress in annotations and add a finalizer.

Run by the benchmark as `kopf run bench/minimal_kopf.py --standalone --namespace NS`.
"""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "bench.lifelong.dev", "v1", "widgets"


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
def load_client(memo: kopf.Memo, **_: Any) -> None:
    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    memo.batch = kubernetes.client.BatchV1Api()


@kopf.on.create(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def create_job(name: str, namespace: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "name": name, "uid": uid,
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    container = {"name": "work", "image": "busybox", "command": ["true"]}
    memo.batch.create_namespaced_job(namespace, {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{name}-work", "ownerReferences": [owner],
                     "labels": {"bench.lifelong.dev/widget": name}},
        "spec": {"backoffLimit": 0,
                 "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    })  # fmt: skip
