"""Entry point of `lifelong trainer STAGE`: load the job, open the store, run the stage, report.

A stage module exposes `run(job, store, args) -> dict | None`. What it returns is the stage's
result: written to `--result`, `$LIFELONG_RESULT_PATH` or the pod's termination log, and printed
as the last line of standard output after `RESULT `. A `DataError` (the spec can never work)
exits 2 so that the engine stops retrying; any other failure exits 1 and is retried.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from lifelong.api import AutoDLJob
from lifelong.manifests import ManifestError, load_job
from lifelong.trainers.data import DataError
from lifelong.trainers.store import Store

log = logging.getLogger(__name__)

STAGES = {
    "search": "lifelong.trainers.search",
    "train": "lifelong.trainers.train",
    "serve": "lifelong.trainers.serve",
    "update": "lifelong.trainers.update",
}
EXIT_PERMANENT = 2
"""Exit code of a stage whose spec can never work; the engine does not retry it."""

TERMINATION_LOG = Path("/dev/termination-log")
LOCAL_RAY_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch that, set to 0, keeps a local Ray's addresses on loopback."""
RESULT_LIMIT = 4096


class Stage(Protocol):
    def run(self, job: AutoDLJob, store: Store, args: argparse.Namespace) -> dict[str, Any] | None:
        """Run the stage and return its result."""


def storage_uri(args: argparse.Namespace, job: AutoDLJob) -> str:
    """The job's root in the artifact store: `--storage`, `$LIFELONG_STORAGE`, or the spec's."""
    if args.storage:
        return str(args.storage)
    if os.environ.get("LIFELONG_STORAGE"):
        return os.environ["LIFELONG_STORAGE"]
    if job.spec.storage is not None:
        namespace = job.metadata.namespace or "default"
        return f"{job.spec.storage.uri.rstrip('/')}/{namespace}/{job.metadata.name}"
    raise DataError("no artifact store: pass --storage, set LIFELONG_STORAGE or spec.storage.uri")


def report(result: dict[str, Any], path: str | None) -> None:
    """Write the result where the caller reads it, and print it last."""
    text = json.dumps(result, sort_keys=True, separators=(",", ":"))
    if len(text.encode()) > RESULT_LIMIT:
        log.warning(
            "The stage result has %d bytes; only %d fit a termination message.",
            len(text.encode()),
            RESULT_LIMIT,
        )
    target = path or os.environ.get("LIFELONG_RESULT_PATH")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text, encoding="utf-8")
    elif TERMINATION_LOG.exists() and os.access(TERMINATION_LOG, os.W_OK):
        TERMINATION_LOG.write_text(text[:RESULT_LIMIT], encoding="utf-8")
    print(f"RESULT {text}", flush=True)


def _fail(message: str, code: int, path: str | None) -> int:
    print(f"lifelong trainer: {message}", file=sys.stderr, flush=True)
    target = path or os.environ.get("LIFELONG_RESULT_PATH")
    text = json.dumps({"error": message, "permanent": code == EXIT_PERMANENT})
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text, encoding="utf-8")
    elif TERMINATION_LOG.exists() and os.access(TERMINATION_LOG, os.W_OK):
        TERMINATION_LOG.write_text(text[:RESULT_LIMIT], encoding="utf-8")
    return code


def _stage(name: str) -> Stage:
    try:
        module: Stage = importlib.import_module(STAGES[name])
    except ModuleNotFoundError as error:
        if error.name == STAGES[name]:
            raise NotImplementedError(f"the {name} stage is not yet implemented") from error
        raise
    return module


def keep_local_ray_on_loopback(job: AutoDLJob) -> None:
    """Make a local Ray talk over loopback only.

    Ray otherwise binds and dials the machine's outward-facing address even for a one-node
    cluster. The switch must be set before `ray` is first imported; a job that names a Ray
    cluster (`spec.search.rayAddress`) keeps Ray's own choice.
    """
    if job.spec.search.ray_address is None:
        os.environ.setdefault(LOCAL_RAY_SWITCH, "0")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("LIFELONG_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP request (the serve stage's replay makes several a second) is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result_path = getattr(args, "result", None)
    try:
        job = load_job(args.job)
        keep_local_ray_on_loopback(job)
        store = Store(storage_uri(args, job))
        stage: Stage = _stage(args.stage)
        result = stage.run(job, store, args)
    except ManifestError as error:
        return _fail(f"the job manifest is invalid:\n{error}", EXIT_PERMANENT, result_path)
    except DataError as error:
        return _fail(str(error), EXIT_PERMANENT, result_path)
    except NotImplementedError as error:
        return _fail(str(error), EXIT_PERMANENT, result_path)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, result_path)
    except Exception as error:
        # Anything else may pass (a store that was down, memories not yet written): the one-line
        # reason goes where the engine reads it, and the engine retries with backoff.
        log.exception("The %s stage failed.", args.stage)
        return _fail(f"{type(error).__name__}: {error}", 1, result_path)
    if result is not None:
        report(result, result_path)
    return 0
