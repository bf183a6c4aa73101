"""Benchmark: the Lifelong operator next to a minimal Kopf operator, on one real control plane.

Both operators run as local processes, each watching a namespace of its own, against the test
control plane of `tests/harness` (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
started here WITHOUT a node: the Job controller creates each child Job's pod, the scheduler finds
no node for it, and it stays Pending. Nothing of a stage runs; what is measured is the operators'
own work, with the API server's.

- Lifelong: `lifelong operator` on `AutoDLJob`s; its first child is the search Job (after the
  job's spec ConfigMap, its observation of the cluster, and its status and events).
- Minimal Kopf: `bench/minimal_kopf.py`, which creates one batch Job per `Widget` on create.

For each: the latency from creating an object to its first child Job appearing (median and p95
over 50 objects created one after another, half a second apart), the time to reconcile 200
objects created at once (until all 200 have their Job), the operator's resident memory (RSS) once
it holds 1,000 objects with their Jobs, and its CPU time. The phases alternate which operator
goes first.

Run: `python bench/operator_scale.py` (2 to 4 minutes on two cores, with the load).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "harness")]

from cluster import Cluster  # noqa: E402  (the harness is not a package)
from controlplane import ControlPlane  # noqa: E402
from processes import Process  # noqa: E402

from tests.e2e.operators import apply_crds, free_port  # noqa: E402

LATENCY_OBJECTS = 50
BURST_OBJECTS = 200
MEMORY_OBJECTS = 1_000
SETTLE = 0.5
"""Seconds between two objects of the latency phase, so that each is measured on its own."""

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.bench.lifelong.dev"},
    "spec": {
        "group": "bench.lifelong.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
        }],
    },
}  # fmt: skip


def autodljob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "lifelong.dev/v1alpha1", "kind": "AutoDLJob", "metadata": {"name": name},
        "spec": {
            "data": {"train": {"uri": "builtin://iris"}},
            "search": {"strategy": "random", "budget": {"trials": 2, "parallelism": 1,
                                                         "maxEpochs": 2}},
        },
    }  # fmt: skip


def widget(name: str) -> dict[str, Any]:
    return {"apiVersion": "bench.lifelong.dev/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1}}  # fmt: skip


@dataclass
class Contender:
    """One operator under test: its process, the objects it reconciles and its first child."""

    name: str
    command: Callable[[str], list[str]]
    """The command line, given the namespace to watch."""
    env: dict[str, str]
    plural: tuple[str, str, str]
    make: Callable[[str], dict[str, Any]]
    child: Callable[[str], str]
    namespace: str = ""
    process: Process | None = None
    seen: dict[str, float] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    figures: dict[str, str] = field(default_factory=dict)

    def start(self, log: Path) -> None:
        argv = self.command(self.namespace)
        self.process = Process.start(self.name, argv, log, env={**os.environ, **self.env}, cwd=ROOT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=20)

    def rss_mib(self) -> float:
        if self.process is None:
            return float("nan")
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """CPU time the process used so far (user and system)."""
        if self.process is None:
            return float("nan")
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def watch_jobs(self, client: Any, stop: threading.Event) -> None:
        """Note when each child Job is first seen, from a watch on the namespace's Jobs."""
        batch = kubernetes.client.BatchV1Api(client)
        while not stop.is_set():
            watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            stream = watch.stream(  # type: ignore[no-untyped-call]
                batch.list_namespaced_job, self.namespace, timeout_seconds=30
            )
            try:
                for event in stream:
                    name = event["object"].metadata.name
                    with self.changed:
                        self.seen.setdefault(name, time.perf_counter())
                        self.changed.notify_all()
                    if stop.is_set():
                        break
            except Exception:  # the control plane stopping under the watch ends it
                if not stop.is_set():
                    raise

    def wait_children(self, names: list[str], timeout: float) -> float:
        """Wait until every object's child was seen; return when the last one was."""
        children = [self.child(n) for n in names]
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(c in self.seen for c in children):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(1 for c in children if c not in self.seen)
                    raise TimeoutError(f"{self.name}: {missing} of {len(names)} children missing")
                self.changed.wait(min(left, 1.0))
            return max(self.seen[c] for c in children)


def create(custom: Any, contender: Contender, name: str) -> None:
    group, version, plural = contender.plural
    custom.create_namespaced_custom_object(
        group, version, contender.namespace, plural, contender.make(name)
    )


def latency(custom: Any, contender: Contender) -> None:
    delays = []
    for i in range(LATENCY_OBJECTS):
        name = f"lat-{i}"
        began = time.perf_counter()
        create(custom, contender, name)
        delays.append(contender.wait_children([name], timeout=60) - began)
        time.sleep(SETTLE)  # the pass's tail (status, event) ends before the next object
    delays.sort()
    p95 = delays[round(0.95 * (len(delays) - 1))]
    contender.figures["latency"] = (
        f"{statistics.median(delays) * 1000:.0f} ms median, {p95 * 1000:.0f} ms p95"
    )


def burst(custom: Any, contender: Contender, count: int, prefix: str) -> float:
    names = [f"{prefix}-{i}" for i in range(count)]
    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: create(custom, contender, n), names))
    return contender.wait_children(names, timeout=600) - began


