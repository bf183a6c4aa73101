"""`lifelong operator` as a local process for end-to-end tests and benchmarks: configured through
its environment like the chart configures it, with an admin kubeconfig, its log in a file, and its
own `/metrics` read back.

A stage pod gets its own private /tmp, so an artifact store shared by the operator's stages lives
in a host folder outside /tmp (`storage_folder`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cluster import Cluster
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "lifelong.dev", "v1alpha1"


def free_port() -> int:
    """A port that nothing on loopback listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def storage_folder() -> Iterator[Path]:
    """A host folder for the artifact store, outside /tmp, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="lifelong-e2e-", dir="/var/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def apply_crds(cluster: Cluster) -> None:
    """Lifelong's CRDs and Kopf's peering CRDs, established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    peerings = ROOT / "charts" / "lifelong" / "crds" / "kopf.dev_peerings.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(peerings))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/autodljobs.lifelong.dev", "crd/modelversions.lifelong.dev",
        "crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev",
    )  # fmt: skip


class OperatorProcess:
    """One `lifelong operator` process; `env` adds to or overrides the variables it starts with."""

    def __init__(self, cluster: Cluster, storage: Path, log: Path, **env: str) -> None:
        self.cluster = cluster
        self.log = log
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "LIFELONG_IMAGE": "lifelong:dev",
            "LIFELONG_STORAGE_URI": f"file://{storage}",
            "LIFELONG_RECONCILE_INTERVAL": "1",
            "LIFELONG_METRICS_PORT": str(self.metrics_port),
            "LIFELONG_HEALTH_PORT": "0",
            "LIFELONG_LOG_LEVEL": "INFO",
            "POD_IP": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the operator was never started")
        return self.process.pid

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lifelong.cli", "operator"],
                stdout=sink, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                start_new_session=True,
            )  # fmt: skip

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (Kopf says goodbye to its peers) or SIGKILL (it just dies)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def metrics(self) -> dict[str, float]:
        """The operator's own samples, as `name{label="value",...}` → value (labels sorted)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(
                    sample.value
                )
        return samples

    def metric(self, key: str) -> float:
        """One sample, 0 when absent (or the process does not answer)."""
        try:
            return self.metrics().get(key, 0.0)
        except httpx.HTTPError:
            return 0.0

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
