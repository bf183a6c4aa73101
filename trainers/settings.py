"""The trainers' knobs that come from the environment, each with its default and what it controls.

User-facing settings live in the `AutoDLJob` spec; these are operational limits of a process
(where it binds, how often it saves, how large a request may be). Read them through
`Settings.from_env()` so a test can build its own without touching the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
