"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, started from the binaries that `tools/build.sh` builds.

`ControlPlane` creates everything in one folder: a CA and one certificate per identity, the
service-account signing key, one kubeconfig per component, etcd's data and a log file per
component. It listens on loopback only, on ports picked at start, with TLS, `Node,RBAC`
authorisation and bound service-account tokens, so Kubernetes' own rules apply to every client.

    with ControlPlane(tmp_path) as plane:
        subprocess.run(["kubectl", "--kubeconfig", plane.admin_kubeconfig, "get", "ns"])

Nothing here dials anything but 127.0.0.1. Service cluster IPs are taken from a loopback range
too (`SERVICE_CIDR`), so even a client that dials a Service's ClusterIP stays on this machine.
The cluster fixture in `tests/conftest.py` runs one `ControlPlane` per test session.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import yaml
from pki import CertificateAuthority, KeyPair, write_signing_key
from processes import Process, free_ports

logger = logging.getLogger(__name__)

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

# ClusterIPs are API objects only: nothing routes them. A loopback range means that a program
# that dials one anyway reaches this machine and nothing else.
SERVICE_CIDR = "127.254.0.0/16"

# Controllers that need a pod network this control plane does not have. (The cloud controllers,
# service-lb and node-route, live in a cloud-controller-manager, which is not run at all.)
DISABLED_CONTROLLERS = ("node-ipam-controller",)

# How many times `start` picks new ports when a component finds its port taken.
_START_ATTEMPTS = 3


class MissingBinariesError(RuntimeError):
    """The control-plane programs are not built. Run `tools/build.sh`."""


class ControlPlaneError(RuntimeError):
    """A component did not start or stopped unexpectedly; the message holds its log's tail."""


def binary_dir() -> Path:
    """Where `tools/build.sh` links the programs: `$LIFELONG_CACHE/bin`."""
    cache = os.environ.get("LIFELONG_CACHE") or Path.home() / ".cache" / "lifelong"
    return Path(cache) / "bin"


def find_binaries(directory: Path | None = None) -> dict[str, Path]:
    """Map each control-plane program to its path, or say how to build the missing ones."""
    directory = directory or binary_dir()
    found = {name: directory / name for name in BINARIES}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        raise MissingBinariesError(
            f"{', '.join(missing)} not found in {directory}; run tools/build.sh to build the "
            "test control plane (set LIFELONG_CACHE if it builds elsewhere)"
        )
    return found


