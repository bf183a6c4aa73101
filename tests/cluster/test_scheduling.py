"""The real scheduler places pods by the resources that node agents advertise."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cluster import Cluster
from podspecs import python_pod

pytestmark = pytest.mark.cluster

GPU_NODE = "gpu-node"


def scheduled_condition(cluster: Cluster, namespace: str, name: str) -> Any:
    pod = cluster.core.read_namespaced_pod(name, namespace)
    conditions = pod.status.conditions or []
    return next((c for c in conditions if c.type == "PodScheduled"), None)


def test_a_pod_that_needs_a_gpu_waits_unschedulable_until_a_node_offers_one(
    cluster: Cluster, namespace: str
) -> None:
    code = "import json, os; print(json.dumps({'gpus': os.environ.get('NVIDIA_VISIBLE_DEVICES')}))"
    resources = {"limits": {"nvidia.com/gpu": 1}}
    cluster.apply(python_pod("trainer", code, container={"resources": resources}), namespace)

    condition = cluster.wait_for(
        lambda: scheduled_condition(cluster, namespace, "trainer"), timeout=30
    )
    assert (condition.status, condition.reason) == ("False", "Unschedulable")
    assert "nvidia.com/gpu" in condition.message
    assert cluster.core.read_namespaced_pod("trainer", namespace).status.phase == "Pending"

    cluster.start_node(GPU_NODE, gpus=1)
    try:
        done = cluster.wait_for_pod(namespace, "trainer")
        assert done.spec.node_name == GPU_NODE
        assert done.status.phase == "Succeeded"
        assert json.loads(cluster.pod_log(namespace, "trainer")) == {"gpus": "0"}
    finally:
        cluster.stop_node(GPU_NODE)
