"""kopf handlers: one daemon per active Rollout, a wake-up on user changes, and the
return of traffic to legacy when an unfinished Rollout is deleted.

A daemon runs only while its Rollout has work (the ``when`` filter): a Succeeded, RolledBack
or Failed Rollout with nothing new to act on has no daemon and costs no API calls. kopf
stops the daemon when the filter turns false and starts it again when it turns true.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Final, cast

import kopf
from pydantic import ValidationError

from segue import GROUP, PLURAL, VERSION
from segue.api.spec import RolloutSpec
from segue.controller.gates import GateRunner
from segue.controller.kube import REQUESTS, Json, Secrets, make_api_client
from segue.controller.metrics import OperatorMetrics
from segue.controller.notifications import WebhookTargets
from segue.controller.reconcile import BadStatus, Reconciler, Runtime
from segue.engine import ONE_SHOT
from segue.notify import Dispatcher, NotificationHook
from segue.traffic.base import RouterError
from segue.traffic.registry import router_for
from segue.workloads.deployments import DeploymentMissing, Deployments

log = logging.getLogger(__name__)

TERMINAL: Final = frozenset({"Succeeded", "RolledBack", "Failed"})
# Phases in which deleting the Rollout leaves traffic where it is.
NOTHING_TO_UNDO: Final = frozenset({None, "Pending", "Waiting", "Succeeded", "RolledBack"})
# Deleting: how long to keep asking the router for weight 0 before letting the object go.
DELETE_RETRIES: Final = 30
MEMO_KEY: Final = "segue"
KOPF_DIFFBASE: Final = "segue.dev/last-handled-configuration"  # kopf's, not a person's

Key = tuple[str, str]


@dataclass
class Operator:
    """Process-wide parts, built once at start-up."""

    reconciler: Reconciler
    metrics: OperatorMetrics
    dispatcher: Dispatcher
    targets: WebhookTargets
    # Watching named namespaces only: no cluster-wide discovery, so a Role suffices.
    namespaced: bool = False
    runtimes: dict[Key, Runtime] = field(default_factory=dict)
    fingerprints: dict[Key, tuple[Any, ...]] = field(default_factory=dict)


def post_event(obj: Json, type_: str, reason: str, message: str) -> None:
    # kopf builds the object reference from any mapping with apiVersion, kind and metadata.
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message[:1024])


def build(prometheus_address: str | None, namespaced: bool = False) -> Operator:
    api = make_api_client()
    secrets = Secrets(api)
    metrics = OperatorMetrics()
    REQUESTS.listeners.append(lambda method: metrics.kube_requests.labels(method).inc())
    dispatcher = Dispatcher(observer=metrics)
    targets = WebhookTargets(secrets)
    reconciler = Reconciler(
        api,
        GateRunner(secrets, prometheus_address),
        post_event,
        hooks=[metrics, NotificationHook(dispatcher, targets.targets_for)],
        targets=targets,
    )
    return Operator(reconciler, metrics, dispatcher, targets, namespaced)


def configure_settings(settings: kopf.OperatorSettings) -> None:
    # Keep kopf's bookkeeping under Segue's own prefix, never under kopf's defaults.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="segue.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="segue.dev", key=KOPF_DIFFBASE.removeprefix("segue.dev/")
    )
    settings.persistence.finalizer = "segue.dev/finalizer"
    settings.posting.level = logging.WARNING  # Segue posts its own Events for transitions
    settings.posting.reporting_component = "segue"
    settings.posting.event_name_prefix = "segue-"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    configure_settings(settings)
    op: Operator = memo[MEMO_KEY]
    if op.namespaced:
        # kopf would otherwise try (and, under a Role, fail) to list namespaces and CRDs.
        settings.scanning.disabled = True
    await op.dispatcher.start()


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    op: Operator = memo[MEMO_KEY]
    await op.dispatcher.stop(deadline=5.0)


def needs_daemon(body: kopf.Body, **_: Any) -> bool:
    meta = body.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return False
    status = body.get("status") or {}
    if status.get("phase") not in TERMINAL:
        return True
    if status.get("observedGeneration") != meta.get("generation"):
        return True
    annotations = meta.get("annotations") or {}
    return any(key in annotations for key in ONE_SHOT)


def _fingerprint(body: kopf.Body) -> tuple[Any, ...]:
    """What a person can change: spec (generation) and Segue's annotations."""
    meta = body.get("metadata", {})
    annotations = meta.get("annotations") or {}
    mine = tuple(
        sorted(
            (k, v)
            for k, v in annotations.items()
            if k.startswith("segue.dev/") and k != KOPF_DIFFBASE
        )
    )
    return (meta.get("generation"), mine, meta.get("deletionTimestamp"))


