"""The engine's policies, each on its own, as tables of situations and expected decisions."""

from __future__ import annotations

import pytest

from lifelong.api import GateSpec, TriggerSpec
from lifelong.engine.policies import (
    CanaryJudge,
    Evaluation,
    Gate,
    LatchState,
    Retry,
    StormControl,
    TriggerLatch,
)
from lifelong.engine.triggers import Sample, aggregate, evaluate, to_promql

pytestmark = pytest.mark.unit

STORM = StormControl(cooldown=600.0, max_updates=3, min_samples=50)

# (situation, keyword arguments, refused because of — or None when the update may start)
STORM_TABLE = [
    (
        "first update",
        {
            "updates_started": 0,
            "update_running": False,
            "last_update_end": None,
            "recent_samples": 80,
        },
        None,
    ),
    (
        "update already running",
        {
            "updates_started": 1,
            "update_running": True,
            "last_update_end": None,
            "recent_samples": 80,
        },
        "already running",
    ),
    (
        "inside the cooldown",
        {
            "updates_started": 1,
            "update_running": False,
            "last_update_end": 9500.0,
            "recent_samples": 80,
        },
        "cooling down",
    ),
    (
        "cooldown just over",
        {
            "updates_started": 1,
            "update_running": False,
            "last_update_end": 9400.0,
            "recent_samples": 80,
        },
        None,
    ),
    (
        "budget spent",
        {
            "updates_started": 3,
            "update_running": False,
            "last_update_end": None,
            "recent_samples": 80,
        },
        "budget of 3 updates",
    ),
    (
        "too little recent data",
        {
            "updates_started": 0,
            "update_running": False,
            "last_update_end": None,
            "recent_samples": 10,
        },
        "minSamples",
    ),
    (
        "recent data unknown",
        {
            "updates_started": 0,
            "update_running": False,
            "last_update_end": None,
            "recent_samples": None,
        },
        None,
    ),
]


@pytest.mark.parametrize(
    ("situation", "kwargs", "refusal"), STORM_TABLE, ids=[row[0] for row in STORM_TABLE]
)
def test_storm_control_lets_updates_start_only_when_allowed(
    situation: str, kwargs: dict[str, object], refusal: str | None
) -> None:
    answer = STORM.refuse(now=10_000.0, **kwargs)  # type: ignore[arg-type]
    if refusal is None:
        assert answer is None
    else:
        assert answer is not None
        assert refusal in answer


def run_latch(latch: TriggerLatch, conditions: list[bool], every: float = 10.0) -> list[int]:
    """Feed a condition sequence, latching on each firing; return the indexes that fired."""
    state, fired = LatchState(), []
    for i, condition in enumerate(conditions):
        now = i * every
        state = latch.observe(state, condition, now)
        if latch.ready(state, now):
            fired.append(i)
            state = latch.latch(state)
    return fired


def test_a_flapping_metric_fires_once() -> None:
    flapping = [True, False, True, False, True, True, False, True]
    assert run_latch(TriggerLatch(hold=0.0, rearm=60.0), flapping) == [0]


def test_a_trigger_rearms_after_its_condition_stays_clear() -> None:
    sequence = [True] + [False] * 7 + [True]
    assert run_latch(TriggerLatch(hold=0.0, rearm=60.0), sequence) == [0, 8]


def test_a_metric_still_bad_after_the_update_fires_again_once_steady() -> None:
    latch = TriggerLatch(hold=0.0, rearm=60.0)
    state = latch.latch(latch.observe(LatchState(), True, 0.0))
    assert not latch.ready(state, 30.0, settled=None)  # the update is still running
    assert not latch.ready(state, 80.0, settled=40.0)  # bad for only 40s since it ended
    assert latch.ready(state, 100.0, settled=40.0)  # bad and steady for 60s since it ended


