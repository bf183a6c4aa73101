"""A job's training data, prepared once: split, preprocessed and encoded as arrays.

The search stage prepares the data from the spec and saves the result as a snapshot in the
artifact store (`data/HEX/`, named by a digest of its rows); the train stage loads that very
snapshot, so the winner is trained and tested on exactly the rows and the preprocessing the
search used, even if the source has changed since.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer

from lifelong.api import AutoDLJob
from lifelong.trainers.data import (
    DataError,
    Task,
    build_streams,
    frame_digest,
    infer_task,
    load_table,
    make_preprocessor,
    split,
)
from lifelong.trainers.store import Store

log = logging.getLogger(__name__)

PARTS = ("train", "validation", "test")


@dataclass
class Prepared:
    """Preprocessed features and encoded targets of the training, validation and test rows."""

    arrays: dict[str, np.ndarray]
    """`x_train`, `y_train`, `x_validation`, ... : float32 features, int64 class indices or
    float32 regression targets."""

    task: dict[str, Any]
    """Type, target, metric, mode and classes (those present in the training rows)."""

    feature_names: list[str]
    preprocess: ColumnTransformer
    image_shape: tuple[int, int, int] | None
    source: str
    digest: str
    """SHA-256 of the training rows, as `sha256:HEX`: the model version's data snapshot."""

    snapshot: str
    """Hex digest over every part's rows and the seed: the snapshot's folder name."""

    seed: int

    @property
    def classes(self) -> list[Any] | None:
        classes: list[Any] | None = self.task.get("classes")
        return classes

    @property
    def classification(self) -> bool:
        return bool(self.task["type"] == "classification")

    @property
    def inputs(self) -> int:
        return int(self.arrays["x_train"].shape[1])

    @property
    def outputs(self) -> int:
        return len(self.classes) if self.classes is not None else 1

    def rows(self, part: str = "train") -> int:
        return len(self.arrays[f"y_{part}"])

    # --- persistence --------------------------------------------------------------------------

    def save(self, store: Store) -> str:
        """Write the snapshot to `data/HEX/` (once; `meta.json` last) and return `data/HEX`."""
        folder = f"data/{self.snapshot}"
        if store.exists(folder, "meta.json"):
            return folder
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **cast(dict[str, Any], self.arrays))
        store.write_bytes(buffer.getvalue(), folder, "arrays.npz")
        store.write_bytes(pickle.dumps(self.preprocess), folder, "preprocess.pkl")
        meta = {
            "task": self.task,
            "featureNames": self.feature_names,
            "imageShape": list(self.image_shape) if self.image_shape else None,
            "source": self.source,
            "digest": self.digest,
            "seed": self.seed,
        }
        store.write_bytes(json.dumps(meta, default=_plain).encode(), folder, "meta.json")
        return folder

    @classmethod
    def load(cls, store: Store, folder: str) -> Prepared:
        """Read a snapshot that `save` wrote."""
        meta = json.loads(store.read_bytes(folder, "meta.json"))
        with np.load(io.BytesIO(store.read_bytes(folder, "arrays.npz"))) as arrays:
            loaded = {name: arrays[name] for name in arrays.files}
        shape = meta.get("imageShape")
        return cls(
            arrays=loaded,
            task=meta["task"],
            feature_names=list(meta["featureNames"]),
            # Our own artifact, written by the search stage of the same job.
            preprocess=pickle.loads(store.read_bytes(folder, "preprocess.pkl")),
            image_shape=(int(shape[0]), int(shape[1]), int(shape[2])) if shape else None,
            source=meta["source"],
            digest=meta["digest"],
            snapshot=folder.rsplit("/", 1)[-1],
            seed=int(meta["seed"]),
        )


def prepare(job: AutoDLJob) -> Prepared:
    """Load the training source, infer the task, split, fit the preprocessing and encode."""
    spec = job.spec.data
    table = load_table(spec.train)
    task = infer_task(table, job.spec.task)
    streams = build_streams(spec, table, task)
    frame = _labelled(streams.train, task, table.uri)
    task = _present_classes(task, frame, table.uri)
    parts = split(frame, task, spec)
    frames = {"train": parts.train, "validation": parts.validation, "test": parts.test}

    features = streams.feature_names
    preprocess = make_preprocessor(frames["train"][features])
    preprocess.fit(frames["train"][features])
    arrays: dict[str, np.ndarray] = {}
    for part, rows in frames.items():
        arrays[f"x_{part}"] = np.asarray(preprocess.transform(rows[features]), dtype=np.float32)
        arrays[f"y_{part}"] = _encode(rows[task.target], task)

    digests = {part: frame_digest(rows) for part, rows in frames.items()}
    combined = "".join(f"{p}:{d}\n" for p, d in sorted(digests.items())) + f"seed:{spec.seed}"
    shape = table.image_shape
    if shape is not None and shape[0] * shape[1] * shape[2] != arrays["x_train"].shape[1]:
        shape = None  # preprocessing changed the number of features; these are no pixels
    return Prepared(
        arrays=arrays,
        task=task.as_dict(),
        feature_names=features,
        preprocess=preprocess,
        image_shape=shape,
        source=table.uri,
        digest=digests["train"],
        snapshot=hashlib.sha256(combined.encode()).hexdigest(),
        seed=spec.seed,
    )


def _labelled(frame: pd.DataFrame, task: Task, uri: str) -> pd.DataFrame:
    """The rows whose target is known; rows without one cannot teach anything."""
    known = frame[frame[task.target].notna()]
    dropped = len(frame) - len(known)
    if dropped:
        log.warning("Dropped %d rows of %s whose %r is missing.", dropped, uri, task.target)
    if len(known) < 10:
        raise DataError(
            f"{uri}: only {len(known)} rows have a value in column {task.target!r}; "
            "training needs at least 10"
        )
    return known


def _present_classes(task: Task, frame: pd.DataFrame, uri: str) -> Task:
    """Narrow the classes to those in the training rows (a class-incremental stream holds the
    others back for later updates)."""
    if task.classes is None:
        return task
    present = set(frame[task.target].tolist())
    classes = [c for c in task.classes if c in present]
    if len(classes) < 2:
        raise DataError(
            f"{uri}: the training rows of column {task.target!r} hold a single class "
            f"({classes[0]!r}); classification needs at least two"
        )
    return Task(task.type, task.target, task.metric, task.mode, classes)


def _encode(values: pd.Series, task: Task) -> np.ndarray:
    if task.classes is None:
        return values.to_numpy(dtype=np.float32)
    index = {c: i for i, c in enumerate(task.classes)}
    return np.asarray([index[v] for v in values.tolist()], dtype=np.int64)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
