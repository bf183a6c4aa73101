"""The operator's knobs, read from the environment in one place, each with what it controls.

The Helm chart sets these from its values. A job's own spec overrides the defaults where it has
a say (its storage, its Prometheus URL, its image). Nothing else in the operator reads the
environment.
"""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass, field

LOG_FORMATS = ("plain", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A knob has a value the operator cannot use; the message names the variable."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value if value else default


def _optional(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None


def _float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError as error:
        raise ConfigError(f"${name} must be a number, got {raw!r}") from error
    if value < minimum:
        raise ConfigError(f"${name} must be at least {minimum:g}, got {raw!r}")
    return value


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError as error:
        raise ConfigError(f"${name} must be a whole number, got {raw!r}") from error
    if value < minimum:
        raise ConfigError(f"${name} must be at least {minimum}, got {raw!r}")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    raw = _env(name, default)
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ConfigError(f"${name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _identity() -> str:
    """This process among its peers: the pod's name in a cluster, else host, pid and a draw."""
    draw = random.SystemRandom().randint(0, 0xFFFF)
    return _optional("POD_ID") or f"{socket.gethostname()}/{os.getpid()}/{draw:04x}"


def _draw_priority() -> int:
    return random.SystemRandom().randint(1, 2**31 - 1)


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
    """`LIFELONG_RECONCILE_INTERVAL`: seconds between two reconciliations of a job that waits on
    time rather than on an object (triggers and canaries of a serving job, a retry's backoff).
    Changes to a job or its children are handled at once."""

    resync_interval: float = 300.0
    """`LIFELONG_RESYNC_INTERVAL`: seconds between two reconciliations of every other job, a
    safety net under the watches."""

    stage_metrics_port: int = 9110
    """`LIFELONG_STAGE_METRICS_PORT`: port on which the search, train and update pods serve
    their progress metrics (`LIFELONG_METRICS_PORT` in the pod, annotated for Prometheus);
    0 turns it off."""

    metrics_port: int = 8000
    """`LIFELONG_METRICS_PORT`: port of the operator's own `/metrics`; 0 turns it off."""

    health_port: int = 8081
    """`LIFELONG_HEALTH_PORT`: port of Kopf's liveness endpoint `/healthz`; 0 turns it off."""

    bind_address: str = "0.0.0.0"
    """`POD_IP`: the address `/metrics` and `/healthz` bind. In a pod, its own address."""

    log_format: str = "plain"
    """`LIFELONG_LOG_FORMAT`: `plain` (one line per record, the job in brackets) or `json` (one
    JSON object per line, the job under `object`)."""

    log_level: str = "INFO"
    """`LIFELONG_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR, for Lifelong's and Kopf's logs."""

    namespaces: tuple[str, ...] = field(default_factory=tuple)
    """`LIFELONG_NAMESPACES`: comma-separated namespaces to watch. Empty: the whole cluster."""

    peering: str | None = None
    """`LIFELONG_PEERING`: the Kopf peering name for leader election between replicas. Unset:
    the operator runs standalone (one replica)."""

    peering_priority: int = field(default_factory=_draw_priority, compare=False)
    """`LIFELONG_PEERING_PRIORITY`: this replica's priority among its peers; the highest live one
    reconciles. Unset: drawn at random at start, so that no two replicas tie (Kopf pauses every
    replica that sees a peer of equal priority): leave it unset in a Deployment's template."""

    peering_lifetime: int = 60
    """`LIFELONG_PEERING_LIFETIME`: seconds a replica's keep-alive stays valid. A standby takes
    over at most this long after the leader dies without saying goodbye."""

    identity: str = field(default_factory=_identity, compare=False)
    """`POD_ID`: this replica's name among its peers (Kopf's variable; the chart sets the pod's
    name). Default: host name, process id and a random draw."""

    scrape_timeout: float = 5.0
    """`LIFELONG_SCRAPE_TIMEOUT`: seconds to wait for a serving pod's metrics or Prometheus."""

    run_as_user: int = 65532
    """`LIFELONG_RUN_AS_USER`: the non-root user id of stage containers."""

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """The settings from the environment; a bad value raises `ConfigError` naming it."""
        namespaces = tuple(n.strip() for n in _env("LIFELONG_NAMESPACES", "").split(",") if n)
        return cls(
            image=_env("LIFELONG_IMAGE", cls.image),
            image_pull_policy=_env("LIFELONG_IMAGE_PULL_POLICY", cls.image_pull_policy),
            storage_uri=_env("LIFELONG_STORAGE_URI", cls.storage_uri),
            storage_claim=_optional("LIFELONG_STORAGE_CLAIM"),
            storage_mount=_env("LIFELONG_STORAGE_MOUNT", cls.storage_mount),
            prometheus_url=_optional("LIFELONG_PROMETHEUS_URL"),
            interval=_float("LIFELONG_RECONCILE_INTERVAL", cls.interval, minimum=0.1),
            resync_interval=_float("LIFELONG_RESYNC_INTERVAL", cls.resync_interval, minimum=1),
            stage_metrics_port=_int("LIFELONG_STAGE_METRICS_PORT", cls.stage_metrics_port),
            metrics_port=_int("LIFELONG_METRICS_PORT", cls.metrics_port),
            health_port=_int("LIFELONG_HEALTH_PORT", cls.health_port),
            bind_address=_env("POD_IP", cls.bind_address),
            log_format=_choice("LIFELONG_LOG_FORMAT", cls.log_format, LOG_FORMATS),
            log_level=_choice("LIFELONG_LOG_LEVEL", cls.log_level, LOG_LEVELS, upper=True),
            namespaces=namespaces,
            peering=_optional("LIFELONG_PEERING"),
            peering_priority=_int("LIFELONG_PEERING_PRIORITY", _draw_priority(), minimum=1),
            peering_lifetime=_int("LIFELONG_PEERING_LIFETIME", cls.peering_lifetime, minimum=5),
            identity=_identity(),
            scrape_timeout=_float("LIFELONG_SCRAPE_TIMEOUT", cls.scrape_timeout, minimum=0.1),
            run_as_user=_int("LIFELONG_RUN_AS_USER", cls.run_as_user),
        )
