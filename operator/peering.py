"""Leader election: whether this replica leads its Kopf peering, by the rule Kopf applies.

Kopf pauses the watches of a replica while a live peer of higher or equal priority exists, but
it tells no handler. The operator's periodic pass asks `Leadership` before each round, so a
replica that stands by reconciles nothing on its own clock either. Both read the same peering
object (each replica's keep-alive: priority, lifetime, last seen), so they agree within a round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lifelong.operator.config import OperatorConfig
from lifelong.operator.kube import Kube


@dataclass(frozen=True)
class Peer:
    """One replica's keep-alive in a peering object."""

    identity: str
    priority: int
    deadline: float
    """When the keep-alive lapses, in seconds since the epoch."""


def peers(status: Mapping[str, Any]) -> list[Peer]:
    """The keep-alives in a peering object's status (`{identity: {priority, lifetime,
    lastseen}}`); an entry that cannot be read counts as lapsed."""
    found = []
    for identity, entry in status.items():
        if not isinstance(entry, Mapping):
            continue
        try:
            seen = datetime.fromisoformat(str(entry["lastseen"])).timestamp()
            deadline = seen + float(entry.get("lifetime", 60))
            priority = int(entry.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue
        found.append(Peer(identity, priority, deadline))
    return found


def leader_among(identity: str, priority: int, keepalives: Iterable[Peer], now: float) -> bool:
    """Kopf's rule: a replica works unless another live peer has its priority or a higher one."""
    return not any(
        p.identity != identity and p.deadline > now and p.priority >= priority for p in keepalives
    )


@dataclass(frozen=True)
class Standing:
    """Whether this replica leads, and why, for logs on a change."""

    leads: bool
    why: str


class Leadership:
    """Asks the peering objects whether this replica leads."""

    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config

    def standing(self) -> Standing:
        """Standalone replicas always lead; peers lead when no peering object says otherwise.

        A missing peering object means standing by, as Kopf does: it waits for the object."""
        name = self.config.peering
        if name is None:
            return Standing(True, "the operator runs standalone")
        scopes: list[str | None] = list(self.config.namespaces) or [None]
        me, priority, now = self.config.identity, self.config.peering_priority, time.time()
        for namespace in scopes:
            where = f"in namespace {namespace}" if namespace else "cluster-wide"
            body = self.kube.get_peering(name, namespace)
            if body is None:
                return Standing(False, f"the peering object {name} {where} does not exist")
            keepalives = peers(body.get("status") or {})
            if not leader_among(me, priority, keepalives, now):
                rivals = sorted(
                    f"{p.identity} (priority {p.priority})"
                    for p in keepalives
                    if p.identity != me and p.deadline > now
                )
                return Standing(False, f"{', '.join(rivals)} lead(s) peering {name} {where}")
        return Standing(True, f"no live peer in peering {name} outranks priority {priority}")
