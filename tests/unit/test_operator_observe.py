"""What the operator reads from the serving pods for triggers and canaries."""

from __future__ import annotations

import pytest

from lifelong.operator.observe import PodReading

pytestmark = pytest.mark.unit


def test_a_trigger_reads_the_stable_series_and_leaves_the_canarys_out() -> None:
    reading = PodReading()
    reading.series["lifelong_online_accuracy"] = [
        ({"role": "stable"}, 0.9), ({"role": "canary"}, 0.5), ({"role": "stable"}, float("nan")),
    ]  # fmt: skip
    assert reading.values("lifelong_online_accuracy", role="!canary") == [0.9]
    assert reading.values("lifelong_online_accuracy", role="canary") == [0.5]
