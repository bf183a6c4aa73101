"""Data for the stages: sources by URI, the task inferred from the data, preparation, splits and
the live stream's order.

Sources are read through fsspec (`file://`, `s3://`, `gs://`, `https://`, ...) as CSV, Parquet or
NPZ, or come from installed packages with `builtin://NAME`; nothing is downloaded at run time.
Problems that can never go away by retrying (a missing file, a missing target column, a single
class) raise `DataError`, which names the source and the column.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from lifelong.api import METRIC_MODES, DataSource, DataSpec, StreamSource, TaskSpec

TARGET_NAMES = ("label", "target", "y", "class")
"""Column names taken as the target, in this order, when the spec names none."""


class DataError(ValueError):
    """The data cannot be used as the spec asks; retrying will not help."""


@dataclass
class Table:
    """Examples loaded from one source."""

    frame: pd.DataFrame
    uri: str
    image_shape: tuple[int, int, int] | None = None
    """(channels, height, width) when the features are the pixels of images."""


@dataclass
class Task:
    """The learning task, with every inferred choice filled in."""

    type: str
    target: str
    metric: str
    mode: str
    classes: list[Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "target": self.target,
            "metric": self.metric,
            "mode": self.mode,
            "classes": self.classes,
        }


# --- sources ---------------------------------------------------------------------------------


def _digits() -> Table:
    from sklearn.datasets import load_digits

    bunch = load_digits(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"})
    return Table(frame, "builtin://digits", image_shape=(1, 8, 8))


def _sklearn(loader: str) -> Callable[[], Table]:
    def load() -> Table:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "label"})
        return Table(frame, f"builtin://{loader.removeprefix('load_')}")

    return load


def _river(name: str) -> Callable[[], Table]:
    def load() -> Table:
        import river.datasets

        dataset = getattr(river.datasets, name)()
        rows = [{**x, "label": y} for x, y in dataset]
        return Table(pd.DataFrame(rows), f"builtin://{name.lower()}")

    return load


BUILTIN: dict[str, Callable[[], Table]] = {
    "digits": _digits,
    "iris": _sklearn("load_iris"),
    "wine": _sklearn("load_wine"),
    "breast-cancer": _sklearn("load_breast_cancer"),
    "diabetes": _sklearn("load_diabetes"),
    "phishing": _river("Phishing"),
    "bananas": _river("Bananas"),
    "image-segments": _river("ImageSegments"),
    "trump-approval": _river("TrumpApproval"),
    "chick-weights": _river("ChickWeights"),
}
"""Data sets that ship inside installed packages, by the NAME in `builtin://NAME`."""


def _format_of(uri: str, declared: str) -> str:
    if declared != "auto":
        return declared
    path = uri.split("?", 1)[0].lower()
    for suffix, kind in (
        (".csv", "csv"),
        (".csv.gz", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".npz", "npz"),
    ):
        if path.endswith(suffix):
            return kind
    raise DataError(
        f"{uri}: cannot tell the file format from its name; set `format` to csv, parquet or npz"
    )


def _read_npz(data: bytes, uri: str) -> pd.DataFrame:
    arrays = np.load(io.BytesIO(data), allow_pickle=False)
    if "X" not in arrays or "y" not in arrays:
        raise DataError(f"{uri}: an NPZ source needs arrays named X and y, found {list(arrays)}")
    features = np.asarray(arrays["X"]).reshape(len(arrays["X"]), -1)
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])])
    frame["label"] = np.asarray(arrays["y"])
    return frame


def load_table(source: DataSource) -> Table:
    """Load every example of a source into memory."""
    uri = source.uri
    if uri.startswith("builtin://"):
        name = uri.removeprefix("builtin://").strip("/")
        if name not in BUILTIN:
            known = ", ".join(sorted(BUILTIN))
            raise DataError(f"{uri}: no built-in data set named {name!r}; choose one of {known}")
        return BUILTIN[name]()

    kind = _format_of(uri, source.format)
    try:
        with fsspec.open(uri, "rb", compression="infer") as handle:
            data = handle.read()
    except FileNotFoundError as error:
        raise DataError(f"{uri}: the file does not exist") from error
    except ImportError as error:
        # fsspec knows the protocol but its package is not installed (s3fs, gcsfs).
        raise DataError(
            f"{uri}: this storage protocol needs a package that is not installed ({error}); "
            "install Lifelong with its s3 or gcs extra, as the image does"
        ) from error
    except (OSError, ValueError) as error:
        raise DataError(f"{uri}: cannot be read: {error}") from error
    if not data:
        raise DataError(f"{uri}: the file is empty")
    try:
        if kind == "csv":
            frame = pd.read_csv(io.BytesIO(data))
        elif kind == "parquet":
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            frame = _read_npz(data, uri)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{uri}: cannot be parsed as {kind}: {error}") from error
    if frame.empty:
        raise DataError(f"{uri}: holds no rows")
    return Table(frame, uri)


# --- the task --------------------------------------------------------------------------------


def infer_task(table: Table, spec: TaskSpec) -> Task:
    """Fill in what the spec leaves out: target, type, metric and mode."""
    frame = table.frame
    target = spec.target or next((c for c in TARGET_NAMES if c in frame.columns), None)
    target = target or str(frame.columns[-1])
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:20]))
        raise DataError(f"{table.uri}: no target column {target!r}; the columns are {columns}")
    if frame.shape[1] < 2:
        raise DataError(f"{table.uri}: needs at least one feature column besides {target!r}")
    values = frame[target].dropna()
    if values.empty:
        raise DataError(f"{table.uri}: the target column {target!r} has no values")

    numeric = pd.api.types.is_numeric_dtype(values)
    kind = spec.type
    if kind is None:
        integral = numeric and bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
        few = values.nunique() <= max(20, int(0.05 * len(values)))
        kind = "classification" if (not numeric or (integral and few)) else "regression"
    if kind == "regression" and not numeric:
        raise DataError(
            f"{table.uri}: column {target!r} is not numeric, so it cannot be a regression target"
        )

    metric = spec.metric or ("accuracy" if kind == "classification" else "rmse")
    mode = spec.mode or METRIC_MODES[metric]
    classes = None
    if kind == "classification":
        classes = sorted(values.unique().tolist(), key=_sort_key)
        if len(classes) < 2:
            raise DataError(
                f"{table.uri}: column {target!r} holds a single class ({classes[0]!r}); "
                "classification needs at least two"
            )
    return Task(kind, target, metric, mode, classes)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float | np.number) else (1, str(value))


# --- preparation -----------------------------------------------------------------------------


def make_preprocessor(features: pd.DataFrame) -> ColumnTransformer:
    """Impute, one-hot encode categoricals and scale numbers; fitted on training rows only."""
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(
            (
                "numeric",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            )
        )
    if categorical:
        parts.append(
            (
                "categorical",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                        ),
                        ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    return ColumnTransformer(parts, sparse_threshold=0.0)


@dataclass
class Split:
    """Training, validation and test rows of one source."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    seed: int


