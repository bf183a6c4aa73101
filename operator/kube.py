"""The operator's Kubernetes calls, behind a few plain methods with clear error classes.

The official client is synchronous; the reconciler calls these methods in a worker thread.
`Conflict` and `NotFound` are the two outcomes the reconciler handles on purpose (another writer
won; the object is gone); every other API error is `KubeError` and the reconcile is retried.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, ApiException

from lifelong.api import GROUP, VERSION

log = logging.getLogger(__name__)

Body = dict[str, Any]
JOBS = "autodljobs"
VERSIONS = "modelversions"
PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"
PEERINGS = "kopfpeerings"
CLUSTER_PEERINGS = "clusterkopfpeerings"
CONNECTIONS = 32
EVENT_SOURCE = "lifelong-operator"
"""The component that events name as their source (`kubectl describe` shows it as From)."""


class KubeError(RuntimeError):
    """An API call failed for a reason the reconciler does not handle on purpose."""


class NotFoundError(KubeError):
    """The object does not exist."""


class ConflictError(KubeError):
    """The object changed since it was read, or already exists."""


def _wrap(error: ApiException, what: str) -> KubeError:
    if error.status == 404:
        return NotFoundError(f"{what}: not found")
    if error.status == 409:
        return ConflictError(f"{what}: conflict ({error.reason})")
    return KubeError(f"{what}: {error.status} {error.reason}: {str(error.body)[:300]}")


def load_client() -> ApiClient:
    """An API client from the in-cluster service account, or else the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        load = kubernetes.config.load_kube_config
        load(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # Passes run in worker threads, each with a few reads at once: keep their connections.
    configuration.connection_pool_maxsize = CONNECTIONS
    return ApiClient(configuration)


class Kube:
    """The objects the operator reads and writes."""

    def __init__(self, client: ApiClient | None = None) -> None:
        self.client = client or load_client()
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.batch = kubernetes.client.BatchV1Api(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Body:
        """Call the API and return the answer's JSON as a dict. The client's typed models are
        skipped: building them and turning them back into dicts costs more than the call."""
        try:
            response = fn(*args, _preload_content=False, **kwargs)
        except ApiException as error:
            raise _wrap(error, what) from error
        answer: Body = json.loads(response.data) if response.data else {}
        return answer

    # --- jobs and versions ---------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> Body:
        return self._call(
            f"autodljob {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            JOBS,
            name,
        )

    def replace_job_status(self, body: Body) -> Body:
        meta = body["metadata"]
        return (self._call(
            f"status of autodljob {meta['namespace']}/{meta['name']}",
            self.custom.replace_namespaced_custom_object_status,
            GROUP, VERSION, meta["namespace"], JOBS, meta["name"], body))  # fmt: skip

    def list_versions(self, namespace: str, job: str) -> list[Body]:
        answer = self._call(f"modelversions of {namespace}/{job}",
                            self.custom.list_namespaced_custom_object,
                            GROUP, VERSION, namespace, VERSIONS,
                            label_selector=f"lifelong.dev/job={job}")  # fmt: skip
        items: list[Body] = answer.get("items", [])
        return items

    def create_version(self, body: Body) -> Body:
        meta = body["metadata"]
        return self._call(
            f"modelversion {meta['namespace']}/{meta['name']}",
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            meta["namespace"],
            VERSIONS,
            body,
        )

    def patch_version_status(self, namespace: str, name: str, status: Body) -> Body:
        return (self._call(f"status of modelversion {namespace}/{name}",
                                     self.custom.patch_namespaced_custom_object_status,
                                     GROUP, VERSION, namespace, VERSIONS, name,
                                     {"status": status}))  # fmt: skip

    # --- children ------------------------------------------------------------------------

    def suspend_batch_job(self, namespace: str, name: str, suspend: bool) -> Body:
        return self._call(
            f"job {namespace}/{name}",
            self.batch.patch_namespaced_job,
            name,
            namespace,
            {"spec": {"suspend": suspend}},
        )

    def list_batch_jobs(self, namespace: str, job: str) -> list[Body]:
        answer = self._call(
            f"jobs of {namespace}/{job}",
            self.batch.list_namespaced_job,
            namespace,
            label_selector=f"lifelong.dev/job={job}",
        )
        return list(answer.get("items") or [])

    def create_batch_job(self, body: Body) -> Body:
        meta = body["metadata"]
        return self._call(
            f"job {meta['namespace']}/{meta['name']}",
            self.batch.create_namespaced_job,
            meta["namespace"],
            body,
        )

    def list_pods(self, namespace: str, selector: str) -> list[Body]:
        answer = self._call(
            f"pods {selector} in {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        return list(answer.get("items") or [])

    def get_deployment(self, namespace: str, name: str) -> Body:
        return self._call(
            f"deployment {namespace}/{name}",
            self.apps.read_namespaced_deployment,
            name,
            namespace,
        )

    def create_deployment(self, body: Body) -> Body:
        meta = body["metadata"]
        return self._call(
            f"deployment {meta['namespace']}/{meta['name']}",
            self.apps.create_namespaced_deployment,
            meta["namespace"],
            body,
        )

    def replace_deployment(self, body: Body) -> Body:
        meta = body["metadata"]
        return self._call(
            f"deployment {meta['namespace']}/{meta['name']}",
            self.apps.replace_namespaced_deployment,
            meta["name"],
            meta["namespace"],
            body,
        )

    def get_service(self, namespace: str, name: str) -> Body:
        return self._call(
            f"service {namespace}/{name}", self.core.read_namespaced_service, name, namespace
        )

    def create_service(self, body: Body) -> Body:
        meta = body["metadata"]
        return self._call(
            f"service {meta['namespace']}/{meta['name']}",
            self.core.create_namespaced_service,
            meta["namespace"],
            body,
        )

    def replace_service(self, body: Body) -> Body:
        meta = body["metadata"]
        return self._call(
            f"service {meta['namespace']}/{meta['name']}",
            self.core.replace_namespaced_service,
            meta["name"],
            meta["namespace"],
            body,
        )

    def apply_config_map(self, body: Body) -> None:
        """Create the ConfigMap, or replace it when its content differs."""
        meta = body["metadata"]
        what = f"configmap {meta['namespace']}/{meta['name']}"
        try:
            current = self._call(
                what, self.core.read_namespaced_config_map, meta["name"], meta["namespace"]
            )
        except NotFoundError:
            self._call(what, self.core.create_namespaced_config_map, meta["namespace"], body)
            return
        if current.get("data") != body["data"]:
            body = {
                **body,
                "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            self._call(
                what, self.core.replace_namespaced_config_map, meta["name"], meta["namespace"], body
            )

    def create_event(self, job: Body, type: str, reason: str, message: str) -> None:
        """Post a core/v1 event about a job, as `kubectl describe` and `kubectl events` show."""
        meta = job["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": meta["namespace"], "generateName": f"{meta['name']}."},
            "involvedObject": {
                "apiVersion": job["apiVersion"],
                "kind": job["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": EVENT_SOURCE},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call(
            f"event {reason} on {meta['namespace']}/{meta['name']}",
            self.core.create_namespaced_event,
            meta["namespace"],
            body,
        )

    # --- leader election -----------------------------------------------------------------

    def get_peering(self, name: str, namespace: str | None) -> Body | None:
        """Kopf's peering object (cluster-wide, or in a namespace), or None when it is missing.

        Listed by name: leader election grants list and watch on peering objects, never get."""
        selector = f"metadata.name={name}"
        if namespace is None:
            answer = self._call(f"clusterkopfpeering {name}",
                                self.custom.list_cluster_custom_object,
                                PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS,
                                field_selector=selector)  # fmt: skip
        else:
            answer = self._call(f"kopfpeering {namespace}/{name}",
                                self.custom.list_namespaced_custom_object,
                                PEERING_GROUP, PEERING_VERSION, namespace, PEERINGS,
                                field_selector=selector)  # fmt: skip
        items: list[Body] = answer.get("items") or []
        return items[0] if items else None
