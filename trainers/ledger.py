"""The search's trial log, `search/trials.jsonl`: one line per finished trial; and its
progress, `search/progress.json`: runs started and seconds spent.

The log is how a search resumes. A line is appended (atomically) the moment Ray Tune reports a
trial finished, completed or stopped early or failed for good; a search killed at any point and
run again reads the log, warms its strategy with those trials and runs only the rest. Trials
that were still running when the process died are not in the log, and run again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from lifelong.trainers.store import Store

PATH = ("search", "trials.jsonl")
PROGRESS = ("search", "progress.json")


@dataclass
class TrialRecord:
    """One finished trial."""

    number: int
    """Position in the whole search, counting every run, from 0."""

    id: str
    """Ray Tune's trial id."""

    run: int
    """Which run of the search stage finished it (1, then 2 after a resume, ...)."""

    status: str
    """`completed` (full budget), `stopped` (by the scheduler or the wall-time budget) or
    `failed` (after its retries)."""

    config: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    """The last reported validation metrics and objectives."""

    epochs: int = 0
    history: list[float] = field(default_factory=list)
    """The primary objective after each epoch."""

    seconds: float = 0.0
    """Seconds spent in epochs (training and validation)."""

    wall: float = 0.0
    """Seconds from the trial's start to its end, as the search saw them."""

    retries: int = 0
    error: str | None = None
    finished: float = 0.0
    """When the search recorded it, in seconds since the epoch. The worker's own readings of when
    it began and last reported are `metrics["entered"]` and `metrics["reported"]`."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """The trial log of one search in the artifact store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.records = [TrialRecord(**line) for line in store.read_lines(*PATH)]
        progress = store.read_json(*PROGRESS) if store.exists(*PROGRESS) else {}
        self.runs = int(progress.get("runs", 0))
        """Runs of the search stage started so far."""

        self.seconds = float(progress.get("seconds", 0.0))
        """Wall-clock seconds those runs spent, counted against the budget's timeout."""

    def append(self, record: TrialRecord) -> None:
        self.store.append_line(record.as_dict(), *PATH)
        self.records.append(record)

    def save_progress(self, runs: int, seconds: float) -> None:
        """Record the runs started and the seconds spent (`search/progress.json`)."""
        self.runs, self.seconds = runs, seconds
        self.store.write_json({"runs": runs, "seconds": round(seconds, 3)}, *PROGRESS)

    def known(self, trial_id: str) -> bool:
        return any(r.id == trial_id for r in self.records)

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.status for r in self.records))

    def next_number(self) -> int:
        return len(self.records)
