"""The update stage on digits arriving class by class: replay learns digits 5-9 and keeps 0-4,
fine-tuning forgets 0-4 and the gate catches it.

The first version learns digits 0-4. The serve stage's own state then collects the labelled
stream of digits 5-9 (predict, then feedback), exactly as it does behind HTTP, and saves its
memories; the update stage trains candidates from them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lifelong.api import AutoDLJob, GateSpec, GateVerdict, ModelVersionSpec
from lifelong.engine.policies import Evaluation, Gate
from lifelong.trainers import update
from lifelong.trainers.bundle import ModelBundle
from lifelong.trainers.data import Record, build_streams, infer_task, load_table
from lifelong.trainers.knobs import Settings
from lifelong.trainers.serving import open_state
from tests.trainers.helpers import Workspace, digits_spec, make_workspace

pytestmark = pytest.mark.integration


@dataclass
class Collected:
    """A workspace whose serve state holds digits 5-9 as recent data, and test sets."""

    work: Workspace
    everything: pd.DataFrame
    """The stream's final phase: every class, never trained on."""
    old_classes: pd.DataFrame
    """Every streamed digit 0-4 that no model trained on."""


def frame(records: list[Record], names: list[str]) -> pd.DataFrame:
    rows = pd.DataFrame([r.features for r in records], columns=names)
    rows["label"] = [r.label for r in records]
    return rows


def collect(state: Any, records: list[Record]) -> None:
    for start in range(0, len(records), 50):
        batch = records[start : start + 50]
        state.predict({"instances": [r.features for r in batch], "ids": [r.id for r in batch]})
        state.feedback({"feedback": [{"id": r.id, "label": r.label} for r in batch]})


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Collected:
    work = make_workspace(tmp_path_factory.mktemp("update"), digits_spec())
    job = work.job
    table = load_table(job.spec.data.train)
    task = infer_task(table, job.spec.task)
    streams = build_streams(job.spec.data, table, task)
    records = list(streams.records(task.target))
    names = streams.feature_names

    state = open_state(job, work.store, work.version, settings=Settings())
    collect(state, [r for r in records if r.phase == 1])
    state.save(work.store)

    final = [r for r in records if r.phase == 2]
    old = [r for r in records if r.phase == 0 or (r.phase == 2 and r.label < 5)]
    return Collected(work, frame(final, names), frame(old, names))


def run_update(
    collected: Collected, name: str, strategy: str, **update_spec: Any
) -> dict[str, Any]:
    job: AutoDLJob = collected.work.job.model_copy(deep=True)
    job.spec.lifelong.update.strategy = strategy  # type: ignore[assignment]
    for key, value in update_spec.items():
        setattr(job.spec.lifelong.update, key, value)
    args = argparse.Namespace(version_name=collected.work.version, name=name, trigger="drop")
    return update.run(job, collected.work.store, args)


def gate(result: dict[str, Any], min_gain: float, max_forgetting: float) -> GateVerdict:
    """The lifecycle engine's own gate, judging the update stage's result as the engine does."""
    spec = GateSpec(min_gain=min_gain, max_forgetting=max_forgetting)
    return Gate.of(spec).judge(Evaluation.of_result(result, "max"))


def accuracy(collected: Collected, version: str, rows: pd.DataFrame) -> float:
    value = update.evaluate(ModelBundle.load(collected.work.store, version), rows, "accuracy")
    assert value is not None
    return value


def test_replay_update_learns_digits_5_to_9_and_keeps_0_to_4(collected: Collected) -> None:
    result = run_update(collected, "digits-test-v2", "replay")
    serving, candidate = collected.work.version, "digits-test-v2"

    every_class = accuracy(collected, candidate, collected.everything)
    before = accuracy(collected, serving, collected.old_classes)
    after = accuracy(collected, candidate, collected.old_classes)
    print(f"replay: all ten {every_class:.3f}; digits 0-4 {before:.3f} -> {after:.3f}")
    print(f"replay evaluation: {result['evaluation']}")
    assert every_class >= 0.90
    assert before - after <= 0.05
    verdict = gate(result, min_gain=0.0, max_forgetting=0.05)
    assert verdict.decision == "promote", verdict.reason


