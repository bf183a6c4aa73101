"""The train stage: `lifelong trainer train --job F --storage URI --name V`.

Trains the search's winner at full fidelity with Ray Train (`training.workers` workers, DDP over
gloo on CPUs or NCCL on GPUs), on the very data snapshot the search used, then writes model
version `V` atomically: weights, preprocessing, configuration, validation and test metrics,
objectives, the data snapshot's digest, seed, code version and timing. Its result is
`{"version": {...}}`, the fields of a `ModelVersion`'s spec.

Training checkpoints every epoch under `train/V/`; killed and run again with the same name, it
carries on from the last checkpoint. Run again after the version exists, it returns that
version unchanged.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lifelong import __version__
from lifelong.api import AutoDLJob, ModelVersionSpec
from lifelong.trainers.bundle import ModelBundle
from lifelong.trainers.cluster import local_cpus, ray_session
from lifelong.trainers.data import DataError
from lifelong.trainers.distributed import LoopConfig, load_state, train_loop
from lifelong.trainers.models import Network, build_model
from lifelong.trainers.prepared import Prepared
from lifelong.trainers.progress import StageMetrics, describe
from lifelong.trainers.store import Store, StoreError, now_rfc3339
from lifelong.trainers.trial import objectives

log = logging.getLogger(__name__)

TRAIN_RETRIES = 2
"""Times Ray Train restarts failed workers from the last checkpoint before the stage fails."""

POLL_SECONDS = 1.0
"""How often the stage reads the workers' progress file to update metrics and print a line."""


def run(job: AutoDLJob, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Train the search's winner as version `args.name`; return `{"version": {...}}`."""
    name = getattr(args, "name", None)
    if not name:
        raise DataError("the train stage needs --name, the model version to write")
    if store.version_complete(name):
        log.info("Version %s already exists; returning it unchanged.", name)
        return {"version": version_spec(store, name)}

    search = _search_result(store)
    work = Training(
        job=job,
        store=store,
        name=name,
        prepared=Prepared.load(store, search["data"]["snapshot"]),
        config=dict(search["winner"]["config"]),
        objectives=[g["metric"] for g in search["rule"]["objectives"]],
        epochs=job.spec.training.epochs or job.spec.search.budget.max_epochs,
        metrics=StageMetrics(job.metadata.name, "train"),
    )
    try:
        network, resumed = _fit(work)
        spec = _save(work, network, evaluate(network, work.prepared), resumed)
        work.metrics.set_seconds(time.monotonic() - work.began)
    finally:
        work.metrics.close()
    return {"version": spec}


@dataclass
class Training:
    """One run of the train stage: what it trains, on what, and where it reports."""

    job: AutoDLJob
    store: Store
    name: str
    prepared: Prepared
    config: dict[str, Any]
    objectives: list[str]
    """The search's objectives, recorded for the version."""

    epochs: int
    metrics: StageMetrics
    began: float = field(default_factory=time.monotonic)

    @property
    def progress(self) -> tuple[str, ...]:
        """The workers' progress file in the store."""
        return ("train", self.name, "progress.json")


def _search_result(store: Store) -> dict[str, Any]:
    try:
        result: dict[str, Any] = store.read_json("search", "result.json")
    except StoreError as error:
        raise RuntimeError(
            f"{store.uri}/search/result.json is missing: run the search stage before train"
        ) from error
    return result


# --- training ---------------------------------------------------------------------------------


def _fit(work: Training) -> tuple[Network, int]:
    """Train with Ray Train; return the trained network and the epoch this run started at."""
    training = work.job.spec.training
    gpus = training.resources.gpu
    workers = training.workers
    prepared, store = work.prepared, work.store
    with ray_session(work.job.spec.search.ray_address, local_cpus(workers), gpus):
        import ray
        from ray import train
        from ray.train.torch import TorchConfig, TorchTrainer

        loop = LoopConfig(
            config=work.config,
            arrays=ray.put(prepared.arrays),
            task=prepared.task,
            image_shape=prepared.image_shape,
            epochs=work.epochs,
            seed=prepared.seed,
            store=store.uri,
            progress=work.progress,
        )
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"loop": loop},
            torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
            scaling_config=train.ScalingConfig(
                num_workers=workers,
                use_gpu=gpus > 0,
                resources_per_worker={"CPU": 1, **({"GPU": gpus / workers} if gpus else {})},
            ),
            run_config=train.RunConfig(
                name=work.name,
                storage_path=_train_folder(store),
                checkpoint_config=train.CheckpointConfig(num_to_keep=2),
                failure_config=train.FailureConfig(max_failures=TRAIN_RETRIES),
                # Ray Train V2's RunConfig; type checkers see the V1 class of the same name.
                logging_config=train.LoggingConfig(log_level="WARNING"),  # type: ignore[call-arg]
            ),
        )
        log.info(
            "Training %s for %d epochs on %d worker(s)%s.",
            work.name,
            work.epochs,
            workers,
            f" with {gpus} GPU(s)" if gpus else "",
        )
        with _Watcher(store, work.progress, work.metrics, work.epochs):
            result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training {work.name} ended without a checkpoint")
        state = load_state(result.checkpoint)

    network = build_model(work.config, prepared.inputs, prepared.outputs, prepared.image_shape)
    network.load_state_dict(state["network"])
    done = store.read_json(*work.progress) if store.exists(*work.progress) else {}
    return network, int(done.get("resumedFrom", 0))


