"""The `update` stage: train a candidate version from the serving version and the memories.

`lifelong trainer update --version V --name C --trigger T` loads version V and the memories the
serve stage persisted, holds out `gate.holdoutFraction` of the recent ("new") and of the replay
("old") examples, trains C from V with `lifelong.update.strategy` (optionally after a small
warm-started search over the learning rate), and evaluates V and C on both held-out sets. The
numbers go to `updates/C.json` and into the stage's result; the gate decision itself belongs to
the lifecycle engine.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

from lifelong import __version__
from lifelong.api import AutoDLJob, DataSnapshot, ModelVersionSpec, UpdateSpec
from lifelong.trainers.bundle import ModelBundle
from lifelong.trainers.data import DataError, frame_digest
from lifelong.trainers.fit import better, latency_ms
from lifelong.trainers.knobs import Settings
from lifelong.trainers.memory import Memories, frame_of
from lifelong.trainers.models import parameter_count
from lifelong.trainers.progress import StageMetrics
from lifelong.trainers.store import Store, now_rfc3339
from lifelong.trainers.strategies import Training, UpdateData, make_strategy

log = logging.getLogger(__name__)

SEARCH_FACTORS = (1.0, 1 / 3, 3.0, 1 / 10, 10.0, 1 / 30, 30.0)
"""Learning-rate multipliers a warm-started search tries, in order, around the starting rate."""

SEARCH_VALIDATION = 0.2
"""Fraction of the update's training rows a warm-started search validates on."""


class UpdateError(RuntimeError):
    """The update cannot run yet (no memories, too few examples); retrying later may help."""


@dataclass
class Parts:
    """Training and held-out rows of the new and the old data."""

    new_train: pd.DataFrame
    new_test: pd.DataFrame
    old_train: pd.DataFrame
    old_test: pd.DataFrame


# --- evaluation ------------------------------------------------------------------------------


def evaluate(bundle: ModelBundle, frame: pd.DataFrame, metric: str) -> float | None:
    """The task metric of a model on raw rows with labels; None for no rows.

    Labels the model has never seen count as errors, so a model is scored fairly on classes that
    only its successor knows.
    """
    if frame.empty:
        return None
    target = str(bundle.task["target"])
    features = bundle.transform(frame[bundle.feature_names])
    truth = frame[target].tolist()
    if bundle.classes is None:
        values = np.asarray(bundle.predict_features(features), dtype=float)
        return _regression(metric, np.asarray(truth, dtype=float), values)
    if metric == "logLoss":
        return _log_loss(bundle, features, truth)
    predicted = bundle.predict_features(features)
    labels = [str(v) for v in truth]
    guesses = [str(v) for v in predicted]
    if metric == "balancedAccuracy":
        return float(skm.balanced_accuracy_score(labels, guesses))
    if metric == "f1":
        return float(skm.f1_score(labels, guesses, average="macro"))
    return float(skm.accuracy_score(labels, guesses))


def _regression(metric: str, truth: np.ndarray, values: np.ndarray) -> float:
    if metric == "mae":
        return float(skm.mean_absolute_error(truth, values))
    if metric == "r2":
        return float(skm.r2_score(truth, values)) if len(truth) > 1 else 0.0
    return float(np.sqrt(skm.mean_squared_error(truth, values)))


def _log_loss(bundle: ModelBundle, features: np.ndarray, truth: list[Any]) -> float:
    scores = torch.softmax(torch.from_numpy(bundle.scores(features)), dim=1).numpy()
    index = {c: i for i, c in enumerate(bundle.classes or [])}
    chances = [scores[row, index[y]] if y in index else 0.0 for row, y in enumerate(truth)]
    return float(-np.mean(np.log(np.clip(chances, 1e-15, 1.0))))


# --- data ------------------------------------------------------------------------------------