def test_finetune_update_forgets_digits_0_to_4_and_the_gate_rejects_it(
    collected: Collected,
) -> None:
    result = run_update(collected, "digits-test-ft", "finetune")
    before = accuracy(collected, collected.work.version, collected.old_classes)
    after = accuracy(collected, "digits-test-ft", collected.old_classes)
    print(f"finetune: digits 0-4 {before:.3f} -> {after:.3f}; {result['evaluation']}")
    evaluation = result["evaluation"]
    assert evaluation["candidate"]["new"] > 0.9  # it learned the new digits...
    assert before - after > 0.3  # ...and forgot the old ones
    verdict = gate(result, min_gain=0.0, max_forgetting=0.05)
    assert verdict.decision == "reject", verdict.reason
    assert "exceeds maxForgetting" in verdict.reason


def test_update_result_follows_the_stage_contract(collected: Collected) -> None:
    result = run_update(collected, "digits-test-v3", "lwf")
    store = collected.work.store
    assert set(result) == {"version", "evaluation"}
    assert len(json.dumps(result)) <= 4096

    version = ModelVersionSpec.model_validate(result["version"])
    assert (version.stage, version.parent, version.trigger) == ("update", "digits-test-v1", "drop")
    assert version.strategy == "lwf"
    assert version.artifact.digest == store.read_manifest("digits-test-v3")["digest"]
    assert version.data is not None and version.data.rows > 0
    # The manifest carries the spec less its artifact, as the train stage writes it.
    manifest = store.read_manifest("digits-test-v3")
    artifact = {"uri": f"{store.uri}/versions/digits-test-v3", "digest": manifest["digest"]}
    assert {**manifest["spec"], "artifact": artifact} == result["version"]

    evaluation = result["evaluation"]
    assert evaluation["metric"] == "accuracy" and evaluation["mode"] == "max"
    assert evaluation["newRows"] == 90 and evaluation["oldRows"] == 95
    assert evaluation["serving"]["new"] == 0.0  # version 1 knows no digit above 4

    written = store.read_json("updates", "digits-test-v3.json")
    assert written["version"] == result["version"]
    assert written["evaluation"] == evaluation
    assert sorted(ModelBundle.load(store, "digits-test-v3").classes or []) == list(range(10))


def test_ewc_update_reports_its_evaluation(collected: Collected) -> None:
    evaluation = run_update(collected, "digits-test-ewc", "ewc", ewc_lambda=1000.0)["evaluation"]
    assert 0.0 <= evaluation["candidate"]["old"] <= 1.0
    assert evaluation["candidate"]["new"] > 0.5


def test_a_warm_started_search_tries_the_asked_number_of_rates(collected: Collected) -> None:
    run_update(collected, "digits-test-s", "replay", search_trials=3, epochs=5)
    trials = collected.work.store.read_json("updates", "digits-test-s.json")["search"]
    assert [round(t["learningRate"] / 3e-3, 3) for t in trials] == [1.0, 0.333, 3.0]
    assert all(0.0 <= t["score"] <= 1.0 for t in trials)


def test_an_update_waits_for_enough_labelled_examples(collected: Collected) -> None:
    with pytest.raises(update.UpdateError, match=r"minSamples \(5000\)"):
        run_update(collected, "digits-test-x", "replay", min_samples=5000)


def test_an_update_without_serving_state_says_where_it_looked(tmp_path: Path) -> None:
    work = make_workspace(tmp_path, digits_spec())
    args = argparse.Namespace(version_name=work.version, name="v2", trigger=None)
    with pytest.raises(update.UpdateError, match="serving/state holds no memories"):
        update.run(work.job, work.store, args)


def test_the_update_command_prints_and_writes_its_result(
    collected: Collected, tmp_path: Path
) -> None:
    work, result_file = collected.work, tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "lifelong.cli",
        "trainer",
        "update",
        "--job",
        str(work.job_path),
        "--storage",
        work.store.uri,
        "--version",
        work.version,
        "--name",
        "digits-test-cli",
        "--trigger",
        "accuracy-drop",
        "--result",
        str(result_file),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT ")
    assert json.loads(last.removeprefix("RESULT ")) == json.loads(result_file.read_text())
