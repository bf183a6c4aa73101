"""The operator's knobs, read from the environment in one place, each with what it controls.

The Helm chart sets these from its values. A job's own spec overrides the defaults where it has
a say (its storage, its Prometheus URL, its image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "")
    return value if value else default


def _float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(f"${name} must be a number of seconds, got {raw!r}") from error


@dataclass(frozen=True)
class OperatorConfig:
    """Settings of one operator process."""

    image: str = "ghcr.io/lifelong-dev/lifelong:0.1.0"
    """`LIFELONG_IMAGE`: the image of stage pods when a job names none."""

    image_pull_policy: str = "IfNotPresent"
    """`LIFELONG_IMAGE_PULL_POLICY`: the stage containers' image pull policy."""

    storage_uri: str = "file:///var/lib/lifelong"
    """`LIFELONG_STORAGE_URI`: the artifact store's root when a job names none; each job uses
    `ROOT/NAMESPACE/NAME` below it."""

    storage_claim: str | None = None
    """`LIFELONG_STORAGE_CLAIM`: a PersistentVolumeClaim mounted into every stage pod at
    `storage_mount`, for a `file://` store shared by the stages. Unset: none is mounted."""

    storage_mount: str = "/var/lib/lifelong"
    """`LIFELONG_STORAGE_MOUNT`: where that claim is mounted."""

    prometheus_url: str | None = None
    """`LIFELONG_PROMETHEUS_URL`: Prometheus for triggers when a job names none. Unset: triggers
    are evaluated from the serving pods' own `/metrics`."""

    interval: float = 10.0
    """`LIFELONG_RECONCILE_INTERVAL`: seconds between two reconciliations of every job (trigger
    evaluation, progress); changes to a job or its children are handled at once."""

    metrics_port: int = 8000
    """`LIFELONG_METRICS_PORT`: port of the operator's own `/metrics`; 0 turns it off."""

    log_format: str = "plain"
    """`LIFELONG_LOG_FORMAT`: `plain` or `json`."""

    namespaces: tuple[str, ...] = field(default_factory=tuple)
    """`LIFELONG_NAMESPACES`: comma-separated namespaces to watch. Empty: the whole cluster."""

    peering: str | None = None
    """`LIFELONG_PEERING`: the Kopf peering name for leader election between replicas. Unset:
    the operator runs standalone (one replica)."""

    scrape_timeout: float = 5.0
    """`LIFELONG_SCRAPE_TIMEOUT`: seconds to wait for a serving pod's metrics or Prometheus."""

    run_as_user: int = 65532
    """`LIFELONG_RUN_AS_USER`: the non-root user id of stage containers."""

    @classmethod
    def from_env(cls) -> OperatorConfig:
        namespaces = tuple(n.strip() for n in _env("LIFELONG_NAMESPACES", "").split(",") if n)
        return cls(
            image=_env("LIFELONG_IMAGE", cls.image),
            image_pull_policy=_env("LIFELONG_IMAGE_PULL_POLICY", cls.image_pull_policy),
            storage_uri=_env("LIFELONG_STORAGE_URI", cls.storage_uri),
            storage_claim=os.environ.get("LIFELONG_STORAGE_CLAIM") or None,
            storage_mount=_env("LIFELONG_STORAGE_MOUNT", cls.storage_mount),
            prometheus_url=os.environ.get("LIFELONG_PROMETHEUS_URL") or None,
            interval=_float("LIFELONG_RECONCILE_INTERVAL", cls.interval),
            metrics_port=int(_float("LIFELONG_METRICS_PORT", cls.metrics_port)),
            log_format=_env("LIFELONG_LOG_FORMAT", cls.log_format),
            namespaces=namespaces,
            peering=os.environ.get("LIFELONG_PEERING") or None,
            scrape_timeout=_float("LIFELONG_SCRAPE_TIMEOUT", cls.scrape_timeout),
            run_as_user=int(_float("LIFELONG_RUN_AS_USER", cls.run_as_user)),
        )
