"""Every search strategy, run for real through Ray Tune on the same small problem, finishes
within its budgets and picks a sane winner; failing trials are retried and then counted; the
wall-time budget ends a search early.

The tests share one local Ray (started the way the stage starts it, with more CPUs than the
search's parallelism, so that the parallelism budget is what limits concurrency).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifelong.api import AutoDLJob
from lifelong.trainers import knobs, search
from lifelong.trainers.cluster import ray_session
from lifelong.trainers.ledger import Ledger, TrialRecord
from lifelong.trainers.store import Store

pytestmark = pytest.mark.integration

STRATEGIES = ["random", "asha", "tpe", "evolution", "pbt"]
TRIALS, PARALLELISM, EPOCHS = 5, 2, 3


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in knobs.RAY_DEFAULTS.items():
            patch.setenv(name, value)
        with ray_session(None, cpus=4):
            yield


def job(strategy: str, **budget: Any) -> AutoDLJob:
    return AutoDLJob.model_validate(
        {
            "metadata": {"name": f"conformance-{strategy}"},
            "spec": {
                "data": {"train": {"uri": "builtin://digits"}},
                "search": {
                    "strategy": strategy,
                    "objectives": [
                        {"metric": "accuracy", "mode": "max"},
                        {"metric": "latencyMs", "mode": "min"},
                    ],
                    "budget": {
                        "trials": TRIALS,
                        "parallelism": PARALLELISM,
                        "maxEpochs": EPOCHS,
                        "minEpochs": 1,
                        "timeout": "3m",
                        **budget,
                    },
                    "space": {
                        "families": ["mlp"],
                        "mlp": {"width": {"min": 32, "max": 128, "log": True}},
                        "learningRate": {"min": 1e-3, "max": 3e-2, "log": True},
                    },
                },
            },
        }
    )


def most_at_once(records: list[TrialRecord]) -> int:
    """The largest number of trials whose [start, last report] intervals overlap.

    Both ends are the worker's own clock readings: the ledger's `finished` is taken on the driver
    when it gets round to the trial, by which time a reused worker may have started the next one."""
    events = sorted(
        itertools.chain.from_iterable(
            ((r.metrics["entered"], 1), (r.metrics["reported"], -1))
            for r in records
            if "entered" in r.metrics
        ),
        key=lambda event: (event[0], event[1]),
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_finishes_within_budget_and_picks_a_sane_winner(
    strategy: str, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "store"))

    summary = search.run(job(strategy), store)

    records = Ledger(store).records
    result = store.read_json("search", "result.json")
    assert summary["trials"] == TRIALS
    assert summary["failed"] == 0
    assert all(r.retries == 0 for r in records), "a trial failed and was retried"
    assert not list((tmp_path / "store").glob("search/tune/*/*/checkpoint_*"))
    assert len({r.id for r in records}) == TRIALS
    assert all(1 <= r.epochs <= EPOCHS for r in records)
    if strategy != "asha":
        assert all(r.epochs == EPOCHS for r in records)
    assert most_at_once(records) <= PARALLELISM

    fidelity = result["rule"]["fidelity"]
    best = max(r.metrics["accuracy"] for r in records if r.epochs == fidelity)
    winner = result["winner"]
    assert winner["epochs"] == fidelity
    assert winner["objectives"]["accuracy"] >= best - result["rule"]["tolerance"]
    assert winner["objectives"]["accuracy"] >= 0.85
    assert winner["config"]["family"] == "mlp"
    assert 32 <= winner["config"]["width"] <= 128
    assert 1e-3 <= winner["config"]["learning_rate"] <= 3e-2
    assert winner["number"] in [entry["number"] for entry in result["front"]]
    assert result["rule"]["selection"] == "primary"
    assert result["rule"]["reason"]
    assert summary["winner"] == winner["config"]


def test_failing_trials_are_retried_and_then_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(knobs.FAULTS, "attempts=1,every=1")
    store = Store(str(tmp_path / "store"))

    summary = search.run(job("random", trials=2, parallelism=1, maxRetries=1), store)

    records = Ledger(store).records
    assert summary["failed"] == 0
    assert [r.retries for r in records] == [1, 1]
    assert all(r.status == "completed" for r in records)


def test_trials_that_keep_failing_are_counted_without_sinking_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(knobs.FAULTS, "attempts=5,every=2")
    store = Store(str(tmp_path / "store"))

    summary = search.run(job("random", trials=4, maxRetries=1), store)

    records = Ledger(store).records
    failed = [r for r in records if r.status == "failed"]
    assert len(records) == 4
    assert 1 <= len(failed) < 4
    assert summary["failed"] == len(failed)
    assert all(r.retries == 1 and "injected failure" in (r.error or "") for r in failed)
    assert store.read_json("search", "result.json")["winner"]["number"] not in {
        r.number for r in failed
    }


def test_the_wall_time_budget_ends_the_search_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    limit = 25

    # Far more trials than the machine can run in the time, however quiet it is.
    summary = search.run(job("random", trials=10_000, timeout=f"{limit}s"), store)

    result = store.read_json("search", "result.json")
    assert 0 < summary["trials"] < 10_000
    assert result["seconds"] < limit + 8
    again = search.run(job("random", trials=10_000, timeout=f"{limit}s"), store)
    assert again["trials"] == summary["trials"]
    assert store.read_json("search", "result.json")["runs"] == 2
