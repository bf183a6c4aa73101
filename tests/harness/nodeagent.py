"""A test-only node agent: a small kubelet that runs each pod's containers as local processes.

    python tests/harness/nodeagent.py --kubeconfig node.kubeconfig --node worker-1 \
        --root /tmp/worker-1 --cpu 8 --memory 16Gi --gpus 1 --pod-cidr 127.45.0.0/16

It registers the Node (capacity from its arguments, `nvidia.com/gpu` included), keeps it Ready
with Lease heartbeats in `kube-node-lease` and status updates, and watches the pods bound to it.
Each pod gets its own loopback address from `--pod-cidr` and a `PodWorker` (see `pods.py`)
that runs its containers in private namespaces (see `sandbox.py`) and reports its status. It
authenticates as `system:node:NAME`, so the API server's Node authoriser and NodeRestriction
admission treat it exactly like a kubelet. Given a serving certificate it also serves container
logs for `kubectl logs` (see `logserver.py`).

On SIGTERM or SIGINT it stops every container (SIGTERM, then SIGKILL after `--shutdown-grace`)
and exits; if it is killed outright, the kernel kills the containers (see `sandbox.py`).

Tests start it through `NodeAgentProcess` (bottom of this file) and the cluster fixture.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import logging
import platform
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubeapi import JSON, ApiError, Credentials, KubeApi
from logserver import LogServer, LogSource
from podenv import extended_resource_count
from pods import NodeContext, PodWorker, now, pod_directory
from processes import Process, tail

logger = logging.getLogger("nodeagent")

GPU_RESOURCE = "nvidia.com/gpu"
READY_FILE = "agent-ready"
LEASE_NAMESPACE = "kube-node-lease"
TERMINAL_PHASES = ("Succeeded", "Failed")


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old: list the pods again."""


@dataclass
class AgentOptions:
    """Everything the agent is told on its command line."""

    kubeconfig: Path
    node: str
    root: Path
    cpu: str = "32"
    memory: str = "64Gi"
    pods: int = 110
    gpus: int = 0
    pod_cidr: str = "127.1.0.0/16"
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[JSON] = field(default_factory=list)
    venv_bin: Path = Path(sys.executable).parent
    lease_seconds: int = 40
    status_seconds: float = 30.0
    restart_backoff: float = 1.0
    max_restart_backoff: float = 30.0
    shutdown_grace: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None


class AddressPool:
    """Hands out pod IPs from a loopback network, never 127.0.0.1 and never twice.

    Starting at a random offset makes a clash with another agent on the same machine (another
    test session) unlikely even when both are given the same network.
    """

    def __init__(self, cidr: str) -> None:
        network = ipaddress.ip_network(cidr)
        if not network.is_loopback:
            raise ValueError(f"--pod-cidr {cidr} is not inside 127.0.0.0/8; pods must stay local")
        self._hosts = [
            str(ip)
            for ip in network.hosts()
            if str(ip) != "127.0.0.1" and ip.packed[3] not in (0, 255)
        ]
        self._next = random.randrange(len(self._hosts))
        self._used: set[str] = set()

    def __contains__(self, address: str) -> bool:
        return address in self._hosts

    def take(self, address: str) -> None:
        self._used.add(address)

    def allocate(self) -> str:
        for _ in range(len(self._hosts)):
            address = self._hosts[self._next % len(self._hosts)]
            self._next += 1
            if address not in self._used:
                self._used.add(address)
                return address
        raise RuntimeError("the pod network is exhausted; give the agent a larger --pod-cidr")


class GpuPool:
    """Which of the node's (pretend) GPU indices are held by running pods."""

    def __init__(self, count: int) -> None:
        self.free = list(range(count))

    def allocate(self, count: int) -> list[int]:
        taken, self.free = self.free[:count], self.free[count:]
        return taken

    def release(self, gpus: list[int]) -> None:
        self.free = sorted(set(self.free) | set(gpus))


