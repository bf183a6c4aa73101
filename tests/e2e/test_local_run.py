"""`lifelong run` end to end on real data: a shortened version of `make demo`.

Search, training, serving a class-incremental stream of real digits, a drift the trigger
catches, gated updates, and the summary and report at the end; then an interrupted run resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

JOB = """\
apiVersion: lifelong.dev/v1alpha1
kind: AutoDLJob
metadata: {name: digits-short}
spec:
  task: {type: classification, target: label, metric: accuracy}
  data:
    train: {uri: "builtin://digits"}
    stream: {uri: "builtin://digits", order: class-incremental, labelDelay: 3, rate: 1}
  search:
    strategy: random
    budget: {trials: 3, parallelism: 1, maxEpochs: 6, timeout: 5m}
    space: {families: [mlp]}
  serving: {window: 50}
  lifelong:
    triggers:
      - {name: accuracy-drop, metric: lifelong_online_accuracy, window: 30s, below: 0.85}
    update: {strategy: replay, memorySize: 300, minSamples: 40}
    cooldown: 60s
    maxUpdates: 3
"""


def run(job: Path, output: Path, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lifelong.cli", "run", str(job), "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen,
    )  # fmt: skip


class Finished:
    """A run interrupted with Ctrl-C once the stream flows, then resumed to the end."""

    def __init__(self, out: Path, first: str, interrupted: dict[str, Any], second: str) -> None:
        self.out, self.first, self.interrupted, self.printed = out, first, interrupted, second


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    folder = tmp_path_factory.mktemp("local-run")
    job, out = folder / "job.yaml", folder / "out"
    job.write_text(JOB)

    first = run(job, out, start_new_session=True)
    assert first.stdout is not None
    lines: list[str] = []
    for line in first.stdout:  # wait until the stream flows, then press Ctrl-C
        lines.append(line)
        if line.strip().startswith("stream "):
            break
    os.killpg(first.pid, signal.SIGINT)
    rest, _ = first.communicate(timeout=120)
    assert first.returncode == 130, "".join(lines) + rest
    interrupted = json.loads((out / "state.json").read_text())

    second = run(job, out)
    printed, _ = second.communicate(timeout=900)
    assert second.returncode == 0, printed[-4000:]
    return Finished(out, "".join(lines) + rest, interrupted, printed)


def test_the_loop_ends_with_a_summary_a_report_and_the_report_path_last(
    finished: Finished,
) -> None:
    out, printed = finished.out, finished.printed
    report = out / "report.html"
    assert printed.strip().splitlines()[-1] == f"Report: {report.resolve()}"
    html = report.read_text()
    assert "data:image/png;base64," in html and "Updates and the gate" in html


def test_the_summary_records_versions_updates_and_the_online_metric(
    finished: Finished,
) -> None:
    out = finished.out
    summary = json.loads((out / "summary.json").read_text())
    versions = summary["versions"]
    assert len(versions) >= 2
    assert {"name", "parent", "state", "trigger", "metrics"} <= set(versions[0])
    assert versions[0]["parent"] is None and versions[1]["parent"] == versions[0]["name"]
    assert any(v["state"] == "Serving" for v in versions)

    updates = summary["updates"]
    assert updates, "the drift should have triggered at least one update"
    assert all({"trigger", "decision", "gain", "forgetting"} <= set(u) for u in updates)
    assert all(u["trigger"] == "accuracy-drop" for u in updates)
    assert any(u["decision"] == "promote" for u in updates)

    online = summary["online"]
    assert online["beforeDrift"] > 0.9
    assert online["worstAfterDrift"] < 0.7  # the new digits were not known yet
    assert online["end"] > online["worstAfterDrift"]
    assert online["end"] >= 0.85  # the updates learned the new digits (0.94 measured)
    assert summary["wallSeconds"] > 0


def test_decisions_come_with_their_evidence(finished: Finished) -> None:
    out = finished.out
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    fired = [e for e in events if e["reason"] == "TriggerFired"]
    assert fired and "value" in fired[0]["message"]
    judged = [e for e in events if e["reason"] in ("CandidatePromoted", "CandidateRejected")]
    assert judged and all("forgetting" in e["message"] for e in judged)


def test_an_interrupted_run_resumes_without_redoing_finished_stages(finished: Finished) -> None:
    assert "Run the same command again" in finished.first
    assert finished.interrupted["position"] > 0
    assert {"digits-short-search", "digits-short-train"} <= set(finished.interrupted["runs"])
    assert "Resuming AutoDLJob digits-short" in finished.printed
    assert "▶ search" not in finished.printed and "▶ train" not in finished.printed
    summary = json.loads((finished.out / "summary.json").read_text())
    assert summary["online"]["records"] == 899


CANARY_JOB = """\
apiVersion: lifelong.dev/v1alpha1
kind: AutoDLJob
metadata: {name: digits-canary}
spec:
  data:
    train: {uri: "builtin://digits"}
    stream: {uri: "builtin://digits", order: class-incremental, labelDelay: 3, limit: 450}
  search:
    strategy: random
    budget: {trials: 2, parallelism: 1, maxEpochs: 4, timeout: 5m}
    space: {families: [mlp]}
  serving: {window: 50}
  lifelong:
    triggers:
      - {name: accuracy-drop, metric: lifelong_online_accuracy, window: 30s, below: 0.85}
    update: {strategy: replay, memorySize: 300, minSamples: 40}
    gate: {maxForgetting: 0.2}
    canary: {steps: [20], minSamples: 100000}
    maxUpdates: 1
"""


def test_a_stream_that_ends_during_a_canary_ends_the_run_with_the_canary_recorded(
    tmp_path: Path,
) -> None:
    job, out = tmp_path / "job.yaml", tmp_path / "out"
    job.write_text(CANARY_JOB)
    process = run(job, out)
    printed, _ = process.communicate(timeout=600)
    assert process.returncode == 0, printed[-4000:]
    assert "The stream ended while the job was Updating" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["online"]["records"] == 450
    assert [v["state"] for v in summary["versions"]] == ["Serving", "Canary"]
    assert [u["decision"] for u in summary["updates"]] == ["canary"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert "CanaryStarted" in [e["reason"] for e in events]
