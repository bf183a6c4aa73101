"""Drift detectors built from `DetectorSpec`: river's detectors behind one small contract.

The serve stage feeds each detector one number per record, either the prediction error (0/1 for
a classifier, absolute for a regressor) or the record's mean absolute z-score against the training
data. Every detector speaks river's verbs: `update(x)`, then read `drift_detected`. The DDM family
needs 0/1 values, so it can only watch a classifier's errors; `make_detectors` refuses any other
pairing before serving starts, naming the field to change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from river import drift
from river.drift import binary

from lifelong.api import DetectorSpec
from lifelong.trainers.data import DataError

log = logging.getLogger(__name__)

SPEC_PATH = "spec.serving.detectors"


class DetectorError(DataError):
    """A detector's settings can never work; the spec must change."""


@dataclass(frozen=True)
class Kind:
    """How to build one type of detector from its spec, and which spec fields it reads."""

    build: Callable[[DetectorSpec], Any]
    fields: tuple[str, ...]
    """Spec fields (snake_case) the type reads; setting any other is an error."""

    binary: bool = False
    """Whether the detector only takes 0/1 values."""


def _adwin(spec: DetectorSpec) -> Any:
    return drift.ADWIN(  # type: ignore[no-untyped-call]
        delta=spec.delta if spec.delta is not None else 0.002,
        grace_period=spec.min_instances if spec.min_instances is not None else 10,
    )


