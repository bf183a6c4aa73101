"""A small client for Prometheus' HTTP query API, used to evaluate triggers.

Both the operator and the local runner use it; it reports an unreachable or failing server as
`PrometheusError`, so callers can say so in a condition instead of firing nothing silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


class PrometheusError(RuntimeError):
    """Prometheus could not answer a query."""


@dataclass(frozen=True)
class Result:
    """One sample of an instant query."""

    labels: dict[str, str]
    value: float


def query(url: str, expression: str, timeout: float = 10.0) -> list[Result]:
    """Evaluate an instant PromQL query; an empty list means no series matched."""
    endpoint = url.rstrip("/") + "/api/v1/query"
    try:
        response = httpx.get(endpoint, params={"query": expression}, timeout=timeout)
    except httpx.HTTPError as error:
        raise PrometheusError(f"Prometheus at {url} is unreachable: {error}") from error
    if response.status_code != 200:
        raise PrometheusError(
            f"Prometheus at {url} refused {expression!r} ({response.status_code}): "
            f"{response.text[:300]}"
        )
    body = response.json()
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus at {url} failed {expression!r}: {body.get('error')}")
    data = body.get("data", {})
    if data.get("resultType") == "scalar":
        return [Result({}, float(data["result"][1]))]
    return [
        Result(dict(item.get("metric", {})), float(item["value"][1]))
        for item in data.get("result", [])
    ]
