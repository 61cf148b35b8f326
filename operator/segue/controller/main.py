"""Operator entry point: command-line flags, kopf settings, and the run loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf

from segue import __version__

log = logging.getLogger("segue")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m segue", description="Run the Segue operator.")
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("SEGUE_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="liveness endpoint URL served by the operator (default %(default)s)",
    )
    parser.add_argument(
        "--prometheus-address",
        default=os.environ.get("SEGUE_PROMETHEUS_ADDRESS"),
        help="Prometheus for Rollouts that name none (env SEGUE_PROMETHEUS_ADDRESS)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("SEGUE_METRICS_PORT", "8081")),
        help="port of the operator's own /metrics (0: off; default %(default)s)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs every handled watch event at INFO, and aiohttp every liveness probe.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    log.info("Segue %s starting", __version__)
    # Importing the handlers registers them with kopf's default registry.
    from segue.controller import handlers

    operator = handlers.build(args.prometheus_address, namespaced=bool(args.namespace))
    if args.metrics_port:
        port = operator.metrics.serve(args.metrics_port)
        log.info("metrics on http://0.0.0.0:%d/metrics", port)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            standalone=True,
            memo=kopf.Memo(**{handlers.MEMO_KEY: operator}),
        )
    )
    return 0
