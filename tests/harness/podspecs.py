"""Small builders of Kubernetes manifests for cluster tests: a pod or Job whose container runs
a snippet of Python. They return plain dictionaries for `Cluster.apply` or the API client.

    cluster.apply(python_pod("hello", "print('hi')"), namespace=namespace)
"""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]


def python_container(name: str, code: str, **fields: Any) -> Manifest:
    """A container that runs `python -c CODE`; `fields` are added to it (env, ports, ...)."""
    return {"name": name, "image": "python", "command": ["python", "-c", code], **fields}


def python_pod(
    name: str,
    code: str,
    *,
    restart_policy: str = "Never",
    labels: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> Manifest:
    """A pod with one container `main` running `code`; `spec` fields go into the pod spec and
    `container` fields into the container."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [python_container("main", code, **(container or {}))],
            **spec,
        },
    }


def python_job(name: str, code: str, *, backoff_limit: int = 0, **spec: Any) -> Manifest:
    """A `batch/v1` Job whose single pod runs `code` (restartPolicy Never)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [python_container("main", code)],
                }
            },
            **spec,
        },
    }
