"""The Helm chart rendered by the real `helm` binary, as Python objects, for the chart tests.

`helm` comes from `tools/build.sh` (run by `make test`) under `$LIFELONG_CACHE/bin`; a missing
binary fails the test with the command that builds it, never skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lifelong"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "lifelong"
NAMESPACE = "lifelong-system"

Object = dict[str, Any]


def tool(name: str) -> Path:
    """A program built by tools/build.sh: helm, kubectl."""
    cache = Path(os.environ.get("LIFELONG_CACHE") or Path.home() / ".cache" / "lifelong")
    path = cache / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run tools/build.sh (make test does)", pytrace=False)
    return path


def helm(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; with `check`, a failure fails the test with helm's own message."""
    result = subprocess.run(
        [str(tool("helm")), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/lifelong-helm-cache"},
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(map(str, args))} failed:\n{result.stderr}", pytrace=False)
    return result


def _flags(values: Path | None, settings: Mapping[str, Any]) -> list[str]:
    flags = ["--namespace", NAMESPACE]
    if values is not None:
        flags += ["--values", str(values)]
    for key, value in settings.items():
        flags += ["--set-json", f"{key}={json.dumps(value)}"]
    return flags


def render_text(values: Path | None = None, /, **settings: Any) -> str:
    """`helm template` of the chart with a values file and `--set key=value` settings."""
    return helm("template", RELEASE, CHART, *_flags(values, settings)).stdout


def render(values: Path | None = None, /, **settings: Any) -> list[Object]:
    """The rendered objects; settings use dotted keys as keyword names, e.g.
    `render(**{"rbac.scope": "namespaced"})`."""
    return [doc for doc in yaml.safe_load_all(render_text(values, **settings)) if doc]


def refused(**settings: Any) -> str:
    """helm's error when it refuses these settings (the test fails if helm accepts them)."""
    result = helm("template", RELEASE, CHART, *_flags(None, settings), check=False)
    if result.returncode == 0:
        pytest.fail(f"helm accepted {settings}", pytrace=False)
    return result.stderr


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Object], kind: str) -> Object:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(objects: list[Object]) -> set[str]:
    return {o["kind"] for o in objects}


def operator_container(objects: list[Object]) -> Object:
    container: Object = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def env(objects: list[Object]) -> dict[str, Any]:
    """The operator container's environment: plain values, and `fieldRef` paths for the rest."""
    result: dict[str, Any] = {}
    for item in operator_container(objects).get("env", []):
        field = (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        result[item["name"]] = item.get("value") if field is None else f"fieldRef:{field}"
    return result
