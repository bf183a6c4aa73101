"""The serve stage as a real process on a free loopback port: bad requests, a restart through
SIGTERM, a stream driven over HTTP with drift, and `--replay`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lifelong.trainers.data import Record, stream_records
from lifelong.trainers.serve import STOP_GRACE_S
from lifelong.trainers.stream import ServeClient, StreamDriver, drive, read_status
from tests.trainers.helpers import (
    ServeProcess,
    Workspace,
    clone_workspace,
    digits_spec,
    make_workspace,
    start_serve,
)

pytestmark = pytest.mark.integration

Start = Callable[..., ServeProcess]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("serve"), digits_spec())


@pytest.fixture(scope="module")
def records(base: Workspace) -> list[Record]:
    return list(stream_records(base.job.spec.data, base.job.spec.task))


@pytest.fixture
def start() -> Iterator[Start]:
    """Starts serve processes; every one still running is stopped at the end of the test."""
    started: list[ServeProcess] = []

    def run(work: Workspace, *extra: str, **kwargs: Any) -> ServeProcess:
        process = start_serve(work, *extra, **kwargs)
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def counter(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


BAD_REQUESTS: list[tuple[str, str, bytes, int, str, str]] = [
    # endpoint, path, body, status, reason, words of the message
    ("predict", "/v1/predict", b'{"instances": [[0, 1', 400, "bad-json", "not valid JSON"),
    ("predict", "/v1/predict", b'{"rows": []}', 400, "bad-shape", '"instances"'),
    (
        "predict",
        "/v1/predict",
        json.dumps({"instances": [[0.0] * 3]}).encode(),
        422,
        "feature-count",
        "has 3 features; the model takes 64",
    ),
    (
        "predict",
        "/v1/predict",
        b'{"instances": [[NaN' + b", 0.0" * 63 + b"]]}",
        422,
        "non-finite",
        "send null for a missing value",
    ),
    (
        "predict",
        "/v1/predict",
        json.dumps({"instances": [["dark"] * 64]}).encode(),
        422,
        "type",
        "must be a number",
    ),
    (
        "predict",
        "/v1/predict",
        json.dumps({"instances": [[0.0] * 64] * 101}).encode(),
        413,
        "too-large",
        "at most 100",
    ),
    ("feedback", "/v1/feedback", b"label=3", 400, "bad-json", "not valid JSON"),
    (
        "feedback",
        "/v1/feedback",
        json.dumps({"feedback": [{"id": "never-predicted", "label": 3}]}).encode(),
        404,
        "unknown-id",
        "no prediction with id 'never-predicted'",
    ),
    (
        "feedback",
        "/v1/feedback",
        json.dumps({"feedback": [{"id": "good", "label": "three"}]}).encode(),
        422,
        "bad-label",
        "class labels here are numbers",
    ),
    (
        "feedback",
        "/v1/feedback",
        json.dumps({"feedback": [{"id": "good", "label": 3}] * 2}).encode(),
        409,
        "duplicate-id",
        "repeats",
    ),
]


def test_each_bad_request_gets_its_status_message_and_count(
    base: Workspace, start: Start, tmp_path: Path
) -> None:
    serve = start(clone_workspace(base, tmp_path), env={"LIFELONG_MAX_BATCH": "100"})
    code, good = serve.post("/v1/predict", {"instances": [[0.0] * 64], "ids": ["good"]})
    assert code == 200 and good["ids"] == ["good"]

    for endpoint, path, body, expected, reason, words in BAD_REQUESTS:
        code, answer = serve.post(path, body)
        assert (code, answer["reason"]) == (expected, reason), (endpoint, answer)
        assert words in answer["error"], answer

    metrics = serve.metrics()
    for endpoint, _, _, _, reason, _ in BAD_REQUESTS:
        count = counter(metrics, "lifelong_bad_requests_total", endpoint=endpoint, reason=reason)
        assert count == 1.0, (endpoint, reason)

    # The server lives on, and nothing of the refused requests was remembered.
    status = serve.status()
    assert status["records"]["predicted"] == 1
    assert status["records"]["pending"] == 1
    assert status["records"]["refused"] == len(BAD_REQUESTS)
    assert status["memory"]["recent"] == 0
    assert serve.post("/v1/feedback", {"feedback": [{"id": "good", "label": 3}]}) == (
        200,
        {"accepted": 1},
    )
    assert serve.get("/healthz")[0] == 200


def test_a_restart_through_sigterm_keeps_memories_windows_and_pending_labels(
    base: Workspace, records: list[Record], start: Start, tmp_path: Path
) -> None:
    work = clone_workspace(base, tmp_path)
    first = start(work)
    with ServeClient(first.url) as client:
        driver = StreamDriver(client, records[250:400], label_delay=5, batch_size=10)
        driver.run(flush=False)
    before = first.status()
    assert before["records"]["pending"] == 5
    assert first.stop() == 0

    second = start(work)
    after = second.status()
    assert after == before
    assert after["memory"]["recent"] == 145
    assert [v["accuracy"] for v in after["versions"]] == [v["accuracy"] for v in before["versions"]]
    with ServeClient(second.url) as client:
        # The labels that were still on their way before the restart are matched after it.
        client.feedback((r.id, r.label) for r in records[395:400])
    assert second.status()["memory"]["recent"] == 150


def test_a_client_stuck_mid_request_does_not_hold_up_a_stop_or_its_save(
    base: Workspace, records: list[Record], start: Start, tmp_path: Path
) -> None:
    work = clone_workspace(base, tmp_path)
    serving = start(work)
    with ServeClient(serving.url) as client:
        StreamDriver(client, records[:60], label_delay=5, batch_size=10).run(flush=False)
    before = serving.status()
    address = urllib.parse.urlsplit(serving.url)
    # A request whose body never finishes arriving: its handler is still running at SIGTERM.
    with socket.create_connection((address.hostname, address.port), timeout=10) as stuck:
        head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"
        stuck.sendall(head.encode())
        time.sleep(0.5)
        began = time.monotonic()
        assert serving.stop(timeout=STOP_GRACE_S + 15) == 0
        stopped = time.monotonic() - began
    assert stopped < STOP_GRACE_S + 10, f"the stop took {stopped:.1f}s"
    assert start(work).status() == before  # saved on the way out


def test_a_driven_stream_shows_new_digits_as_an_accuracy_drop_and_drift(
    base: Workspace, records: list[Record], start: Start, tmp_path: Path
) -> None:
    serve = start(clone_workspace(base, tmp_path))
    old = [r for r in records if r.phase == 0]
    new = [r for r in records if r.phase == 1][:150]

    report = drive(serve.url, old, label_delay=3, batch_size=32)
    assert report.predicted == len(old)
    status = read_status(serve.url)
    assert status["versions"][0]["accuracy"] > 0.9
    before = {d["name"]: d["detections"] for d in status["drift"]}

    drive(serve.url, new, label_delay=3, batch_size=32)
    status = read_status(serve.url)
    assert status["versions"][0]["accuracy"] < 0.3
    after = {d["name"]: d["detections"] for d in status["drift"]}
    fired = {name for name in after if after[name] > before[name]}
    assert {"adwin", "page-hinkley", "kswin", "ddm"} <= fired
    assert status["memory"]["recent"] == len(old) + len(new)

    metrics = serve.metrics()
    labels = {"version": "digits-test-v1", "role": "stable"}
    assert counter(metrics, "lifelong_online_accuracy", **labels) < 0.3
    assert counter(metrics, "lifelong_predictions_total", **labels) == len(old) + len(new)
    assert counter(metrics, "lifelong_drift_detected_total", detector="adwin") >= 1
    assert counter(metrics, "lifelong_feature_shift") > 0.1
    assert counter(metrics, "lifelong_prediction_latency_seconds_count") > 0
    assert counter(metrics, "lifelong_memory_examples", memory="replay") > 0


def test_replay_feeds_the_stream_once_across_restarts(
    base: Workspace, start: Start, tmp_path: Path
) -> None:
    spec = digits_spec()
    spec["spec"]["data"]["stream"].update({"limit": 60, "rate": 300})
    work = clone_workspace(base, tmp_path, spec)
    serve = start(work, "--replay")
    deadline = time.monotonic() + 30
    while not serve.status()["stream"]["done"]:
        assert time.monotonic() < deadline, serve.output()
        time.sleep(0.2)
    status = serve.status()
    assert status["records"]["predicted"] == status["records"]["labelled"] == 60
    assert counter(serve.metrics(), "lifelong_stream_records_total") == 60
    assert serve.stop() == 0

    again = start(work, "--replay")
    time.sleep(1.0)
    assert again.status()["records"]["predicted"] == 60


def handles(pid: int, signum: int) -> bool:
    """Whether the process has a handler installed for the signal (its `SigCgt` mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


def test_a_stage_that_is_its_containers_first_process_stops_on_sigterm_while_loading(
    base: Workspace, tmp_path: Path
) -> None:
    # As in a pod, the stage is PID 1 of its own PID namespace: the kernel drops a signal that
    # such a process has no handler for, so without one a deleted pod waits out its grace period.
    work = clone_workspace(base, tmp_path)
    log = tmp_path / "serve.log"
    argv = ["unshare", "--pid", "--fork", sys.executable, "-m", "lifelong.cli", "trainer", "serve"]
    argv += ["--job", str(work.job_path), "--storage", work.store.uri, "--version", work.version]
    argv += ["--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as sink:
        unshare = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
        deadline = time.monotonic() + 30
        stage = 0
        while time.monotonic() < deadline and unshare.poll() is None:
            found = children.read_text().split() if children.exists() else []
            stage = int(found[0]) if found else 0
            if stage and handles(stage, signal.SIGTERM):
                break
            time.sleep(0.01)
        assert stage and handles(stage, signal.SIGTERM), log.read_text()
        os.kill(stage, signal.SIGTERM)
        code = unshare.wait(timeout=15)
    finally:
        if unshare.poll() is None:
            unshare.kill()
    output = log.read_text()
    assert code == 128 + signal.SIGTERM, output
    assert "Serving " not in output  # stopped while it was still loading
    assert "stopped by SIGTERM" in output
