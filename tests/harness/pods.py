"""One pod on the test node: its folder and volumes, its containers run as sandboxed local
processes, their probes, restarts and termination, and the status reported for it.

The node agent (`nodeagent.py`) makes one `PodWorker` per pod bound to its node, passes it each
update of the pod and asks it to stop when the pod is being deleted. A worker writes the pod's
status the way a kubelet does: phase, pod and host IPs, conditions and container states.

Files of a pod live under `ROOT/pods/NAMESPACE_NAME_UID/`: `volumes/VOLUME/`, and per container
`logs/CONTAINER/RESTART.log` (stdout and stderr) plus `containers/CONTAINER/` (launch spec,
termination-message file, start-error file and the mount point of its private root).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubeapi import JSON, ApiError, KubeApi
from podenv import ConfigMissingError, UnsupportedFieldError, container_env, expand, object_reader
from sandbox import FORWARDED_SIGNALS, START_ERROR_STATUS
from volumes import VolumeContext, VolumeError, materialise

logger = logging.getLogger(__name__)

SANDBOX = Path(__file__).resolve().parent / "sandbox.py"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80
CONFIG_RETRY_SECONDS = 2.0

EventPoster = Callable[[JSON, str, str, str, str | None], Awaitable[None]]


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_directory(root: Path, pod: JSON) -> Path:
    meta = pod["metadata"]
    return root / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


def image_mounts(mounts: list[JSON], venv_bin: Path) -> list[JSON]:
    """Keep the "image" visible under the container's volumes.

    A container here runs the project from the host's files: its checkout (with its virtual
    environment) and the Python installation that environment is made from. In a real pod those
    would be the image's own files, which a volume at `/tmp` or `/opt` never hides; so when a
    volume is mounted above one of them (a checkout under /tmp, say), it is bound back, read-only,
    at its own path.
    """
    image = {str(Path(__file__).resolve().parents[2]), str(venv_bin.parent), sys.base_prefix}
    targets = [m["target"].rstrip("/") or "/" for m in mounts]
    hidden = sorted(
        path for path in image
        if any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)
    )  # fmt: skip
    return [{"source": path, "target": path, "readOnly": True} for path in hidden]


@dataclass
class NodeContext:
    """What a pod worker needs from its node agent."""

    api: KubeApi
    node_name: str
    host_ip: str
    root: Path
    venv_bin: Path
    apiserver_host: str
    apiserver_port: int
    allocatable: JSON
    post_event: EventPoster
    release_gpus: Callable[[list[int]], None]
    restart_backoff: float = 1.0
    max_restart_backoff: float = 30.0

    def backoff(self, restarts: int) -> float:
        """Seconds before restart number `restarts + 1`: doubling, capped."""
        return float(min(self.restart_backoff * 2**restarts, self.max_restart_backoff))


class ContainerStartError(Exception):
    """The container cannot be started as specified (no entrypoint, unknown volume)."""


class PodLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['pod'] if self.extra else '?'}] {msg}", kwargs


class Container:
    """One container of the pod: starts, restarts and stops its process; reports its state."""

    def __init__(self, worker: PodWorker, spec: JSON, init: bool = False) -> None:
        self.worker = worker
        self.spec = spec
        self.init = init
        self.name: str = spec["name"]
        self.restart_count = 0
        self.state: JSON = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: JSON = {}
        self.ready = False
        self.started = False
        self.done = False
        self.exit_code: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.env: dict[str, str] = {}
        self.gpus: list[int] = []

    # -- status ---------------------------------------------------------------------------

    @property
    def container_id(self) -> str:
        return f"nodeagent://{self.worker.uid[:8]}-{self.name}-{self.restart_count}"

    @property
    def ever_started(self) -> bool:
        return "running" in self.state or bool(self.last_state) or "terminated" in self.state

    def status(self) -> JSON:
        image = self.spec.get("image", "")
        status: JSON = {
            "name": self.name,
            "image": image,
            "imageID": image,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.ever_started:
            status["containerID"] = self.container_id
        return status

    # -- running --------------------------------------------------------------------------

    def should_restart(self, exit_code: int) -> bool:
        policy = self.worker.restart_policy
        if self.init:
            return exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    async def run(self) -> None:
        """Run the container until it will not run again, honouring the restart policy."""
        while True:
            exit_code = await self._run_once()
            if exit_code is not None:
                self.exit_code = exit_code
            if exit_code is None or self.worker.stopping.is_set():
                break
            if not self.should_restart(exit_code):
                break
            delay = self.worker.node.backoff(self.restart_count)
            self.last_state = {"terminated": self.state["terminated"]}
            message = (
                f"back-off {delay:.0f}s restarting failed container={self.name} "
                f"pod={self.worker.key}"
            )
            self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            await self.worker.event(
                "BackOff", f"Back-off restarting failed container {self.name}", "Warning", self
            )
            self.worker.changed()
            if await self.worker.wait_stopping(delay):
                break
            self.restart_count += 1
        self.done = True
        self.ready = False
        self.worker.changed()

    async def _run_once(self) -> int | None:
        """Start the process once and wait for it; None when stopped before it started."""
        launch = await self._prepare_until_ready()
        if launch is None:
            return None
        if isinstance(launch, str):
            return self.start_failed(launch)
        spec_path, log_path = launch
        started_at = now()
        self.process = await self._spawn(spec_path, log_path)
        if self.worker.stopping.is_set():
            # Deletion began while the process was being started: stop it like the others.
            self.worker.background(self.kill(self.worker.grace_period))
        self.state = {"running": {"startedAt": started_at}}
        self.worker.changed()
        await self.worker.event("Started", f"Started container {self.name}", "Normal", self)
        health = asyncio.create_task(self._watch_health())
        code = await self.process.wait()
        health.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health
        code = 128 - code if code < 0 else code
        self._terminated(code, started_at, log_path)
        return code

    async def _prepare_until_ready(self) -> tuple[Path, Path] | str | None:
        """The launch files, or a start-error message, retrying while config is missing."""
        last_message = ""
        while not self.worker.stopping.is_set():
            try:
                launch = await self._prepare()
                return None if self.worker.stopping.is_set() else launch
            except ConfigMissingError as error:
                message = f"Error: {error}"
                self.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": message}
                }
                self.worker.changed()
                if message != last_message:
                    await self.worker.event("Failed", message, "Warning", self)
                    last_message = message
            except (ContainerStartError, UnsupportedFieldError) as error:
                return str(error)
            if await self.worker.wait_stopping(CONFIG_RETRY_SECONDS):
                break
        return None

    def _files(self) -> tuple[Path, Path, Path, Path]:
        """Launch spec, termination log, start error and log path for this restart."""
        directory = self.worker.directory / "containers" / self.name
        n = self.restart_count
        log = self.worker.log_path(self, n)
        return (
            directory / f"launch-{n}.json",
            directory / f"termination-log-{n}",
            directory / f"start-error-{n}",
            log,
        )

    async def _prepare(self) -> tuple[Path, Path]:
        pod = self.worker.pod_view()
        reader = object_reader(self.worker.node.api.get, self.worker.namespace)
        base = self.worker.base_env(self)
        self.env = await container_env(pod, self.spec, base, reader, self.worker.node.allocatable)
        argv = self._argv()
        spec_path, termination_log, start_error, log_path = self._files()
        for path in (spec_path, log_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        termination_log.write_bytes(b"")
        start_error.unlink(missing_ok=True)
        mounts = [*self._volume_mounts(), *self.worker.pod_mounts()]
        mounts += image_mounts(mounts, self.worker.node.venv_bin)
        message_path = self.spec.get("terminationMessagePath") or "/dev/termination-log"
        mounts.append({"source": str(termination_log), "target": message_path})
        launch = {
            "argv": argv,
            "env": self.env,
            "workingDir": self.spec.get("workingDir"),
            "hostname": self.worker.hostname,
            "rootDir": str(spec_path.parent / "rootfs"),
            "mounts": mounts,
            "startErrorPath": str(start_error),
        }
        (spec_path.parent / "rootfs").mkdir(exist_ok=True)
        spec_path.write_text(json.dumps(launch, indent=1))
        return spec_path, log_path

    def _argv(self) -> list[str]:
        command = [expand(part, self.env) for part in self.spec.get("command", [])]
        args = [expand(part, self.env) for part in self.spec.get("args", [])]
        if command:
            return command + args
        image = self.spec.get("image", "")
        if "lifelong" in image.lower():
            return [str(self.worker.node.venv_bin / "lifelong"), *args]
        raise ContainerStartError(
            f"image {image!r} has no known entrypoint: the test node agent does not pull images "
            "and only knows that images named *lifelong* run the `lifelong` command; give the "
            "container a `command`"
        )

    def _volume_mounts(self) -> list[JSON]:
        mounts = []
        for mount in self.spec.get("volumeMounts", []):
            source = self.worker.volumes.get(mount["name"])
            if source is None:
                raise ContainerStartError(
                    f"volume mount {mount['name']!r} names no volume of the pod"
                )
            sub_path = mount.get("subPath") or expand(mount.get("subPathExpr", ""), self.env)
            if sub_path:
                source = source / sub_path
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append(
                {
                    "source": str(source),
                    "target": mount["mountPath"],
                    "readOnly": bool(mount.get("readOnly", False)),
                }
            )
        return mounts

    async def _spawn(self, spec_path: Path, log_path: Path) -> asyncio.subprocess.Process:
        # The sandbox inherits this mask; it unblocks the signals once it can forward them.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            return await self._exec_sandbox(spec_path, log_path)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    async def _exec_sandbox(self, spec_path: Path, log_path: Path) -> asyncio.subprocess.Process:
        with log_path.open("ab") as log:
            return await asyncio.create_subprocess_exec(
                self.worker.node.venv_bin / "python",
                "-I",
                "-S",
                str(SANDBOX),
                str(spec_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def start_failed(self, message: str) -> int:
        moment = now()
        self.state = {
            "terminated": {
                "exitCode": START_ERROR_STATUS,
                "reason": "StartError",
                "message": message,
                "startedAt": moment,
                "finishedAt": moment,
                "containerID": self.container_id,
            }
        }
        self.worker.log.warning("Container %s cannot start: %s", self.name, message)
        self.worker.background(self.worker.event("Failed", message, "Warning", self))
        self.worker.changed()
        return START_ERROR_STATUS

    def _terminated(self, code: int, started_at: str, log_path: Path) -> None:
        _, termination_log, start_error, _ = self._files()
        error = start_error.read_text() if start_error.exists() else ""
        if code == START_ERROR_STATUS and error:
            reason, message = "StartError", error
        else:
            reason = "Completed" if code == 0 else "Error"
            message = self._termination_message(code, termination_log, log_path)
        terminated: JSON = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": self.container_id,
        }
        if message:
            terminated["message"] = message
        self.state = {"terminated": terminated}
        self.ready = False
        self.worker.log.info("Container %s exited with %d (%s).", self.name, code, reason)
        self.worker.changed()

    def _termination_message(self, code: int, path: Path, log_path: Path) -> str:
        data = path.read_bytes()[:MAX_TERMINATION_MESSAGE] if path.exists() else b""
        policy = self.spec.get("terminationMessagePolicy", "File")
        if not data and code != 0 and policy == "FallbackToLogsOnError" and log_path.exists():
            lines = log_path.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
            data = b"\n".join(lines)[-FALLBACK_LOG_BYTES:]
        return data.decode("utf-8", "replace")

    async def kill(self, grace: float) -> None:
        """SIGTERM the container's first process, SIGKILL everything after `grace` seconds."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        await self.worker.event("Killing", f"Stopping container {self.name}", "Normal", self)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)  # the sandbox forwards it to the container
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def kill_now(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    # -- probes ---------------------------------------------------------------------------

    async def _watch_health(self) -> None:
        startup = self.spec.get("startupProbe")
        if startup and not await _probe_until_decided(self, startup):
            await self.worker.event("Unhealthy", "Startup probe failed", "Warning", self)
            await self.kill(self.worker.grace_period)
            return
        self.started = True
        readiness, liveness = self.spec.get("readinessProbe"), self.spec.get("livenessProbe")
        self.ready = readiness is None and not self.init
        self.worker.changed()
        loops = []
        if readiness:
            loops.append(self._readiness_loop(readiness))
        if liveness:
            loops.append(self._liveness_loop(liveness))
        await asyncio.gather(*loops)

    async def _readiness_loop(self, probe: JSON) -> None:
        async for ready in _probe_results(self, probe):
            if ready != self.ready:
                self.ready = ready
                self.worker.changed()
            if not ready:
                await self.worker.event("Unhealthy", "Readiness probe failed", "Warning", self)

    async def _liveness_loop(self, probe: JSON) -> None:
        async for alive in _probe_results(self, probe):
            if not alive:
                await self.worker.event("Unhealthy", "Liveness probe failed", "Warning", self)
                await self.kill(
                    float(probe.get("terminationGracePeriodSeconds", self.worker.grace_period))
                )
                return


# -- probes ------------------------------------------------------------------------------------


async def _probe_results(container: Container, probe: JSON) -> AsyncIterator[bool]:
    """Yield True/False each time the probe crosses its success or failure threshold."""
    await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
    period = float(probe.get("periodSeconds", 10))
    need_success = int(probe.get("successThreshold", 1))
    need_failure = int(probe.get("failureThreshold", 3))
    successes = failures = 0
    while True:
        ok = await run_probe(container, probe)
        successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
        if successes == need_success:
            yield True
        if failures == need_failure:
            yield False
        await asyncio.sleep(period)


async def _probe_until_decided(container: Container, probe: JSON) -> bool:
    async for result in _probe_results(container, probe):
        return bool(result)
    return False


def _loopback_host(container: Container, host: str | None) -> str:
    """The probe's host: the pod IP by default; anything but a loopback address is refused,
    because the test node agent never dials outside this machine."""
    host = host or container.worker.pod_ip
    if host == "localhost" or ipaddress.ip_address(host).is_loopback:
        return host
    raise UnsupportedFieldError(f"probe host {host} is not a loopback address")


def _port(container: Container, port: int | str) -> int:
    if isinstance(port, int) or port.isdigit():
        return int(port)
    for declared in container.spec.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise UnsupportedFieldError(f"probe port {port!r} is not a declared port name")


async def run_probe(container: Container, probe: JSON) -> bool:
    """Run one probe attempt: httpGet, tcpSocket or exec. Any error counts as a failure."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            return await _http_probe(container, probe["httpGet"], timeout)
        if "tcpSocket" in probe:
            action = probe["tcpSocket"]
            host = _loopback_host(container, action.get("host"))
            port = _port(container, action["port"])
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            return True
        if "exec" in probe:
            return await _exec_probe(container, probe["exec"]["command"], timeout)
        raise UnsupportedFieldError(f"probe {sorted(probe)} is not supported")
    except (OSError, TimeoutError, aiohttp.ClientError, UnsupportedFieldError, ValueError) as error:
        container.worker.log.debug("Probe of %s failed: %s", container.name, error)
        return False


async def _http_probe(container: Container, action: JSON, timeout: float) -> bool:
    host = _loopback_host(container, action.get("host"))
    port = _port(container, action["port"])
    scheme = action.get("scheme", "HTTP").lower()
    url = f"{scheme}://{host}:{port}{action.get('path', '/')}"
    headers = {h["name"]: h["value"] for h in action.get("httpHeaders", [])}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.get(url, headers=headers, ssl=False, allow_redirects=False) as response,
    ):
        return 200 <= response.status < 400


async def _exec_probe(container: Container, command: list[str], timeout: float) -> bool:
    """Run `command` inside the container's namespaces and root, with its environment."""
    process = container.process
    if process is None:
        return False
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    if not children:
        return False
    probe = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--target={children[0]}",
        "--mount",
        "--uts",
        "--pid",
        "--root",
        "--wd",
        "--",
        *command,
        env=container.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await asyncio.wait_for(probe.wait(), timeout) == 0
    except TimeoutError:
        probe.kill()
        await probe.wait()
        return False


# -- the pod -----------------------------------------------------------------------------------


class PodWorker:
    """Runs one pod bound to this node and reports its status."""

    def __init__(self, node: NodeContext, pod: JSON, pod_ip: str, gpus: list[int]) -> None:
        self.node = node
        self.pod = pod
        self.pod_ip = pod_ip
        self.gpus = gpus
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self.log = PodLogger(logger, {"pod": self.key})
        self.directory = pod_directory(node.root, pod)
        self.hostname: str = (pod["spec"].get("hostname") or self.name)[:63]
        spec = pod["spec"]
        self.init_containers = [
            Container(self, c, init=True) for c in spec.get("initContainers", [])
        ]
        self.containers = [Container(self, c) for c in spec.get("containers", [])]
        self.volumes: dict[str, Path] = {}
        self.sandbox_ready = False
        self.initialized = not self.init_containers
        self.final_phase: str | None = None
        self.start_time = now()
        self.stopping = asyncio.Event()
        self.deleted = False
        self._changed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._written: JSON = {}
        self._transitions: dict[str, tuple[bool, str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- properties -----------------------------------------------------------------------

    @property
    def restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy", "Always"))

    @property
    def grace_period(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        seconds = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
        return float(30 if seconds is None else seconds)

    @property
    def terminal(self) -> bool:
        return self.final_phase is not None

    def container(self, name: str) -> Container | None:
        """The container or init container called `name`."""
        return next((c for c in self.init_containers + self.containers if c.name == name), None)

    def log_path(self, container: Container, restart: int) -> Path:
        return self.directory / "logs" / container.name / f"{restart}.log"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.log.info("Starting pod on %s.", self.pod_ip)
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._write_loop())]

    def update(self, pod: JSON) -> None:
        """Take the latest version of the pod; begin graceful termination once it is deleted."""
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and self._stopper is None:
            self._stopper = asyncio.create_task(self._terminate())

    async def wait_stopping(self, seconds: float) -> bool:
        """Sleep `seconds` or until the pod is being stopped; True if it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    def changed(self) -> None:
        self._changed.set()

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task that is kept referenced until it ends."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self, grace: float) -> None:
        """Stop the containers because the agent is stopping; the pod object stays."""
        self.stopping.set()
        everyone = self.init_containers + self.containers
        await asyncio.gather(*(c.kill(min(grace, self.grace_period)) for c in everyone))
        for task in self._tasks:
            task.cancel()

    def kill_now(self) -> None:
        """The pod is gone from the API: kill its processes without waiting."""
        self.deleted = True
        self.stopping.set()
        for container in self.init_containers + self.containers:
            container.kill_now()
        for task in self._tasks:
            task.cancel()

    async def _run(self) -> None:
        self.changed()
        if not await self._prepare_sandbox():
            return
        for container in self.init_containers:
            await container.run()
            if container.exit_code != 0 or self.stopping.is_set():
                self._finish()
                return
        self.initialized = True
        self.changed()
        await asyncio.gather(*(c.run() for c in self.containers))
        self._finish()

    def _finish(self) -> None:
        self.final_phase = self._phase(final=True)
        self.log.info("Pod finished: %s.", self.final_phase)
        self.node.release_gpus(self.gpus)
        self.gpus = []
        self.changed()

    async def _prepare_sandbox(self) -> bool:
        """Make the pod's folder, volumes and hosts file; retry while config is missing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_hosts_file()
        context = VolumeContext(
            self.node.api, self.pod_view(), self.directory / "volumes", self.node.allocatable
        )
        last_message = ""
        while not self.stopping.is_set():
            try:
                self.volumes = await materialise(context)
                self.sandbox_ready = True
                return True
            except ConfigMissingError as error:
                message = f"MountVolume.SetUp failed: {error}"
                if message != last_message:
                    await self.event("FailedMount", message, "Warning")
                    last_message = message
            except (VolumeError, UnsupportedFieldError) as error:
                # Unlike a kubelet, which would retry forever, fail the pod: it can never run.
                for container in self.init_containers + self.containers:
                    container.exit_code = container.start_failed(str(error))
                    container.done = True
                self._finish()
                return False
            await self.wait_stopping(CONFIG_RETRY_SECONDS)
        return False

    async def _terminate(self) -> None:
        """Graceful deletion: SIGTERM, wait the grace period, SIGKILL, report, delete."""
        grace = self.grace_period
        self.log.info("Pod is being deleted; stopping containers within %.0fs.", grace)
        self.stopping.set()
        everyone = self.init_containers + self.containers
        await asyncio.gather(*(c.kill(grace) for c in everyone))
        await asyncio.gather(*self._tasks[:1], return_exceptions=True)
        if not self.terminal:
            self._finish()
        await self.flush()
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        with contextlib.suppress(ApiError):
            await self.node.api.delete(self._path, body)
        self.deleted = True
        self._tasks[1].cancel()

    # -- environment and mounts -----------------------------------------------------------

    def base_env(self, container: Container) -> dict[str, str]:
        """The environment every container starts from, before its own `env`."""
        node = self.node
        env = {
            "PATH": f"{node.venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "HOSTNAME": self.hostname,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": node.apiserver_host,
            "KUBERNETES_SERVICE_PORT": str(node.apiserver_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(node.apiserver_port),
            "KUBERNETES_PORT": f"tcp://{node.apiserver_host}:{node.apiserver_port}",
        }
        if self.gpus:
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in self.gpus)
        return env

    def pod_view(self) -> JSON:
        """The pod with the IPs this worker assigned, which the API may not show yet."""
        status = dict(self.pod.get("status", {}))
        status.update(
            hostIP=self.node.host_ip,
            hostIPs=[{"ip": self.node.host_ip}],
            podIP=self.pod_ip,
            podIPs=[{"ip": self.pod_ip}],
        )
        return dict(self.pod, status=status)

    def pod_mounts(self) -> list[JSON]:
        return [{"source": str(self.directory / "etc-hosts"), "target": "/etc/hosts"}]

    def _write_hosts_file(self) -> None:
        lines = [
            "# Kubernetes-managed hosts file, written by the Lifelong test node agent.",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"{self.pod_ip}\t{self.hostname}",
        ]
        for alias in self.pod["spec"].get("hostAliases", []):
            lines.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames', []))}")
        (self.directory / "etc-hosts").write_text("\n".join(lines) + "\n")

    # -- status ---------------------------------------------------------------------------

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def _phase(self, final: bool = False) -> str:
        if self.final_phase:
            return self.final_phase
        if any(c.done and c.exit_code != 0 for c in self.init_containers):
            return "Failed"
        if not self.initialized and not final:
            return "Pending"
        containers = self.containers if self.initialized else self.init_containers
        if final or all(c.done for c in containers):
            failed = any(c.exit_code != 0 for c in containers) or not self.initialized
            return "Failed" if failed else "Succeeded"
        if any(not c.ever_started for c in containers):
            return "Pending"
        return "Running"

    def _condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> JSON:
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != ok:
            self._transitions[kind] = (ok, now())
        condition = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[kind][1],
        }
        if not ok and reason:
            condition.update(reason=reason, message=message)
        return condition

    def _conditions(self, phase: str) -> list[JSON]:
        unready = [c.name for c in self.containers if not c.ready]
        if phase in ("Succeeded", "Failed"):
            reason, message = "PodCompleted", ""
        else:
            reason = "ContainersNotReady"
            message = f"containers with unready status: [{' '.join(unready)}]"
        pending_init = [c.name for c in self.init_containers if not c.done]
        return [
            self._condition("PodReadyToStartContainers", self.sandbox_ready),
            self._condition(
                "Initialized",
                self.initialized,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            ),
            self._condition("ContainersReady", not unready and phase == "Running", reason, message),
            self._condition("Ready", not unready and phase == "Running", reason, message),
        ]

    def status(self) -> JSON:
        """The pod status this worker reports (sent as a strategic merge patch)."""
        phase = self._phase()
        status: JSON = {
            "phase": phase,
            "hostIP": self.node.host_ip,
            "hostIPs": [{"ip": self.node.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": self._conditions(phase),
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        return status

    async def flush(self) -> None:
        """Write the current status now, unless it is what was written last."""
        async with self._write_lock:
            status = self.status()
            if status == self._written or self.deleted:
                return
            await self.node.api.request(
                "PATCH",
                f"{self._path}/status",
                body={"status": status},
                content_type="application/strategic-merge-patch+json",
            )
            self._written = status

    async def _write_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.flush()
            except ApiError as error:
                if error.status == 404:
                    return
                self.log.warning("Cannot write pod status (%s); retrying in 1s.", error)
                await asyncio.sleep(1)
                self.changed()
            except aiohttp.ClientError as error:
                self.log.warning("Cannot reach the API server (%s); retrying in 1s.", error)
                await asyncio.sleep(1)
                self.changed()

    async def event(
        self, reason: str, message: str, kind: str = "Normal", container: Container | None = None
    ) -> None:
        """Post a Kubernetes event about this pod (best-effort)."""
        field_path = None
        if container is not None:
            group = "initContainers" if container.init else "containers"
            field_path = f"spec.{group}{{{container.name}}}"
        await self.node.post_event(self.pod, reason, message, kind, field_path)