def write_kubeconfig(path: Path, server: str, ca: Path, client: KeyPair, user: str) -> Path:
    """Write a kubeconfig for one user, with file references to its CA and certificate."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lifelong-test",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": "lifelong-test", "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class ControlPlane:
    """etcd and the three Kubernetes control-plane components, in and under `workdir`.

    Attributes valid after `start()`: `server` (the API server's URL), `port`, `ca_cert`,
    `admin_kubeconfig` (user `admin`, group `system:masters`) and `processes`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        self.workdir = workdir
        self.binaries = find_binaries(bin_dir)
        self.start_timeout = start_timeout
        self.pki_dir = workdir / "pki"
        self.log_dir = workdir / "logs"
        self.processes: dict[str, Process] = {}
        self.server = ""
        self.port = 0
        self._ca: CertificateAuthority | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def ca_cert(self) -> Path:
        return self._authority.cert

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def start(self) -> None:
        """Start every component and return once each is ready; raise ControlPlaneError if not.

        A port taken between choosing it and binding it makes `start` retry with new ports.
        """
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._ca = CertificateAuthority(self.pki_dir)
        self._signing_key = write_signing_key(self.pki_dir)
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_components()
                break
            except ControlPlaneError as error:
                self.stop()
                if "address already in use" not in str(error) or attempt == _START_ATTEMPTS:
                    raise
                logger.warning("A port was taken while starting; retrying with new ports.")
        logger.info("Control plane ready at %s in %.1fs.", self.server, time.monotonic() - started)

    def stop(self) -> None:
        """Stop every component, last started first; safe to call more than once."""
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        self.processes.clear()

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig that authenticates as `user` in `groups` with a client certificate.

        The API server's authorisers then decide what it may do, as for any real client.
        """
        file_name = user.replace(":", "_")
        pair = self._authority.issue(file_name, common_name=user, organizations=groups)
        return write_kubeconfig(
            self.workdir / f"{file_name}.kubeconfig", self.server, self.ca_cert, pair, user
        )

    def node_kubeconfig(self, node: str) -> Path:
        """A kubeconfig for the node agent of `node` (user `system:node:NODE`)."""
        return self.kubeconfig_for(f"system:node:{node}", ["system:nodes"])

    def node_serving_certificate(self, node: str) -> KeyPair:
        """A serving certificate for the node agent's log server (127.0.0.1 and `node`)."""
        return self._authority.issue(
            f"{node}-serving",
            common_name=f"system:node:{node}",
            organizations=["system:nodes"],
            dns_names=[node],
            ip_addresses=["127.0.0.1"],
            server=True,
        )

    def diagnose(self, lines: int = 30) -> str:
        """The tail of each component's log, for a failure message."""
        parts = []
        for name, process in self.processes.items():
            state = "running" if process.alive else f"exited with {process.returncode}"
            parts.append(f"--- {name} ({state}), {process.log_path}:\n{process.tail(lines)}")
        return "\n".join(parts)

    # -- starting -----------------------------------------------------------------------------

    @property
    def _authority(self) -> CertificateAuthority:
        if self._ca is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._ca

    def _start_components(self) -> None:
        etcd_port, peer_port, self.port, kcm_port, scheduler_port = free_ports(5)
        self.server = f"https://127.0.0.1:{self.port}"
        self._write_identities()

        self._start_etcd(etcd_port, peer_port)
        self._wait_ready("etcd", f"http://127.0.0.1:{etcd_port}/health", tls=None)
        self._start_apiserver(etcd_port)
        self._wait_ready("kube-apiserver", f"{self.server}/readyz", tls=self._admin_tls())
        self._start_controller_manager(kcm_port)
        self._start_scheduler(scheduler_port)
        insecure = ssl._create_unverified_context()  # their self-signed serving certificates
        self._wait_ready(
            "kube-controller-manager", f"https://127.0.0.1:{kcm_port}/healthz", insecure
        )
        self._wait_ready("kube-scheduler", f"https://127.0.0.1:{scheduler_port}/healthz", insecure)

    def _write_identities(self) -> None:
        ca = self._authority
        first_service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        self._serving = ca.issue(
            "apiserver",
            common_name="kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", first_service_ip],
            server=True,
        )
        self._admin = ca.issue("admin", common_name="admin", organizations=["system:masters"])
        self._kubelet_client = ca.issue(
            "apiserver-kubelet-client", common_name="kube-apiserver-kubelet-client"
        )
        write_kubeconfig(self.admin_kubeconfig, self.server, ca.cert, self._admin, "admin")
        self._kcm_kubeconfig = self.kubeconfig_for("system:kube-controller-manager")
        self._scheduler_kubeconfig = self.kubeconfig_for("system:kube-scheduler")

    def _spawn(self, name: str, *args: str | Path) -> None:
        self.processes[name] = Process.start(
            name, [self.binaries[name], *args], self.log_dir / f"{name}.log"
        )

    def _start_etcd(self, port: int, peer_port: int) -> None:
        client, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # A test cluster's data is thrown away: skip fsync, it dominates write latency.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        )

    def _start_apiserver(self, etcd_port: int) -> None:
        pki = self.pki_dir
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={self._serving.cert}",
            f"--tls-private-key-file={self._serving.key}",
            f"--client-ca-file={self.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self._signing_key.cert}",
            f"--service-account-signing-key-file={self._signing_key.key}",
            # `kubectl logs` goes through the API server to the node agent: dial the node's
            # InternalIP (127.0.0.1), never its host name, which would mean a DNS lookup.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={self.ca_cert}",
            f"--kubelet-client-certificate={self._kubelet_client.cert}",
            f"--kubelet-client-key={self._kubelet_client.key}",
            # The `kubernetes` Service would list 127.0.0.1 as its endpoint, which endpoint
            # validation refuses; pods reach the API server through KUBERNETES_SERVICE_HOST.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        )

    def _start_controller_manager(self, port: int) -> None:
        controllers = ",".join(["*", *(f"-{name}" for name in DISABLED_CONTROLLERS)])
        kubeconfig = self._kcm_kubeconfig
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--controllers={controllers}",
            f"--service-account-private-key-file={self._signing_key.key}",
            f"--root-ca-file={self.ca_cert}",
            f"--cluster-signing-cert-file={self.ca_cert}",
            f"--cluster-signing-key-file={self._authority.key}",
            "--allocate-node-cidrs=false",
            "--configure-cloud-routes=false",
            # Notice a new node's Ready status (and lift its not-ready taint) within a second.
            "--node-monitor-period=1s",
            "--profiling=false",
        )

    def _start_scheduler(self, port: int) -> None:
        kubeconfig = self._scheduler_kubeconfig
        self._spawn(
            "kube-scheduler",
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
        )

    # -- readiness ----------------------------------------------------------------------------

    def _admin_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(self._admin.cert, self._admin.key)
        return context

    def _wait_ready(self, name: str, url: str, tls: ssl.SSLContext | None) -> None:
        """Poll `url` until it answers 200; fail early, with the log, if `name` exits."""
        process = self.processes[name]
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not process.alive:
                raise ControlPlaneError(
                    f"{name} exited with status {process.returncode} while starting; "
                    f"the end of {process.log_path}:\n{process.tail()}"
                )
            if _answers_ok(url, tls):
                logger.debug("%s is ready.", name)
                return
            time.sleep(0.25)
        raise ControlPlaneError(
            f"{name} was not ready at {url} after {self.start_timeout:.0f}s; "
            f"the end of {process.log_path}:\n{process.tail()}"
        )


def _answers_ok(url: str, tls: ssl.SSLContext | None) -> bool:
    with (
        contextlib.suppress(OSError, urllib.error.URLError),
        urllib.request.urlopen(url, timeout=2, context=tls) as response,
    ):
        return bool(response.status == 200)
    return False
