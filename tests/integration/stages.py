"""Helpers for the search and train tests: stages as `lifelong trainer` processes, and killing
one the way a lost pod dies.

Each stage runs in its own session, with its Ray session files in a short scratch folder (Ray's
socket paths must stay under 108 bytes). Ray starts its actors in process groups of their own
but within the stage's session, so `kill_session` SIGKILLs every process of that session, by
pid, at once: nothing of the stage lives on to write after the kill.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def scratch_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ll-", dir="/tmp") as folder:
        yield Path(folder)


def start(stage: str, job: Path, store: Path, scratch: Path, *extra: str) -> subprocess.Popen[str]:
    """Start `lifelong trainer STAGE` in a new session."""
    command = [sys.executable, "-m", "lifelong.cli", "trainer", stage, "--job", str(job)]
    return subprocess.Popen(
        [*command, "--storage", str(store), *extra],
        env={**os.environ, "LIFELONG_SCRATCH": str(scratch)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Wait for a stage, check it succeeded, and return its result (the `RESULT` line)."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    last = [line for line in output.splitlines() if line.startswith("RESULT ")][-1]
    result: dict[str, Any] = json.loads(last.removeprefix("RESULT "))
    return result


def session_members(session: int) -> list[int]:
    """Pids of the processes in a session."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if int(fields[3]) == session:  # after the command: state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


def kill_session(process: subprocess.Popen[str]) -> None:
    """SIGKILL every process of the stage's session (again, should one have just started),
    then reap the stage."""
    for _ in range(5):
        members = [pid for pid in session_members(process.pid) if pid != os.getpid()]
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; none if it does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
