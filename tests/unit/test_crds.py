"""The CRDs: generated from the models, committed unchanged, structural and fully described."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lifelong.api.crd import all_crds
from lifelong.cli import main

pytestmark = pytest.mark.unit


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        found += walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += walk(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_lifelong_crds_reproduces_the_committed_files(tmp_path: Path, project_root: Path) -> None:
    assert main(["crds", "--output", str(tmp_path)]) == 0
    generated = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in (project_root / "crds").glob("*.yaml"))
    assert generated == committed
    for name in generated:
        assert (tmp_path / name).read_text() == (project_root / "crds" / name).read_text(), (
            f"crds/{name} differs from the models; run `make crds` and commit the result"
        )


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_every_field_has_a_description(name: str) -> None:
    schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec_and_status = walk(schema["properties"]["spec"], ".spec")
    spec_and_status += walk(schema["properties"].get("status", {}), ".status")
    # Named fields need a description; the items of a list of plain values do not.
    fields = [
        (path, node)
        for path, node in spec_and_status
        if not path.endswith(("[]", "{}")) or node.get("type") == "object"
    ]
    missing = [path for path, node in fields if not node.get("description")]
    assert missing == []


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_the_schema_is_structural(name: str) -> None:
    schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text
    assert "default:" not in text, "defaults would make the stored object differ from git"
    for path, node in walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert "anyOf" not in node, path
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):  # OpenAPI v3.0: a boolean flag
            assert isinstance(node.get(flag, False), bool), f"{path}.{flag}"


def test_the_job_crd_has_status_columns_short_names_and_category() -> None:
    crd = all_crds()["lifelong.dev_autodljobs.yaml"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Score", "Serving", "Age"} <= columns
    assert crd["spec"]["names"]["shortNames"] == ["adj"]
    assert crd["spec"]["names"]["categories"] == ["lifelong"]


def test_cel_rules_carry_readable_messages() -> None:
    text = yaml.safe_dump(all_crds())
    rules = [r for r in yaml.safe_load(text).values() for r in find_rules(r)]
    assert len(rules) >= 6
    assert all(r["message"] and r["rule"] for r in rules)


def find_rules(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found = list(node.get("x-kubernetes-validations", []))
        for value in node.values():
            found += find_rules(value)
        return found
    if isinstance(node, list):
        return [r for item in node for r in find_rules(item)]
    return []