def throughput(custom: Any, contender: Contender) -> None:
    seconds = burst(custom, contender, BURST_OBJECTS, "burst")
    contender.figures["burst"] = f"{seconds:.1f} s ({BURST_OBJECTS / seconds:.1f} objects/s)"


def memory(custom: Any, contender: Contender) -> None:
    held = LATENCY_OBJECTS + BURST_OBJECTS
    burst(custom, contender, MEMORY_OBJECTS - held, "mem")
    time.sleep(20)  # let status writes, events and their watch echoes settle
    contender.figures["rss"] = f"{contender.rss_mib():.0f} MiB"


@contextmanager
def control_plane() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="lifelong-bench-", dir="/var/tmp"))
    plane = ControlPlane(workdir / "control-plane")
    plane.start()
    cluster = Cluster(workdir, plane)
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)


METRICS_PORT = free_port()


def contenders(kubeconfig: Path) -> list[Contender]:
    lifelong_env = {
        "KUBECONFIG": str(kubeconfig), "LIFELONG_IMAGE": "lifelong:bench",
        "LIFELONG_METRICS_PORT": str(METRICS_PORT), "LIFELONG_HEALTH_PORT": "0",
        "POD_IP": "127.0.0.1", "LIFELONG_LOG_LEVEL": "INFO",
    }  # fmt: skip
    minimal = str(ROOT / "bench" / "minimal_kopf.py")
    return [
        Contender(
            "lifelong operator",
            lambda ns: [sys.executable, "-m", "lifelong.cli", "operator", "--namespace", ns],
            lifelong_env, ("lifelong.dev", "v1alpha1", "autodljobs"), autodljob,
            lambda n: f"{n}-search",
        ),
        Contender(
            "minimal Kopf operator",
            lambda ns: [sys.executable, "-m", "kopf", "run", minimal, "--standalone",
                        "--namespace", ns],
            {"KUBECONFIG": str(kubeconfig)}, ("bench.lifelong.dev", "v1", "widgets"), widget,
            lambda n: f"{n}-work",
        ),
    ]  # fmt: skip


def reconcile_passes() -> str:
    """The Lifelong operator's passes, from its own /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            ok = sample.labels.get("outcome") == "ok"
            if sample.name == "lifelong_operator_reconciles_total" and ok:
                return f"{sample.value:.0f}"
    return "?"


def main() -> None:
    load = os.getloadavg()[0]
    began = time.monotonic()
    with control_plane() as cluster:
        apply_crds(cluster)
        cluster.apply(WIDGET_CRD)
        cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.bench.lifelong.dev")
        racers = contenders(cluster.kubeconfig)
        logs = Path(tempfile.mkdtemp(prefix="lifelong-bench-logs-", dir="/var/tmp"))
        stop = threading.Event()
        watcher = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(cluster.kubeconfig)
        )
        for racer in racers:
            racer.namespace = cluster.create_namespace(racer.name.split()[0])
            racer.start(logs / f"{racer.namespace}.log")
            threading.Thread(target=racer.watch_jobs, args=(watcher, stop), daemon=True).start()
        custom = kubernetes.client.CustomObjectsApi(cluster.api)
        try:
            time.sleep(10)  # both operators up and listing
            idle = {r.name: f"{r.rss_mib():.0f} MiB" for r in racers}
            for phase, order in ((latency, racers), (throughput, racers[::-1]),
                                 (memory, racers)):  # fmt: skip
                for racer in order:
                    phase(custom, racer)
            for racer in racers:
                jobs = cluster.batch.list_namespaced_job(racer.namespace).items
                racer.figures["children"] = f"{len(jobs)} Jobs for {MEMORY_OBJECTS} objects"
                racer.figures["cpu"] = f"{racer.cpu_seconds():.0f} s"
            passes = reconcile_passes()
        finally:
            stop.set()
            for racer in racers:
                racer.stop()
        pods = cluster.core.list_pod_for_all_namespaces().items
        pending = sum(1 for p in pods if p.status.phase == "Pending")

    print(
        f"Operators on the test control plane without a node: of the {len(pods)} pods the Job "
        f"controller had created by the end, {pending} were Pending (unschedulable)."
    )
    print(
        f"Load average at start {load:.1f} on {os.cpu_count()} CPUs; "
        f"{time.monotonic() - began:.0f} s in all. Logs in {logs}."
    )
    print(f"The Lifelong operator made {passes} reconcile passes for {MEMORY_OBJECTS} jobs.\n")
    rows = [
        ("apply to first child Job (50 objects, 0.5 s apart)", "latency"),
        (f"{BURST_OBJECTS} objects created at once, until all have their Job", "burst"),
        (f"RSS holding {MEMORY_OBJECTS} objects and their Jobs", "rss"),
        ("child Jobs at the end (one per object)", "children"),
        ("CPU time of the operator process over the whole run", "cpu"),
    ]
    print(f"| measure | {racers[0].name} | {racers[1].name} |")
    print("| --- | --- | --- |")
    print(f"| RSS at start, idle | {idle[racers[0].name]} | {idle[racers[1].name]} |")
    for label, key in rows:
        print(f"| {label} | {racers[0].figures[key]} | {racers[1].figures[key]} |")


if __name__ == "__main__":
    main()
