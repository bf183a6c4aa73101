"""The base model of every Lifelong resource type, and the Kubernetes condition shape.

Fields are snake_case in Python and camelCase on the wire, as in every Kubernetes API. Unknown
fields are errors, so a typo such as `spec.serach` never passes silently. Each field's docstring
becomes its description in the CRD schema, which is what `kubectl explain` prints.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

GROUP: Final = "lifelong.dev"
"""The API group of every Lifelong resource."""

VERSION: Final = "v1alpha1"
"""The one served and stored version of the API."""

API_VERSION: Final = "lifelong.dev/v1alpha1"
"""The `apiVersion` of every Lifelong resource."""


class ApiModel(BaseModel):
    """Base of every resource model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_wire(self) -> dict[str, object]:
        """Return the object as Kubernetes would store it: camelCase keys, no unset fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(*rules: tuple[str, str]) -> ConfigDict:
    """Model config carrying CEL rules (`x-kubernetes-validations`) for the CRD schema.

    Each rule is a `(expression, message)` pair. The API server enforces the rules; each model
    also checks the same rule in Python so that `lifelong validate` reports it without a cluster.
    """
    validations: list[JsonValue] = [{"rule": r, "message": m} for r, m in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One aspect of an object's current state, in the shape every Kubernetes API uses."""

    type: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)
    """Which aspect this condition describes, for example `Ready` or `Stalled`."""

    status: ConditionStatus
    """Whether the condition holds: `True`, `False` or `Unknown`."""

    reason: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)
    """A one-word CamelCase cause of the last transition, from Lifelong's list of reasons."""

    message: str = Field(default="", max_length=1024)
    """A sentence for people saying what happened and, where it helps, what to do."""

    last_transition_time: str
    """When the status last changed, as an RFC 3339 timestamp."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` of the spec this condition was computed from."""


class ObjectMeta(ApiModel):
    """The part of Kubernetes object metadata that Lifelong reads; the rest passes through."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    """The object's name, an RFC 1123 label."""

    namespace: str | None = None
    """The namespace."""
