"""CustomResourceDefinitions generated from the resource models.

The pydantic models are the one source of truth: this module turns their JSON Schema into the
structural OpenAPI v3 schema Kubernetes requires (references inlined, nullable unions folded,
no defaults so that the stored object equals the applied one) and wraps it in a CRD with the
status subresource, printer columns, short names and the `lifelong` category.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from lifelong.api.base import GROUP, VERSION
from lifelong.api.job import AutoDLJob
from lifelong.api.version import ModelVersion

Schema = dict[str, Any]

_KEEP = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "format",
    "additionalProperties",
    "anyOf",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
}


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _fold_nullable(schema: Schema) -> Schema:
    """Turn `anyOf: [X, {type: null}]` (an optional field) into X."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) == len(options) or len(kept) != 1:
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **merged}


def structural(schema: Schema, definitions: dict[str, Schema]) -> Schema:
    """Return a structural OpenAPI v3 schema for one JSON Schema node."""
    schema = _fold_nullable(schema)
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        outer = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **outer}

    if schema.get("x-lifelong-free-form"):
        kind = schema.get("type", "object")
        out: Schema = {"type": kind, "description": _words(schema.get("description", ""))}
        if kind == "array":
            out["items"] = {
                "type": "object",
                "description": "A Kubernetes object of that kind, passed through as written.",
                "x-kubernetes-preserve-unknown-fields": True,
            }
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
        return out

    out = {k: v for k, v in schema.items() if k in _KEEP}
    # OpenAPI v3.0 (what Kubernetes speaks) writes an exclusive bound as a boolean flag beside
    # minimum/maximum; JSON Schema writes the bound itself.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(exclusive), int | float) and not isinstance(out[exclusive], bool):
            out[bound] = out[exclusive]
            out[exclusive] = True
    if "description" in out:
        out["description"] = _words(out["description"])
    if "const" in schema:
        out["type"] = "string"
        out["enum"] = [schema["const"]]
    if "enum" in out and "type" not in out:
        kinds = {type(v) for v in out["enum"]}
        out["type"] = "integer" if kinds == {int} else "string"
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {
            name: structural(child, definitions) for name, child in out["properties"].items()
        }
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(out["additionalProperties"], definitions)
    elif out.get("additionalProperties") is False:
        del out["additionalProperties"]  # unknown fields are pruned, and refused by kubectl
    elif out.get("additionalProperties") is True or (
        out.get("type") == "object" and "properties" not in out
    ):
        out.pop("additionalProperties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in out:
        out["items"] = structural(out["items"], definitions)
    if "anyOf" in out and not out.get("x-kubernetes-int-or-string"):
        raise ValueError(f"the schema has a union Kubernetes cannot express: {out['anyOf']}")
    return out


def resource_schema(model: type[BaseModel]) -> Schema:
    """Return the CRD `openAPIV3Schema` of a resource model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.get("$defs", {})
    schema = structural(raw, definitions)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {
        "type": "string",
        "description": "The API version, `lifelong.dev/v1alpha1`.",
    }
    schema["properties"]["kind"] = {"type": "string", "description": "The kind of the object."}
    schema["required"] = [r for r in schema.get("required", []) if r != "metadata"]
    return schema


def _crd(
    model: type[BaseModel],
    kind: str,
    plural: str,
    short_names: list[str],
    columns: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "lifelong",
                "app.kubernetes.io/part-of": "lifelong",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["lifelong"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": resource_schema(model)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def autodljob_crd() -> dict[str, Any]:
    """The CRD of `AutoDLJob`."""
    return _crd(
        AutoDLJob,
        "AutoDLJob",
        "autodljobs",
        ["adj"],
        [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Metric", "type": "string", "jsonPath": ".status.metric"},
            {"name": "Score", "type": "number", "jsonPath": ".status.score"},
            {"name": "Serving", "type": "string", "jsonPath": ".status.servingVersion"},
            {"name": "Versions", "type": "integer", "jsonPath": ".status.versions"},
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def modelversion_crd() -> dict[str, Any]:
    """The CRD of `ModelVersion`."""
    return _crd(
        ModelVersion,
        "ModelVersion",
        "modelversions",
        ["mv"],
        [
            {"name": "Job", "type": "string", "jsonPath": ".spec.job"},
            {"name": "State", "type": "string", "jsonPath": ".status.state"},
            {"name": "Score", "type": "number", "jsonPath": ".spec.score"},
            {"name": "Parent", "type": "string", "jsonPath": ".spec.parent"},
            {"name": "Trigger", "type": "string", "jsonPath": ".spec.trigger"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """Every CRD, keyed by the file name it is written to under `crds/`."""
    return {
        "lifelong.dev_autodljobs.yaml": autodljob_crd(),
        "lifelong.dev_modelversions.yaml": modelversion_crd(),
    }
