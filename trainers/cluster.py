"""Starting and stopping Ray for a stage: a lean local instance, or a cluster's address.

A local Ray starts with only what a batch stage needs: no dashboard, warnings-only logging,
Lifelong's Ray/Tune/Train switches (`knobs.RAY_DEFAULTS`) applied first so that every Ray
process inherits them, and its session files under `LIFELONG_SCRATCH`. The stage that started
Ray always shuts it down, whatever happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lifelong.trainers import knobs

log = logging.getLogger(__name__)


@contextmanager
def ray_session(
    address: str | None, cpus: int, gpus: int = 0, warm_up: str | None = None
) -> Iterator[float]:
    """Run the body with Ray started (or connected); yield the seconds Ray took to start.

    `warm_up` names a function (`module.function`) every Ray worker runs when it starts, before
    it is given any work: the workers Ray starts ahead of time pay their one-off costs while
    the stage is still setting up.
    """
    knobs.ray_environment()
    import ray

    runtime_env = {"worker_process_setup_hook": warm_up} if warm_up else None
    if ray.is_initialized():
        yield 0.0  # someone else (a test, a notebook) owns this Ray
        return

    began = time.perf_counter()
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=knobs.worker_logs())
    else:
        ray.init(
            num_cpus=cpus,
            num_gpus=gpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=knobs.worker_logs(),
            _temp_dir=str(knobs.scratch() / "ray"),
            runtime_env=runtime_env,
        )
    started = time.perf_counter() - began
    log.info("Ray %s in %.1f s.", "connected" if address else "started", started)
    try:
        yield started
    finally:
        ray.shutdown()


def local_cpus(wanted: int) -> int:
    """CPUs for a local Ray: what this process may use, and at least `wanted`."""
    return max(knobs.available_cpus(), wanted)
