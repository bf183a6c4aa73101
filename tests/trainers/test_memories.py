"""The recent and replay memories: bounds, class balance, reservoir sampling, persistence."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lifelong.trainers.memory import Example, Memories, RecentMemory, ReplayMemory
from lifelong.trainers.store import Store

pytestmark = pytest.mark.unit

NAMES = ["a", "b"]


def example(i: int, label: Any) -> Example:
    return Example([float(i), f"c{i % 3}"], label)


def test_recent_memory_keeps_the_newest_examples_within_its_capacity() -> None:
    memory = RecentMemory(3)
    for i in range(5):
        memory.add(example(i, 0))
    assert [e.features[0] for e in memory] == [2.0, 3.0, 4.0]


def test_replay_memory_gives_every_class_an_equal_share_of_its_capacity() -> None:
    memory = ReplayMemory(100)
    for i in range(1000):
        memory.add(example(i, 0 if i % 10 else 1))  # class 0 is nine times as frequent
    assert memory.classes == {0: 50, 1: 50}
    assert len(memory) == 100


def test_a_new_class_shrinks_the_shares_of_the_others() -> None:
    memory = ReplayMemory(90)
    memory.extend(example(i, i % 2) for i in range(200))
    memory.extend(example(i, 2) for i in range(200))
    assert memory.classes == {0: 30, 1: 30, 2: 30}


def test_each_class_keeps_a_uniform_sample_of_what_it_was_offered() -> None:
    # Offer 0..999 in order; a reservoir of 100 should hold about as many from each half.
    halves: Counter[bool] = Counter()
    for seed in range(20):
        memory = ReplayMemory(100, seed=seed)
        memory.extend(example(i, "x") for i in range(1000))
        halves.update(e.features[0] < 500 for e in memory)
    assert 0.4 < halves[True] / sum(halves.values()) < 0.6


def test_an_unbalanced_memory_is_one_reservoir() -> None:
    memory = ReplayMemory(10, balanced=False)
    memory.extend(example(i, float(i)) for i in range(100))
    assert len(memory) == 10
    assert set(memory.classes) == {None}


def test_zero_capacity_keeps_nothing() -> None:
    memory = ReplayMemory(0)
    memory.add(example(1, 0))
    assert len(memory) == 0


def test_rebase_moves_recent_examples_to_replay_only_when_the_version_changes() -> None:
    memories = Memories(RecentMemory(10), ReplayMemory(100), "v1")
    for i in range(4):
        memories.recent.add(example(i, 5))
    assert memories.rebase("v1") == 0
    assert len(memories.recent) == 4
    assert memories.rebase("v2") == 4
    assert len(memories.recent) == 0
    assert memories.replay.classes == {5: 4}
    assert memories.version == "v2"


def test_memories_read_back_exactly_what_was_saved(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    memories = Memories(RecentMemory(10), ReplayMemory(20), "v3")
    for i in range(7):
        memories.recent.add(example(i, i % 2))
    memories.replay.extend(example(i, i % 4) for i in range(100))
    memories.save(store, NAMES, "label")

    loaded = Memories.load(store, NAMES, "label")
    assert loaded is not None
    assert loaded.version == "v3"
    assert list(loaded.recent) == list(memories.recent)
    assert sorted(map(repr, loaded.replay)) == sorted(map(repr, memories.replay))
    assert loaded.replay.seen == memories.replay.seen


def test_loading_with_smaller_capacities_keeps_the_newest_and_a_balanced_sample(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path))
    memories = Memories(RecentMemory(10), ReplayMemory(40), "v1")
    for i in range(10):
        memories.recent.add(example(i, 0))
    memories.replay.extend(example(i, i % 4) for i in range(100))
    memories.save(store, NAMES, "label")
    loaded = Memories.load(store, NAMES, "label", recent_capacity=3, replay_capacity=8)
    assert loaded is not None
    assert [e.features[0] for e in loaded.recent] == [7.0, 8.0, 9.0]
    assert loaded.replay.classes == {0: 2, 1: 2, 2: 2, 3: 2}


def test_no_saved_memories_reads_as_none(tmp_path: Path) -> None:
    assert Memories.load(Store(str(tmp_path)), NAMES, "label") is None


def test_sampling_draws_from_the_memory() -> None:
    memory = ReplayMemory(10)
    assert memory.sample(3, random.Random(0)) == []
    memory.extend(example(i, 1) for i in range(5))
    assert all(e in list(memory) for e in memory.sample(8, random.Random(0)))
