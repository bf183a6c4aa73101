"""The shipped Prometheus scrape configuration, runnable by Debian's Prometheus in tests.

`examples/prometheus/prometheus.yaml` finds pods through Kubernetes service discovery, which
Debian's build of Prometheus leaves out. Tests therefore turn each `kubernetes_sd_configs` entry
into a `file_sd_configs` entry and write, for every pod, the target group that Kubernetes service
discovery (role `pod`) would produce: one target per container port, with the same
`__meta_kubernetes_*` labels. The shipped relabelling then runs unchanged, so what a test sees is
what a cluster's Prometheus does. The end-to-end test feeds real pods of the test cluster through
`write_targets`.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from processes import Process, free_ports

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prometheus" / "prometheus.yaml"
RULES = ROOT / "charts" / "lifelong" / "files" / "rules.yaml"

Pod = Mapping[str, Any]


def _sanitize(name: str) -> str:
    """A Kubernetes label or annotation name as Prometheus writes it into a meta label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _selected(labels: Mapping[str, str], selector: str) -> bool:
    """Whether `labels` match an equality-based selector such as `a=b,c!=d`."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        else:
            key, value = term.split("=", 1)
            if labels.get(key) != value.lstrip("="):
                return False
    return True


def pod_target_groups(pod: Pod) -> list[dict[str, Any]]:
    """The target groups Kubernetes service discovery makes of one pod (role `pod`)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    ip = status.get("podIP") or ""
    common = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
    }
    for key, value in (meta.get("labels") or {}).items():
        common[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = value
        common[f"__meta_kubernetes_pod_labelpresent_{_sanitize(key)}"] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        common[f"__meta_kubernetes_pod_annotation_{_sanitize(key)}"] = value
        common[f"__meta_kubernetes_pod_annotationpresent_{_sanitize(key)}"] = "true"

    groups = []
    for container in spec.get("containers", []):
        labels = {**common, "__meta_kubernetes_pod_container_name": container["name"]}
        ports = container.get("ports") or []
        if not ports:
            groups.append({"targets": [ip], "labels": labels})
        for port in ports:
            groups.append({
                "targets": [f"{ip}:{port['containerPort']}"],
                "labels": {
                    **labels,
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                },
            })  # fmt: skip
    return groups


def load_example() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return config


def with_file_discovery(
    config: Mapping[str, Any], targets: Path, scrape_interval: str | None = None
) -> dict[str, Any]:
    """The configuration with each job's Kubernetes discovery replaced by `targets/JOB.json`.

    Relative rule files are made absolute, so the result can be written anywhere.
    """
    result: dict[str, Any] = json.loads(json.dumps(config))
    result["rule_files"] = [str((EXAMPLE.parent / f).resolve()) for f in config["rule_files"]]
    if scrape_interval:
        result["global"]["scrape_interval"] = scrape_interval
        result["global"]["evaluation_interval"] = scrape_interval
    for job in result["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            path = targets / f"{job['job_name']}.json"
            job["file_sd_configs"] = [{"files": [str(path)], "refresh_interval": "1s"}]
    return result


def write_targets(config: Mapping[str, Any], targets: Path, pods: Iterable[Pod]) -> None:
    """Write each job's targets file from `pods`, applying the job's pod label selectors."""
    pods = list(pods)
    for job in config["scrape_configs"]:
        selectors = [
            s.get("label", "")
            for sd in job.get("kubernetes_sd_configs", [])
            for s in sd.get("selectors", [])
            if s.get("role") == "pod"
        ]
        groups = [
            group
            for pod in pods
            if all(_selected(pod["metadata"].get("labels") or {}, s) for s in selectors)
            for group in pod_target_groups(pod)
        ]
        path = targets / f"{job['job_name']}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups, indent=1))
        temporary.replace(path)  # Prometheus never reads a half-written file


class PrometheusServer:
    """Debian's Prometheus running the shipped configuration with file discovery in
    `folder/targets` (empty until `write_targets`), scraping every second. Its address is known
    before `start`, so a job can name a Prometheus that is not up yet."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"http://127.0.0.1:{free_ports(1)[0]}"
        self.targets = folder / "targets"
        self.targets.mkdir()
        config = with_file_discovery(load_example(), self.targets, scrape_interval="1s")
        (folder / "prometheus.yaml").write_text(yaml.safe_dump(config))
        write_targets(load_example(), self.targets, [])
        self.process: Process | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers `/-/ready`."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing: run tools/install-prometheus.sh (make test does)")
        self.process = Process.start(
            "prometheus",
            [binary, f"--config.file={self.folder / 'prometheus.yaml'}",
             f"--storage.tsdb.path={self.folder / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            self.folder / "prometheus.log",
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._ready():
            if not self.process.alive or time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not start:\n{self.log()}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self.process is not None:
            self.process.stop(grace=20)

    def log(self, lines: int = 30) -> str:
        path = self.folder / "prometheus.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
