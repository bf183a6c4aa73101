"""One conformance suite, run against every drift detector type the spec offers."""

from __future__ import annotations

import pickle
import random
import typing
from functools import cache

import pytest
from river import tree
from river.datasets import synth

from lifelong.api import DetectorSpec
from lifelong.api.job import DetectorType
from lifelong.trainers.detectors import KINDS, DetectorError, make_detector, make_detectors

pytestmark = pytest.mark.unit

TYPES: list[DetectorType] = sorted(typing.get_args(DetectorType))
REAL_VALUED = [t for t in TYPES if not KINDS[t].binary]
CHANGE = 1500
"""Where the concept of the synthetic stream changes."""


@cache
def stagger_errors() -> tuple[float, ...]:
    """0/1 errors of an online Hoeffding tree on STAGGER, whose concept changes at CHANGE."""
    stream = synth.ConceptDriftStream(
        synth.STAGGER(classification_function=0, seed=1),
        synth.STAGGER(classification_function=2, seed=1),
        position=CHANGE,
        width=20,
        seed=1,
    )
    model = tree.HoeffdingTreeClassifier()
    errors = []
    for x, y in stream.take(2 * CHANGE):
        errors.append(0.0 if model.predict_one(x) == y else 1.0)
        model.learn_one(x, y)  # type: ignore[no-untyped-call]
    return tuple(errors)


def detections(spec: DetectorSpec, values: typing.Iterable[float]) -> list[int]:
    return make_detector(spec).alarms(values)


def test_every_detector_type_of_the_spec_has_a_builder() -> None:
    assert set(typing.get_args(DetectorType)) == set(KINDS)


@pytest.mark.parametrize("kind", TYPES)
def test_detector_signals_drift_soon_after_a_known_change_point(kind: DetectorType) -> None:
    found = detections(DetectorSpec(type=kind), stagger_errors())
    after = [i for i in found if i >= CHANGE]
    assert after, f"{kind} never signalled the change at {CHANGE}"
    assert after[0] - CHANGE <= 200, f"{kind} took {after[0] - CHANGE} records"


@pytest.mark.parametrize("kind", TYPES)
def test_detector_rarely_signals_on_a_stationary_error_stream(kind: DetectorType) -> None:
    rng = random.Random(0)
    values = [1.0 if rng.random() < 0.1 else 0.0 for _ in range(3000)]
    # The DDM family is known to raise false alarms at low error rates (the bench measures how
    # many); every detector must stay below one per 250 records.
    assert len(detections(DetectorSpec(type=kind), values)) <= 12


@pytest.mark.parametrize("kind", REAL_VALUED)
def test_real_valued_detector_signals_a_shift_of_feature_scores(kind: DetectorType) -> None:
    rng = random.Random(1)
    values = [rng.gauss(0.0, 1.0) for _ in range(1000)] + [rng.gauss(1.0, 1.0) for _ in range(500)]
    found = detections(DetectorSpec(type=kind, input="features"), values)
    assert any(1000 <= i <= 1100 for i in found), f"{kind} signalled at {found}"


@pytest.mark.parametrize("kind", TYPES)
def test_detector_state_survives_pickling_mid_stream(kind: DetectorType) -> None:
    errors = stagger_errors()
    detector = make_detector(DetectorSpec(type=kind))
    for value in errors[: CHANGE - 100]:
        detector.update(value)
    copy = pickle.loads(pickle.dumps(detector))
    rest = errors[CHANGE - 100 :]
    original, restored = [], []
    for value in rest:
        detector.update(value)
        copy.update(value)
        original.append(detector.drift_detected)
        restored.append(copy.drift_detected)
    assert original == restored
    assert copy.seen == detector.seen == len(errors)


@pytest.mark.parametrize("kind", TYPES)
def test_drift_detected_is_read_only(kind: DetectorType) -> None:
    detector = make_detector(DetectorSpec(type=kind))
    with pytest.raises(AttributeError):
        detector.drift_detected = True  # type: ignore[misc]


@pytest.mark.parametrize("kind", TYPES)
def test_detector_refuses_values_it_cannot_watch(kind: DetectorType) -> None:
    detector = make_detector(DetectorSpec(type=kind))
    with pytest.raises(ValueError, match="non-finite"):
        detector.update(float("nan"))
    if KINDS[kind].binary:
        with pytest.raises(ValueError, match="takes 0 or 1"):
            detector.update(0.5)
    assert detector.seen == 0


@pytest.mark.parametrize("kind", TYPES)
def test_detector_is_named_after_its_type_unless_named(kind: DetectorType) -> None:
    assert make_detector(DetectorSpec(type=kind)).name == kind
    assert make_detector(DetectorSpec(type=kind, name="mine")).name == "mine"


def test_a_setting_the_type_does_not_use_is_refused_with_its_field_path() -> None:
    with pytest.raises(DetectorError, match=r"detectors\[1\]\.threshold: adwin does not use"):
        make_detectors([DetectorSpec(type="kswin"), DetectorSpec(type="adwin", threshold=3.0)])


@pytest.mark.parametrize("kind", [t for t in TYPES if KINDS[t].binary])
def test_the_ddm_family_refuses_to_watch_features_or_regression_errors(kind: DetectorType) -> None:
    with pytest.raises(DetectorError, match="watches 0/1 errors"):
        make_detector(DetectorSpec(type=kind, input="features"))
    with pytest.raises(DetectorError, match="regressor"):
        make_detector(DetectorSpec(type=kind), binary_errors=False)


def test_two_detectors_of_one_type_need_their_own_names() -> None:
    with pytest.raises(DetectorError, match="'adwin' is repeated"):
        make_detectors([DetectorSpec(type="adwin"), DetectorSpec(type="adwin", delta=0.1)])
    named = make_detectors([DetectorSpec(type="adwin"), DetectorSpec(type="adwin", name="fast")])
    assert [d.name for d in named] == ["adwin", "fast"]


def test_spec_settings_reach_the_river_detector() -> None:
    sensitive = detections(DetectorSpec(type="page-hinkley", threshold=5.0), stagger_errors())
    default = detections(DetectorSpec(type="page-hinkley"), stagger_errors())
    first = next(i for i in sensitive if i >= CHANGE)
    assert first < next(i for i in default if i >= CHANGE)


def test_inconsistent_levels_are_refused_with_the_values() -> None:
    with pytest.raises(DetectorError, match=r"driftThreshold \(1.0\) must not be below"):
        make_detector(DetectorSpec(type="ddm", warning_threshold=2.0, drift_threshold=1.0))
    with pytest.raises(DetectorError, match="eddm needs"):
        make_detector(DetectorSpec(type="eddm", drift_threshold=1.5))