def test_a_metric_flapping_after_the_update_does_not_fire_again() -> None:
    latch, state = TriggerLatch(hold=0.0, rearm=60.0), LatchState()
    state = latch.latch(latch.observe(state, True, 0.0))
    for now in range(50, 300, 20):
        state = latch.observe(state, (now // 20) % 2 == 0, float(now))
        assert not latch.ready(state, float(now), settled=40.0)


def test_a_for_duration_delays_the_firing() -> None:
    assert run_latch(TriggerLatch(hold=30.0, rearm=60.0), [True] * 6) == [3]


def test_a_condition_broken_before_its_for_duration_does_not_fire() -> None:
    assert run_latch(TriggerLatch(hold=30.0, rearm=60.0), [True, True, False, True, True]) == []


GATE = Gate(min_gain=0.0, max_forgetting=0.05)

# (situation, evaluation, decision, words the reason must hold)
GATE_TABLE = [
    ("gains and remembers", Evaluation(0.50, 0.98, 0.95, 0.96), "promote", "Promoted"),
    ("forgets too much", Evaluation(0.50, 0.98, 0.99, 0.40), "reject", "forgetting 0.58"),
    ("does not gain", Evaluation(0.90, 0.98, 0.85, 0.98), "reject", "below minGain"),
    ("exactly at the forgetting limit", Evaluation(0.5, 0.95, 0.9, 0.90), "promote", ""),
    ("no old data", Evaluation(0.5, None, 0.9, None), "promote", "forgetting was not measured"),
    ("rmse improves", Evaluation(2.0, 1.0, 1.5, 1.02, mode="min"), "promote", ""),
    ("rmse forgets", Evaluation(2.0, 1.0, 1.5, 1.2, mode="min"), "reject", "forgetting 0.2"),
    ("no evaluation reported", None, "reject", "no evaluation"),
]


@pytest.mark.parametrize(
    ("situation", "evaluation", "decision", "words"), GATE_TABLE, ids=[row[0] for row in GATE_TABLE]
)
def test_the_gate_promotes_only_what_gains_without_forgetting(
    situation: str, evaluation: Evaluation | None, decision: str, words: str
) -> None:
    verdict = GATE.judge(evaluation)
    assert verdict.decision == decision
    assert words in verdict.reason
    assert verdict.min_gain == 0.0 and verdict.max_forgetting == 0.05


def test_the_gate_reads_its_limits_from_the_spec() -> None:
    gate = Gate.of(GateSpec(min_gain=0.1, max_forgetting=0.0))
    assert gate.judge(Evaluation(0.5, 0.9, 0.55, 0.9)).decision == "reject"


RETRY_TABLE = [
    # failures, permanent, give up?, delay before the next attempt
    (1, False, False, 10.0),
    (2, False, False, 20.0),
    (3, False, True, 40.0),
    (1, True, True, 10.0),
]


@pytest.mark.parametrize(("failures", "permanent", "give_up", "delay"), RETRY_TABLE)
def test_retry_backs_off_then_gives_up(
    failures: int, permanent: bool, give_up: bool, delay: float
) -> None:
    retry = Retry(limit=3, base=10.0, cap=300.0)
    assert retry.give_up(failures, permanent) is give_up
    assert retry.delay(failures) == delay


def test_retry_delays_are_capped() -> None:
    assert Retry(limit=10, base=10.0, cap=60.0).delay(8) == 60.0


CANARY = CanaryJudge(steps=(10, 50), min_samples=50, tolerance=0.02)
CANARY_TABLE = [
    ("too few samples", 0, 20, 0.95, 0.95, "wait"),
    ("holds at the first step", 0, 60, 0.95, 0.94, "advance"),
    ("holds at the last step", 1, 60, 0.95, 0.96, "promote"),
    ("falls behind", 0, 60, 0.95, 0.90, "rollback"),
]


@pytest.mark.parametrize(
    ("situation", "step", "samples", "stable", "canary", "move"),
    CANARY_TABLE,
    ids=[row[0] for row in CANARY_TABLE],
)
def test_the_canary_judge(
    situation: str, step: int, samples: int, stable: float, canary: float, move: str
) -> None:
    assert CANARY.judge(step, samples, stable, canary)[0] == move


def test_a_structured_trigger_compiles_to_promql() -> None:
    trigger = TriggerSpec(
        name="drop", metric="lifelong_online_accuracy", window="2m", aggregate="avg", below=0.9
    )
    assert to_promql(trigger, "digits", "ml") == (
        "avg(avg_over_time(lifelong_online_accuracy"
        '{job_name="digits",role!="canary",namespace="ml"}[2m])) < 0.9'
    )


def test_a_raw_promql_trigger_is_used_as_written() -> None:
    trigger = TriggerSpec(name="raw", promql="up == 0")
    assert to_promql(trigger, "digits") == "up == 0"


SERIES = [Sample(t, v) for t, v in [(0, 0.9), (30, 0.8), (60, 0.7), (90, 0.6), (120, 0.5)]]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("avg", 0.6), ("min", 0.5), ("max", 0.7), ("last", 0.5), ("sum", 1.8)],
)
def test_aggregates_look_back_over_the_window(kind: str, expected: float) -> None:
    assert aggregate(kind, SERIES, window=61.0, now=120.0) == pytest.approx(expected)


def test_increase_and_rate_count_a_reset_as_a_restart_from_zero() -> None:
    counter = [Sample(0, 5), Sample(10, 8), Sample(20, 2), Sample(30, 4)]
    assert aggregate("increase", counter, window=100.0, now=30.0) == pytest.approx(7.0)
    assert aggregate("rate", counter, window=100.0, now=30.0) == pytest.approx(7.0 / 30.0)


def test_local_evaluation_fires_below_the_threshold() -> None:
    trigger = TriggerSpec(name="drop", metric="lifelong_online_accuracy", window="1m", below=0.65)
    # The window is left-open, as in Prometheus: (60, 120] holds the samples at 90 and 120.
    firing, value = evaluate(trigger, SERIES, now=120.0)
    assert firing is True
    assert value == pytest.approx(0.55)
    assert evaluate(trigger, SERIES, now=500.0) == (None, None)
