"""Operator entry point: command-line flags, kopf settings, and the run loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
from collections.abc import Coroutine
from typing import Any, Final

import kopf
from kubernetes import client

from segue import MANAGED_LABEL, MANAGED_VALUE, __version__
from segue.analysis.providers import registry
from segue.controller import leader
from segue.controller.kube import load_configuration
from segue.controller.preflight import router_problems
from segue.controller.ratelimit import (
    DEFAULT_BURST,
    DEFAULT_EVENT_BURST,
    DEFAULT_EVENT_QPS,
    DEFAULT_QPS,
    MAX_BURST,
    MAX_QPS,
)
from segue.controller.shard_gate import elected_shard
from segue.controller.shards import MAX_SHARDS, Shard
from segue.notify.destinations import ALLOW_HOST_FLAG, ALLOW_INTERNAL_FLAG, Destinations
from segue.traffic.catalog import ROUTERS
from segue.traffic.registry import DEFAULT_ROUTERS, check_routers

log = logging.getLogger("segue")


def _env_flag(name: str) -> bool:
    """A boolean from the environment: true/1/yes or false/0/no/unset; anything else is an
    error, so a typo never silently turns a safety check off."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise SystemExit(f"{name}={os.environ[name]!r}: expected true or false")


def _number(name: str, default: float) -> float:
    """A number from the environment, or ``default`` when unset; anything else is an error
    naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a number") from None


def _check_limit(parser: argparse.ArgumentParser, prefix: str, qps: float, burst: int) -> None:
    """A rate limit's flags (``<prefix>-qps``, ``<prefix>-burst``) within their bounds."""
    if not 0 < qps <= MAX_QPS:
        parser.error(f"{prefix}-qps must be above 0 and at most {MAX_QPS:g}, not {qps:g}")
    if not 1 <= burst <= MAX_BURST:
        parser.error(f"{prefix}-burst must be 1 to {MAX_BURST}, not {burst}")


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
    # Each metric provider's own flags (--prometheus-address, ...).
    registry.add_flags(parser)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("SEGUE_METRICS_PORT", "8081")),
        help="port of the operator's own /metrics (0: off; default %(default)s)",
    )
    parser.add_argument(
        "--require-managed-label",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SEGUE_REQUIRE_MANAGED_LABEL"),
        help=f"write only to Deployments and HTTPRoutes labelled {MANAGED_LABEL}="
        f"{MANAGED_VALUE}; a Rollout naming another is Stalled (NotManaged) before any "
        "traffic moves (env SEGUE_REQUIRE_MANAGED_LABEL=true; default: off)",
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="act only while holding a coordination.k8s.io Lease; others stand by "
        "(default: on; --no-leader-election for a single process)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease (default: env POD_NAMESPACE, else the first "
        "--namespace, else default)",
    )
    parser.add_argument(
        "--leader-election-name",
        default=leader.DEFAULT_LEASE_NAME,
        help="name of the Lease (default %(default)s)",
    )
    parser.add_argument(
        "--shard",
        default=os.environ.get("SEGUE_SHARD") or "0/1",
        metavar="INDEX/COUNT",
        help="serve only shard INDEX of COUNT (from 0; COUNT at most "
        f"{MAX_SHARDS}): the Rollouts and Migrations whose hash of namespace/name falls in "
        "it; each shard elects its own holder through the Lease <leader-election-name>-INDEX "
        "(default %(default)s: everything, through the Lease <leader-election-name>; env "
        "SEGUE_SHARD)",
    )
    parser.add_argument(
        ALLOW_INTERNAL_FLAG,
        action="store_true",
        default=_env_flag("SEGUE_ALLOW_INTERNAL_WEBHOOKS"),
        help="send webhook notifications to internal destinations too: loopback, private "
        "and shared addresses, cluster-internal names (default: refused; env "
        "SEGUE_ALLOW_INTERNAL_WEBHOOKS=true)",
    )
    parser.add_argument(
        ALLOW_HOST_FLAG,
        action="append",
        default=[],
        metavar="HOST",
        help="send webhook notifications to this host whatever it is or resolves to: a "
        "name, an IP address, or *.example.org for the names under it (repeatable)",
    )
    parser.add_argument(
        "--webhook-proxy",
        default=os.environ.get("SEGUE_WEBHOOK_PROXY") or None,
        metavar="URL",
        help="send webhook notifications through this HTTP proxy (default: none; proxy "
        "variables of the environment are never used; env SEGUE_WEBHOOK_PROXY)",
    )
    parser.add_argument(
        "--routers",
        default=os.environ.get("SEGUE_ROUTERS") or ",".join(DEFAULT_ROUTERS),
        metavar="KEY,...",
        help="the routers this operator runs, comma-separated: it watches their kinds, and "
        "a Rollout naming another router is Failed before any traffic moves (default: "
        f"{','.join(DEFAULT_ROUTERS)}; known: {', '.join(p.key for p in ROUTERS)}; env "
        "SEGUE_ROUTERS)",
    )
    parser.add_argument(
        "--kube-qps",
        type=float,
        default=_number("SEGUE_KUBE_QPS", DEFAULT_QPS),
        help="Kubernetes requests a second the operator may send, on average (client-side "
        "rate limit, like client-go's; 429s are retried after their Retry-After; default "
        "%(default)g, sized for 1,000 Rollouts; env SEGUE_KUBE_QPS)",
    )
    parser.add_argument(
        "--kube-burst",
        type=int,
        default=int(_number("SEGUE_KUBE_BURST", DEFAULT_BURST)),
        help="Kubernetes requests the operator may send at once after a quiet spell "
        "(default %(default)d; env SEGUE_KUBE_BURST)",
    )
    parser.add_argument(
        "--kube-event-qps",
        type=float,
        default=_number("SEGUE_KUBE_EVENT_QPS", DEFAULT_EVENT_QPS),
        help="Kubernetes Events a second the operator may post, on average: a lane and a "
        "limit of their own, so Events never delay a weight move; past a queue of 1,000, "
        "Normal Events are dropped first and counted (default %(default)g; env "
        "SEGUE_KUBE_EVENT_QPS)",
    )
    parser.add_argument(
        "--kube-event-burst",
        type=int,
        default=int(_number("SEGUE_KUBE_EVENT_BURST", DEFAULT_EVENT_BURST)),
        help="Kubernetes Events the operator may post at once after a quiet spell "
        "(default %(default)d; env SEGUE_KUBE_EVENT_BURST)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    proxy = args.webhook_proxy
    if proxy is not None and not proxy.startswith(("http://", "https://")):
        parser.error(f"--webhook-proxy must be an http(s):// URL, not {proxy!r}")
    try:
        args.routers = check_routers(args.routers.replace(",", " ").split())
    except ValueError as e:
        parser.error(f"--routers: {e}")
    if not args.routers:
        parser.error("--routers: name at least one router")
    try:
        args.shard = Shard.parse(args.shard)
    except ValueError as e:
        parser.error(f"--shard: {e}")
    if args.shard.count > 1 and not args.leader_election:
        parser.error(
            "--shard: shards need leader election (each shard holds its own Lease); "
            "drop --no-leader-election"
        )
    _check_limit(parser, "--kube", args.kube_qps, args.kube_burst)
    _check_limit(parser, "--kube-event", args.kube_event_qps, args.kube_event_burst)
    return args


# glibc's M_ARENA_MAX: how many malloc arenas the process may have.
_M_ARENA_MAX: Final = -8
MALLOC_ARENAS: Final = 2


def fewer_malloc_arenas() -> None:
    """glibc gives threads that allocate at once arenas of their own, up to eight per core,
    and each keeps what was freed in it; the operator's ~70 request threads then hold far
    more memory than they use. Two arenas, as MALLOC_ARENA_MAX=2 would (which, when set,
    wins). Called before any thread starts; a C library without mallopt is left alone."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def main(argv: list[str] | None = None) -> int:
    fewer_malloc_arenas()
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

    destinations = Destinations.of(args.allow_internal_webhooks, args.allow_webhook_host)
    runtimes = registry.configured(args)
    with client.ApiClient(load_configuration()) as api:
        unusable = router_problems(api, args.routers, args.namespace or [])
    for key, why in unusable.items():
        log.error("router %s cannot run, so Rollouts naming it are Failed: %s", key, why)
    operator = handlers.build(
        runtimes,
        namespaces=args.namespace,
        destinations=destinations,
        webhook_proxy=args.webhook_proxy,
        require_managed_label=args.require_managed_label,
        routers=args.routers,
        shard=args.shard,
        unusable=unusable,
        kube_qps=args.kube_qps,
        kube_burst=args.kube_burst,
        kube_event_qps=args.kube_event_qps,
        kube_event_burst=args.kube_event_burst,
    )
    log.info("routers: %s", ", ".join(args.routers))
    for runtime in runtimes:
        for line in runtime.describe():
            log.info("%s", line)
    if args.require_managed_label:
        log.info(
            "writing only to Deployments and HTTPRoutes labelled %s=%s",
            MANAGED_LABEL,
            MANAGED_VALUE,
        )
    if args.metrics_port:
        port = operator.metrics.serve(args.metrics_port)
        log.info("metrics on http://0.0.0.0:%d/metrics", port)

    def run_kopf(
        stop_flag: asyncio.Event | None = None, ready_flag: asyncio.Event | None = None
    ) -> Coroutine[Any, Any, None]:
        return kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            standalone=True,
            memo=kopf.Memo(**{handlers.MEMO_KEY: operator}),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )

    if not args.leader_election:
        asyncio.run(run_kopf())
        return 0
    # Stand by until this process holds the Lease; only then start kopf, so a standby
    # neither watches nor analyses nor writes. The leader leads on through an API server
    # outage; losing the Lease (another holder, or renewals refused past the deadline)
    # stops kopf and exits 1.
    namespace = leader.lease_namespace(
        args.leader_election_namespace, dict(os.environ), args.namespace
    )
    # With shards, each shard elects through a Lease of its own, and its holder serves only
    # while no process of another shard count does (segue.controller.shards).
    shard: Shard = args.shard
    elector, gate = elected_shard(
        namespace,
        args.leader_election_name,
        shard,
        on_serving=lambda on: operator.metrics.shard_serving(shard.index, shard.count, on),
    )
    operator.metrics.shard_serving(shard.index, shard.count, False)
    operator.events.instance = f"{elector.identity} (shard {shard})"
    log.info(
        "leader election on Lease %s as %s, shard %s",
        elector.where,
        elector.identity,
        shard,
    )
    return asyncio.run(leader.run_elected(elector, run_kopf, args.liveness, gate=gate))
