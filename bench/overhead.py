"""Benchmark: what ASHA's early stopping saves in wall-clock time, and the fixed cost per trial,
for Lifelong's search and for a plain Ray Tune baseline, in the same run.

The problem is the example job's: 24 trials on `builtin://digits` (all of it), the space of
`examples/digits.yaml` (MLP and CNN families), parallelism 2, at most 20 epochs, ASHA with a
grace period of 2 epochs. Four searches run, each in its own process with its own Ray:

- `lifelong asha` and `lifelong full`: the search stage (`search.run`) with `asha`, and with
  `random`, which runs every trial to the full budget. Both draw the same 24 configurations.
- `plain asha` and `plain full`: a plain Ray Tune search over the same configurations, with
  default settings (`ray.init()`, `Tuner` defaults: no actor reuse, Tune's loggers) and a naive
  trainable that loads and prepares the data in every trial.

Printed per search: Ray's start, the search's wall-clock (Tune's `fit`), the epochs trained and
the seconds the trials spent in them, the fixed cost per trial: `(parallelism x wall - time in
epochs) / trials`, the time a trial slot spends on anything but epochs (worker start, imports,
data, Tune's bookkeeping) shared out per trial, and the trial switch: the median time from a
trial's end to the start of the next one in its slot. Then, per system, ASHA's wall-clock
divided by the full budget's, next to the same ratio of the time in epochs (what the saving
would be without any overhead) and of the epochs. Both systems train with one thread per
trial, so an epoch costs the same in both.

Run: `python bench/overhead.py` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TRIALS, PARALLELISM, MAX_EPOCHS, GRACE, SEED = 24, 2, 20, 2, 0
RUNS = ("lifelong asha", "lifelong full", "plain asha", "plain full")


def job(strategy: str) -> dict[str, Any]:
    """examples/digits.yaml on all of digits, with this benchmark's budget."""
    example = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    example["metadata"]["name"] = f"overhead-{strategy}"
    example["spec"]["data"] = {"train": {"uri": "builtin://digits"}}
    example["spec"]["search"]["strategy"] = strategy
    example["spec"]["search"]["budget"] = {
        "trials": TRIALS,
        "parallelism": PARALLELISM,
        "maxEpochs": MAX_EPOCHS,
        "minEpochs": GRACE,
        "timeout": "20m",
    }
    return dict(example)


# --- Lifelong's search --------------------------------------------------------------------------


def lifelong(strategy: str, folder: Path) -> dict[str, float]:
    from lifelong.api import AutoDLJob
    from lifelong.trainers import search
    from lifelong.trainers.ledger import Ledger
    from lifelong.trainers.store import Store

    store = Store(str(folder / "store"))
    search.run(AutoDLJob.model_validate(job(strategy)), store)
    overhead = store.read_json("search", "result.json")["overhead"]
    records = Ledger(store).records
    return {
        "ray": overhead["rayStartSeconds"],
        "wall": overhead["tuneSeconds"],
        "epochs": sum(r.seconds for r in records),
        "trained": sum(r.epochs for r in records),
        "trials": len(records),
        "switch": switch([(r.metrics["entered"], r.finished) for r in records]),
    }


