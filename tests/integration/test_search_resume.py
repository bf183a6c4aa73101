"""A search killed with SIGKILL midway resumes from the artifact store: the trials it finished
are never run again, and the search completes its budget.

The search runs as `lifelong trainer search`; the test kills every process of it at once, as a
node losing the pod would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.stages import finish, kill_session, lines, scratch_folder, start

pytestmark = pytest.mark.integration

TRIALS = 8

JOB = {
    "apiVersion": "lifelong.dev/v1alpha1",
    "kind": "AutoDLJob",
    "metadata": {"name": "resume"},
    "spec": {
        "data": {"train": {"uri": "builtin://digits"}},
        "search": {
            "strategy": "tpe",
            "budget": {"trials": TRIALS, "parallelism": 2, "maxEpochs": 3, "timeout": "5m"},
            "space": {"families": ["mlp"]},
        },
    },
}


def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(JOB), encoding="utf-8")
    store = tmp_path / "store"
    log = store / "search" / "trials.jsonl"

    with scratch_folder() as scratch:
        # Run until at least two trials are logged, then kill every process of the search.
        first = start("search", job, store, scratch)
        deadline = time.monotonic() + 180
        while len(lines(log)) < 2:
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no two trials finished within 3 minutes"
            time.sleep(0.1)
        kill_session(first)
        before = lines(log)
        assert len(before) < TRIALS, "the search finished before it could be killed"

        # Run it again, to the end.
        finish(start("search", job, store, scratch, "--result", str(tmp_path / "r.json")), 300)

    after = lines(log)
    assert after[: len(before)] == before  # the earlier trials are kept as they were
    ids = [str(r["id"]) for r in after]
    assert len(ids) == len(set(ids)) == TRIALS
    assert {r["run"] for r in after[len(before) :]} == {2}
    result = json.loads((store / "search" / "result.json").read_text())
    assert result["resumed"] == {"earlierTrials": len(before), "trainedNow": TRIALS - len(before)}
    assert result["trials"]["finished"] == TRIALS
    assert result["runs"] == 2
    assert json.loads((tmp_path / "r.json").read_text())["trials"] == TRIALS