def _kswin(spec: DetectorSpec) -> Any:
    window = spec.window_size if spec.window_size is not None else 100
    return drift.KSWIN(
        alpha=spec.alpha if spec.alpha is not None else 0.005,
        window_size=window,
        stat_size=min(30, window // 3),
        seed=0,
    )


def _page_hinkley(spec: DetectorSpec) -> Any:
    return drift.PageHinkley(
        min_instances=spec.min_instances if spec.min_instances is not None else 30,
        delta=spec.delta if spec.delta is not None else 0.005,
        threshold=spec.threshold if spec.threshold is not None else 50.0,
        alpha=spec.alpha if spec.alpha is not None else 0.9999,
    )


def _ddm(spec: DetectorSpec) -> Any:
    warning = spec.warning_threshold if spec.warning_threshold is not None else 2.0
    level = spec.drift_threshold if spec.drift_threshold is not None else 3.0
    if level < warning:
        raise ValueError(f"driftThreshold ({level}) must not be below warningThreshold ({warning})")
    return binary.DDM(
        warm_start=spec.min_instances if spec.min_instances is not None else 30,
        warning_threshold=warning,
        drift_threshold=level,
    )


def _eddm(spec: DetectorSpec) -> Any:
    # EDDM's levels are ratios of distances between errors: below 1, the drift level lowest.
    warning = spec.warning_threshold if spec.warning_threshold is not None else 0.95
    level = spec.drift_threshold if spec.drift_threshold is not None else 0.9
    if not (0 < level <= warning < 1):
        raise ValueError(
            "eddm needs 0 < driftThreshold <= warningThreshold < 1 "
            f"(got driftThreshold {level}, warningThreshold {warning})"
        )
    return binary.EDDM(
        warm_start=spec.min_instances if spec.min_instances is not None else 30,
        alpha=warning,
        beta=level,
    )


def _hddm(kind: type[Any]) -> Callable[[DetectorSpec], Any]:
    def build(spec: DetectorSpec) -> Any:
        delta = spec.delta if spec.delta is not None else 0.001
        return kind(drift_confidence=delta, warning_confidence=min(0.5, 5 * delta))

    return build


KINDS: dict[str, Kind] = {
    "adwin": Kind(_adwin, ("delta", "min_instances")),
    "kswin": Kind(_kswin, ("alpha", "window_size")),
    "page-hinkley": Kind(_page_hinkley, ("delta", "threshold", "alpha", "min_instances")),
    "ddm": Kind(_ddm, ("min_instances", "warning_threshold", "drift_threshold"), binary=True),
    "eddm": Kind(_eddm, ("min_instances", "warning_threshold", "drift_threshold"), binary=True),
    "hddm-a": Kind(_hddm(binary.HDDMA), ("delta",), binary=True),
    "hddm-w": Kind(_hddm(binary.HDDMW), ("delta",), binary=True),
}
"""Every detector type of `DetectorSpec.type`, with its builder."""

TUNABLE: tuple[str, ...] = (
    "delta",
    "threshold",
    "alpha",
    "window_size",
    "min_instances",
    "warning_threshold",
    "drift_threshold",
)
"""Every tuning field of `DetectorSpec`."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Detector:
    """One drift detector over a stream of numbers, configured entirely by its spec."""

    def __init__(self, spec: DetectorSpec) -> None:
        kind = KINDS[spec.type]
        self.spec = spec
        self.name = spec.name or spec.type
        self.input = spec.input
        self.binary = kind.binary
        self.seen = 0
        self.detections = 0
        self.last_detection: int | None = None
        """How many values the detector had seen when it last signalled drift."""
        self._detector = kind.build(spec)

    def __repr__(self) -> str:
        return f"Detector({self.name!r}, {self.spec.type}, input={self.input})"

    def update(self, x: float) -> None:
        """Watch one more value; `drift_detected` then tells whether it signalled a drift."""
        if not math.isfinite(x):
            raise ValueError(f"detector {self.name} got a non-finite value {x!r}")
        if self.binary:
            if x not in (0, 1):
                raise ValueError(f"detector {self.name} ({self.spec.type}) takes 0 or 1, got {x}")
            self._detector.update(bool(x))
        else:
            self._detector.update(float(x))
        self.seen += 1
        if self._detector.drift_detected:
            self.detections += 1
            self.last_detection = self.seen
            log.debug("Detector %s signalled drift after %d values.", self.name, self.seen)

    @property
    def drift_detected(self) -> bool:
        """Whether the last value made the detector signal a drift."""
        return bool(self._detector.drift_detected)

    def alarms(self, values: Iterable[float]) -> list[int]:
        """Watch every value; return the positions (from 0) at which a drift was signalled."""
        found = []
        for i, value in enumerate(values):
            self.update(value)
            if self.drift_detected:
                found.append(i)
        return found


def make_detector(spec: DetectorSpec, *, binary_errors: bool = True, path: str = "") -> Detector:
    """Build one detector, or raise `DetectorError` saying which field to change.

    `binary_errors` says whether the error stream is 0/1 (a classifier); `path` is the spec
    location used in messages, such as `spec.serving.detectors[1]`.
    """
    where = path or SPEC_PATH
    kind = KINDS[spec.type]
    unused = [f for f in TUNABLE if getattr(spec, f) is not None and f not in kind.fields]
    if unused:
        accepted = ", ".join(_camel(f) for f in kind.fields)
        raise DetectorError(
            f"{where}.{_camel(unused[0])}: {spec.type} does not use this setting "
            f"(got {getattr(spec, unused[0])}); it takes {accepted}"
        )
    if kind.binary and (spec.input == "features" or not binary_errors):
        what = "input features" if spec.input == "features" else "a regressor's errors"
        raise DetectorError(
            f"{where}.type: {spec.type} watches 0/1 errors of a classifier, not {what}; "
            "use adwin, kswin or page-hinkley here"
        )
    try:
        return Detector(spec)
    except ValueError as error:
        raise DetectorError(f"{where}: {error}") from error


def make_detectors(specs: Sequence[DetectorSpec], *, binary_errors: bool = True) -> list[Detector]:
    """Build the serving spec's detectors; names (the type by default) must be unique."""
    detectors = [
        make_detector(spec, binary_errors=binary_errors, path=f"{SPEC_PATH}[{i}]")
        for i, spec in enumerate(specs)
    ]
    names = [d.name for d in detectors]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DetectorError(
            f"{SPEC_PATH}: detector names must be unique, {repeated[0]!r} is repeated; "
            "give each detector of the same type its own `name`"
        )
    return detectors
