"""Prequential windows, feature statistics and the online head adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from lifelong.api import AdaptationSpec
from lifelong.trainers.bundle import ModelBundle
from lifelong.trainers.models import build_model
from lifelong.trainers.online import FeatureMonitor, HeadAdapter, Prequential

pytestmark = pytest.mark.unit


def test_prequential_accuracy_covers_only_the_last_window() -> None:
    window = Prequential(4, classification=True)
    empty = window.value
    assert empty is None
    for truth, guess in [(1, 0), (1, 1), (2, 2), (3, 3), (4, 4)]:
        window.update(truth, guess)
    assert window.value == 1.0  # the miss fell out of the window
    assert window.labelled == 5


def test_prequential_error_of_a_regressor_is_the_root_mean_square() -> None:
    window = Prequential(10, classification=False)
    assert window.update(3.0, 1.0) == 2.0
    window.update(1.0, 1.0)
    assert window.value == pytest.approx(np.sqrt(2.0))


def test_prequential_state_round_trips() -> None:
    window = Prequential(3, classification=True)
    for guess in (1, 0, 1, 1):
        window.update(1, guess)
    copy = Prequential(3, classification=True)
    copy.restore(window.state())
    assert copy.value == window.value
    assert copy.labelled == 4


def test_feature_shift_is_small_for_training_like_inputs_and_large_for_shifted_ones() -> None:
    rng = np.random.default_rng(0)
    training = rng.normal(0.0, 1.0, size=(2000, 8))
    monitor = FeatureMonitor.from_training(training, window=100)
    monitor.update(rng.normal(0.0, 1.0, size=(500, 8)))
    assert monitor.shift < 0.3
    monitor.update(rng.normal(2.0, 1.0, size=(500, 8)))
    assert monitor.shift > 1.7


def test_the_batched_moving_mean_equals_the_row_by_row_one() -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(50, 3))
    batched = FeatureMonitor(np.zeros(3), np.ones(3), window=10)
    batched.update(rows)
    single = FeatureMonitor(np.zeros(3), np.ones(3), window=10)
    for row in rows:
        single.update(row[None, :])
    assert batched.recent is not None and single.recent is not None
    np.testing.assert_allclose(batched.recent, single.recent)


def test_row_scores_are_mean_absolute_z_scores_clipped_for_constant_columns() -> None:
    monitor = FeatureMonitor(np.array([0.0, 1.0]), np.array([1.0, 0.0]), window=10)
    scores = monitor.scores(np.array([[2.0, 1.0], [0.0, 5.0]]))
    np.testing.assert_allclose(scores, [1.0, 5.0])  # 4 / 0.001 is clipped to 10


def small_bundle() -> ModelBundle:
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(20, 3))
    scaler = StandardScaler().fit(x)
    network = build_model({"family": "mlp", "depth": 1, "width": 8}, 3, 2)
    return ModelBundle(network, scaler, {}, {"type": "classification"}, ["a", "b", "c"], [0, 1])


def test_head_adapter_grows_for_a_new_class_and_learns_it() -> None:
    bundle = small_bundle()
    adapter = HeadAdapter(bundle, AdaptationSpec(mode="head", learning_rate=0.5))
    features = np.full((4, 3), 2.0, dtype=np.float32)
    for _ in range(30):
        adapter.learn(features, [7, 7, 7, 7])
    assert adapter.classes == [0, 1, 7]
    assert adapter.predict_features(features) == [7, 7, 7, 7]
    assert bundle.classes == [0, 1]  # the stored version is untouched
    assert bundle.network.head.out_features == 2


def test_head_adapter_state_round_trips_with_grown_classes() -> None:
    bundle = small_bundle()
    adapter = HeadAdapter(bundle, AdaptationSpec(mode="head", learning_rate=0.5))
    features = np.ones((2, 3), dtype=np.float32)
    adapter.learn(features, [1, 9])
    copy = HeadAdapter(bundle, AdaptationSpec(mode="head"))
    copy.restore(adapter.state())
    assert copy.classes == [0, 1, 9]
    assert copy.steps == 1
    assert copy.predict_features(features) == adapter.predict_features(features)