def switch(spans: list[tuple[float, float]]) -> float:
    """Median time from a trial's end to the start of the next trial in its slot: each trial
    after the first wave starts in the slot the latest trial ended before it freed."""
    starts = sorted(start for start, _ in spans)[PARALLELISM:]
    ends = sorted(end for _, end in spans)
    gaps = [start - max(e for e in ends if e <= start) for start in starts if ends[0] <= start]
    return float(sorted(gaps)[len(gaps) // 2]) if gaps else float("nan")


# --- the plain Ray Tune baseline ---------------------------------------------------------------


def naive_trial(config: dict[str, Any]) -> None:
    """A straightforward Tune trainable: load and prepare the data, then train and report."""
    import torch
    from ray import tune

    from lifelong.api import AutoDLJob
    from lifelong.trainers.fit import make_optimizer, predict_scores, score, task_loss, train_epoch
    from lifelong.trainers.models import build_model
    from lifelong.trainers.prepared import prepare

    entered = time.time()
    torch.set_num_threads(1)
    prepared = prepare(AutoDLJob.model_validate(job("asha")))
    x = torch.tensor(prepared.arrays["x_train"])
    y = torch.tensor(prepared.arrays["y_train"])
    x_val = torch.tensor(prepared.arrays["x_validation"])
    network = build_model(config, prepared.inputs, prepared.outputs, prepared.image_shape)
    optimizer = make_optimizer(config, network.parameters())
    loss = task_loss(True)
    generator = torch.Generator().manual_seed(SEED)
    spent = 0.0
    for _ in range(MAX_EPOCHS):
        began = time.perf_counter()
        train_epoch(
            network,
            optimizer,
            x,
            y,
            loss,
            batch_size=int(config["batch_size"]),
            generator=generator,
            augmentation=str(config.get("augmentation", "none")),
            image_shape=prepared.image_shape,
        )
        metrics = score(
            prepared.task, predict_scores(network, x_val), prepared.arrays["y_validation"]
        )
        spent += time.perf_counter() - began
        tune.report({**metrics, "compute_seconds": spent, "entered": entered, "at": time.time()})


def plain(early_stopping: bool, folder: Path) -> dict[str, float]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from lifelong.api import AutoDLJob
    from lifelong.trainers.prepared import prepare
    from lifelong.trainers.space import param_space

    prepared = prepare(AutoDLJob.model_validate(job("asha")))
    space = param_space(
        AutoDLJob.model_validate(job("asha")).spec.search.space, prepared.image_shape
    )
    began = time.perf_counter()
    ray.init()
    started = time.perf_counter() - began
    scheduler = (
        ASHAScheduler(metric="accuracy", mode="max", max_t=MAX_EPOCHS, grace_period=GRACE)
        if early_stopping
        else None
    )
    tuner = tune.Tuner(
        naive_trial,
        param_space=space,
        tune_config=tune.TuneConfig(
            num_samples=TRIALS,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=SEED, max_concurrent=PARALLELISM),
        ),
        run_config=tune.RunConfig(storage_path=str(folder / "tune")),
    )
    began = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - began
    ray.shutdown()
    results = [grid[i].metrics or {} for i in range(len(grid))]
    return {
        "ray": started,
        "wall": wall,
        "epochs": sum(float(m.get("compute_seconds", 0.0)) for m in results),
        "trained": sum(int(m.get("training_iteration", 0)) for m in results),
        "trials": len(results),
        "switch": switch([(m["entered"], m["at"]) for m in results if "entered" in m]),
    }


# --- driver --------------------------------------------------------------------------------------


def measure(run: str) -> dict[str, float]:
    """Run one search in a fresh process (its own Ray, its own environment)."""
    with tempfile.TemporaryDirectory(prefix="ll-bench-", dir="/tmp") as folder:
        output = subprocess.run(
            # -P: keep bench/ off sys.path (and so off Ray's workers' path): its scripts'
            # names must not shadow modules the workers import.
            [sys.executable, "-P", __file__, "--run", run, "--folder", folder],
            env={**os.environ, "LIFELONG_SCRATCH": folder, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=False,
        )
    if output.returncode != 0:
        raise RuntimeError(f"{run} failed:\n{output.stdout[-2000:]}\n{output.stderr[-4000:]}")
    figures: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
    return figures


def per_trial(figures: dict[str, float]) -> float:
    return (PARALLELISM * figures["wall"] - figures["epochs"]) / figures["trials"]


def report(results: dict[str, dict[str, float]]) -> None:
    print(f"\n{TRIALS} trials on digits, parallelism {PARALLELISM}, up to {MAX_EPOCHS} epochs\n")
    header = f"{'search':<15}{'ray start':>10}{'wall':>9}{'epochs':>8}{'in epochs':>11}"
    print(header + f"{'fixed cost/trial':>18}{'trial switch':>14}")
    for run, f in results.items():
        print(
            f"{run:<15}{f['ray']:>9.1f}s{f['wall']:>8.1f}s{int(f['trained']):>8d}"
            f"{f['epochs']:>10.1f}s{per_trial(f):>17.2f}s{f['switch']:>13.2f}s"
        )
    print()
    for system in ("lifelong", "plain"):
        asha, full = results[f"{system} asha"], results[f"{system} full"]
        print(
            f"{system:<9} asha / full: wall-clock {asha['wall'] / full['wall']:.2f}, "
            f"time in epochs {asha['epochs'] / full['epochs']:.2f}, "
            f"epochs {asha['trained'] / full['trained']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", choices=RUNS, help="run one search (internal)")
    parser.add_argument("--folder", help="scratch folder of that search (internal)")
    args = parser.parse_args()
    if args.run:
        folder = Path(args.folder)
        system, kind = args.run.split()
        if system == "lifelong":
            figures = lifelong("asha" if kind == "asha" else "random", folder)
        else:
            figures = plain(kind == "asha", folder)
        print(json.dumps(figures))
        return
    results = {}
    for run in RUNS:
        began = time.perf_counter()
        results[run] = measure(run)
        print(f"{run}: done in {time.perf_counter() - began:.0f} s", flush=True)
    report(results)


if __name__ == "__main__":
    main()
