"""Prometheus and Grafana as shipped: the rules checked and unit-tested by promtool, the scrape
configuration run by a real Prometheus against a serving pod's metrics, and the dashboard's
queries parsed by promtool and naming only metrics Lifelong exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import free_ports
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from lifelong.api import AutoDLJob
from lifelong.api.metrics import ALL_METRICS, JOB_LABEL, ONLINE_ACCURACY
from lifelong.engine.model import Serve, Stage, StartStage
from lifelong.engine.triggers import to_promql
from lifelong.operator import builders
from lifelong.operator.config import OperatorConfig
from lifelong.prometheus import query
from tests.deploy.rendering import CHART, ROOT
from tests.deploy.scrape import (
    RULES,
    PrometheusServer,
    load_example,
    with_file_discovery,
    write_targets,
)

pytestmark = pytest.mark.integration

DASHBOARD = CHART / "files" / "dashboard.json"
RULE_TESTS = Path(__file__).with_name("rules_test.yaml")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run tools/install-prometheus.sh (make test does)")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def declared_names() -> set[str]:
    """Every series name Lifelong exports: the stages' metrics and the operator's own."""
    names = set()
    for metric in ALL_METRICS:
        names.add(metric.name)
        if metric.kind == "histogram":
            names |= {f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count"}
    operator = (ROOT / "operator" / "metrics.py").read_text()
    for kind, name in re.findall(r'(Counter|Gauge|Histogram)\(\s*"(lifelong_\w+)"', operator):
        names.add(f"{name}_total" if kind == "Counter" and not name.endswith("_total") else name)
        if kind == "Histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def referenced_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(lifelong_[a-z_]+)\b", expression))


# --- rules -----------------------------------------------------------------------------------


def test_promtool_accepts_the_shipped_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_on_its_input_series_in_promtool_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr

    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    assert alerts - fired == set(), "every alert needs a case where it fires"


def test_the_rules_read_only_metrics_lifelong_exports_or_records() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    used = set().union(*(referenced_names(r["expr"]) for g in groups for r in g["rules"]))
    recorded_prefixes = {name.split(":")[0] for name in recorded}
    unknown = {n for n in used - declared_names() if n not in recorded_prefixes}
    assert unknown == set()


# --- the scrape configuration, run by Prometheus ---------------------------------------------


def test_promtool_accepts_the_scrape_configuration(tmp_path: Path) -> None:
    config = with_file_discovery(load_example(), tmp_path)
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", tmp_path / "prometheus.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Prometheus running the shipped configuration with file discovery in `targets/`,
    ready to answer."""
    server = PrometheusServer(tmp_path)
    server.start()
    try:
        yield server.url, server.targets
    finally:
        server.close()


def pod(template: dict[str, Any], name: str, namespace: str, phase: str) -> dict[str, Any]:
    """A pod as the API server would hold it, made from a pod template the operator built."""
    return {
        "metadata": {"name": name, "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
        "status": {"phase": phase, "podIP": "127.0.0.1"},
    }


def wait_for(check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_prometheus_scrapes_serving_pods_so_a_job_trigger_can_fire(
    prometheus: tuple[str, Path],
) -> None:
    url, targets = prometheus
    namespace, port = "ml", free_ports(1)[0]

    # A serving pod's metrics, from the operator's own builders; its port is the job's.
    manifest = yaml.safe_load((ROOT / "examples" / "digits-small.yaml").read_text())
    manifest["spec"]["serving"]["port"] = port
    job = AutoDLJob.model_validate(manifest)
    name = job.metadata.name
    body = {**manifest, "metadata": {"name": name, "namespace": namespace, "uid": "u1"}}
    config = OperatorConfig()
    serving = builders.deployment(job, body, Serve(f"{name}-v1"), config)["spec"]["template"]
    search = builders.batch_job(job, body, StartStage(Stage.SEARCH, f"{name}-search"), config)

    registry = CollectorRegistry()
    accuracy = Gauge(ONLINE_ACCURACY.name, ONLINE_ACCURACY.help,
                     [JOB_LABEL, *ONLINE_ACCURACY.labels], registry=registry)  # fmt: skip
    accuracy.labels(name, f"{name}-v1", "stable").set(0.6)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        write_targets(load_example(), targets, [
            pod(serving, f"{name}-serve-a", namespace, "Running"),
            pod(serving, f"{name}-serve-b", namespace, "Pending"),
            pod(search["spec"]["template"], f"{name}-search-x", namespace, "Running"),
        ])  # fmt: skip

        # The trigger's own PromQL, as the operator sends it, answers through this Prometheus.
        trigger = to_promql(job.spec.lifelong.triggers[0], name, namespace)
        results = wait_for(lambda: query(url, trigger))
        assert results, f"no answer to {trigger}; see prometheus.log"
        assert results[0].value == pytest.approx(0.6)

        series = query(url, f'{ONLINE_ACCURACY.name}{{job_name="{name}"}}')
        assert [r.labels["namespace"] for r in series] == [namespace]
        assert [r.labels["pod"] for r in series] == [f"{name}-serve-a"]
        assert series[0].labels["job"] == "lifelong-serving"
        assert "exported_job_name" not in series[0].labels

        # Only the running, annotated serving pod is a target; the rules file is loaded.
        up = query(url, "up")
        assert [(r.labels["job"], r.labels["pod"]) for r in up] == [
            ("lifelong-serving", f"{name}-serve-a")
        ]
        recorded = wait_for(lambda: query(url, "lifelong_job:online_accuracy:avg5m"))
        assert recorded and recorded[0].labels == {
            "__name__": "lifelong_job:online_accuracy:avg5m",
            "namespace": namespace,
            "job_name": name,
        }
    finally:
        server.shutdown()
        thread.join(timeout=5)


# --- the dashboard ---------------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_one_grafana_dashboard_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "lifelong-job"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource", "namespace", "job"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["title"] and panel["description"] and panel["targets"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_the_dashboard_shows_accuracy_drift_versions_updates_and_trials() -> None:
    used = set().union(*map(referenced_names, dashboard_queries()))
    for wanted in ("lifelong_online_accuracy", "lifelong_drift_active",
                   "lifelong_drift_detected_total", "lifelong_serving_info",
                   "lifelong_search_trials", "lifelong_search_best_objective"):  # fmt: skip
        assert wanted in used
    assert used - declared_names() == set(), "the dashboard names metrics nobody exports"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    grafana = {"$namespace": "ml", "$job": "digits", "$__rate_interval": "1m", "$__range": "6h"}
    rules = []
    for number, query_text in enumerate(dashboard_queries()):
        expression = query_text
        for variable, value in grafana.items():
            expression = expression.replace(variable, value)
        assert "$" not in expression, query_text
        rules.append({"record": f"dashboard:query_{number}", "expr": expression})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
