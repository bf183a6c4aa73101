"""Helpers for the serve and update tests: a digits job, its first model, serve processes.

The first model is trained here with the trainers' own building blocks (no search, no Ray), on
the training rows the job's class-incremental stream leaves: digits 0-4. Serve processes run as
`python -m lifelong.cli trainer serve` on a free loopback port, in their own process group, and
are always stopped by the fixture that started them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lifelong.api import AutoDLJob
from lifelong.manifests import load_job
from lifelong.trainers.bundle import ModelBundle
from lifelong.trainers.data import build_streams, infer_task, load_table, make_preprocessor, split
from lifelong.trainers.fit import make_optimizer, task_loss, train_epoch
from lifelong.trainers.models import build_model
from lifelong.trainers.store import Store

FIRST_CONFIG: dict[str, Any] = {
    "family": "mlp",
    "depth": 1,
    "width": 256,
    "activation": "relu",
    "dropout": 0.0,
    "normalization": "none",
    "optimizer": "adam",
    "learning_rate": 3e-3,
    "weight_decay": 1e-5,
    "batch_size": 32,
}


def digits_spec(**serving: Any) -> dict[str, Any]:
    """A class-incremental digits job, small enough for tests; `serving` overrides fields."""
    return {
        "apiVersion": "lifelong.dev/v1alpha1",
        "kind": "AutoDLJob",
        "metadata": {"name": "digits-test"},
        "spec": {
            "task": {"type": "classification", "target": "label", "metric": "accuracy"},
            "data": {
                "train": {"uri": "builtin://digits"},
                "stream": {
                    "uri": "builtin://digits",
                    "order": "class-incremental",
                    "phases": 2,
                    "labelDelay": 3,
                    "rate": 200,
                },
            },
            "serving": {
                "window": 50,
                "recentMemory": 1000,
                "detectors": [
                    {"type": "adwin", "delta": 0.002},
                    {"type": "page-hinkley", "threshold": 10},
                    {"type": "kswin", "alpha": 0.001, "windowSize": 100},
                    {"type": "ddm"},
                    {"type": "adwin", "name": "adwin-features", "input": "features"},
                ],
                **serving,
            },
            "lifelong": {
                "update": {"strategy": "replay", "memorySize": 500, "minSamples": 40},
                "gate": {"minGain": 0.0, "maxForgetting": 0.05, "holdoutFraction": 0.3},
            },
        },
    }


def write_job(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def train_first_version(
    job: AutoDLJob, store: Store, name: str, *, epochs: int = 40, seed: int = 0
) -> ModelBundle:
    """Train and save the job's first version on its training rows (digits 0-4 here)."""
    torch.manual_seed(seed)
    table = load_table(job.spec.data.train)
    task = infer_task(table, job.spec.task)
    streams = build_streams(job.spec.data, table, task)
    rows = split(streams.train, task, job.spec.data).train
    features, target = streams.feature_names, task.target
    preprocess = make_preprocessor(rows[features]).fit(rows[features])
    classes = sorted(rows[target].unique().tolist())
    x = torch.from_numpy(preprocess.transform(rows[features]).astype("float32"))
    network = build_model(FIRST_CONFIG, x.shape[1], len(classes))
    bundle = ModelBundle(network, preprocess, dict(FIRST_CONFIG), task.as_dict(), features, classes)
    y = torch.from_numpy(bundle.encode_labels(rows[target].tolist()))
    optimizer = make_optimizer(FIRST_CONFIG, network.parameters())
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_epoch(network, optimizer, x, y, task_loss(True), batch_size=32, generator=generator)
    bundle.save(store, name, {"job": job.metadata.name, "stage": "train"})
    return bundle


@dataclass
class Workspace:
    """A job manifest, its store and its first version, in a temporary folder."""

    folder: Path
    job_path: Path
    job: AutoDLJob
    store: Store
    version: str


def make_workspace(
    folder: Path, spec: dict[str, Any], version: str = "digits-test-v1"
) -> Workspace:
    job_path = write_job(folder, spec)
    job = load_job(job_path)
    store = Store(str(folder / "store"))
    train_first_version(job, store, version)
    return Workspace(folder, job_path, job, store, version)


# --- serve processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    """A running `lifelong trainer serve`; `stop()` ends it with SIGTERM, then SIGKILL."""

    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as answer:
                return int(answer.status), bytes(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post(self, path: str, body: bytes | Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status), json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def status(self) -> dict[str, Any]:
        code, body = self.get("/v1/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def metrics(self) -> str:
        return self.get("/metrics")[1].decode()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for a clean exit; SIGKILL the group if it does not come."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return int(self.popen.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_serve(
    work: Workspace,
    *extra: str,
    version: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> ServeProcess:
    """Start a serve process for the workspace's job and wait until it is ready."""
    port = free_port()
    log = work.folder / f"serve-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "lifelong.cli",
        "trainer",
        "serve",
        "--job",
        str(work.job_path),
        "--storage",
        work.store.uri,
        "--version",
        version or work.version,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]
    variables = {**os.environ, "LIFELONG_STATE_INTERVAL": "3600", "OMP_NUM_THREADS": "1"}
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**variables, **(env or {})},
            start_new_session=True,
        )
    process = ServeProcess(popen, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"serve exited with {popen.returncode}:\n{process.output()}")
        try:
            if process.get("/readyz")[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.stop()
    raise RuntimeError(f"serve was not ready within {timeout}s:\n{process.output()}")


def clone_workspace(work: Workspace, folder: Path, spec: dict[str, Any] | None = None) -> Workspace:
    """A new workspace with the same first version, an empty serving state and maybe a new spec."""
    shutil.copytree(work.folder / "store" / "versions", folder / "store" / "versions")
    job_path = write_job(folder, spec) if spec is not None else work.job_path
    return Workspace(
        folder, job_path, load_job(job_path), Store(str(folder / "store")), work.version
    )
