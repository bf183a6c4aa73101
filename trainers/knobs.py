"""Environment knobs of the stages, in one place, each with what it controls.

User settings live in the `AutoDLJob`; these knobs are for operators of the machinery (ports,
scratch space, request limits, Ray's own switches) and for tests (fault injection).
`ray_environment` is applied once, before Ray starts, so Ray's processes and workers inherit the
same settings. The serve and update stages read theirs through `Settings.from_env()`, so that a
test can build its own without touching the environment.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

METRICS_PORT = "LIFELONG_METRICS_PORT"
"""Port on which the search and train stages serve Prometheus `/metrics`. Unset: no server."""

METRICS_FILE = "LIFELONG_METRICS_FILE"
"""File the stages rewrite with their Prometheus metrics after every change (the node
exporter's textfile format). Unset: no file."""

RAY_CPUS = "LIFELONG_RAY_CPUS"
"""CPUs a local Ray may use. Default: the CPUs this process may run on, and at least the
search's parallelism (or the training's workers)."""

SCRATCH = "LIFELONG_SCRATCH"
"""Local folder for Ray's session files and, when the artifact store is not a local disk, for
Ray Tune's and Ray Train's working state. Default: the system's temporary folder."""

WORKER_LOGS = "LIFELONG_RAY_WORKER_LOGS"
"""`1` shows the output of Ray's workers in the stage's log (for debugging). Default: hidden;
trial errors are in `search/trials.jsonl` and training errors end the stage with their cause."""

CPU_WATTS = "LIFELONG_CPU_WATTS"
"""Watts drawn by one busy CPU core, used to estimate inference energy (`energyJ`) from
measured latency. Default: 15."""

FAULTS = "LIFELONG_FAULTS"
"""Fault injection for tests, as `attempts=N,every=K`: each search trial whose number (0, 1,
...) is a multiple of K raises an error in its first N attempts. Unset: no faults."""

RAY_DEFAULTS: dict[str, str] = {
    # No usage reports, no dashboard metrics exporter.
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray Tune: no per-trial JSON/CSV/TensorBoard loggers (the stage keeps its own trial log),
    # the plain progress reporter rather than the new console output.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S": "600",
    # Ctrl-C ends the search at once (its finished trials are logged already) instead of
    # Tune's graceful stop, which would count the running trials as finished.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    # The stage resumes from its own trial log, so Tune's experiment snapshot can be rare.
    "TUNE_GLOBAL_CHECKPOINT_S": "60",
    # Ray Train V2: the fault-tolerant controller (resume after a killed driver), without the
    # helpers a single-pod stage does not need (preemption watching, Ray Train's own metrics).
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    # How often the Train controller polls its workers. A worker's report (one per epoch, with
    # its checkpoint) waits for the poll that takes the previous one, so this bounds the epochs
    # per second: the default of 2 s would make every short epoch last 2 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    # One thread per process: trials and workers already run in parallel.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
"""Ray, Ray Tune and Ray Train switches the stages set, unless the environment already sets
them."""


def ray_environment() -> None:
    """Apply `RAY_DEFAULTS` to this process (and so to every Ray process it starts)."""
    for name, value in RAY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def metrics_port() -> int | None:
    value = os.environ.get(METRICS_PORT, "").strip()
    return int(value) if value else None


def metrics_file() -> Path | None:
    value = os.environ.get(METRICS_FILE, "").strip()
    return Path(value) if value else None


def available_cpus() -> int:
    value = os.environ.get(RAY_CPUS, "").strip()
    if value:
        return max(1, int(value))
    return max(1, len(os.sched_getaffinity(0)))


def scratch() -> Path:
    path = Path(os.environ.get(SCRATCH) or tempfile.gettempdir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def worker_logs() -> bool:
    return os.environ.get(WORKER_LOGS, "").strip() == "1"


def cpu_watts() -> float:
    return float(os.environ.get(CPU_WATTS, "15"))


def faults() -> tuple[int, int]:
    """(attempts that fail, every how many trials) from `LIFELONG_FAULTS`; (0, 1) when unset."""
    settings = dict(
        part.split("=", 1) for part in os.environ.get(FAULTS, "").split(",") if "=" in part
    )
    return int(settings.get("attempts", 0)), max(1, int(settings.get("every", 1)))


# --- the serve and update stages ------------------------------------------------------------


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(f"${name} must be a number, got {raw!r}") from error


def _int(name: str, default: int) -> int:
    return int(_float(name, default))


@dataclass(frozen=True)
class Settings:
    """Operational limits of the serve stage."""

    host: str = "127.0.0.1"
    """`POD_IP`: the address the serve stage binds when `--host` is not given."""

    state_interval_s: float = 15.0
    """`LIFELONG_STATE_INTERVAL`: seconds between saves of the serving state to the store."""

    max_batch: int = 4096
    """`LIFELONG_MAX_BATCH`: most instances (or labels) in one request; more is refused (413)."""

    max_pending: int = 100_000
    """`LIFELONG_MAX_PENDING`: predictions kept waiting for their label; the oldest go first."""

    max_body_bytes: int = 32 * 1024 * 1024
    """`LIFELONG_MAX_BODY_BYTES`: largest request body the serve stage reads."""

    threads: int = 1
    """`LIFELONG_TORCH_THREADS`: torch's intra-op threads in the serve and update stages."""

    @classmethod
    def from_env(cls) -> Settings:
        defaults = cls()
        return cls(
            host=os.environ.get("POD_IP") or defaults.host,
            state_interval_s=_float("LIFELONG_STATE_INTERVAL", defaults.state_interval_s),
            max_batch=_int("LIFELONG_MAX_BATCH", defaults.max_batch),
            max_pending=_int("LIFELONG_MAX_PENDING", defaults.max_pending),
            max_body_bytes=_int("LIFELONG_MAX_BODY_BYTES", defaults.max_body_bytes),
            threads=_int("LIFELONG_TORCH_THREADS", defaults.threads),
        )
