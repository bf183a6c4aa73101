"""Benchmark: online head adaptation in the serve stage (`serving.adaptation`).

The digits job's first version learns digits 0-4; the class-incremental stream then brings
digits 0-4 (phase 0), digits 5-9 (phase 1) and all ten mixed (phase 2), each label arriving
three records after its prediction. The serve stage's own state (`open_state`, no HTTP)
predicts every record; printed is the prequential accuracy (predicted before the label is known)
in each phase, for adaptation off and for a few settings of `mode: head`.

Run: `python bench/adaptation.py` (about a minute).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lifelong.api import AutoDLJob
from lifelong.trainers.bundle import ModelBundle
from lifelong.trainers.data import Record, infer_task, load_table, make_preprocessor, stream_records
from lifelong.trainers.fit import make_optimizer, task_loss, train_epoch
from lifelong.trainers.knobs import Settings
from lifelong.trainers.models import build_model
from lifelong.trainers.serving import open_state, training_rows
from lifelong.trainers.store import Store

LABEL_DELAY = 3
CONFIG: dict[str, Any] = {
    "family": "mlp",
    "depth": 1,
    "width": 256,
    "learning_rate": 3e-3,
    "weight_decay": 1e-5,
}
SETTINGS: list[dict[str, Any]] = [
    {"mode": "none"},
    {"mode": "head", "learningRate": 0.05, "rehearsal": 16},
    {"mode": "head", "learningRate": 0.1, "rehearsal": 16},
    {"mode": "head", "learningRate": 0.1, "rehearsal": 0},
]


def job(adaptation: dict[str, Any]) -> AutoDLJob:
    return AutoDLJob.model_validate(
        {
            "metadata": {"name": "digits-bench"},
            "spec": {
                "data": {
                    "train": {"uri": "builtin://digits"},
                    "stream": {"uri": "builtin://digits", "order": "class-incremental"},
                },
                "serving": {"window": 100, "adaptation": adaptation},
            },
        }
    )


def first_version(spec: AutoDLJob, store: Store) -> str:
    """Train digits 0-4 with the trainers' building blocks and save it as version 1."""
    torch.manual_seed(0)
    rows = training_rows(spec)
    task = infer_task(load_table(spec.spec.data.train), spec.spec.task)
    features = [c for c in rows.columns if c != task.target]
    preprocess = make_preprocessor(rows[features]).fit(rows[features])
    classes = sorted(rows[task.target].unique().tolist())
    x = torch.from_numpy(preprocess.transform(rows[features]).astype("float32"))
    network = build_model(CONFIG, x.shape[1], len(classes))
    bundle = ModelBundle(network, preprocess, CONFIG, task.as_dict(), features, classes)
    y = torch.from_numpy(bundle.encode_labels(rows[task.target].tolist()))
    optimizer, generator = make_optimizer(CONFIG, network.parameters()), torch.Generator()
    for _ in range(40):
        train_epoch(network, optimizer, x, y, task_loss(True), batch_size=32, generator=generator)
    bundle.save(store, "digits-bench-v1", {"job": "digits-bench"})
    return "digits-bench-v1"


def records(spec: AutoDLJob) -> list[Record]:
    return list(stream_records(spec.spec.data, spec.spec.task))


def replay(spec: AutoDLJob, store: Store, version: str, stream: list[Record]) -> list[float]:
    """Prequential accuracy per phase of one pass over the stream."""
    state = open_state(spec, store, version, settings=Settings())
    right: dict[int, list[int]] = {}
    waiting: list[Record] = []
    for record in stream:
        guess = state.predict({"instances": [record.features], "ids": [record.id]})
        right.setdefault(record.phase, []).append(guess["predictions"][0] == record.label)
        waiting.append(record)
        if len(waiting) > LABEL_DELAY:
            done = waiting.pop(0)
            state.feedback({"feedback": [{"id": done.id, "label": done.label}]})
    return [sum(v) / len(v) for _, v in sorted(right.items())]


def main() -> None:
    torch.set_num_threads(1)
    stream = records(job({}))
    print(f"{len(stream)} records, labels {LABEL_DELAY} records late; prequential accuracy")
    print(f"  {'adaptation':<42} {'0-4':>6} {'5-9':>6} {'mixed':>6} {'all':>6} {'seconds':>8}")
    for adaptation in SETTINGS:
        with tempfile.TemporaryDirectory() as folder:
            spec = job(adaptation)
            store = Store(str(Path(folder) / "store"))
            version = first_version(spec, store)
            started = time.monotonic()
            phases = replay(spec, store, version, stream)
            seconds = time.monotonic() - started
        counts = [sum(1 for r in stream if r.phase == p) for p in range(len(phases))]
        overall = sum(a * n for a, n in zip(phases, counts, strict=True)) / len(stream)
        name = ", ".join(f"{k} {v}" for k, v in adaptation.items())
        cells = " ".join(f"{a:>6.3f}" for a in phases)
        print(f"  {name:<42} {cells} {overall:>6.3f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
