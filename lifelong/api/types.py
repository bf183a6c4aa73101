"""Scalar types shared by the resource models: durations, quantities and names.

Each type keeps the text the user wrote (so a manifest round-trips unchanged) and checks it the
way the API server does; `duration_seconds` and `quantity_value` turn the text into numbers for
the code that needs them.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
"""A Go-style duration such as `90s`, `15m`, `1h30m` or `2d`; no sign, at least one unit."""

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""A Kubernetes resource quantity such as `500m`, `2`, `1.5` or `2Gi`."""

NON_NEGATIVE_QUANTITY_PATTERN = "^" + QUANTITY_PATTERN.removeprefix(r"^(\+|-)?")
"""A quantity without a minus sign: what a resource request may be."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""An RFC 1123 label: lower-case letters, digits and dashes, starting and ending alphanumeric."""

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def duration_seconds(text: str) -> float:
    """Return the length of a duration such as `1h30m` in seconds.

    Raises ValueError naming the text and the accepted form when it is not a duration.
    """
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"{text!r} is not a duration; write a number followed by a unit "
            "(ms, s, m, h, d), for example 90s, 15m or 1h30m"
        )
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def quantity_value(text: str | int | float) -> float:
    """Return the numeric value of a Kubernetes quantity: `500m` is 0.5, `2Gi` is 2**31."""
    raw = str(text)
    if not re.fullmatch(QUANTITY_PATTERN, raw):
        raise ValueError(
            f"{raw!r} is not a Kubernetes quantity; write a number with an optional suffix "
            "such as 500m, 2, 1.5, 512Mi or 2Gi"
        )
    match = re.fullmatch(r"([+-]?[0-9.]+)([eE][+-]?[0-9.]+|[KMGTPE]i|[numkMGTPE])?", raw)
    if match is None:  # pragma: no cover - the pattern above already guarantees a match
        raise ValueError(f"{raw!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix in _BINARY_SUFFIX:
            return float(Decimal(number) * _BINARY_SUFFIX[suffix])
        if suffix[:1] in ("e", "E"):
            return float(Decimal(number + suffix))
        return float(Decimal(number) * _DECIMAL_SUFFIX[suffix])
    except InvalidOperation as error:
        raise ValueError(f"{raw!r} is not a Kubernetes quantity") from error


def _check_duration(text: str) -> str:
    duration_seconds(text)
    return text


def _check_positive_duration(text: str) -> str:
    if duration_seconds(text) <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return text


def _quantity_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # rejected by the str check below, with a clear message
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_quantity(text: str) -> str:
    if quantity_value(text) < 0:
        raise ValueError(f"{text!r} is negative; a resource request is zero or more")
    return text


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": DURATION_PATTERN,
    "maxLength": 32,
}

Duration = Annotated[str, AfterValidator(_check_duration), WithJsonSchema(_DURATION_SCHEMA)]
"""A duration such as `15m`; see DURATION_PATTERN."""

PositiveDuration = Annotated[
    str, AfterValidator(_check_positive_duration), WithJsonSchema(_DURATION_SCHEMA)
]
"""A duration longer than zero."""

Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": NON_NEGATIVE_QUANTITY_PATTERN,
            "minimum": 0,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity of zero or more, written as a string or a plain number."""
