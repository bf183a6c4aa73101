"""Shared test configuration: the project root and the markers that choose test tiers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository's root folder."""
    return ROOT
