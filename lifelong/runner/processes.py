"""Stage programs as local processes: batch stages run to completion, the serve stage runs in the
background and is restarted when the engine asks for a different serving state.

Every process is `lifelong trainer STAGE ...` from the same environment, exactly as a pod would
run it, with its output in a log file under the run's folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.engine.model import Serve, StageRun, StartStage
from lifelong.trainers.stream import ServeClient

log = logging.getLogger(__name__)

EXIT_PERMANENT = 2
SERVE_READY_TIMEOUT = 120.0


def lifelong_command() -> list[str]:
    """How to start `lifelong` from this environment."""
    return [sys.executable, "-m", "lifelong.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Workspace:
    """Where a local run keeps its files."""

    root: Path

    @property
    def job(self) -> Path:
        return self.root / "job.yaml"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def _stage_args(action: StartStage) -> list[str]:
    args = []
    if action.version and action.stage.value == "update":
        args += ["--version", action.parent or "", "--name", action.version]
    elif action.version:
        args += ["--name", action.version]
    if action.trigger:
        args += ["--trigger", action.trigger]
    return args


def run_stage(
    workspace: Workspace,
    action: StartStage,
    on_line: Callable[[str], None],
    env: dict[str, str] | None = None,
) -> StageRun:
    """Run a batch stage to completion; return how it ended, with its result."""
    workspace.logs.mkdir(parents=True, exist_ok=True)
    workspace.results.mkdir(parents=True, exist_ok=True)
    result_file = workspace.results / f"{action.name}.json"
    result_file.unlink(missing_ok=True)
    command = [
        *lifelong_command(), "trainer", action.stage.value,
        "--job", str(workspace.job), "--storage", str(workspace.store),
        "--result", str(result_file), *_stage_args(action),
    ]  # fmt: skip
    log.debug("Starting %s: %s", action.name, " ".join(command))
    with workspace.log_of(action.name).open("a", encoding="utf-8") as sink:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        if process.stdout is None:  # pragma: no cover - stdout=PIPE above
            raise RuntimeError("the stage's output could not be read")
        try:
            for line in process.stdout:
                sink.write(line)
                if not line.startswith("RESULT "):
                    on_line(line.rstrip())
            code = process.wait()
        except KeyboardInterrupt:
            _stop(process, grace=10.0)
            raise
    return _outcome(action.name, code, result_file)


def _outcome(name: str, code: int, result_file: Path) -> StageRun:
    result: dict[str, Any] | None = None
    if result_file.exists():
        try:
            result = json.loads(result_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            result = None
    if code == 0:
        return StageRun(name, "succeeded", result)
    message = (result or {}).get("error") or f"the stage exited with code {code}"
    return StageRun(name, "failed", None, permanent=code == EXIT_PERMANENT, message=message)


def _stop(process: subprocess.Popen[Any], grace: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class ServeProcess:
    """The serve stage in the background, restarted whenever the desired `Serve` changes."""

    def __init__(self, workspace: Workspace, replay: bool = False) -> None:
        self.workspace = workspace
        self.port = free_port()
        self.replay = replay
        self.process: subprocess.Popen[Any] | None = None
        self.current: Serve | None = None
        self.client = ServeClient(self.url, timeout=60.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ensure(self, desired: Serve) -> bool:
        """Make the serve stage serve `desired`; return True if it (re)started."""
        if self.current == desired and self.alive:
            return False
        self.stop()
        command = [
            *lifelong_command(), "trainer", "serve",
            "--job", str(self.workspace.job), "--storage", str(self.workspace.store),
            "--version", desired.version, "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        if desired.canary:
            command += ["--canary", desired.canary, "--canary-weight", str(desired.canary_weight)]
        self.workspace.logs.mkdir(parents=True, exist_ok=True)
        sink = self.workspace.log_of("serve").open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        sink.close()
        self.current = desired
        self._wait_ready()
        return True

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVE_READY_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive:
                tail = self.workspace.log_of("serve").read_text(encoding="utf-8")[-2000:]
                raise RuntimeError(f"the serve stage exited while starting:\n{tail}")
            if self.client.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the serve stage was not ready within {SERVE_READY_TIMEOUT:.0f}s")

    def stop(self) -> None:
        """Stop serving gracefully (the stage saves its state on SIGTERM)."""
        if self.process is not None:
            _stop(self.process, grace=30.0)
        self.process = None
        self.current = None

    def close(self) -> None:
        self.stop()
        self.client.close()