def holdout(
    frame: pd.DataFrame, fraction: float, target: str, classification: bool, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into training and held-out parts, stratified by class where possible."""
    if len(frame) < 2:
        return frame, frame.iloc[:0]
    stratify = None
    if classification:
        counts = frame[target].value_counts()
        held = max(1, round(len(frame) * fraction))
        if counts.min() >= 2 and held >= len(counts) and len(frame) - held >= len(counts):
            stratify = frame[target].astype(str)
    train, test = train_test_split(frame, test_size=fraction, random_state=seed, stratify=stratify)
    return train, test


def split_memories(memories: Memories, bundle: ModelBundle, fraction: float, seed: int) -> Parts:
    """Hold out the same fraction of the new and of the old data for the gate."""
    target = str(bundle.task["target"])
    classification = bundle.classes is not None
    names = bundle.feature_names
    new = frame_of(memories.recent, names, target)
    old = frame_of(memories.replay, names, target)
    new_train, new_test = holdout(new, fraction, target, classification, seed)
    old_train, old_test = holdout(old, fraction, target, classification, seed)
    return Parts(new_train, new_test, old_train, old_test)


def tensors(bundle: ModelBundle, new: pd.DataFrame, old: pd.DataFrame) -> UpdateData:
    """Preprocess rows and encode labels with the candidate's (grown) classes."""

    def pair(frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        target = str(bundle.task["target"])
        if frame.empty:
            x = torch.zeros((0, bundle.inputs), dtype=torch.float32)
            y = torch.zeros(0, dtype=torch.int64 if bundle.classes is not None else torch.float32)
            return x, y
        x = torch.from_numpy(bundle.transform(frame[bundle.feature_names]))
        return x, torch.from_numpy(bundle.encode_labels(frame[target].tolist()))

    new_x, new_y = pair(new)
    old_x, old_y = pair(old)
    return UpdateData(new_x, new_y, old_x, old_y)


# --- training --------------------------------------------------------------------------------


def training_settings(bundle: ModelBundle, spec: UpdateSpec, seed: int) -> Training:
    """The update's epochs, rate and strengths; the rate defaults to the serving model's."""
    config = bundle.config
    rate = spec.learning_rate or float(config.get("learning_rate", 1e-3))
    return Training(
        epochs=spec.epochs,
        learning_rate=rate,
        batch_size=int(config.get("batch_size", 64)),
        classification=bundle.classes is not None,
        seed=seed,
        ewc_lambda=spec.ewc_lambda,
        lwf_alpha=spec.lwf_alpha,
        config=config,
    )


def train_candidate(
    serving: ModelBundle,
    new: pd.DataFrame,
    old: pd.DataFrame,
    strategy: str,
    training: Training,
) -> ModelBundle:
    """A copy of the serving model, grown for new classes and trained by the strategy."""
    candidate = copy.deepcopy(serving)
    candidate.name = None
    target = str(serving.task["target"])
    torch.manual_seed(training.seed)  # the grown head's new rows start from the global generator
    candidate.add_classes([*new[target].tolist(), *old[target].tolist()])
    data = tensors(candidate, new, old)
    make_strategy(strategy, training).fit(candidate.network, serving.network, data)
    return candidate


def search_rate(
    serving: ModelBundle,
    *,
    parts: Parts,
    strategy: str,
    training: Training,
    trials: int,
    metric: str,
    mode: str,
) -> tuple[float, list[dict[str, Any]]]:
    """A small warm-started search: the learning rates around the starting one, each trained
    from the serving model and scored on a validation slice of the training rows."""
    target = str(serving.task["target"])
    classification = serving.classes is not None
    new_fit, new_val = holdout(parts.new_train, SEARCH_VALIDATION, target, classification, 1)
    old_fit, old_val = holdout(parts.old_train, SEARCH_VALIDATION, target, classification, 1)
    validation = pd.concat([new_val, old_val])
    trials_log: list[dict[str, Any]] = []
    best_rate, best_score = training.learning_rate, None
    for factor in SEARCH_FACTORS[:trials]:
        rate = training.learning_rate * factor
        candidate = train_candidate(serving, new_fit, old_fit, strategy, training.with_rate(rate))
        value = evaluate(candidate, validation, metric)
        trials_log.append({"learningRate": rate, "score": value})
        if value is not None and (best_score is None or better(mode, value, best_score)):
            best_rate, best_score = rate, value
    log.info("Warm-started search chose learning rate %.3g from %s.", best_rate, trials_log)
    return best_rate, trials_log


# --- the stage -------------------------------------------------------------------------------


def _required(args: argparse.Namespace) -> tuple[str, str, str | None]:
    parent, name = getattr(args, "version_name", None), getattr(args, "name", None)
    if not parent or not name:
        raise DataError("the update stage needs --version (the serving version) and --name")
    return parent, name, getattr(args, "trigger", None)


def _load_memories(store: Store, serving: ModelBundle, job: AutoDLJob) -> Memories:
    target = str(serving.task["target"])
    memories = Memories.load(store, serving.feature_names, target)
    if memories is None:
        raise UpdateError(
            f"{store.uri}/serving/state holds no memories yet; the serve stage writes them "
            "while it runs. The update will be retried."
        )
    needed = job.spec.lifelong.update.min_samples
    if len(memories.recent) < needed:
        raise UpdateError(
            f"the recent memory holds {len(memories.recent)} labelled examples, fewer than "
            f"spec.lifelong.update.minSamples ({needed}); wait for more feedback"
        )
    return memories


def _snapshot(store: Store, frame: pd.DataFrame) -> DataSnapshot:
    """Write the rows an update trained on under `data/`, named by their digest."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    digest = frame_digest(frame)
    file = f"{digest.removeprefix('sha256:')}.parquet"
    store.write_bytes(buffer.getvalue(), "data", file)
    return DataSnapshot(uri=f"{store.uri}/data/{file}", digest=digest, rows=len(frame))


def _clean(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _version_fields(
    job: AutoDLJob,
    candidate: ModelBundle,
    parts: Parts,
    scores: dict[str, dict[str, float | None]],
    training: Training,
) -> dict[str, Any]:
    """The candidate's `ModelVersionSpec` fields (camelCase), all but parent, trigger, data,
    seconds and artifact. Its score is the metric on every held-out row, new and old."""
    metric = str(candidate.task.get("metric") or "accuracy")
    held_out = pd.concat([parts.new_test, parts.old_test])
    overall = _clean(evaluate(candidate, held_out, metric))
    candidate.config = {**candidate.config, "learning_rate": training.learning_rate}
    candidate.metrics = {
        f"{part}{role.title()}": value
        for role, values in scores.items()
        for part, value in values.items()
        if value is not None
    }
    sample = torch.from_numpy(candidate.transform(held_out[candidate.feature_names].head(1)))
    latency = round(latency_ms(candidate.network, sample), 4) if len(sample) else 0.0
    return {
        "job": job.metadata.name,
        "stage": "update",
        "strategy": job.spec.lifelong.update.strategy,
        "metric": metric,
        "score": overall if overall is not None else 0.0,
        "metrics": candidate.metrics,
        "objectives": {
            metric: overall if overall is not None else 0.0,
            "params": float(parameter_count(candidate.network)),
            "latencyMs": latency,
        },
        "config": candidate.config,
        "seed": job.spec.data.seed,
        "codeVersion": __version__,
        "created": now_rfc3339(),
    }


def run(job: AutoDLJob, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate candidate `--name` from serving version `--version`, exporting its
    progress (rate-search trials, epochs, the candidate's score, seconds) as the search and
    train stages do."""
    started = time.monotonic()
    metrics = StageMetrics(job.metadata.name, "update")
    try:
        return _run(job, store, args, metrics)
    finally:
        metrics.set_seconds(time.monotonic() - started)
        metrics.close()


def _run(
    job: AutoDLJob, store: Store, args: argparse.Namespace, metrics: StageMetrics
) -> dict[str, Any]:
    started = time.monotonic()
    torch.set_num_threads(Settings.from_env().threads)
    parent, name, trigger = _required(args)
    spec = job.spec.lifelong
    seed = job.spec.data.seed

    # Load what the serving version knew and what the serve stage collected since.
    serving = ModelBundle.load(store, parent)
    memories = _load_memories(store, serving, job)
    metric = str(serving.task.get("metric") or "accuracy")
    mode = str(serving.task.get("mode") or "max")
    parts = split_memories(memories, serving, spec.gate.holdout_fraction, seed)

    # Train the candidate, after a small search over the learning rate when the spec asks.
    training = training_settings(serving, spec.update, seed)
    trials: list[dict[str, Any]] = []
    if spec.update.search_trials > 0:
        rate, trials = search_rate(
            serving,
            parts=parts,
            strategy=spec.update.strategy,
            training=training,
            trials=spec.update.search_trials,
            metric=metric,
            mode=mode,
        )
        training = training.with_rate(rate)
        metrics.set_trials({"completed": len(trials)})
        metrics.add_epochs(training.epochs * len(trials))
    candidate = train_candidate(
        serving, parts.new_train, parts.old_train, spec.update.strategy, training
    )
    metrics.add_epochs(training.epochs)

    # Score both models on the held-out new and old rows: the gate's evidence.
    scores = {
        role: {
            "new": _clean(evaluate(model, parts.new_test, metric)),
            "old": _clean(evaluate(model, parts.old_test, metric)),
        }
        for role, model in (("serving", serving), ("candidate", candidate))
    }
    if scores["candidate"]["new"] is not None:
        metrics.set_best(metric, scores["candidate"]["new"])
    evaluation = {
        **scores,
        "metric": metric,
        "mode": mode,
        "newRows": len(parts.new_test),
        "oldRows": len(parts.old_test),
    }

    # Write the candidate version (its spec in the manifest, as the train stage does), then
    # the update's numbers, and report.
    fields = _version_fields(job, candidate, parts, scores, training)
    fields.update(parent=parent, trigger=trigger, seconds=round(time.monotonic() - started, 3))
    fields["data"] = _snapshot(store, pd.concat([parts.new_train, parts.old_train])).to_wire()
    manifest = candidate.save(store, name, {"spec": fields})
    artifact = {"uri": f"{store.uri}/versions/{name}", "digest": manifest["digest"]}
    version = ModelVersionSpec.model_validate({**fields, "artifact": artifact}).to_wire()
    result = {"version": version, "evaluation": evaluation}
    store.write_json(
        {**result, "search": trials, "classes": candidate.classes}, "updates", f"{name}.json"
    )
    log.info(
        "Candidate %s from %s (%s): new %s -> %s, old %s -> %s.",
        name,
        parent,
        spec.update.strategy,
        scores["serving"]["new"],
        scores["candidate"]["new"],
        scores["serving"]["old"],
        scores["candidate"]["old"],
    )
    return result
