"""The trainers' numpy metrics agree with scikit-learn's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lifelong.trainers.fit import score

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(40))
def test_classification_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, classes = int(rng.integers(1, 60)), int(rng.integers(2, 6))
    scores = (rng.normal(size=(rows, classes)) * rng.uniform(0.1, 30)).astype(np.float32)
    labels = rng.integers(0, classes, size=rows)
    predicted = scores.argmax(axis=1)
    probabilities = torch.softmax(torch.from_numpy(scores), dim=1).numpy()

    got = score({"type": "classification"}, scores, labels)

    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert got["f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
    assert got["logLoss"] == pytest.approx(
        skm.log_loss(labels, probabilities, labels=list(range(classes))), rel=1e-4
    )
    if len(np.unique(labels)) > 1:
        expected = skm.balanced_accuracy_score(labels, predicted)
        assert got["balancedAccuracy"] == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(20))
def test_regression_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(2, 60))
    target, outputs = rng.normal(size=rows), rng.normal(size=(rows, 1))

    got = score({"type": "regression"}, outputs, target)

    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(target, outputs[:, 0])))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(target, outputs[:, 0]))
    assert got["r2"] == pytest.approx(skm.r2_score(target, outputs[:, 0]))


def test_a_constant_regression_target_scores_r2_like_scikit_learn() -> None:
    target = np.ones(5)
    assert score({"type": "regression"}, np.ones((5, 1)), target)["r2"] == 1.0
    assert score({"type": "regression"}, np.zeros((5, 1)), target)["r2"] == 0.0
