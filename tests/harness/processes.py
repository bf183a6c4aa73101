"""Background processes for the test harness: started in their own process group, logged to a
file, stopped by process group, and killed by the kernel if the test run itself dies.

`ControlPlane` runs etcd and the Kubernetes components through `Process`; the cluster fixture
runs node agents the same way. `free_ports` picks loopback ports for them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL the calling process when its parent exits.

    Used as `preexec_fn`, so that a test run killed without a chance to clean up (SIGKILL, an
    out-of-memory kill) still leaves no component behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` distinct TCP ports that are free on `host` right now.

    The sockets are all open at once, so the ports differ; they are closed before returning,
    so a caller must bind them soon, and retry on the rare "address already in use".
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file, or a note when there is no such file."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 200 * lines))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """One background program, its own process-group leader, writing to `log_path`."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._popen = popen

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """Start `argv` with stdout and stderr appended to `log_path`."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [os.fspath(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                # Safe here: the harness starts processes from the test's main thread only.
                preexec_fn=die_with_parent,  # noqa: PLW1509
            )
        logger.debug("Started %s as pid %d, logging to %s.", name, popen.pid, log_path)
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self._popen.poll()

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL what is left."""
        if self.alive:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0fs; killing it.", self.name, grace)
        # The leader may be gone while children it started in its group still run.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(5)

    def tail(self, lines: int = 40) -> str:
        """The end of this process's log."""
        return tail(self.log_path, lines)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def wait_until(
    check: Callable[[], object], timeout: float, interval: float = 0.2, what: str = "condition"
) -> None:
    """Call `check()` until it returns true; raise TimeoutError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
