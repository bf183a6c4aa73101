"""Entry point of `lifelong operator`: run the Kopf operator over AutoDLJobs."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import kopf

from lifelong.operator import logs
from lifelong.operator.config import ConfigError, OperatorConfig


def main(args: argparse.Namespace) -> int:
    try:
        config = OperatorConfig.from_env()
    except ConfigError as error:
        print(f"lifelong operator: {error}; the operator does not start.", file=sys.stderr)
        return 2
    if args.namespace:
        config = dataclasses.replace(config, namespaces=tuple(args.namespace))
    if args.metrics_port is not None:
        config = dataclasses.replace(config, metrics_port=args.metrics_port)
    logs.configure(config.log_format, config.log_level)

    from lifelong.operator import handlers

    handlers.OPERATOR.config = config
    health = config.health_port
    identity: Any = config.identity  # Kopf types it as a NewType of str that it does not export
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=config.peering_priority if config.peering else 0,
        identity=identity,
        liveness_endpoint=f"http://{config.bind_address}:{health}/healthz" if health else None,
    )
    return 0
