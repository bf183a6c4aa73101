"""The Pareto front of trials and the two rules that pick a winner from it."""

from __future__ import annotations

import pytest

from lifelong.trainers.pareto import Goal, dominates, front, select

pytestmark = pytest.mark.unit

ACCURACY = Goal("accuracy", "max")
LATENCY = Goal("latencyMs", "min")
PARAMS = Goal("params", "min")


def point(number: int, accuracy: float, latency: float, params: float = 1000.0) -> dict[str, float]:
    return {"number": number, "accuracy": accuracy, "latencyMs": latency, "params": params}


def test_a_point_dominates_one_it_matches_or_beats_everywhere_and_beats_somewhere() -> None:
    goals = [ACCURACY, LATENCY]
    assert dominates([0.9, 1.0], [0.8, 1.0], goals)
    assert dominates([0.9, 0.5], [0.8, 1.0], goals)
    assert not dominates([0.9, 1.0], [0.9, 1.0], goals)
    assert not dominates([0.9, 2.0], [0.8, 1.0], goals)


def test_the_front_keeps_the_non_dominated_points_in_order() -> None:
    points = [point(0, 0.90, 1.0), point(1, 0.95, 2.0), point(2, 0.85, 1.5), point(3, 0.80, 0.5)]

    assert [p["number"] for p in front(points, [ACCURACY, LATENCY])] == [0, 1, 3]


def test_points_without_every_objective_are_left_out_of_the_front() -> None:
    points = [point(0, 0.9, 1.0), {"number": 1, "accuracy": 0.99}, point(2, float("nan"), 0.1)]

    assert [p["number"] for p in front(points, [ACCURACY, LATENCY])] == [0]


def test_primary_takes_the_best_primary_objective() -> None:
    points = [point(0, 0.90, 1.0), point(1, 0.97, 2.0), point(2, 0.93, 0.5)]

    choice = select(points, [ACCURACY, LATENCY], "primary", tolerance=0.0)

    assert choice.winner["number"] == 1
    assert choice.rule == "primary"
    assert "best accuracy" in choice.reason


def test_primary_breaks_near_ties_by_the_next_objective() -> None:
    points = [point(0, 0.970, 2.0), point(1, 0.968, 0.4), point(2, 0.950, 0.1)]

    choice = select(points, [ACCURACY, LATENCY], "primary", tolerance=0.005)

    assert choice.winner["number"] == 1
    assert "2 trials are within" in choice.reason
    assert "latencyMs (min)" in choice.reason


def test_primary_tolerance_is_relative_for_unbounded_metrics() -> None:
    rmse, size = Goal("rmse", "min"), PARAMS
    points = [
        {"number": 0, "rmse": 100.0, "params": 5000.0},
        {"number": 1, "rmse": 100.4, "params": 100.0},
        {"number": 2, "rmse": 102.0, "params": 10.0},
    ]

    choice = select(points, [rmse, size], "primary", tolerance=0.005)

    assert choice.winner["number"] == 1  # 0.4 is within 0.5% of 100, 2.0 is not


def test_knee_takes_the_front_point_nearest_the_ideal() -> None:
    points = [point(0, 0.99, 10.0), point(1, 0.97, 1.0), point(2, 0.60, 0.5)]

    choice = select(points, [ACCURACY, LATENCY], "knee")

    assert choice.winner["number"] == 1
    assert choice.rule == "knee"
    assert "distance" in choice.reason
    assert len(choice.front) == 3


def test_a_single_objective_picks_the_best_value() -> None:
    points = [point(0, 0.91, 1.0), point(1, 0.92, 9.0)]

    assert select(points, [ACCURACY], "knee").winner["number"] == 1
    assert select(points, [ACCURACY], "primary").winner["number"] == 1


def test_selection_without_any_complete_point_is_an_error() -> None:
    with pytest.raises(ValueError, match="no point has a value"):
        select([{"number": 0, "accuracy": 0.9}], [ACCURACY, LATENCY])


def test_an_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown selection rule"):
        select([point(0, 0.9, 1.0)], [ACCURACY], "median")