def _train_folder(store: Store) -> str:
    """Ray Train's storage: the store's `train/` folder (a local path or a URI)."""
    return str(store.local_path("train")) if store.is_local else f"{store.uri}/train"


class _Watcher:
    """Reads the workers' progress file while training runs: one line and the epoch counter
    per new epoch."""

    def __init__(
        self, store: Store, path: tuple[str, ...], metrics: StageMetrics, epochs: int
    ) -> None:
        self.store, self.path, self.metrics, self.epochs = store, path, metrics, epochs
        self.seen = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="train-progress", daemon=True)

    def __enter__(self) -> _Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self._poll()

    def _watch(self) -> None:
        while not self.stop.wait(POLL_SECONDS):
            self._poll()

    def _poll(self) -> None:
        try:
            progress = self.store.read_json(*self.path) if self.store.exists(*self.path) else {}
        except (StoreError, ValueError):
            return  # mid-replacement or not written yet; the next poll reads it
        epoch = int(progress.get("epoch", 0))
        if epoch <= self.seen:
            return
        self.metrics.add_epochs(epoch - max(self.seen, int(progress.get("resumedFrom", 0))))
        self.metrics.flush()
        self.seen = epoch
        names = [k for k in progress if k.startswith("validation.")]
        log.info(
            "Epoch %d/%d: loss %.4g; %s",
            epoch,
            self.epochs,
            progress.get("loss", float("nan")),
            describe(progress, names),
        )


# --- evaluation and the version ---------------------------------------------------------------


def evaluate(network: Network, prepared: Prepared) -> dict[str, dict[str, float]]:
    """Validation and test metrics, and the measured objectives, on this machine's CPU."""
    from lifelong.trainers.fit import predict_scores, score

    torch.set_num_threads(1)
    network.eval()
    found: dict[str, dict[str, float]] = {}
    for part in ("validation", "test"):
        x = torch.tensor(prepared.arrays[f"x_{part}"])
        found[part] = score(prepared.task, predict_scores(network, x), prepared.arrays[f"y_{part}"])
    found["objectives"] = objectives(network, torch.tensor(prepared.arrays["x_test"]))
    return found


def _save(
    work: Training, network: Network, evaluation: dict[str, dict[str, float]], resumed: int
) -> dict[str, Any]:
    """Write the version (its files, then the manifest holding its spec); return the spec."""
    prepared = work.prepared
    metric = str(prepared.task["metric"])
    flat = {
        f"{part}.{k}": _round(v)
        for part in ("validation", "test")
        for k, v in evaluation[part].items()
    }
    measured = {**evaluation["test"], **evaluation["objectives"]}
    chosen = sorted({*work.objectives, metric, *evaluation["objectives"]})
    spec_fields: dict[str, Any] = {
        "job": work.job.metadata.name,
        "stage": "train",
        "strategy": "search",
        "metric": metric,
        "score": _round(evaluation["test"][metric]),
        "metrics": flat,
        "objectives": {k: _round(measured[k]) for k in chosen if k in measured},
        "config": work.config,
        "data": {"uri": prepared.source, "digest": prepared.digest, "rows": prepared.rows()},
        "seed": prepared.seed,
        "codeVersion": __version__,
        "created": now_rfc3339(),
        "seconds": round(time.monotonic() - work.began, 3),
    }
    bundle = ModelBundle(
        network=network,
        preprocess=prepared.preprocess,
        config=work.config,
        task=prepared.task,
        feature_names=prepared.feature_names,
        classes=prepared.classes,
        image_shape=prepared.image_shape,
        metrics={**flat, **{k: _round(v) for k, v in evaluation["objectives"].items()}},
    )
    bundle.save(work.store, work.name, {"spec": spec_fields, "resumedFromEpoch": resumed})
    spec = version_spec(work.store, work.name)
    log.info(
        "Wrote version %s: test %s %.4f (this run started at epoch %d).",
        work.name,
        metric,
        evaluation["test"][metric],
        resumed,
    )
    return spec


def version_spec(store: Store, name: str) -> dict[str, Any]:
    """A written version's spec, as the train stage returns it: the facts in its manifest plus
    the artifact (its URI and the manifest's digest), checked against `ModelVersionSpec`."""
    manifest = store.read_manifest(name)
    artifact = {"uri": f"{store.uri}/versions/{name}", "digest": manifest["digest"]}
    return ModelVersionSpec.model_validate({**manifest["spec"], "artifact": artifact}).to_wire()


def _round(value: float) -> float:
    return float(f"{value:.6g}")