def _stratify(frame: pd.DataFrame, task: Task) -> pd.Series | None:
    if task.type != "classification":
        return None
    counts = frame[task.target].value_counts()
    return frame[task.target] if counts.min() >= 2 else None


def split(frame: pd.DataFrame, task: Task, spec: DataSpec) -> Split:
    """Stratified training/validation/test split with the spec's seed."""
    held = spec.validation_fraction + spec.test_fraction
    rest, held_out = train_test_split(
        frame, test_size=held, random_state=spec.seed, stratify=_stratify(frame, task)
    )
    validation, test = train_test_split(
        held_out,
        test_size=spec.test_fraction / held,
        random_state=spec.seed,
        stratify=_stratify(held_out, task),
    )
    return Split(rest, validation, test, spec.seed)


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content, as `sha256:HEX`: the data snapshot of a model version."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return "sha256:" + hashlib.sha256(hashed.tobytes()).hexdigest()


# --- the stream ------------------------------------------------------------------------------


@dataclass
class Record:
    """One stream record: features in the training data's column order, and its label."""

    id: str
    features: list[Any]
    label: Any
    phase: int


@dataclass
class Streams:
    """The training rows and the stream's phases, as the spec's stream order makes them."""

    train: pd.DataFrame
    phases: list[pd.DataFrame] = field(default_factory=list)
    permutations: list[list[int]] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)

    def records(self, target: str, limit: int | None = None) -> Iterator[Record]:
        count = 0
        for phase, frame in enumerate(self.phases):
            order = self.permutations[phase] if self.permutations else None
            columns = [frame[c].tolist() for c in self.feature_names]
            labels = frame[target].tolist()
            for row, index in enumerate(frame.index):
                values = [column[row] for column in columns]
                if order is not None:
                    values = [values[i] for i in order]
                yield Record(f"r{count}-{index}", _plain(values), _scalar(labels[row]), phase)
                count += 1
                if limit is not None and count >= limit:
                    return

    def __len__(self) -> int:
        return sum(len(p) for p in self.phases)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _plain(values: list[Any]) -> list[Any]:
    return [None if (isinstance(v, float) and np.isnan(v)) else _scalar(v) for v in values]


