"""``python -m segue_testkit.trafficsim``: synthesised requests to a legacy and a new version,
split by the live weight read from the cluster, exposed as Prometheus metrics.

No pods serve anything in the local cluster (KWOK simulates them), so requests are not sent
but counted: every tick adds ``rate * dt * share`` requests to each version, with that
version's error rate and a latency drawn around its mean. Counts are exact (fractions carry
over to the next tick), so ``rate()`` in Prometheus reads back the configured numbers.

    python -m segue_testkit.trafficsim --port 0 --app checkout \\
        --legacy-version v1 --new-version v2 \\
        --httproute shop/checkout --legacy-backend checkout-v1 --new-backend checkout-v2
    python -m segue_testkit.trafficsim --port 0 --deployments shop/checkout-v1,shop/checkout-v2 ...
    python -m segue_testkit.trafficsim --port 0 --flagd shop/shop-flags --flag checkout \\
        --legacy-variant v1 --new-variant v2 ...    # flagd's evaluator reads the flag
    python -m segue_testkit.trafficsim --port 0 --canary-ingress shop/checkout-canary ...
    python -m segue_testkit.trafficsim --port 0 --static-weight 25 ...   # no cluster needed

The first line on stdout is ``listening on 127.0.0.1:PORT``. On that port:

    GET  /metrics   http_requests_total{app,version,code}, http_request_duration_seconds
    GET  /config    {"rate": 200, "weight": 25.0, "legacy": {...}, "new": {...}}
    PUT  /config    {"new": {"errorRate": 0.2, "latencyMs": 300}} (partial updates)
                    {"new": {"throughput": 0.5}}: new completes only half the requests
                    routed to it; the rest are not counted at all (default 1)

A version whose share is 0 gets no requests and so has no series at all: its queries return
no data, as a real version without traffic would.

With ``--customers acme,globex,initech`` every request carries a customer id: each tick
spreads the rate evenly over the customers, the customers in the source's segment go to the
new version whatever the weight, the others split by it, and both metrics get a
``customer`` label. Without it the series are as above.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from types import FrameType
from typing import cast

from prometheus_client import disable_created_metrics

from segue_testkit.trafficsim.config import SimConfig, apply_patch
from segue_testkit.trafficsim.metrics import Metrics
from segue_testkit.trafficsim.server import make_handler
from segue_testkit.trafficsim.simulator import Simulator, log
from segue_testkit.trafficsim.sources import KINDS, WeightSource
from segue_testkit.trafficsim.sources.base import api_client

MAX_CUSTOMERS = 100
CUSTOMER_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def customer_ids(raw: str) -> tuple[str, ...]:
    """``--customers``: distinct ids separated by commas, each usable as a label value."""
    ids = tuple(part.strip() for part in raw.split(","))
    bad = [i for i in ids if not CUSTOMER_ID.fullmatch(i)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"--customers takes ids like acme,globex (letters, digits, '.', '_', '-'; at most "
            f"63 characters; no empty ones), got {bad[0]!r}"
        )
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"--customers lists an id twice: {raw!r}")
    if len(ids) > MAX_CUSTOMERS:
        raise argparse.ArgumentTypeError(
            f"--customers takes at most {MAX_CUSTOMERS} ids (each adds its own series), "
            f"got {len(ids)}"
        )
    return ids


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m segue_testkit.trafficsim",
        description="Synthesise legacy/new traffic split by the live weight; serve /metrics.",
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--app", required=True, help="value of the app label")
    p.add_argument("--legacy-version", required=True, help="version label of the legacy side")
    p.add_argument("--new-version", required=True, help="version label of the new side")
    choose = p.add_mutually_exclusive_group(required=True)
    for kind in KINDS:
        kind.add_arguments(choose, p)
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--rate", type=float, default=200.0, help="total requests per second")
    p.add_argument("--legacy-error-rate", type=float, default=0.0)
    p.add_argument("--new-error-rate", type=float, default=0.0)
    p.add_argument("--legacy-latency-ms", type=float, default=50.0)
    p.add_argument("--new-latency-ms", type=float, default=50.0)
    p.add_argument(
        "--legacy-throughput",
        type=float,
        default=1.0,
        help="fraction (0..1) of its requests legacy completes; the rest are not counted",
    )
    p.add_argument("--new-throughput", type=float, default=1.0, help="the same for new")
    p.add_argument("--tick", type=float, default=0.1, help="seconds between synthesis ticks")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between weight reads")
    p.add_argument("--seed", type=int, default=None, help="seed of the latency draws")
    p.add_argument(
        "--customers",
        type=customer_ids,
        default=(),
        metavar="ID,ID,...",
        help="spread requests evenly over these customer ids and label metrics with them",
    )
    p.add_argument(
        "--customer-header",
        default="x-customer-id",
        metavar="NAME",
        help="the request header (or flag-context key) that carries the customer id; routers "
        "that send a segment to the new version match on it (default x-customer-id)",
    )
    args = p.parse_args(argv)
    problem = next((kind.check(args) for kind in KINDS if kind.chosen(args)), None)
    if problem:
        p.error(problem)
    if args.tick <= 0 or args.poll <= 0:
        p.error("--tick and --poll must be positive")
    return args


def build_source(args: argparse.Namespace) -> WeightSource:
    kind = next(kind for kind in KINDS if kind.chosen(args))
    return kind.build(args, lambda: api_client(args.kubeconfig))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = apply_patch(
            SimConfig(),
            {
                "rate": args.rate,
                "legacy": {
                    "errorRate": args.legacy_error_rate,
                    "latencyMs": args.legacy_latency_ms,
                    "throughput": args.legacy_throughput,
                },
                "new": {
                    "errorRate": args.new_error_rate,
                    "latencyMs": args.new_latency_ms,
                    "throughput": args.new_throughput,
                },
            },
        )
        source = build_source(args)
    except (ValueError, argparse.ArgumentTypeError) as e:
        log(str(e))
        return 2
    # *_created series only add noise for rate() users. (The function is unannotated.)
    cast(Callable[[], None], disable_created_metrics)()
    metrics = Metrics(
        args.app,
        {"legacy": args.legacy_version, "new": args.new_version},
        by_customer=bool(args.customers),
    )
    sim = Simulator(
        source,
        metrics,
        config,
        tick_s=args.tick,
        poll_s=args.poll,
        seed=args.seed,
        customers=args.customers,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sim.stop.set()

    # Installed before the first (possibly slow) weight read, so SIGTERM is always clean.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Read once before announcing the port, so whoever waits for that line finds traffic
    # already flowing by the live weight.
    sim.refresh_weight()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(sim))
    server.daemon_threads = True
    port = server.server_address[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    customers = f" over {len(args.customers)} customers" if args.customers else ""
    log(f"weight from {source.describe()}; {config.rate:g} rps{customers}")

    threads = [
        threading.Thread(target=server.serve_forever, name="http", daemon=True),
        threading.Thread(target=sim.poll_weight, name="weight", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        sim.run_ticks()
    finally:
        sim.stop.set()
        server.shutdown()
        server.server_close()
    log("stopped")
    return 0
