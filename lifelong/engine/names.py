"""Deterministic names of everything a job makes, so a replayed event never makes a second one.

Job names are at most 45 characters (the CRD says so), which keeps every name here within a
Kubernetes label's 63.
"""

from __future__ import annotations


def version(job: str, number: int) -> str:
    """The `number`-th model version: `JOB-v1` is the first trained model."""
    return f"{job}-v{number}"


def version_number(name: str) -> int:
    """The number of a version name (`digits-v3` is 3)."""
    return int(name.rsplit("-v", 1)[1])


def run(job: str, stage: str, attempt: int = 0, update: int | None = None) -> str:
    """A batch stage run: `JOB-search`, `JOB-train`, `JOB-update-2`, retries `...-r1`."""
    base = f"{job}-{stage}" if update is None else f"{job}-{stage}-{update}"
    return base if attempt == 0 else f"{base}-r{attempt}"


def serve(job: str) -> str:
    """The serving Deployment and Service."""
    return f"{job}-serve"