def build_streams(spec: DataSpec, table: Table, task: Task) -> Streams:
    """Split the data into the training rows and the stream's phases.

    When the stream reads the same source as training, `stream.fraction` of the rows (stratified)
    are kept apart for it. `class-incremental` trains on the first group of classes only and
    streams the groups in turn, ending (with `revisit`) in a phase that mixes them all;
    `permuted` streams phases whose features are shuffled by a fixed permutation each.
    """
    frame = table.frame.reset_index(drop=True)
    features = [str(c) for c in frame.columns if c != task.target]
    stream_spec = spec.stream
    if stream_spec is None:
        return Streams(frame, [], [], features)

    rng = np.random.default_rng(spec.seed)
    if stream_spec.uri == spec.train.uri:
        train, stream = train_test_split(
            frame,
            test_size=stream_spec.fraction,
            random_state=spec.seed,
            stratify=_stratify(frame, task),
        )
    else:
        train, stream = frame, load_table(stream_spec).frame.reset_index(drop=True)
        missing = [c for c in [*features, task.target] if c not in stream.columns]
        if missing:
            raise DataError(f"{stream_spec.uri}: the stream lacks columns {missing}")

    order = stream_spec.order
    if order == "class-incremental":
        return _class_incremental(train, stream, task, stream_spec, rng)
    if order == "permuted":
        shuffled = _shuffled(stream, rng)
        bounds = np.linspace(0, len(shuffled), stream_spec.phases + 1).astype(int)
        phases = [shuffled.iloc[a:b] for a, b in itertools.pairwise(bounds)]
        identity = list(range(len(features)))
        permutations = [identity] + [
            rng.permutation(len(features)).tolist() for _ in range(stream_spec.phases - 1)
        ]
        return Streams(train, phases, permutations, features)
    if order == "shuffled":
        stream = _shuffled(stream, rng)
    return Streams(train, [stream], [], features)


def _shuffled(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.iloc[rng.permutation(len(frame))]


def _class_incremental(
    train: pd.DataFrame,
    stream: pd.DataFrame,
    task: Task,
    spec: StreamSource,
    rng: np.random.Generator,
) -> Streams:
    if task.type != "classification" or task.classes is None:
        raise DataError(f"{spec.uri}: a class-incremental stream needs a classification task")
    if len(task.classes) < spec.phases:
        raise DataError(f"{spec.uri}: {len(task.classes)} classes cannot fill {spec.phases} phases")
    groups = [list(g) for g in np.array_split(np.array(task.classes, dtype=object), spec.phases)]
    target = task.target
    first = train[train[target].isin(groups[0])]
    phases: list[pd.DataFrame] = []
    mixed: list[pd.DataFrame] = []
    share = 1.0 / (spec.phases + 1) if spec.revisit else 0.0
    for group in groups:
        rows = _shuffled(stream[stream[target].isin(group)], rng)
        keep = len(rows) - round(len(rows) * share)
        phases.append(rows.iloc[:keep])
        mixed.append(rows.iloc[keep:])
    if spec.revisit:
        phases.append(_shuffled(pd.concat(mixed), rng))
    features = [str(c) for c in train.columns if c != target]
    return Streams(first, phases, [], features)


def stream_records(data: DataSpec, task_spec: TaskSpec) -> Iterator[Record]:
    """The live stream's records in order, as `spec.data.stream` describes them (up to its
    `limit`): what the serve stage replays and what `lifelong run` feeds."""
    if data.stream is None:
        return iter(())
    table = load_table(data.train)
    task = infer_task(table, task_spec)
    return build_streams(data, table, task).records(task.target, data.stream.limit)
