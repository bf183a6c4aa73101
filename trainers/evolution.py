"""Regularised evolution (Real et al., 2019) as a Ray Tune searcher.

The population holds the last `population` finished trials. Until it is full, new trials are
drawn at random from the space; then each new trial is a mutant of a tournament's winner: pick
`sample` members at random, take the best, change one of its parameters. Adding a trial ages
out the oldest member however good it was, which keeps the search from clinging to one lucky
early trial (the "regularised" part).

A mutation changes one parameter the configuration uses (the architecture family counts, and
the other family's parameters do not): a categorical one to another choice, a numeric one by a
Gaussian step in its (log) range.
"""

from __future__ import annotations

import math
import pickle
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform

from lifelong.trainers.space import FAMILY_KEYS

Member = tuple[dict[str, Any], float]

STEP = 0.2
"""Standard deviation of a numeric mutation, as a fraction of the parameter's (log) range."""


class RegularizedEvolution(Searcher):
    """Ageing evolution over a flat Ray Tune space of `Domain`s and constants."""

    def __init__(
        self,
        space: dict[str, Any],
        metric: str,
        mode: str,
        *,
        population: int = 10,
        sample: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        if population < 2 or not 1 <= sample <= population:
            raise ValueError(
                f"evolution needs population >= 2 and 1 <= sample <= population; "
                f"got population={population}, sample={sample}"
            )
        self.space = space
        self.population: deque[Member] = deque(maxlen=population)
        self.sample = sample
        self.rng = random.Random(seed)
        self.live: dict[str, dict[str, Any]] = {}

    # --- the Searcher interface ---------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        full = len(self.population) == self.population.maxlen
        config = self.mutate(self.tournament()) if full else self.random()
        self.live[trial_id] = config
        return dict(config)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        config = self.live.pop(trial_id, None)
        if config is None or error or not result or not _finite(result.get(self.metric)):
            return
        self.add_evaluated_point(config, float(result[self.metric]))

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        """Add a trial evaluated elsewhere (a resumed search's earlier trials)."""
        if not error and _finite(value):
            known = {k: parameters[k] for k in self.space if k in parameters}
            self.population.append(({**self.random(), **known}, float(value)))

    def get_state(self) -> dict[str, Any]:
        return {
            "population": list(self.population),
            "maxlen": self.population.maxlen,
            "sample": self.sample,
            "rng": self.rng.getstate(),
            "live": self.live,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.population = deque(state["population"], maxlen=state["maxlen"])
        self.sample = state["sample"]
        self.rng.setstate(state["rng"])
        self.live = state["live"]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))  # our own state file

    # --- evolution ----------------------------------------------------------------------------

    def random(self) -> dict[str, Any]:
        """A configuration drawn from the whole space."""
        return {k: self._draw(v) for k, v in self.space.items()}

    def tournament(self) -> dict[str, Any]:
        """The best of `sample` members drawn at random from the population."""
        contenders = self.rng.sample(list(self.population), self.sample)
        pick: Callable[..., Member] = max if self.mode == "max" else min
        return dict(pick(contenders, key=lambda member: member[1])[0])

    def mutate(self, parent: dict[str, Any]) -> dict[str, Any]:
        """The parent with one parameter it uses changed."""
        names = [k for k in self.searchable(parent) if self._can_change(self.space[k])]
        child = dict(parent)
        if names:
            name = self.rng.choice(names)
            child[name] = self._change(self.space[name], parent[name])
        return child

    def searchable(self, config: dict[str, Any]) -> list[str]:
        """The searched parameters this configuration uses: all but the other families'."""
        family = str(config.get("family", "mlp"))
        others = {k for name, keys in FAMILY_KEYS.items() if name != family for k in keys}
        return [k for k, v in self.space.items() if isinstance(v, Domain) and k not in others]

    # --- sampling ---------------------------------------------------------------------------

    def _draw(self, domain: Any) -> Any:
        if not isinstance(domain, Domain):
            return domain
        if isinstance(domain, Categorical):
            return self.rng.choice(domain.categories)
        if isinstance(domain, Float | Integer):
            return self._from_unit(domain, self.rng.random())
        return domain.sample()  # a domain kind without a local rule: Tune's own sampler

    def _can_change(self, domain: Any) -> bool:
        if isinstance(domain, Categorical):
            return len(domain.categories) > 1
        if isinstance(domain, Integer):
            return bool(domain.upper - 1 > domain.lower)
        return isinstance(domain, Float) and domain.upper > domain.lower

    def _change(self, domain: Any, value: Any) -> Any:
        if isinstance(domain, Categorical):
            return self.rng.choice([c for c in domain.categories if c != value])
        if not isinstance(domain, Float | Integer):
            return domain.sample()
        for _ in range(8):
            unit = min(1.0, max(0.0, self._to_unit(domain, value) + self.rng.gauss(0.0, STEP)))
            changed = self._from_unit(domain, unit)
            if changed != value:
                return changed
        return self._from_unit(domain, self.rng.random())

    @staticmethod
    def _bounds(domain: Float | Integer) -> tuple[float, float, bool]:
        upper = domain.upper - 1 if isinstance(domain, Integer) else domain.upper
        log = isinstance(domain.sampler, LogUniform)
        low, high = float(domain.lower), float(upper)
        return (math.log(low), math.log(high), True) if log else (low, high, False)

    def _to_unit(self, domain: Float | Integer, value: Any) -> float:
        low, high, log = self._bounds(domain)
        point = math.log(float(value)) if log else float(value)
        return 0.0 if high == low else (point - low) / (high - low)

    def _from_unit(self, domain: Float | Integer, unit: float) -> Any:
        low, high, log = self._bounds(domain)
        point = low + unit * (high - low)
        value = math.exp(point) if log else point
        if isinstance(domain, Integer):
            return int(min(domain.upper - 1, max(domain.lower, round(value))))
        return float(min(domain.upper, max(domain.lower, value)))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
