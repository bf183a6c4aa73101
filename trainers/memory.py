"""The memories the serve stage keeps for the next update, and their files in the store.

`RecentMemory` holds the labelled examples that arrived since the serving version was made,
bounded by `serving.recentMemory` (the oldest go first). `ReplayMemory` is a class-balanced
reservoir of older data, bounded by `lifelong.update.memorySize`: each class keeps an equal share
and, within it, a uniform sample of every example of that class it was offered. When a new version
starts serving, the recent examples it was trained on move into the replay memory.

Examples are raw rows (the training data's column order) with their label, so the update stage
can run them through the serving version's own preprocessing. Both memories live under
`serving/state/` as Parquet files plus a small JSON document.
"""

from __future__ import annotations

import io
import logging
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lifelong.trainers.store import Store

log = logging.getLogger(__name__)

STATE_DIR = "serving/state"
RECENT_FILE = "recent.parquet"
REPLAY_FILE = "replay.parquet"
MEMORY_FILE = "memory.json"


@dataclass(frozen=True)
class Example:
    """One labelled raw row."""

    features: list[Any]
    label: Any


class RecentMemory:
    """The newest labelled examples, at most `capacity` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._examples: deque[Example] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self._examples)

    def add(self, example: Example) -> None:
        self._examples.append(example)

    def drain(self) -> list[Example]:
        """Remove and return every example, oldest first."""
        examples = list(self._examples)
        self._examples.clear()
        return examples

    def sample(self, count: int, rng: random.Random) -> list[Example]:
        examples = self._examples
        return [examples[rng.randrange(len(examples))] for _ in range(count)] if examples else []


def _key(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


class ReplayMemory:
    """A class-balanced reservoir sample of older examples, at most `capacity` of them.

    With `balanced` false (regression) it is one plain reservoir over every example offered.
    """

    def __init__(self, capacity: int, *, balanced: bool = True, seed: int = 0) -> None:
        self.capacity = capacity
        self.balanced = balanced
        self._buckets: dict[Any, list[Example]] = {}
        self.seen: dict[Any, int] = {}
        """How many examples of each class (or of all, under None) were offered."""
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def __iter__(self) -> Iterator[Example]:
        for bucket in self._buckets.values():
            yield from bucket

    @property
    def classes(self) -> dict[Any, int]:
        """Examples held per class."""
        return {key: len(bucket) for key, bucket in self._buckets.items()}

    def quota(self) -> int:
        """Examples each class may hold now."""
        return self.capacity // max(len(self._buckets), 1)

    def add(self, example: Example) -> None:
        """Offer one example; it is kept with the probability a reservoir gives it."""
        if self.capacity <= 0:
            return
        key = _key(example.label) if self.balanced else None
        bucket = self._buckets.setdefault(key, [])
        self.seen[key] = self.seen.get(key, 0) + 1
        quota = self.quota()
        if len(bucket) < quota:
            bucket.append(example)
        else:
            slot = self._rng.randrange(self.seen[key])
            if slot < len(bucket):
                bucket[slot] = example
        self._trim(quota)

    def extend(self, examples: Iterable[Example]) -> None:
        for example in examples:
            self.add(example)

    def sample(self, count: int, rng: random.Random) -> list[Example]:
        everything = [e for bucket in self._buckets.values() for e in bucket]
        return (
            [everything[rng.randrange(len(everything))] for _ in range(count)] if everything else []
        )

    def _trim(self, quota: int) -> None:
        # A new class shrinks every share; drop random examples from buckets over their share.
        for bucket in self._buckets.values():
            while len(bucket) > quota:
                bucket.pop(self._rng.randrange(len(bucket)))


@dataclass
class Memories:
    """The recent and replay memories of one job, and the version they were collected under."""

    recent: RecentMemory
    replay: ReplayMemory
    version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def rebase(self, version: str) -> int:
        """Start collecting for a new serving version: recent examples become old data.

        Returns how many examples moved. Nothing moves when the version is unchanged.
        """
        if self.version == version:
            return 0
        moved = self.recent.drain()
        self.replay.extend(moved)
        if self.version is not None:
            log.info(
                "Serving version changed from %s to %s; %d recent examples moved to replay.",
                self.version,
                version,
                len(moved),
            )
        self.version = version
        return len(moved)

    # --- persistence --------------------------------------------------------------------------

    def save(self, store: Store, feature_names: list[str], target: str) -> None:
        """Write both memories, then the JSON document that marks them complete."""
        store.write_bytes(_parquet(self.recent, feature_names, target), STATE_DIR, RECENT_FILE)
        store.write_bytes(_parquet(self.replay, feature_names, target), STATE_DIR, REPLAY_FILE)
        document = {
            "version": self.version,
            "recentCapacity": self.recent.capacity,
            "replayCapacity": self.replay.capacity,
            "balanced": self.replay.balanced,
            "seen": [[_key(k), n] for k, n in self.replay.seen.items()],
            "recent": len(self.recent),
            "replay": len(self.replay),
        }
        store.write_json(document, STATE_DIR, MEMORY_FILE)

    @classmethod
    def load(
        cls,
        store: Store,
        feature_names: list[str],
        target: str,
        *,
        recent_capacity: int | None = None,
        replay_capacity: int | None = None,
    ) -> Memories | None:
        """Read the memories from the store, or None when none were saved.

        New capacities (from a changed spec) apply from now on: a smaller memory keeps its newest
        (recent) or a balanced sample (replay) of what it held.
        """
        if not store.exists(STATE_DIR, MEMORY_FILE):
            return None
        document = store.read_json(STATE_DIR, MEMORY_FILE)
        recent = RecentMemory(recent_capacity or int(document["recentCapacity"]))
        for example in _examples(store.read_bytes(STATE_DIR, RECENT_FILE), feature_names, target):
            recent.add(example)
        replay = ReplayMemory(
            replay_capacity if replay_capacity is not None else int(document["replayCapacity"]),
            balanced=bool(document["balanced"]),
        )
        replay.extend(_examples(store.read_bytes(STATE_DIR, REPLAY_FILE), feature_names, target))
        replay.seen = {key: max(int(n), replay.seen.get(key, 0)) for key, n in document["seen"]}
        return cls(recent, replay, document.get("version"))


def frame_of(examples: Iterable[Example], feature_names: list[str], target: str) -> pd.DataFrame:
    """Examples as a frame with the training columns and the target."""
    rows = list(examples)
    frame = pd.DataFrame([e.features for e in rows], columns=feature_names)
    if not rows:
        frame = pd.DataFrame({c: pd.Series(dtype=float) for c in feature_names})
    frame[target] = [e.label for e in rows]
    return frame


def examples_of(frame: pd.DataFrame, feature_names: list[str], target: str) -> list[Example]:
    """The rows of a frame as examples (the reverse of `frame_of`)."""
    features = frame[feature_names].to_numpy(dtype=object).tolist()
    labels = [_key(v) for v in frame[target].tolist()]
    return [Example([_key(v) for v in row], y) for row, y in zip(features, labels, strict=True)]


def _parquet(examples: Iterable[Example], feature_names: list[str], target: str) -> bytes:
    buffer = io.BytesIO()
    frame_of(examples, feature_names, target).to_parquet(buffer, index=False)
    return buffer.getvalue()


def _examples(data: bytes, feature_names: list[str], target: str) -> list[Example]:
    return examples_of(pd.read_parquet(io.BytesIO(data)), feature_names, target)
