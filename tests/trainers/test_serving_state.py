"""The serve stage's core without HTTP: validation, canary routing, online signals, adaptation
and persistence, on the digits job's first version (digits 0-4)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lifelong.trainers.data import Record, stream_records
from lifelong.trainers.knobs import Settings
from lifelong.trainers.serve import make_app
from lifelong.trainers.serving import RequestError, ServingState, open_state, route
from tests.trainers.helpers import (
    Workspace,
    clone_workspace,
    digits_spec,
    make_workspace,
    train_first_version,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("serving"), digits_spec())


@pytest.fixture(scope="module")
def records(base: Workspace) -> list[Record]:
    return list(stream_records(base.job.spec.data, base.job.spec.task))


@pytest.fixture
def work(base: Workspace, tmp_path: Path) -> Workspace:
    return clone_workspace(base, tmp_path)


def open_(work: Workspace, **kwargs: Any) -> ServingState:
    return open_state(work.job, work.store, work.version, settings=Settings(), **kwargs)


def stream(state: ServingState, records: list[Record], delay: int = 3) -> float:
    """Predict each record, label it `delay` records later; returns the share predicted right."""
    waiting: list[Record] = []
    right = 0
    for record in records:
        answer = state.predict({"instances": [record.features], "ids": [record.id]})
        right += answer["predictions"][0] == record.label
        waiting.append(record)
        if len(waiting) > delay:
            done = waiting.pop(0)
            state.feedback({"feedback": [{"id": done.id, "label": done.label}]})
    return right / len(records)


def refused(state: ServingState, call: str, body: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        getattr(state, call)(body)
    return caught.value


# --- validation ----------------------------------------------------------------------------------


def test_rows_may_be_lists_or_objects_by_feature_name(
    work: Workspace, records: list[Record]
) -> None:
    state = open_(work)
    names = state.inputs.names
    as_object = dict(zip(names, records[0].features, strict=True))
    answer = state.predict({"instances": [records[0].features, as_object], "ids": ["a", "b"]})
    assert answer["predictions"][0] == answer["predictions"][1] == records[0].label
    assert answer["versions"] == [work.version, work.version]


def test_a_missing_value_is_imputed_but_nan_is_refused(work: Workspace) -> None:
    state = open_(work)
    row: list[Any] = [0.0] * 64
    row[10] = None
    assert len(state.predict({"instances": [row]})["predictions"]) == 1
    row[10] = math.nan
    error = refused(state, "predict", {"instances": [row]})
    assert (error.status, error.reason) == (422, "non-finite")
    assert "instance 0, feature 'pixel_1_2'" in error.message


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ([1, 2], 400, "bad-shape"),
        ({"instances": []}, 400, "bad-shape"),
        ({"instances": [[0.0] * 63]}, 422, "feature-count"),
        ({"instances": [["x"] * 64]}, 422, "type"),
        ({"instances": [[True] * 64]}, 422, "type"),
        ({"instances": ["row"]}, 422, "type"),
        ({"instances": [[0.0] * 64], "ids": ["a", "b"]}, 400, "bad-shape"),
        ({"instances": [[0.0] * 64] * 2, "ids": ["a", "a"]}, 409, "duplicate-id"),
    ],
)
def test_malformed_predictions_are_refused_with_a_reason(
    work: Workspace, body: Any, status: int, reason: str
) -> None:
    state = open_(work)
    error = refused(state, "predict", body)
    assert (error.status, error.reason) == (status, reason)
    assert state.counts["predicted"] == 0 and not state.pending


def test_a_bad_label_refuses_the_whole_feedback_request(work: Workspace) -> None:
    state = open_(work)
    state.predict({"instances": [[0.0] * 64] * 2, "ids": ["a", "b"]})
    for label, reason in [(2.5, "bad-label"), ("7", "bad-label"), (None, "bad-label")]:
        body = {"feedback": [{"id": "a", "label": 1}, {"id": "b", "label": label}]}
        assert refused(state, "feedback", body).reason == reason
    assert len(state.memories.recent) == 0 and set(state.pending) == {"a", "b"}
    assert state.feedback({"feedback": [{"id": "a", "label": 7.0}]}) == {"accepted": 1}
    assert next(iter(state.memories.recent)).label == 7


def test_feedback_for_an_unknown_or_already_labelled_id_is_refused(work: Workspace) -> None:
    state = open_(work)
    state.predict({"instances": [[0.0] * 64], "ids": ["a"]})
    assert refused(state, "feedback", {"feedback": [{"id": "zz", "label": 1}]}).status == 404
    state.feedback({"feedback": [{"id": "a", "label": 1}]})
    assert refused(state, "feedback", {"feedback": [{"id": "a", "label": 1}]}).status == 404


def test_a_request_larger_than_the_limit_is_refused(base: Workspace, tmp_path: Path) -> None:
    work = clone_workspace(base, tmp_path)
    state = open_state(work.job, work.store, work.version, settings=Settings(max_batch=2))
    assert refused(state, "predict", {"instances": [[0.0] * 64] * 3}).status == 413


def test_the_oldest_pending_predictions_expire_beyond_the_limit(
    base: Workspace, tmp_path: Path
) -> None:
    work = clone_workspace(base, tmp_path)
    state = open_state(work.job, work.store, work.version, settings=Settings(max_pending=2))
    state.predict({"instances": [[0.0] * 64] * 3, "ids": ["a", "b", "c"]})
    assert list(state.pending) == ["b", "c"]
    assert state.counts["expired"] == 1


# --- signals -------------------------------------------------------------------------------------


def test_online_accuracy_falls_and_detectors_fire_when_new_digits_arrive(
    work: Workspace, records: list[Record]
) -> None:
    state = open_(work)
    stream(state, [r for r in records if r.phase == 0][:150])
    before = state.stable.window.value
    assert before is not None and before > 0.9
    assert not any(d.detections for d in state.detectors if d.spec.type != "ddm")

    stream(state, [r for r in records if r.phase == 1][:100])
    after = state.stable.window.value
    assert after is not None and after < 0.3
    fired = {d.name for d in state.detectors if d.detections}
    assert {"adwin", "page-hinkley", "kswin", "ddm"} <= fired
    text = state.exporter.text().decode()
    assert 'lifelong_drift_detected_total{detector="adwin",job_name="digits-test"} 1.0' in text
    assert state.monitor.shift > 0.3


def test_canary_routing_is_a_stable_hash_of_the_request_id() -> None:
    ids = [f"r{i}" for i in range(2000)]
    share = sum(route(i, 30) for i in ids) / len(ids)
    assert 0.26 < share < 0.34
    assert [route(i, 30) for i in ids] == [route(i, 30) for i in ids]
    assert not any(route(i, 0) for i in ids)
    assert all(route(i, 100) for i in ids)


def test_each_version_keeps_its_own_online_metrics(work: Workspace, records: list[Record]) -> None:
    train_first_version(work.job, work.store, "digits-test-v2", epochs=2, seed=3)
    state = open_(work, canary="digits-test-v2", canary_weight=40)
    stream(state, [r for r in records if r.phase == 0][:200])
    stable, canary = state.served
    assert (stable.role, stable.weight, canary.role, canary.weight) == ("stable", 60, "canary", 40)
    assert stable.predictions + canary.predictions == 200
    assert 40 < canary.predictions < 120
    assert stable.window.labelled + canary.window.labelled == 197
    text = state.exporter.text().decode()
    for served in state.served:
        line = (
            f'lifelong_online_accuracy{{job_name="digits-test",role="{served.role}",'
            f'version="{served.name}"}} {served.window.value}'
        )
        assert line in text
    info = 'lifelong_serving_info{job_name="digits-test",role="canary",version="digits-test-v2",'
    assert info + 'weight="40"} 1.0' in text


def test_head_adaptation_learns_new_digits_online(
    base: Workspace, records: list[Record], tmp_path: Path
) -> None:
    new_digits = [r for r in records if r.phase == 1][:150]
    scores = {}
    for mode in ("none", "head"):
        spec = digits_spec(adaptation={"mode": mode, "learningRate": 0.1})
        state = open_(clone_workspace(base, tmp_path / mode, spec))
        scores[mode] = stream(state, new_digits)
    print(f"prequential accuracy on the first 150 new digits: {scores}")
    assert scores["none"] == 0.0  # version 1 cannot name a digit it never saw
    assert scores["head"] > 0.3


# --- persistence ---------------------------------------------------------------------------------


def test_a_reopened_state_has_the_memories_windows_pending_labels_and_detectors(
    work: Workspace, records: list[Record]
) -> None:
    spec = digits_spec(adaptation={"mode": "head"})
    work = clone_workspace(work, work.folder / "again", spec)
    state = open_(work)
    stream(state, [r for r in records if r.phase == 1][:60])
    state.save(work.store)

    again = open_(work)
    assert again.status() == state.status()
    assert [e.features for e in again.memories.recent] == [
        e.features for e in state.memories.recent
    ]
    assert list(again.stable.window.errors) == list(state.stable.window.errors)
    assert list(again.pending) == list(state.pending)
    assert [(d.seen, d.detections) for d in again.detectors] == [
        (d.seen, d.detections) for d in state.detectors
    ]
    assert again.stable.adapter is not None and state.stable.adapter is not None
    assert again.stable.adapter.classes == state.stable.adapter.classes
    waiting = next(iter(state.pending))
    assert again.feedback({"feedback": [{"id": waiting, "label": 5}]}) == {"accepted": 1}


def test_a_new_serving_version_moves_recent_examples_to_replay(
    work: Workspace, records: list[Record]
) -> None:
    state = open_(work)
    stream(state, [r for r in records if r.phase == 1][:60])
    state.save(work.store)
    recent = Counter(e.label for e in state.memories.recent)
    train_first_version(work.job, work.store, "digits-test-v2", epochs=2, seed=4)

    promoted = open_state(work.job, work.store, "digits-test-v2", settings=Settings())
    assert len(promoted.memories.recent) == 0
    assert promoted.memories.version == "digits-test-v2"
    # Ten classes now share the replay memory (500): the new digits all fit in their shares.
    classes = promoted.memories.replay.classes
    assert sorted(classes) == list(range(10))
    assert all(classes[label] == count for label, count in recent.items())
    assert all(count <= 50 for count in classes.values())
    assert promoted.stable.window.labelled == 0
    assert all(d.seen == 0 for d in promoted.detectors)


# --- the HTTP layer ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_internal_error_answers_500_and_the_server_keeps_serving(
    work: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ServingState, body: Any) -> dict[str, Any]:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(ServingState, "feedback", broken)
    app = make_app(open_(work))
    async with TestClient(TestServer(app)) as client:
        answer = await client.post("/v1/feedback", json={"feedback": []})
        assert answer.status == 500
        assert "the disk is on fire" in (await answer.json())["error"]
        answer = await client.post("/v1/predict", json={"instances": [[0.0] * 64]})
        assert answer.status == 200
