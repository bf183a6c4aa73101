"""Lifelong: a Kubernetes-native operator for autonomous continual learning.

The package has one import root. Its rooms are `lifelong.api` (the resource models),
`lifelong.engine` (the pure lifecycle state machine and its policies), `lifelong.operator` (Kopf
handlers, mapped from the top-level `operator/` folder), `lifelong.trainers` (the stage workloads,
mapped from `trainers/`) and `lifelong.runner` (the local runner behind `lifelong run`).
"""

__version__ = "0.1.0"
