"""kopf wiring: the operator's lifecycle, watch streams in, workers out.

kopf runs the operator: its start-up and clean-up handlers, its liveness endpoint and its
stop flag (the leader's). Every kind the operator reads comes through Segue's own informers
(``informer.py``): Rollouts, Migrations and the cluster-scoped MetricProviders, Deployments
and the enabled routers' kinds such as HTTPRoutes. Each event goes to the store on the
event loop, and no worker starts before every informer has listed. The supervisor runs one
worker per Rollout that has work and wakes the workers whose objects changed. Segue manages
its own finalizer; kopf writes nothing to the objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import kopf

from segue import GROUP, PLURAL, VERSION
from segue.analysis.clients import close_clients
from segue.analysis.counting import QUERIES
from segue.analysis.providers.runtime import ProviderRuntime
from segue.api.migration import MIGRATION_KIND, MIGRATION_PLURAL
from segue.api.provider import PROVIDER_KIND, PROVIDER_PLURAL
from segue.controller.events import EventPoster
from segue.controller.gates import GateRunner
from segue.controller.informer import Informer, key_of, lister
from segue.controller.kube import (
    REQUESTS,
    Json,
    KopfRetries,
    Kube,
    Rollouts,
    Secrets,
    load_configuration,
    short_error,
    unreachable,
    watch_client,
)
from segue.controller.metrics import OperatorMetrics
from segue.controller.migrations import MigrationReconciler, migration_needs_work
from segue.controller.notifications import WebhookTargets
from segue.controller.ratelimit import (
    DEFAULT_BURST,
    DEFAULT_EVENT_BURST,
    DEFAULT_EVENT_QPS,
    DEFAULT_QPS,
)
from segue.controller.reconcile import Reconciler
from segue.controller.shards import Shard, only_shard
from segue.controller.store import Store
from segue.controller.workers import Supervisor, Worker, needs_work
from segue.notify import Dispatcher, NotificationHook
from segue.notify.destinations import Destinations
from segue.traffic.catalog import plugin
from segue.traffic.registry import DEFAULT_ROUTERS, check_routers, router_for
from segue.workloads.deployments import Deployments

log = logging.getLogger(__name__)

MEMO_KEY: Final = "segue"


@dataclass
class Operator:
    """Process-wide parts, built once at start-up."""

    kube: Kube
    store: Store
    supervisor: Supervisor
    reconciler: Reconciler
    metrics: OperatorMetrics
    dispatcher: Dispatcher
    targets: WebhookTargets
    # Posts the Events of the Rollouts and Migrations, on a lane of its own; its
    # ``instance`` (reportingInstance) says which process and shard.
    events: EventPoster
    # One worker per Migration with work, woken when a Rollout of its namespace changes.
    migrations: Supervisor | None = None
    # The namespaces watched (none: all of them).
    namespaces: tuple[str, ...] = ()
    # The kinds watched (``watched_kinds``), each by informers of Segue's own
    # (``informer.py``), one per kind and namespace watched; no Rollout or Migration is
    # handled before they have all listed.
    watched: tuple[Watched, ...] = ()
    informers: list[Informer] = field(default_factory=list)
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    # Until then, the latest event of each Rollout and Migration, by (kind, namespace,
    # name), in the order they came.
    deferred: dict[tuple[str, str, str], tuple[str | None, Json]] = field(default_factory=dict)


@dataclass(frozen=True)
class Watched:
    """A kind watched by informers; ``label_selector``: only objects carrying these labels,
    filtered by the API server (which sends a deletion when an object loses them);
    ``cluster``: cluster-scoped, watched once whatever namespaces the operator watches."""

    kind: str
    group: str
    version: str
    plural: str
    label_selector: str = ""
    cluster: bool = False


ROLLOUTS: Final = Watched("Rollout", GROUP, VERSION, PLURAL)
MIGRATIONS: Final = Watched(MIGRATION_KIND, GROUP, VERSION, MIGRATION_PLURAL)
PROVIDERS: Final = Watched(PROVIDER_KIND, GROUP, VERSION, PROVIDER_PLURAL, cluster=True)
DEPLOYMENTS: Final = Watched("Deployment", "apps", "v1", "deployments")


def watched_kinds(enabled: Iterable[str], unusable: Mapping[str, str]) -> tuple[Watched, ...]:
    """Segue's own kinds, Deployments and the kinds the usable routers read, each once
    whichever routers share it."""
    kinds = {w.kind: w for w in (ROLLOUTS, MIGRATIONS, PROVIDERS, DEPLOYMENTS)}
    for key in enabled:
        if key in unusable:
            continue
        for watched in plugin(key).watches:
            if watched.kind not in kinds:
                selector = ",".join(f"{k}={v}" for k, v in sorted(watched.labels))
                kinds[watched.kind] = Watched(
                    watched.kind, watched.group, watched.version, watched.plural, selector
                )
    return tuple(kinds.values())


def build(
    runtimes: Sequence[ProviderRuntime] = (),
    namespaces: Sequence[str] = (),
    destinations: Destinations | None = None,
    webhook_proxy: str | None = None,
    require_managed_label: bool = False,
    routers: Sequence[str] = DEFAULT_ROUTERS,
    shard: Shard | None = None,
    unusable: Mapping[str, str] | None = None,
    kube_qps: float = DEFAULT_QPS,
    kube_burst: int = DEFAULT_BURST,
    kube_event_qps: float = DEFAULT_EVENT_QPS,
    kube_event_burst: int = DEFAULT_EVENT_BURST,
) -> Operator:
    """``runtimes``: the metric providers' runtimes with the operator's flags applied (any
    not given run with their defaults). ``namespaces``: those watched (none: all).
    ``require_managed_label``: write only to
    Deployments and routing objects labelled ``segue.dev/managed=true`` (a Rollout naming
    another is Stalled, ``NotManaged``). ``routers``: the routers this operator runs; it
    watches their kinds, and a Rollout naming another router is Failed before any traffic
    moves. ``shard``: only Rollouts and Migrations of this shard get workers; the store
    still holds every one (dependsOn and Migrations read other Rollouts). ``unusable``:
    enabled routers that cannot run here and why (``preflight``): their kinds are not
    watched, and a Rollout naming one is Failed with the reason. ``kube_qps``,
    ``kube_burst``: the client-side rate limit of each Kubernetes lane; ``kube_event_qps``,
    ``kube_event_burst``: that of the events lane."""
    mine = shard or Shard()
    enabled = check_routers(routers)
    unusable = dict(unusable or {})
    kube = Kube(
        load_configuration(),
        qps=kube_qps,
        burst=kube_burst,
        event_qps=kube_event_qps,
        event_burst=kube_event_burst,
    )
    secrets = Secrets(kube)
    metrics = OperatorMetrics()
    events = EventPoster(kube, on_dropped=metrics.event_dropped)
    post_event = events.post
    REQUESTS.listeners.append(lambda method: metrics.kube_requests.labels(method).inc())
    QUERIES.listeners.append(metrics.metric_query)
    destinations = destinations if destinations is not None else Destinations()
    targets = WebhookTargets(secrets, destinations=destinations, post_event=post_event)
    dispatcher = Dispatcher(
        observer=metrics,
        destinations=destinations,
        proxy=webhook_proxy,
        on_refused=targets.on_refused,
    )
    store = Store()
    supervisor_ref: list[Supervisor] = []
    reconciler = Reconciler(
        store,
        Rollouts(kube),
        lambda namespace, traffic, legacy, new, asked: router_for(
            store,
            kube,
            namespace,
            traffic,
            legacy,
            new,
            require_managed=require_managed_label,
            enabled=enabled,
            unusable=unusable,
            asked=asked,
        ),
        GateRunner(secrets, runtimes, metric_providers=store.metric_provider),
        post_event,
        watch=lambda worker, refs: supervisor_ref[0].watch(worker, refs),
        hooks=[metrics, NotificationHook(dispatcher, targets.targets_for)],
        targets=targets,
        read_deployment=lambda namespace, name: Deployments(kube, namespace).get(name),
    )

    async def timed_pass(worker: Worker) -> float | None:
        with metrics.reconcile_timer():
            return await reconciler.reconcile(worker)

    supervisor = Supervisor(timed_pass, has_work=only_shard(mine, needs_work))
    supervisor_ref.append(supervisor)
    kube.connectivity.listeners.append(supervisor.wake_all)
    migration_reconciler = MigrationReconciler(
        store, Rollouts(kube, MIGRATION_PLURAL), Rollouts(kube), post_event
    )
    migrations = Supervisor(
        migration_reconciler.reconcile,
        has_work=only_shard(mine, migration_needs_work),
        kind=MIGRATION_KIND,
    )
    kube.connectivity.listeners.append(migrations.wake_all)
    return Operator(
        kube,
        store,
        supervisor,
        reconciler,
        metrics,
        dispatcher,
        targets,
        events,
        migrations,
        tuple(namespaces),
        watched_kinds(enabled, unusable),
    )


def configure_settings(settings: kopf.OperatorSettings) -> None:
    # kopf watches nothing and writes nothing: Segue's informers watch, and Segue posts
    # its own Events. What kopf still requests itself is its start-up scan of the API's
    # resources: through a long API outage (about 10 minutes) it retries at most 2 s
    # apart, where it would give up after about a minute.
    settings.posting.enabled = False
    settings.scanning.disabled = True  # no namespaces or CRDs to follow (nor, under a
    # Role, the right to list them)
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = (0.5, 1, 1, 2, *(2,) * 300)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    configure_settings(settings)
    op: Operator = memo[MEMO_KEY]
    # kopf's per-attempt retry lines become Segue's one line per outage.
    for handler in logging.getLogger().handlers:
        handler.addFilter(KopfRetries(op.kube))
    await op.dispatcher.start()
    op.events.start()
    start_informers(op)


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    op: Operator = memo[MEMO_KEY]
    for informer in op.informers:
        informer.stop()
    await op.supervisor.stop()
    if op.migrations is not None:
        await op.migrations.stop()
    await op.dispatcher.stop(deadline=5.0)
    await op.events.stop()
    close_clients()  # query pools: threads stuck on a hanging provider must not hold exit
    op.kube.close()


def start_informers(op: Operator) -> None:
    """Watch every kind the operator reads on threads of its own (``informer.py``), one
    informer per kind and watched namespace (one cluster-wide for a cluster-scoped kind).
    Until all have listed, the store takes every object but no worker starts; then the
    Rollouts and Migrations listed are handed to their supervisors in the order they came."""
    loop = asyncio.get_running_loop()
    scopes = op.namespaces or ("",)
    streams = [
        (watched, namespace)
        for watched in op.watched
        for namespace in (("",) if watched.cluster else scopes)
    ]
    pending = {(watched.kind, namespace) for watched, namespace in streams}
    api = watch_client(op.kube.configuration, len(streams))

    def outage(error: BaseException) -> bool:
        if not unreachable(error):
            return False
        loop.call_soon_threadsafe(op.kube.unreachable, short_error(error))
        return True

    def listed_in(kind: str, namespace: str) -> Callable[[], None]:
        def listed() -> None:
            pending.discard((kind, namespace))
            if not pending:
                all_listed(op)

        return listed

    for watched, namespace in streams:
        informer = Informer(
            f"{watched.plural}.{watched.group or 'core'}"
            + (f" in {namespace}" if namespace else ""),
            lister(
                api,
                watched.group,
                watched.version,
                watched.plural,
                namespace,
                watched.label_selector,
            ),
            deliverer(op, watched.kind),
            listed_in(watched.kind, namespace),
            outage=outage,
        )
        op.informers.append(informer)
        informer.start(loop)
    if not pending:
        all_listed(op)


def all_listed(op: Operator) -> None:
    """Every informer has listed: the Rollouts and Migrations that came meanwhile go to
    their supervisors, each with its latest event, in the order they came."""
    if op.listed.is_set():
        return
    op.listed.set()
    handed, op.deferred = op.deferred, {}
    for (kind, _, _), (type_, body) in handed.items():
        _dispatch(op, kind, type_, body)


def deliverer(op: Operator, kind: str) -> Callable[[str | None, Json], None]:
    """An informer's event: the store keeps the object's summary (or forgets it); the
    Rollouts that read the object wake when that summary changed; a Rollout or Migration
    goes to its supervisor (after the first listings: until then it waits in
    ``Operator.deferred``, the latest event per object)."""
    own = kind in (ROLLOUTS.kind, MIGRATIONS.kind)

    def deliver(type_: str | None, body: Json) -> None:
        namespace, name = key_of(body)
        if type_ == "DELETED":
            op.store.drop(kind, namespace, name)
        else:
            op.store.put(kind, body)
        if not own:
            if type_ == "DELETED" or op.store.take_change(kind, namespace, name):
                op.supervisor.object_event((kind, namespace, name))
        elif op.listed.is_set():
            _dispatch(op, kind, type_, body)
        elif type_ == "DELETED":
            op.deferred.pop((kind, namespace, name), None)
        else:
            op.deferred[(kind, namespace, name)] = (type_, body)

    return deliver


def _dispatch(op: Operator, kind: str, type_: str | None, body: Json) -> None:
    """A Rollout's or Migration's event, once every kind is listed."""
    namespace, name = key_of(body)
    if kind == MIGRATIONS.kind:
        if op.migrations is not None:
            op.migrations.rollout_event(type_, body)
        # Members waiting for their wave read the Migration's status.
        op.supervisor.wake_namespace(namespace)
        return
    if type_ == "DELETED":
        op.metrics.forget(namespace, name)
        op.targets.forget(namespace, name)
    op.supervisor.rollout_event(type_, body)
    # Rollouts that wait for this one (dependsOn) watch it like any referenced object.
    op.supervisor.object_event((ROLLOUTS.kind, namespace, name))
    if op.migrations is not None:
        op.migrations.wake_namespace(namespace)
