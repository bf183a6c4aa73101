"""The test cluster that integration and end-to-end tests use: a real control plane, node
agents that run pods as local processes, and helpers to drive them.

`tests/conftest.py` starts one `Cluster` per test session as the `cluster` fixture:

    def test_a_job_completes(cluster: Cluster, namespace: str) -> None:
        cluster.apply(JOB_YAML, namespace=namespace)
        cluster.wait_for(lambda: job_complete(cluster, namespace), timeout=60)
        assert "done" in cluster.pod_log(namespace, pod_name)

Everything listens on loopback only. See `docs/testing.md` for what is real and what is not.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import yaml
from controlplane import ControlPlane
from nodeagent import NodeAgentProcess

T = TypeVar("T")

DEFAULT_NODE = "node-1"


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message holds the command, its output and its errors."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"kubectl {' '.join(result.args[1:])} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


class Cluster:
    """A running test cluster. Build it with `Cluster.start(folder)`; end it with `close()`.

    Attributes: `control_plane`, `kubeconfig` (admin), `server` (API URL), `api` (a ready
    `kubernetes.client.ApiClient` for the admin), `nodes` (name -> NodeAgentProcess) and `node`
    (the default node, `node-1`, which has no GPU).
    """

    def __init__(self, workdir: Path, control_plane: ControlPlane) -> None:
        self.workdir = workdir
        self.control_plane = control_plane
        self.kubeconfig = control_plane.admin_kubeconfig
        self.server = control_plane.server
        config: Any = kubernetes.config  # untyped
        self.api: Any = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.nodes: dict[str, NodeAgentProcess] = {}
        self._octets = random.sample(range(16, 250), 60)

    @classmethod
    def start(cls, workdir: Path, **node_options: Any) -> Cluster:
        """Start the control plane and the default node; return when pods can be scheduled."""
        control_plane = ControlPlane(workdir / "control-plane")
        control_plane.start()
        cluster = cls(workdir, control_plane)
        try:
            cluster.start_node(DEFAULT_NODE, **node_options)
        except BaseException:
            cluster.close()
            raise
        return cluster

    @property
    def node(self) -> NodeAgentProcess:
        return self.nodes[DEFAULT_NODE]

    def close(self) -> None:
        """Stop every node agent (and so every pod process), then the control plane."""
        for agent in list(self.nodes.values()):
            agent.stop()
        self.nodes.clear()
        self.api.close()
        self.control_plane.stop()

    # -- nodes ----------------------------------------------------------------------------

    def start_node(
        self,
        name: str,
        *,
        cpu: str = "32",
        memory: str = "64Gi",
        pods: int = 110,
        gpus: int = 0,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> NodeAgentProcess:
        """Start a node agent for a new Node and wait until the scheduler may use it.

        `taints` are `KEY[=VALUE]:EFFECT` strings. Each node gets its own /16 of loopback
        addresses for its pods.
        """
        if name in self.nodes:
            raise ValueError(f"node {name!r} is already running")
        serving = self.control_plane.node_serving_certificate(name)
        agent = NodeAgentProcess.start(
            kubeconfig=self.control_plane.node_kubeconfig(name),
            name=name,
            root=self.workdir / "nodes" / name,
            pod_cidr=f"127.{self._octets.pop()}.0.0/16",
            cpu=cpu,
            memory=memory,
            pods=pods,
            gpus=gpus,
            labels=labels,
            taints=taints,
            extra_args=[
                # Pods that ignore SIGTERM would otherwise hold up the end of the session.
                "--shutdown-grace=2",
                # Serve container logs, so that `kubectl logs` works.
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.control_plane.ca_cert}",
            ],
        )
        self.nodes[name] = agent
        self.wait_for(
            lambda: self._schedulable(name),
            timeout=timeout,
            message=f"node {name} to be Ready without the not-ready taint",
        )
        return agent

    def stop_node(self, name: str, delete: bool = True) -> None:
        """Stop a node agent and its pods; delete its Node object unless told not to."""
        self.nodes.pop(name).stop()
        if delete:
            self.core.delete_node(name)

    def _schedulable(self, name: str) -> bool:
        node = self.core.read_node(name)
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        taints = [t.key for t in node.spec.taints or []]
        return ready and "node.kubernetes.io/not-ready" not in taints

    # -- API helpers ----------------------------------------------------------------------

    # The typed kubernetes client marks nearly every field Optional; tests read what they know
    # is there, so these accessors hand out the API groups untyped.

    @property
    def core(self) -> Any:
        """`kubernetes.client.CoreV1Api` on the admin client."""
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        """`kubernetes.client.AppsV1Api` on the admin client."""
        return kubernetes.client.AppsV1Api(self.api)

    @property
    def batch(self) -> Any:
        """`kubernetes.client.BatchV1Api` on the admin client."""
        return kubernetes.client.BatchV1Api(self.api)

    @property
    def rbac(self) -> Any:
        """`kubernetes.client.RbacAuthorizationV1Api` on the admin client."""
        return kubernetes.client.RbacAuthorizationV1Api(self.api)

    @property
    def custom(self) -> Any:
        """`kubernetes.client.CustomObjectsApi` on the admin client (for custom resources)."""
        return kubernetes.client.CustomObjectsApi(self.api)

    def client(self, api_class: type[Any]) -> Any:
        """Any other API group on the admin client, e.g. `cluster.client(DiscoveryV1Api)`."""
        return api_class(self.api)

    def kubectl(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster (as admin unless `kubeconfig` is given).

        With `check` (the default), a non-zero exit raises KubectlError with the output.
        """
        binary = self.control_plane.binaries["kubectl"]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}
        result = subprocess.run(
            [str(binary), *map(str, args)],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def apply(
        self, manifest: str | Mapping[str, Any] | Iterable[Mapping[str, Any]], namespace: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl apply` a YAML text, one object or a list of objects."""
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, Mapping):
            text = yaml.safe_dump(dict(manifest))
        else:
            text = yaml.safe_dump_all([dict(obj) for obj in manifest])
        args = ["apply", "-f", "-"] + (["--namespace", namespace] if namespace else [])
        return self.kubectl(*args, input=text)

    def create_namespace(self, prefix: str = "test") -> str:
        """Create a namespace named after `prefix` plus a random suffix, and wait until pods can
        run in it (its `default` ServiceAccount and `kube-root-ca.crt` ConfigMap exist)."""
        base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:50] or "test"
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name}})

        def ready() -> bool:
            accounts = self.core.list_namespaced_service_account(name).items
            maps = self.core.list_namespaced_config_map(name).items
            return any(a.metadata.name == "default" for a in accounts) and any(
                m.metadata.name == "kube-root-ca.crt" for m in maps
            )

        self.wait_for(ready, timeout=30, message=f"namespace {name} to get its service account")
        return name

    def delete_namespace(self, name: str) -> None:
        """Ask for the namespace's deletion (the namespace controller finishes it later)."""
        self.core.delete_namespace(name)

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 30.0,
        interval: float = 0.25,
        message: str = "",
    ) -> T:
        """Call `predicate` until it returns something truthy, and return that.

        On timeout, raise TimeoutError with `message`, the last value and the tail of each node
        agent's log.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                what = message or getattr(predicate, "__name__", "condition")
                raise TimeoutError(
                    f"timed out after {timeout:.0f}s waiting for {what}; last value: {value!r}\n"
                    f"{self.diagnose(lines=15, control_plane=False)}"
                )
            time.sleep(interval)

    # -- pods and logs --------------------------------------------------------------------

    def wait_for_pod(
        self,
        namespace: str,
        name: str,
        phases: Sequence[str] = ("Succeeded", "Failed"),
        timeout: float = 60.0,
    ) -> Any:
        """Wait until the pod exists and is in one of `phases`; return it (a `V1Pod`)."""

        def in_phase() -> Any:
            pods = self.core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}")
            pod = pods.items[0] if pods.items else None
            return pod if pod is not None and pod.status.phase in phases else None

        return self.wait_for(in_phase, timeout, message=f"pod {namespace}/{name} to be {phases}")

    def pod_log(
        self, namespace: str, pod: str, container: str | None = None, previous: bool = False
    ) -> str:
        """A container's stdout and stderr, read from the node agent's files (what
        `kubectl logs` shows, without a round trip). `previous` reads the run before the
        latest restart."""
        for agent in self.nodes.values():
            if next(agent.pod_directories(namespace, pod), None) is not None:
                return agent.pod_log(namespace, pod, container, previous)
        return ""

    def pod_log_path(self, namespace: str, pod: str, container: str | None = None) -> Path | None:
        """The file behind `pod_log`, or None if no node ran that pod."""
        for agent in self.nodes.values():
            path = agent.log_file(namespace, pod, container)
            if path is not None:
                return path
        return None

    def diagnose(self, lines: int = 30, control_plane: bool = True) -> str:
        """The tails of the node agents' logs and, by default, the control plane's."""
        parts = [
            f"--- node agent {name} ({agent.log_path}):\n{agent.tail(lines)}"
            for name, agent in self.nodes.items()
        ]
        if control_plane:
            parts.append(self.control_plane.diagnose(lines))
        return "\n".join(parts)
