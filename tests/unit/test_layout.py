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


@pytest.mark.parametrize("flags", [["-S"], []], ids=["without-site", "with-site"])
def test_import_operator_from_the_repository_root_finds_the_standard_library(
    project_root: Path, flags: list[str]
) -> None:
    # The working directory comes first on sys.path; -S skips site, so nothing has imported the
    # standard library's `operator` before. A fresh re-import (as torch's compiler does) must
    # still find the standard library.
    probe = (
        "import importlib, sys; sys.modules.pop('operator', None); "
        "import operator; print(operator.__file__); print(operator.itemgetter)"
    )
    result = subprocess.run(
        [sys.executable, *flags, "-c", probe],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(project_root) not in result.stdout
    assert "itemgetter" in result.stdout