def micro_now() -> str:
    """The current time in the MicroTime format of Lease.spec.renewTime."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    """The agent's event loop: node registration, heartbeats, the pod watch and pod workers."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.name = options.node
        self.credentials = Credentials.from_kubeconfig(options.kubeconfig)
        server = urlsplit(self.credentials.server)
        self.apiserver = (server.hostname or "127.0.0.1", server.port or 443)
        self.addresses = AddressPool(options.pod_cidr)
        self.gpu_pool = GpuPool(options.gpus)
        self.workers: dict[str, PodWorker] = {}
        self._deleting: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._node_uid = ""
        self._kubelet_version = "v0.0.0"
        self._ready_since = now()
        self._boot_id = str(uuid.uuid4())
        self._log_port = 0

    @property
    def capacity(self) -> dict[str, str]:
        capacity = {
            "cpu": self.options.cpu,
            "memory": self.options.memory,
            "pods": str(self.options.pods),
            "ephemeral-storage": "100Gi",
        }
        if self.options.gpus:
            capacity[GPU_RESOURCE] = str(self.options.gpus)
        return capacity

    async def run(self) -> None:
        """Register the node and serve pods until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        self.options.root.mkdir(parents=True, exist_ok=True)
        log_server = self._log_server()
        if log_server is not None:
            self._log_port = await log_server.start()
        async with KubeApi(self.credentials) as self.api:
            self.context = self._node_context()
            await self._register()
            await self._renew_lease()
            (self.options.root / READY_FILE).write_text(self.name)
            logger.info("Node %s is registered and ready.", self.name)
            loops = [
                asyncio.create_task(self._lease_loop()),
                asyncio.create_task(self._status_loop()),
                asyncio.create_task(self._pod_loop()),
            ]
            await self._stop.wait()
            logger.info("Stopping: ending %d pods.", len(self.workers))
            for task in loops:
                task.cancel()
            grace = self.options.shutdown_grace
            await asyncio.gather(*(w.shutdown(grace) for w in self.workers.values()))
        if log_server is not None:
            await log_server.stop()

    def _log_server(self) -> LogServer | None:
        """The container-log server, when the agent was given certificates for it."""
        cert, key, ca = self.options.tls_cert, self.options.tls_key, self.options.client_ca
        if cert is None or key is None or ca is None:
            return None
        return LogServer(self._find_log, cert, key, ca)

    def _find_log(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> LogSource | str:
        """The log file `kubectl logs` asks for, or why there is none (kubelet wording)."""
        workers = [w for w in self.workers.values() if (w.namespace, w.name) == (namespace, pod)]
        if not workers:
            return f'pod "{pod}" in namespace "{namespace}" is not on node {self.name}'
        worker = workers[-1]
        found = worker.container(container)
        if found is None:
            return f'container "{container}" in pod "{pod}" is not valid'
        restart = found.restart_count - (1 if previous else 0)
        path = worker.log_path(found, restart)
        if restart < 0 or not path.exists():
            what = "previous terminated container" if previous else "container"
            return f'{what} "{container}" in pod "{pod}" not found or not started'
        current = found

        def growing() -> bool:
            process = current.process
            running = process is not None and process.returncode is None
            return running and current.restart_count == restart

        return LogSource(path, growing)

    def _node_context(self) -> NodeContext:
        return NodeContext(
            api=self.api,
            node_name=self.name,
            host_ip="127.0.0.1",
            root=self.options.root,
            venv_bin=self.options.venv_bin,
            apiserver_host=self.apiserver[0],
            apiserver_port=self.apiserver[1],
            allocatable=dict(self.capacity),
            post_event=self._post_event,
            release_gpus=self.gpu_pool.release,
            restart_backoff=self.options.restart_backoff,
            max_restart_backoff=self.options.max_restart_backoff,
        )

    # -- the Node -------------------------------------------------------------------------

    async def _register(self) -> None:
        version = await self.api.get("/version")
        self._kubelet_version = str(version.get("gitVersion", "v0.0.0"))
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **self.options.labels,
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": self.options.taints} if self.options.taints else {},
        }
        try:
            node = await self.api.create("/api/v1/nodes", body)
        except ApiError as error:
            if error.status != 409:
                raise
            patch = {"metadata": {"labels": labels}}
            node = await self.api.merge_patch(f"/api/v1/nodes/{self.name}", patch)
        self._node_uid = node["metadata"]["uid"]
        await self._post_status()

    def _node_status(self) -> JSON:
        heartbeat = now()

        def condition(kind: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": self._ready_since,
            }

        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no pressure"),
                condition("Ready", "True", "KubeletReady", "the test node agent is running pods"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self._log_port}},
            "nodeInfo": {
                "machineID": self._boot_id.replace("-", ""),
                "systemUUID": self._boot_id,
                "bootID": self._boot_id,
                "kernelVersion": platform.release(),
                "osImage": "Lifelong test node agent",
                "containerRuntimeVersion": "nodeagent://0.1.0",
                "kubeletVersion": self._kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def _post_status(self) -> None:
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            body={"status": self._node_status()},
            content_type="application/strategic-merge-patch+json",
        )

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.status_seconds)
            try:
                await self._post_status()
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                logger.warning("Cannot post node status (%s); trying again later.", error)

    async def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.name}"
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.options.lease_seconds,
            "renewTime": micro_now(),
        }
        try:
            lease = await self.api.get(path)
        except ApiError as error:
            if error.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self._node_uid}
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "ownerReferences": [owner]},
                "spec": spec,
            }
            await self.api.create(path.rsplit("/", 1)[0], body)
            return
        lease["spec"].update(spec)
        await self.api.replace(path, lease)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.lease_seconds / 4)
            try:
                await self._renew_lease()
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                logger.warning("Cannot renew the node lease (%s); trying again soon.", error)

    # -- pods -----------------------------------------------------------------------------

    async def _pod_loop(self) -> None:
        """List and watch the pods bound to this node, forever."""
        params = {"fieldSelector": f"spec.nodeName={self.name}"}
        while True:
            try:
                version = await self._list_pods(params)
                while True:
                    version = await self._watch_pods(params, version)
            except WatchExpiredError:
                logger.debug("Pod watch expired; listing again.")
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                logger.warning("Pod watch failed (%s); listing again in 1s.", error)
                await asyncio.sleep(1)

    async def _list_pods(self, params: Mapping[str, str]) -> str:
        listing = await self.api.get("/api/v1/pods", params)
        present = {pod["metadata"]["uid"] for pod in listing["items"]}
        for uid in [uid for uid in self.workers if uid not in present]:
            self._forget(uid)
        for pod in listing["items"]:
            self._on_pod("ADDED", pod)
        return str(listing["metadata"]["resourceVersion"])

    async def _watch_pods(self, params: Mapping[str, str], version: str) -> str:
        query = {**params, "resourceVersion": version, "allowWatchBookmarks": "true"}
        async for event in self.api.watch("/api/v1/pods", query):
            kind, obj = event["type"], event["object"]
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise WatchExpiredError
                raise ApiError("WATCH", "/api/v1/pods", int(obj.get("code", 500)), str(obj))
            version = obj["metadata"]["resourceVersion"]
            if kind != "BOOKMARK":
                self._on_pod(kind, obj)
        return version

    def _on_pod(self, kind: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        if kind == "DELETED":
            self._forget(uid)
            return
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if pod.get("status", {}).get("phase") in TERMINAL_PHASES or deleting:
            # Nothing of it runs here (it ended before this agent started, or is deleted
            # before it started): a deleted one only needs its final removal.
            if deleting and uid not in self._deleting:
                self._deleting.add(uid)
                task = asyncio.create_task(self._delete_now(pod))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return
        self._start_pod(pod)

    def _start_pod(self, pod: JSON) -> None:
        known_ip = pod.get("status", {}).get("podIP")
        if pod["spec"].get("hostNetwork"):
            address = self.context.host_ip
        elif known_ip and known_ip in self.addresses:
            self.addresses.take(known_ip)
            address = known_ip
        else:
            address = self.addresses.allocate()
        gpus = self.gpu_pool.allocate(extended_resource_count(pod, GPU_RESOURCE))
        worker = PodWorker(self.context, pod, address, gpus)
        self.workers[pod["metadata"]["uid"]] = worker
        worker.start()

    def _forget(self, uid: str) -> None:
        worker = self.workers.pop(uid, None)
        self._deleting.discard(uid)
        if worker is not None:
            worker.kill_now()
            self.gpu_pool.release(worker.gpus)

    async def _delete_now(self, pod: JSON) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        with contextlib.suppress(ApiError, aiohttp.ClientError):
            await self.api.delete(path, body)

    async def _post_event(
        self, pod: JSON, reason: str, message: str, kind: str, field_path: str | None
    ) -> None:
        """Record a Kubernetes event about a pod, as a kubelet does; failures are only logged."""
        meta = pod["metadata"]
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        }
        if field_path:
            involved["fieldPath"] = field_path
        moment = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.name,
        }
        try:
            await self.api.create(f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            logger.debug("Event %s for %s not recorded: %s", reason, meta["name"], error)


# -- command line ------------------------------------------------------------------------------


def _parse_taint(text: str) -> JSON:
    """`key=value:Effect` or `key:Effect` into a taint."""
    key_value, _, effect = text.rpartition(":")
    key, _, value = key_value.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise argparse.ArgumentTypeError(f"taint {text!r} is not KEY[=VALUE]:EFFECT")
    return (
        {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}
    )


def parse_args(argv: Sequence[str]) -> AgentOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the node's kubeconfig")
    parser.add_argument("--node", required=True, help="the Node's name")
    parser.add_argument("--root", type=Path, required=True, help="folder for pods and logs")
    parser.add_argument("--cpu", default="32", help="CPU capacity (a quantity)")
    parser.add_argument("--memory", default="64Gi", help="memory capacity (a quantity)")
    parser.add_argument("--pods", type=int, default=110, help="pod capacity")
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity")
    parser.add_argument("--pod-cidr", default="127.1.0.0/16", help="loopback network for pods")
    parser.add_argument("--label", action="append", default=[], help="node label KEY=VALUE")
    parser.add_argument("--taint", action="append", default=[], type=_parse_taint)
    parser.add_argument("--venv-bin", type=Path, default=Path(sys.executable).parent)
    parser.add_argument("--restart-backoff", type=float, default=1.0, help="first restart delay")
    parser.add_argument("--max-restart-backoff", type=float, default=30.0)
    parser.add_argument("--shutdown-grace", type=float, default=5.0)
    parser.add_argument("--tls-cert-file", type=Path, help="serving certificate for logs")
    parser.add_argument("--tls-private-key-file", type=Path, help="its private key")
    parser.add_argument("--client-ca-file", type=Path, help="CA of the API server's client cert")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return AgentOptions(
        kubeconfig=args.kubeconfig,
        node=args.node,
        root=args.root,
        cpu=args.cpu,
        memory=args.memory,
        pods=args.pods,
        gpus=args.gpus,
        pod_cidr=args.pod_cidr,
        labels=dict(label.split("=", 1) for label in args.label),
        taints=args.taint,
        venv_bin=args.venv_bin,
        restart_backoff=args.restart_backoff,
        max_restart_backoff=args.max_restart_backoff,
        shutdown_grace=args.shutdown_grace,
        tls_cert=args.tls_cert_file,
        tls_key=args.tls_private_key_file,
        client_ca=args.client_ca_file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(NodeAgent(options).run())
    return 0


# -- starting it from tests --------------------------------------------------------------------


class NodeAgentProcess:
    """A node agent running as a child process, and the files it writes.

    `NodeAgentProcess.start(...)` returns once the agent has registered its Node; the control
    plane may still have the node tainted not-ready for a few seconds (the cluster fixture
    waits for that too).
    """

    def __init__(self, name: str, root: Path, process: Process) -> None:
        self.name = name
        self.root = root
        self.process = process

    @classmethod
    def start(
        cls,
        *,
        kubeconfig: Path,
        name: str,
        root: Path,
        pod_cidr: str,
        cpu: str = "32",
        memory: str = "64Gi",
        pods: int = 110,
        gpus: int = 0,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> NodeAgentProcess:
        argv = [
            sys.executable,
            __file__,
            f"--kubeconfig={kubeconfig}",
            f"--node={name}",
            f"--root={root}",
            f"--pod-cidr={pod_cidr}",
            f"--cpu={cpu}",
            f"--memory={memory}",
            f"--pods={pods}",
            f"--gpus={gpus}",
            *(f"--label={key}={value}" for key, value in (labels or {}).items()),
            *(f"--taint={taint}" for taint in taints),
            *extra_args,
        ]
        process = Process.start(f"node agent {name}", argv, root / "agent.log")
        agent = cls(name, root, process)
        agent._wait_registered(timeout)
        return agent

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def _wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self.root / READY_FILE).exists():
            if not self.process.alive or time.monotonic() > deadline:
                state = "exited" if not self.process.alive else "did not register in time"
                self.process.stop()
                raise RuntimeError(
                    f"node agent {self.name} {state}; the end of {self.log_path}:\n"
                    f"{self.process.tail()}"
                )
            time.sleep(0.1)

    def stop(self, grace: float = 15.0) -> None:
        """Stop the agent and every container it runs."""
        self.process.stop(grace)

    def pod_directories(self, namespace: str, pod: str) -> Iterator[Path]:
        """The folders of pods named `pod` in `namespace`, newest first."""
        found = (self.root / "pods").glob(f"{namespace}_{pod}_*")
        return iter(sorted(found, key=lambda path: path.stat().st_mtime, reverse=True))

    def log_file(
        self, namespace: str, pod: str, container: str | None = None, previous: bool = False
    ) -> Path | None:
        """The log file of a container (default: the pod's only or first container)."""
        directory = next(self.pod_directories(namespace, pod), None)
        if directory is None:
            return None
        logs = directory / "logs"
        if container is None:
            names = sorted(p.name for p in logs.iterdir()) if logs.exists() else []
            if not names:
                return None
            container = names[0]
        runs = sorted((logs / container).glob("*.log"), key=lambda p: int(p.stem))
        if previous:
            runs = runs[:-1]
        return runs[-1] if runs else None

    def pod_log(
        self, namespace: str, pod: str, container: str | None = None, previous: bool = False
    ) -> str:
        """What a container wrote to stdout and stderr (its latest run, or the one before)."""
        path = self.log_file(namespace, pod, container, previous)
        return path.read_text(errors="replace") if path else ""

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


# pod_directory is part of this module's interface for tools that look at pod folders.
__all__ = ["AgentOptions", "NodeAgent", "NodeAgentProcess", "main", "pod_directory"]

if __name__ == "__main__":
    sys.exit(main())
