"""Shared test configuration: the project root, the markers that choose test tiers, and the
real Kubernetes test cluster (`cluster`, `namespace`), whose code lives in `tests/harness`."""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # Imported lazily below, so that runs without cluster tests do not pay for the client.
    from cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent

# A local Ray in tests talks over loopback only, as the stages make it (see
# lifelong.trainers.main.keep_local_ray_on_loopback); Ray reads this before its first import.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository's root folder."""
    return ROOT


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real control plane and one node agent (`node-1`, no GPU), shared by the session.

    The binaries come from `tools/build.sh`; when they are missing the test fails and says so.
    """
    from cluster import Cluster
    from controlplane import MissingBinariesError, find_binaries

    try:
        find_binaries()
    except MissingBinariesError as error:
        pytest.fail(str(error), pytrace=False)
    running = Cluster.start(tmp_path_factory.mktemp("cluster"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    name = cluster.create_namespace(re.sub(r"^test_", "", request.node.name)[:40])
    yield name
    cluster.delete_namespace(name)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the cluster carries the `cluster` marker (before `-m` selects)."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the ends of the cluster's logs to the report of a failed cluster test."""
    report: pytest.TestReport = yield
    running = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and running is not None:
        report.sections.append(("cluster logs", running.diagnose(lines=15)))
    return report
