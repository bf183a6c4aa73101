"""Entry point of `lifelong operator`: run the Kopf operator over AutoDLJobs."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random

import kopf


def main(args: argparse.Namespace) -> int:
    from lifelong.operator import handlers

    config = handlers.OPERATOR.config
    if args.namespace:
        config = dataclasses.replace(config, namespaces=tuple(args.namespace))
    if args.metrics_port is not None:
        config = dataclasses.replace(config, metrics_port=args.metrics_port)
    handlers.OPERATOR.config = config

    kopf.configure(
        verbose=os.environ.get("LIFELONG_LOG_LEVEL", "").upper() == "DEBUG",
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("lifelong").setLevel(os.environ.get("LIFELONG_LOG_LEVEL", "INFO"))
    health = os.environ.get("LIFELONG_HEALTH_PORT", "8081")
    address = os.environ.get("POD_IP", "0.0.0.0")  # a pod binds its own address
    # Kopf pauses every operator that sees a peer of equal priority, so replicas sharing a peering
    # name each draw their own: the highest works, the others stand by until its keep-alive ends.
    priority = random.SystemRandom().randint(1, 2**31 - 1) if config.peering else 0
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=priority,
        liveness_endpoint=f"http://{address}:{health}/healthz" if health != "0" else None,
    )
    return 0
