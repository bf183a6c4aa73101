"""A model version as the stages use it: network, preprocessing, classes and configuration.

`ModelBundle` turns raw rows (lists in the training data's column order, or dicts by column
name) into predictions, and saves itself to or loads itself from the artifact store.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer

from lifelong.trainers.models import Network, build_model, expand_head
from lifelong.trainers.store import Store


class InputError(ValueError):
    """A request's rows do not fit the model's inputs (count, type or value)."""


@dataclass
class ModelBundle:
    """Everything needed to predict with one model version."""

    network: Network
    preprocess: ColumnTransformer
    config: dict[str, Any]
    task: dict[str, Any]
    feature_names: list[str]
    classes: list[Any] | None = None
    image_shape: tuple[int, int, int] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    name: str | None = None

    # --- inputs -------------------------------------------------------------------------------

    def frame(self, rows: Sequence[Sequence[Any] | Mapping[str, Any]]) -> pd.DataFrame:
        """Raw rows as a frame with the training columns, or InputError saying what is wrong."""
        width = len(self.feature_names)
        records = []
        for index, row in enumerate(rows):
            if isinstance(row, Mapping):
                missing = [c for c in self.feature_names if c not in row]
                if missing:
                    raise InputError(f"instance {index} lacks features {missing[:5]}")
                records.append([row[c] for c in self.feature_names])
            elif isinstance(row, Sequence) and not isinstance(row, str | bytes):
                if len(row) != width:
                    raise InputError(
                        f"instance {index} has {len(row)} features; the model takes {width}"
                    )
                records.append(list(row))
            else:
                raise InputError(f"instance {index} must be a list or an object of features")
        return pd.DataFrame(records, columns=self.feature_names)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Preprocessed float32 features."""
        return np.asarray(self.preprocess.transform(frame), dtype=np.float32)

    # --- predictions --------------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, features: np.ndarray) -> np.ndarray:
        """Raw network outputs for preprocessed features."""
        self.network.eval()
        tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        out: np.ndarray = self.network(tensor).numpy()
        return out

    def predict_features(self, features: np.ndarray) -> list[Any]:
        """Predictions (labels or values) for preprocessed features."""
        out = self.scores(features)
        if self.classes is None:
            return [float(v) for v in out[:, 0]]
        return [self.classes[i] for i in out.argmax(axis=1)]

    def predict(self, rows: Sequence[Sequence[Any] | Mapping[str, Any]]) -> list[Any]:
        return self.predict_features(self.transform(self.frame(rows)))

    def encode_labels(self, labels: Sequence[Any]) -> np.ndarray:
        """Class indices (classification) or float targets (regression)."""
        if self.classes is None:
            return np.asarray(labels, dtype=np.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise InputError(f"labels {unknown[:5]} are not among the model's classes")
        return np.asarray([index[v] for v in labels], dtype=np.int64)

    def add_classes(self, labels: Sequence[Any]) -> list[Any]:
        """Grow the output for labels not seen before; return the new classes."""
        if self.classes is None:
            return []
        new = [c for c in dict.fromkeys(labels) if c not in self.classes]
        if new:
            self.classes = [*self.classes, *new]
            expand_head(self.network, len(self.classes))
        return new

    @property
    def inputs(self) -> int:
        """Number of preprocessed input features."""
        return len(self.preprocess.get_feature_names_out())

    # --- persistence --------------------------------------------------------------------------

    def files(self) -> dict[str, bytes]:
        weights = io.BytesIO()
        torch.save(self.network.state_dict(), weights)
        description = {
            "config": self.config,
            "task": self.task,
            "featureNames": self.feature_names,
            "classes": self.classes,
            "imageShape": list(self.image_shape) if self.image_shape else None,
            "inputs": self.inputs,
        }
        return {
            "model.pt": weights.getvalue(),
            "preprocess.pkl": pickle.dumps(self.preprocess),
            "config.json": _json(description),
            "metrics.json": _json(self.metrics),
        }

    def save(self, store: Store, name: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Write the bundle as version `name`; return the manifest."""
        self.name = name
        return store.write_version(name, self.files(), metadata)

    @classmethod
    def load(cls, store: Store, name: str) -> ModelBundle:
        """Load version `name`, checking every file against the manifest's digests."""
        import json

        manifest, files = store.read_version(name)
        description = json.loads(files["config.json"])
        classes = description["classes"]
        shape = description.get("imageShape")
        outputs = len(classes) if classes is not None else 1
        network = build_model(
            description["config"],
            int(description["inputs"]),
            outputs,
            tuple(shape) if shape else None,
        )
        state = torch.load(io.BytesIO(files["model.pt"]), weights_only=True)
        network.load_state_dict(state)
        return cls(
            network=network,
            preprocess=pickle.loads(files["preprocess.pkl"]),  # our own artifact, digest-checked
            config=description["config"],
            task=description["task"],
            feature_names=list(description["featureNames"]),
            classes=classes,
            image_shape=tuple(shape) if shape else None,
            metrics=json.loads(files["metrics.json"]),
            name=manifest["name"],
        )


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
