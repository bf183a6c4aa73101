"""`lifelong run` stops cleanly on Ctrl-C and SIGTERM, even when started with SIGINT ignored."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

PROGRAM = """
import os, signal, sys, time
from lifelong.runner.main import stop_on_signals
stop_on_signals()
try:
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(30)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


def _ignore_sigint() -> None:  # what a non-interactive shell does to a background job
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_interrupts_a_run_started_in_the_background(name: str) -> None:
    command = [sys.executable, "-c", PROGRAM, name]
    done = subprocess.run(command, check=False, preexec_fn=_ignore_sigint, timeout=60)
    assert done.returncode == 130
