"""The search and train stages serve their progress metrics on the pod's own address, and a port
that is already taken costs the metrics, never the stage."""

from __future__ import annotations

import socket

import httpx
import pytest

from lifelong.trainers.progress import StageMetrics

pytestmark = pytest.mark.unit


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_metrics_are_served_on_the_pods_address(
    monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    monkeypatch.setenv("LIFELONG_METRICS_PORT", str(free_port))
    monkeypatch.setenv("POD_IP", "127.0.0.1")
    metrics = StageMetrics("iris", "search")
    try:
        metrics.set_trials({"completed": 2})
        text = httpx.get(f"http://127.0.0.1:{free_port}/metrics", timeout=5).text
        assert 'lifelong_search_trials{job_name="iris",state="completed"} 2.0' in text
        assert metrics.server.server_address[0] == "127.0.0.1"
    finally:
        metrics.server.shutdown()


def test_a_taken_port_leaves_the_stage_running_without_metrics(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("LIFELONG_METRICS_PORT", str(taken.getsockname()[1]))
        monkeypatch.setenv("POD_IP", "127.0.0.1")
        metrics = StageMetrics("iris", "train")
    assert metrics.server is None
    metrics.set_seconds(1.0)  # recording still works
    assert "running without them" in caplog.text