@kopf.on.event(GROUP, VERSION, PLURAL)
def wake(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    op: Operator = memo[MEMO_KEY]
    meta = body.get("metadata", {})
    key = (meta.get("namespace", ""), meta.get("name", ""))
    if type == "DELETED":
        op.fingerprints.pop(key, None)
        op.metrics.forget(*key)
        op.targets.forget(*key)
        return
    fingerprint = _fingerprint(body)
    if op.fingerprints.get(key) != fingerprint:
        op.fingerprints[key] = fingerprint
        runtime = op.runtimes.get(key)
        if runtime is not None:
            runtime.wake.set()
    # A success may unblock Rollouts that depend on this one.
    if (body.get("status") or {}).get("phase") == "Succeeded":
        for (namespace, _name), runtime in op.runtimes.items():
            if namespace == key[0]:
                runtime.wake.set()


@kopf.daemon(GROUP, VERSION, PLURAL, id="drive", when=needs_daemon, cancellation_timeout=10)
async def drive(
    namespace: str | None, name: str, stopped: kopf.DaemonStopped, memo: Any, **_: Any
) -> None:
    op: Operator = memo[MEMO_KEY]
    namespace = namespace or ""
    key = (namespace, name)
    rt = op.runtimes.setdefault(key, Runtime())
    failures = 0
    try:
        while not stopped:
            rt.wake.clear()
            try:
                with op.metrics.reconcile_timer():
                    wait = await op.reconciler.reconcile(namespace, name, rt)
                failures = 0
            except BadStatus as e:
                log.error("%s", e)
                wait = 60.0
            except Exception:
                # Never let one bad pass end the daemon (kopf would not restart it).
                failures += 1
                wait = min(60.0, 2.0**failures)
                log.exception("reconcile of %s/%s failed; retrying in %.0fs", namespace, name, wait)
            await _sleep(rt.wake, stopped, wait)
    finally:
        rt.rounds.cancel()
        if op.runtimes.get(key) is rt:
            del op.runtimes[key]


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float | None) -> None:
    async def until_stopped() -> None:
        await stopped.wait()

    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(until_stopped())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.on.delete(GROUP, VERSION, PLURAL, id="return-traffic")
async def return_traffic(
    body: kopf.Body, namespace: str | None, name: str, retry: int, memo: Any, **_: Any
) -> None:
    """Deleting an unfinished Rollout returns all traffic to legacy; a finished one keeps
    its traffic where it is."""
    phase = (body.get("status") or {}).get("phase")
    if phase in NOTHING_TO_UNDO:
        return
    op: Operator = memo[MEMO_KEY]
    try:
        spec = RolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return  # an invalid spec never moved traffic under this generation
    router = router_for(op.reconciler.api, namespace or "", spec)
    try:
        if not router.manages_capacity and not await _legacy_ready(op, namespace or "", spec):
            if retry < DELETE_RETRIES:
                # Never move all traffic onto a legacy version that has no ready pods.
                raise kopf.TemporaryError("waiting for ready legacy pods", delay=2)
            post_event(dict(body), "Warning", "Deleted", "deleted; legacy has no ready pods")
            return
        if await router.read_weight() == 0:
            post_event(dict(body), "Normal", "Deleted", "deleted; all traffic on legacy")
            return
        await router.set_weight(0)
        if await router.read_weight() == 0:
            post_event(dict(body), "Normal", "Deleted", "deleted; all traffic returned to legacy")
            return
    except RouterError as e:
        post_event(dict(body), "Warning", "Deleted", f"deleted; cannot return traffic: {e}")
        return
    if retry >= DELETE_RETRIES:
        post_event(dict(body), "Warning", "Deleted", "deleted; the router did not reach 0% in time")
        return
    raise kopf.TemporaryError("waiting for the router to report 0% on the new version", delay=2)


async def _legacy_ready(op: Operator, namespace: str, spec: RolloutSpec) -> bool:
    try:
        state = await Deployments(op.reconciler.api, namespace).read(spec.legacy.deployment)
    except DeploymentMissing:
        return False
    return state.ready > 0
