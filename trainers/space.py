"""The search space: a spec's `SearchSpace` as a Ray Tune parameter space, and back.

The space is flat: every family's parameters sit side by side with the shared hyperparameters,
and `family` chooses which of them a trial uses. Every Tune searcher handles a flat space;
`relevant` drops the other family's parameters before a configuration is shown or recorded.
A range whose ends meet, or a list of one choice, becomes a constant.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ray import tune

from lifelong.api import SearchSpace
from lifelong.api.job import FloatRange, IntRange
from lifelong.trainers.data import DataError

log = logging.getLogger(__name__)

SHARED = ("optimizer", "learning_rate", "weight_decay", "batch_size", "augmentation")
"""Hyperparameters of every family."""

FAMILY_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": ("depth", "width", "activation", "dropout", "normalization"),
    "cnn": ("stages", "channels", "kernel_size", "pooling", "skip"),
}
"""The architecture parameters of each family."""

MUTABLE = ("learning_rate", "weight_decay", "batch_size", "augmentation")
"""What population-based training may change in a running trial: never the architecture or
the optimiser, whose weights and state the trial carries on with."""


def families(space: SearchSpace, image_shape: tuple[int, int, int] | None) -> list[str]:
    """The families this data allows: `cnn` only for image-shaped inputs."""
    chosen: list[str] = list(dict.fromkeys(space.families))
    if "cnn" in chosen and image_shape is None:
        if chosen == ["cnn"]:
            raise DataError(
                "spec.search.space.families: the cnn family needs image-shaped inputs and this "
                "data has none; add mlp to the families"
            )
        log.warning("The data has no image shape, so the cnn family is left out of the search.")
        chosen.remove("cnn")
    return chosen


def param_space(space: SearchSpace, image_shape: tuple[int, int, int] | None) -> dict[str, Any]:
    """The Ray Tune parameter space of a spec's search space."""
    chosen = families(space, image_shape)
    params: dict[str, Any] = {"family": _choice(chosen)}
    if "mlp" in chosen:
        mlp = space.mlp
        params |= {
            "depth": _int(mlp.depth, "spec.search.space.mlp.depth"),
            "width": _int(mlp.width, "spec.search.space.mlp.width"),
            "activation": _choice(mlp.activation),
            "dropout": _float(mlp.dropout, "spec.search.space.mlp.dropout"),
            "normalization": _choice(mlp.normalization),
        }
    if "cnn" in chosen:
        cnn = space.cnn
        params |= {
            "stages": _int(cnn.stages, "spec.search.space.cnn.stages"),
            "channels": _int(cnn.channels, "spec.search.space.cnn.channels"),
            "kernel_size": _choice(cnn.kernel_size),
            "pooling": _choice(cnn.pooling),
            "skip": _choice(cnn.skip),
        }
    params |= {
        "optimizer": _choice(space.optimizer),
        "learning_rate": _float(space.learning_rate, "spec.search.space.learningRate"),
        "weight_decay": _float(space.weight_decay, "spec.search.space.weightDecay"),
        "batch_size": _choice(space.batch_size),
        "augmentation": _choice(space.augmentation),
    }
    return params


def mutations(params: dict[str, Any]) -> dict[str, Any]:
    """The searchable hyperparameters population-based training may perturb."""
    return {k: params[k] for k in MUTABLE if isinstance(params.get(k), tune.search.sample.Domain)}


def relevant(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration without the parameters of the families it does not use."""
    family = str(config.get("family", "mlp"))
    keep = ("family", *FAMILY_KEYS.get(family, ()), *SHARED)
    return {k: _plain(config[k]) for k in keep if k in config}


def _plain(value: Any) -> Any:
    """Python scalars instead of numpy's, so configurations serialise as JSON."""
    return value.item() if hasattr(value, "item") else value


def _choice(values: Sequence[Any]) -> Any:
    unique = list(dict.fromkeys(values))
    return unique[0] if len(unique) == 1 else tune.choice(unique)


def _int(spec: IntRange, field: str) -> Any:
    if spec.min == spec.max:
        return spec.min
    if spec.log:
        if spec.min < 1:
            raise DataError(f"{field}: a log range needs min >= 1, got {spec.min}")
        return tune.lograndint(spec.min, spec.max + 1)
    return tune.randint(spec.min, spec.max + 1)


def _float(spec: FloatRange, field: str) -> Any:
    if spec.min == spec.max:
        return spec.min
    if spec.log:
        if spec.min <= 0:
            raise DataError(f"{field}: a log range needs min > 0, got {spec.min}")
        return tune.loguniform(spec.min, spec.max)
    return tune.uniform(spec.min, spec.max)
