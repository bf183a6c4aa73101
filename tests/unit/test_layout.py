"""The package layout: one import root, and `operator/` never standing in for the stdlib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_operator_and_trainers_are_imported_under_the_lifelong_root() -> None:
    import lifelong.operator
    import lifelong.trainers

    assert lifelong.operator.__name__ == "lifelong.operator"
    assert lifelong.trainers.__name__ == "lifelong.trainers"


@pytest.mark.parametrize("name", ["operator", "trainers"])
def test_a_folder_cannot_be_imported_as_a_top_level_module(project_root: Path, name: str) -> None:
    # -S skips site, so nothing has imported the standard library's `operator` yet and the
    # repository root (the working directory) comes first on sys.path.
    probe = f"import {name}; print({name}.__file__)"
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert str(project_root / name) not in result.stdout
    if name == "operator":
        assert "lifelong.operator" in result.stderr or "operator.py" in result.stdout
