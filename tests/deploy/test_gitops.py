"""GitOps as shipped: the Kustomize overlay builds, the Argo CD Applications point at what exists,
and the AutoDLJob health check, run by a real Lua 5.1 (the language level of Argo CD's Lua), maps
the statuses the engine writes to Progressing, Healthy, Degraded and Suspended."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from lifelong.api import AutoDLJob
from lifelong.engine.model import Observations, RecordVersion, StageRun, StartStage
from lifelong.engine.step import step
from lifelong.manifests import validate_files
from tests.deploy.rendering import CHART, ROOT, one, render, tool

GITOPS = ROOT / "examples" / "gitops"
HEALTH = GITOPS / "argocd" / "autodljob-health.lua"
T0 = 1_800_000_000.0


# --- the overlay and the Applications --------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(tool("kubectl")), "kustomize", str(GITOPS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.integration
def test_the_overlay_holds_the_crds_the_namespace_and_the_patched_job(
    built: list[dict[str, Any]], tmp_path: Path
) -> None:
    crds = sorted(d["metadata"]["name"] for d in built if d["kind"] == "CustomResourceDefinition")
    assert crds == ["autodljobs.lifelong.dev", "modelversions.lifelong.dev"]
    assert one(built, "Namespace")["metadata"]["name"] == "ml-team"
    job = one(built, "AutoDLJob")
    assert job["metadata"]["namespace"] == "ml-team"
    assert job["spec"]["search"]["budget"]["trials"] == 16
    assert "status" not in job and "annotations" not in job["metadata"]
    (tmp_path / "built.yaml").write_text(yaml.safe_dump(job))
    resources, problems = validate_files([tmp_path / "built.yaml"])
    assert problems == [] and len(resources) == 1


def applications() -> dict[str, dict[str, Any]]:
    found = {}
    for path in (GITOPS / "argocd").glob("*.yaml"):
        app = yaml.safe_load(path.read_text())
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
        found[path.stem] = app
    return found


@pytest.mark.unit
def test_each_application_syncs_a_folder_of_this_repository() -> None:
    apps = applications()
    assert sorted(apps) == ["jobs", "operator"]
    for app in apps.values():
        assert (ROOT / app["spec"]["source"]["path"]).is_dir()
        assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    overlay = yaml.safe_load((GITOPS / "kustomization.yaml").read_text())
    assert apps["jobs"]["spec"]["destination"]["namespace"] == overlay["namespace"]


@pytest.mark.integration
def test_the_operator_application_values_install_an_operator_for_the_team(tmp_path: Path) -> None:
    helm = applications()["operator"]["spec"]["source"]["helm"]
    assert helm["skipCrds"] is True, "the jobs Application owns the CRDs"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(helm["valuesObject"]))
    objects = render(values)
    roles = [o for o in objects if o["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in roles] == ["ml-team"]
    assert not [o for o in objects if o["kind"].startswith("Cluster")]
    assert (CHART / "Chart.yaml").exists()


# --- the health check ------------------------------------------------------------------------


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the health check as Argo CD does: `obj` is the live object, the script returns hs."""
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = runtime.table_from(without_nulls(obj), recursive=True)
    result = runtime.execute(HEALTH.read_text())
    return str(result["status"]), str(result["message"])


def without_nulls(value: Any) -> Any:
    """JSON nulls are absent keys to Argo CD's Lua."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def job_manifest(**spec: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((GITOPS / "digits.yaml").read_text())
    manifest["metadata"].update(namespace="ml-team", generation=1)
    manifest["spec"].update(spec)
    return manifest


def live(manifest: dict[str, Any], *outcomes: dict[str, Any]) -> dict[str, Any]:
    """The object after the engine stepped once per outcome (runs that finished meanwhile)."""
    document = {k: manifest[k] for k in ("apiVersion", "kind", "spec")}
    job = AutoDLJob.model_validate({**document, "metadata": {"name": manifest["metadata"]["name"]}})
    runs: dict[str, StageRun] = {}
    versions: dict[str, dict[str, Any]] = {}
    for number, outcome in enumerate(({}, *outcomes)):
        for stage, result in outcome.items():
            name = next(n for n in runs if stage in n)
            runs[name] = StageRun(name, "succeeded", result)
        observed = Observations(
            now=T0 + number, runs=dict(runs), versions=dict(versions), serving_ready=True
        )
        transition = step(job, observed)
        for action in transition.actions:
            if isinstance(action, StartStage):
                runs.setdefault(action.name, StageRun(action.name, "running"))
            if isinstance(action, RecordVersion):
                versions[action.name] = action.spec
        job = job.model_copy(update={"status": transition.status})
    assert job.status is not None
    return {**manifest, "status": job.status.to_wire()}


TRAINED = {"version": {"job": "digits", "metric": "accuracy", "score": 0.97,
                       "objectives": {"accuracy": 0.97}, "name": "digits-v1"}}  # fmt: skip


@pytest.mark.unit
def test_a_job_the_operator_has_not_seen_yet_is_progressing() -> None:
    assert health(job_manifest()) == (
        "Progressing",
        "Waiting for the operator to reconcile the job.",
    )


@pytest.mark.unit
def test_a_searching_job_is_progressing_with_the_engine_message() -> None:
    obj = live(job_manifest())
    assert obj["status"]["phase"] == "Searching"
    status, message = health(obj)
    assert status == "Progressing" and message


@pytest.mark.unit
def test_a_serving_job_is_healthy() -> None:
    obj = live(job_manifest(), {"search": {"trials": 4, "completed": 4}}, {"train": TRAINED}, {})
    assert obj["status"]["phase"] == "Serving"
    assert health(obj) == ("Healthy", "digits-v1 serves predictions.")


@pytest.mark.unit
def test_a_stalled_job_is_degraded_with_the_reason() -> None:
    raw = [{"name": "raw", "promql": "lifelong_online_accuracy < 0.5"}]
    obj = live(job_manifest(lifelong={"triggers": raw}))
    status, message = health(obj)
    assert status == "Degraded" and "Prometheus" in message


@pytest.mark.unit
def test_a_suspended_job_is_suspended() -> None:
    obj = live(job_manifest(suspend=True))
    assert health(obj) == ("Suspended", "The job is suspended (spec.suspend).")


@pytest.mark.unit
def test_a_status_from_an_older_generation_is_progressing_even_if_it_said_healthy() -> None:
    obj = live(job_manifest(), {"search": {"trials": 4, "completed": 4}}, {"train": TRAINED}, {})
    obj["metadata"]["generation"] = 2
    assert health(obj) == ("Progressing", "The operator has not yet observed generation 2.")


@pytest.mark.unit
def test_the_gitops_guide_holds_the_health_check_verbatim() -> None:
    guide = (ROOT / "docs" / "gitops.md").read_text()
    assert HEALTH.read_text().strip() in guide
    assert "resource.customizations.health.lifelong.dev_AutoDLJob" in guide
