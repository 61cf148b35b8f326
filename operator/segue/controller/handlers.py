"""kopf wiring: watch streams in, workers out.

kopf watches Segue's own kinds: Rollouts, Migrations and the cluster-scoped
MetricProviders (cluster-wide even when the operator is limited to namespaces). An index
handler per kind keeps a summary of each object in the store and makes kopf finish every
initial listing before any Rollout is handled. The kinds Rollouts read but Segue does not
own, Deployments and the enabled routers' kinds such as HTTPRoutes, bring most of the
events and are watched by Segue's own informers (``informer.py``), started and stopped
with kopf; the Rollout event handler waits for their first listing. The supervisor runs
one worker per Rollout that has work and wakes the workers whose objects changed. Segue
manages its own finalizer; kopf writes nothing to the objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import kopf

from segue import GROUP, PLURAL, VERSION
from segue.analysis.clients import close_clients
from segue.analysis.counting import QUERIES
from segue.analysis.providers.runtime import ProviderRuntime
from segue.api.migration import MIGRATION_KIND, MIGRATION_PLURAL
from segue.api.provider import PROVIDER_KIND, PROVIDER_PLURAL
from segue.controller import kopf_toggles
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

log = logging.getLogger(__name__)

# kopf's start-up readiness wakes every waiting object for every new one; see the module.
kopf_toggles.install()

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
    # The kinds Rollouts read but Segue does not own (Deployments, the usable routers'
    # kinds) are watched by informers of Segue's own (``informer.py``), one per kind and
    # namespace watched; no Rollout is handled before they have all listed.
    watched: tuple[Watched, ...] = ()
    informers: list[Informer] = field(default_factory=list)
    listed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def namespaced(self) -> bool:
        """Watching named namespaces only: no cluster-wide discovery, so a Role suffices."""
        return bool(self.namespaces)


@dataclass(frozen=True)
class Watched:
    """A kind watched by informers; ``label_selector``: only objects carrying these labels,
    filtered by the API server (which sends a deletion when an object loses them)."""

    kind: str
    group: str
    version: str
    plural: str
    label_selector: str = ""


DEPLOYMENTS: Final = Watched("Deployment", "apps", "v1", "deployments")


def watched_kinds(enabled: Iterable[str], unusable: Mapping[str, str]) -> tuple[Watched, ...]:
    """Deployments and the kinds the usable routers read, each once whichever routers
    share it."""
    kinds = {DEPLOYMENTS.kind: DEPLOYMENTS}
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


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base (a deep copy of the whole object) on every watch event, for
    change handlers. Segue has none, only index and event handlers, so there is nothing to
    build, keep or compare (in a profile at 1,000 Rollouts the copy was about 40% of kopf's
    time per event)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_settings(settings: kopf.OperatorSettings) -> None:
    # kopf keeps no state on the objects: no progress or diff-base annotations, and its
    # finalizer name is one Segue never sets (Segue manages segue.dev/finalizer itself).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="segue.dev")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = "segue.dev/kopf-unused"
    settings.posting.level = logging.WARNING  # Segue posts its own Events for transitions
    settings.posting.reporting_component = "segue"
    settings.posting.event_name_prefix = "segue-"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    # Keep retrying through a long API outage (about 10 minutes) at most 2 s apart, so the
    # watches are back within 2 s of the server; kopf would give up after about a minute.
    settings.networking.error_backoffs = (0.5, 1, 1, 2, *(2,) * 300)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    configure_settings(settings)
    op: Operator = memo[MEMO_KEY]
    if op.events.instance:
        settings.posting.reporting_instance = op.events.instance[:128]
    # kopf's per-attempt retry lines become Segue's one line per outage.
    for handler in logging.getLogger().handlers:
        handler.addFilter(KopfRetries(op.kube))
    if op.namespaced:
        # kopf would otherwise try (and, under a Role, fail) to list namespaces and CRDs.
        settings.scanning.disabled = True
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


# -- Rollouts -------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, PLURAL, id="segue_rollouts")
async def index_rollout(body: kopf.Body, memo: Any, **_: Any) -> None:
    op: Operator = memo[MEMO_KEY]
    op.store.put("Rollout", cast(Json, body))


@kopf.on.event(GROUP, VERSION, PLURAL, id="segue_rollout_events")
async def rollout_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    op: Operator = memo[MEMO_KEY]
    # A Rollout's pass reads its Deployments and routes from the store: not before they
    # are listed.
    await op.listed.wait()
    namespace, name = key_of(body)
    raw = cast(Json, dict(body))
    if type == "DELETED":
        op.store.drop("Rollout", namespace, name)
        op.metrics.forget(namespace, name)
        op.targets.forget(namespace, name)
    op.supervisor.rollout_event(type, raw)
    # Rollouts that wait for this one (dependsOn) watch it like any referenced object.
    op.supervisor.object_event(("Rollout", namespace, name))
    if op.migrations is not None:
        op.migrations.wake_namespace(namespace)


# -- Migrations -----------------------------------------------------------------------


@kopf.index(GROUP, VERSION, MIGRATION_PLURAL, id="segue_migrations")
async def index_migration(body: kopf.Body, memo: Any, **_: Any) -> None:
    op: Operator = memo[MEMO_KEY]
    op.store.put(MIGRATION_KIND, cast(Json, body))


@kopf.on.event(GROUP, VERSION, MIGRATION_PLURAL, id="segue_migration_events")
async def migration_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    op: Operator = memo[MEMO_KEY]
    namespace, name = key_of(body)
    if type == "DELETED":
        op.store.drop(MIGRATION_KIND, namespace, name)
    if op.migrations is not None:
        op.migrations.rollout_event(type, cast(Json, dict(body)))
    # Members waiting for their wave read the Migration's status.
    op.supervisor.wake_namespace(namespace)


# -- what Rollouts reference -----------------------------------------------------------

# kind -> (group, version, plural) of the kinds Rollouts reference that kopf watches (the
# others come through informers, below).
REFERENCED: Final = {
    # Cluster-scoped: its key has an empty namespace.
    PROVIDER_KIND: (GROUP, VERSION, PROVIDER_PLURAL),
}


def _watch_referenced(
    kind: str,
    group: str,
    version: str,
    plural: str,
) -> None:
    """An index handler keeps the object's summary in the store (and makes kopf list the
    kind before any Rollout is handled) and wakes the Rollouts that reference the object.
    kopf calls no index handler for a deletion: an event handler, filtered to deletions,
    forgets the object and wakes them. One handler per event, not two: kopf's invocation
    of a handler costs more than the handler itself."""

    async def index(body: kopf.Body, memo: Any, **_: Any) -> None:
        op: Operator = memo[MEMO_KEY]
        op.store.put(kind, cast(Json, body))
        namespace, name = key_of(body)
        # Until kopf has listed every kind, no Rollout has a worker: nobody to wake.
        if op.store.take_change(kind, namespace, name):
            op.supervisor.object_event((kind, namespace, name))

    async def deleted(body: kopf.Body, memo: Any, **_: Any) -> None:
        op: Operator = memo[MEMO_KEY]
        namespace, name = key_of(body)
        op.store.drop(kind, namespace, name)
        op.supervisor.object_event((kind, namespace, name))

    kopf.index(group, version, plural, id=f"segue_{plural}")(index)
    kopf.on.event(group, version, plural, id=f"segue_{plural}_events", when=_is_deletion)(deleted)


def _is_deletion(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


def start_informers(op: Operator) -> None:
    """Watch the kinds Rollouts read but Segue does not own on threads of their own
    (``informer.py``): they bring most of the watch events (a Deployment's status changes
    several times for every scale write; every route write comes back as an event), and
    kopf's per-event machinery costs more than the store's work on them."""
    loop = asyncio.get_running_loop()
    scopes = op.namespaces or ("",)
    pending = {(watched.kind, namespace) for watched in op.watched for namespace in scopes}
    api = watch_client(op.kube.configuration, len(pending))

    def outage(error: BaseException) -> bool:
        if not unreachable(error):
            return False
        loop.call_soon_threadsafe(op.kube.unreachable, short_error(error))
        return True

    def listed_in(kind: str, namespace: str) -> Callable[[], None]:
        def listed() -> None:
            pending.discard((kind, namespace))
            if not pending:
                op.listed.set()

        return listed

    for watched in op.watched:
        for namespace in scopes:
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
                _deliverer(op, watched.kind),
                listed_in(watched.kind, namespace),
                outage=outage,
            )
            op.informers.append(informer)
            informer.start(loop)
    if not pending:
        op.listed.set()


def _deliverer(op: Operator, kind: str) -> Callable[[str | None, Json], None]:
    """An informer's event: the store keeps the object's summary (or forgets it), and
    the Rollouts that read the object wake when that summary changed."""

    def deliver(type_: str | None, body: Json) -> None:
        namespace, name = key_of(body)
        if type_ == "DELETED":
            op.store.drop(kind, namespace, name)
            op.supervisor.object_event((kind, namespace, name))
            return
        op.store.put(kind, body)
        if op.store.take_change(kind, namespace, name):
            op.supervisor.object_event((kind, namespace, name))

    return deliver


for _kind, (_group, _version, _plural) in REFERENCED.items():
    _watch_referenced(_kind, _group, _version, _plural)
