"""The controller shell against fakes of its Router, provider and Rollout-client protocols:
the order of writes, the lost-race (409) path, the urgent lane, deletion and the
supervisor's wake-ups. The real thing is proven end to end in tests/e2e."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from segue.analysis.providers.base import Provider
from segue.analysis.providers.prometheus.runtime import PrometheusRuntime
from segue.api.routing import Segment
from segue.api.spec import RolloutSpec, Traffic, Workload
from segue.controller import kube
from segue.controller.gates import GateRunner
from segue.controller.reconcile import (
    CONFLICT_WAIT_S,
    ROUND_LEAD_S,
    Reconciler,
)
from segue.controller.store import Store
from segue.controller.workers import FINALIZER, Supervisor, Worker, needs_work
from segue.engine import GateRound
from segue.traffic.base import Ref, RouterError
from segue.workloads.deployments import DeploymentState
from tests.unit.conftest import analysis, gate_round, spec_dict, verdict
from tests.unit.waiting import until

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Log = list[tuple[Any, ...]]


class FakeRouter:
    manages_capacity = False

    def __init__(self, log: Log, weight: int | None = 0) -> None:
        self.log = log
        self.weight = weight  # None: the routing object is missing
        self.lanes: list[bool] = []
        self.atomic = False  # reads the new weight at once, as an HTTPRoute does
        self.unlabelled = False  # the route lacks segue.dev/managed=true (required)

    def watches(self) -> list[Ref]:
        return [("HTTPRoute", "ns", "route")]

    def unmanaged(self) -> list[Ref]:
        return [("HTTPRoute", "ns", "route")] if self.unlabelled else []

    def read_weight(self) -> int:
        if self.weight is None:
            raise RouterError("HTTPRoute ns/route not found")
        return self.weight

    def read_segment(self) -> Segment | None:
        return None

    async def set_weight(self, weight: int, segment: Segment | None = None) -> None:
        if self.weight is None:
            raise RouterError("HTTPRoute ns/route not found")
        self.lanes.append(kube.is_urgent())
        self.log.append(("router", weight))
        if self.atomic:
            self.weight = weight


class FakeRollouts:
    """Applies writes to an in-memory object and logs them; can lose races."""

    def __init__(self, log: Log, obj: dict[str, Any]) -> None:
        self.log = log
        self.obj = obj
        self.conflicts = 0
        self.gets = 0

    def _bump(self) -> dict[str, Any]:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            self.log.append(("status-409",))
            raise ApiException(status=409, reason="Conflict")
        assert resource_version == self.obj["metadata"]["resourceVersion"]
        self.log.append(("status", status.get("phase")))
        current = self.obj.setdefault("status", {})
        _merge(current, status)
        return self._bump()

    async def patch_metadata(
        self, namespace: str, name: str, metadata: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.log.append(("annotations", tuple(sorted(metadata.get("annotations", {})))))
        _merge(self.obj["metadata"], metadata)
        return self._bump()

    async def json_patch(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        meta = self.obj["metadata"]
        prefix = "/metadata/annotations/"
        for op in ops:
            stale = (
                op["path"] == "/metadata/resourceVersion" and op["value"] != meta["resourceVersion"]
            )
            if op["op"] == "test" and stale:
                raise ApiException(status=422, reason="the test operation failed")
        keys = [
            op["path"][len(prefix) :].replace("~1", "/").replace("~0", "~")
            for op in ops
            if op["op"] == "remove" and op["path"].startswith(prefix)
        ]
        if keys:
            for key in keys:
                meta.get("annotations", {}).pop(key, None)
            self.log.append(("annotations", tuple(sorted(keys))))
            return self._bump()
        finalizers = self.obj["metadata"].setdefault("finalizers", [])
        for op in ops:
            if op["op"] == "add":
                if op["path"].endswith("/-"):
                    finalizers.append(op["value"])
                else:
                    finalizers[:] = op["value"]
                self.log.append(("finalizer+",))
            elif op["op"] == "remove":
                finalizers.remove(FINALIZER)
                self.log.append(("finalizer-",))
        return self._bump()

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return copy.deepcopy(self.obj)


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class FakeGates:
    """Counts rounds; which provider a Rollout may use is the real GateRunner's answer."""

    def __init__(self, store: Store) -> None:
        self.runs = 0
        self.runner = GateRunner(
            None,  # type: ignore[arg-type]  # no Secret is read here
            [PrometheusRuntime("http://default:9090", ["https://allowed.example:9090"])],
            metric_providers=store.metric_provider,
        )

    async def run(self, namespace: str, name: str, spec: RolloutSpec, weight: int) -> GateRound:
        self.runs += 1
        return self.round

    round = GateRound(evaluated_at=NOW, results=())

    def refusal(self, spec: RolloutSpec) -> str | None:
        return self.runner.refusal(spec)

    def provider_problem(self, spec: RolloutSpec) -> str | None:
        return self.runner.provider_problem(spec)

    def provider(self, spec: RolloutSpec) -> Provider:
        return self.runner.provider(spec)


class Shell:
    def __init__(self, obj: dict[str, Any], weight: int | None = 0) -> None:
        self.log: Log = []
        self.store = Store()
        for name in ("checkout-v1", "checkout-v2"):
            self.store.deployments[("ns", name)] = DeploymentState(name, 3, 3, 3, {}, "h")
        self.router = FakeRouter(self.log, weight)
        self.rollouts = FakeRollouts(self.log, obj)
        self.gates = FakeGates(self.store)
        self.watched: list[Ref] = []
        self.asked: int | None = None  # what the last router was built with

        def routers(
            ns: str, traffic: Traffic, legacy: Workload, new: Workload, asked: int | None
        ) -> FakeRouter:
            self.asked = asked
            return self.router

        def watch(worker: Worker, refs: list[Ref]) -> None:
            self.watched = refs

        self.reconciler = Reconciler(
            self.store,
            self.rollouts,
            routers,
            self.gates,
            lambda obj, type_, reason, message: self.log.append(("event", reason, message)),
            watch,
            clock=lambda: NOW,
        )
        self.worker = Worker(("ns", "checkout"), copy.deepcopy(obj))

    async def run(self) -> float | None:
        return await self.reconciler.reconcile(self.worker)

    def kinds(self) -> list[str]:
        return [entry[0] for entry in self.log]


def rollout(
    phase: str | None = None,
    weight: int = 0,
    annotations: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
    spec: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": "checkout",
            "namespace": "ns",
            "generation": 1,
            "resourceVersion": "10",
            "annotations": annotations or {},
            "finalizers": [FINALIZER] if finalizers is None else finalizers,
        },
        "spec": spec or spec_dict(steps=[{"setWeight": 30}, {"pause": {}}]),
        "status": {},
    }
    if phase is not None:
        obj["status"] = {
            "phase": phase,
            "step": 1,
            "totalSteps": 3,
            "weight": weight,
            "targetWeight": weight,
            "observedGeneration": 1,
            "newRevision": None,
            **status,
        }
    return obj


def test_abort_writes_router_then_status_then_events_then_annotations():
    async def scenario() -> None:
        shell = Shell(
            rollout("AwaitingApproval", 30, annotations={"segue.dev/abort": "bad"}), weight=30
        )
        await shell.run()
        kinds = shell.kinds()
        # The annotation that asked for it stays until the status is written: a restart
        # in between asks again, so traffic goes back first.
        assert kinds.index("router") < kinds.index("status") < kinds.index("event")
        assert kinds.index("event") < kinds.index("annotations")
        assert ("router", 0) in shell.log
        # Pulling traffic back runs on the urgent lane.
        assert shell.router.lanes == [True]
        assert ("HTTPRoute", "ns", "route") in shell.watched

    asyncio.run(scenario())


def test_a_lost_race_applies_nothing_but_an_abort_and_reads_the_rollout_once():
    async def scenario() -> None:
        shell = Shell(
            rollout("AwaitingApproval", 30, annotations={"segue.dev/abort": "bad"}), weight=30
        )
        shell.rollouts.conflicts = 1
        wait = await shell.run()
        assert wait == CONFLICT_WAIT_S
        # Traffic went back (always safe); nothing else of the decision was applied.
        assert shell.kinds() == ["router", "status-409"]
        # No newer object came by watch: the next pass reads it once, then decides.
        await shell.run()
        assert shell.rollouts.gets == 1
        assert ("router", 0) in shell.log

    asyncio.run(scenario())


def test_a_pass_that_changes_nothing_writes_nothing():
    async def scenario() -> None:
        shell = Shell(rollout("AwaitingApproval", 30), weight=30)
        await shell.run()
        shell.log.clear()
        await shell.run()
        assert shell.log == []

    asyncio.run(scenario())


def test_the_finalizer_is_added_before_traffic_moves():
    async def scenario() -> None:
        shell = Shell(rollout(finalizers=[]), weight=0)
        await shell.run()
        kinds = shell.kinds()
        assert "finalizer+" in kinds
        assert kinds.index("finalizer+") < kinds.index("router")

    asyncio.run(scenario())


def test_deleting_an_active_rollout_returns_traffic_then_releases_the_finalizer():
    async def scenario() -> None:
        obj = rollout("AwaitingApproval", 30)
        obj["metadata"]["deletionTimestamp"] = "2026-03-01T12:00:00Z"
        shell = Shell(obj, weight=30)
        await shell.run()
        assert ("router", 0) in shell.log
        assert "finalizer-" not in shell.kinds()
        assert shell.router.lanes == [True]
        shell.router.weight = 0
        shell.worker.obj = copy.deepcopy(shell.rollouts.obj)
        await shell.run()
        assert "finalizer-" in shell.kinds()

    asyncio.run(scenario())


def test_an_abort_moves_traffic_even_when_the_rest_of_the_spec_is_invalid():
    async def scenario() -> None:
        spec = spec_dict(steps=[{"setWeight": 30}, {"pause": {"duration": "bogus"}}])
        obj = rollout("AwaitingApproval", 30, annotations={"segue.dev/abort": "x"}, spec=spec)
        shell = Shell(obj, weight=30)
        await shell.run()
        assert ("router", 0) in shell.log
        assert shell.rollouts.obj["status"]["phase"] == "Failed"

    asyncio.run(scenario())


def test_a_missing_route_does_not_stop_the_abort_being_recorded():
    async def scenario() -> None:
        shell = Shell(
            rollout("AwaitingApproval", 30, annotations={"segue.dev/abort": "x"}), weight=None
        )
        await shell.run()
        assert shell.rollouts.obj["status"]["phase"] == "RollingBack"
        assert not [e for e in shell.log if e[0] == "router"]

    asyncio.run(scenario())


# -- where queries may go ------------------------------------------------------------------


def _inline(address: str) -> dict[str, Any]:
    prometheus = {"address": address, "secretRef": {"name": "prom-token"}}
    return spec_dict(steps=[{"setWeight": 30}], analysis=analysis(prometheus=prometheus))


def test_an_inline_address_that_is_not_allowed_fails_the_rollout_before_step_0():
    async def scenario() -> None:
        shell = Shell(rollout(finalizers=[], spec=_inline("http://internal.svc:8080")))
        await shell.run()
        status = shell.rollouts.obj["status"]
        assert status["phase"] == "Failed"
        assert status["message"].startswith(
            "invalid spec: spec.analysis.prometheus.address: http://internal.svc:8080 is not "
            "an address this operator may query; name a MetricProvider in "
            "spec.analysis.providerRef instead, or ask the platform team to allow the address"
        )
        (event,) = [e for e in shell.log if e[0] == "event"]
        assert event[1] == "Failed" and "spec.analysis.prometheus.address" in event[2]
        assert not [e for e in shell.log if e[0] == "router"]
        assert shell.gates.runs == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "address",
    ["https://allowed.example:9090", "https://Allowed.Example:9090/", "http://default:9090"],
)
def test_allowed_inline_addresses_run(address):
    async def scenario() -> None:
        shell = Shell(rollout(spec=_inline(address)))
        await shell.run()
        assert shell.rollouts.obj["status"]["phase"] != "Failed"
        assert ("router", 30) in shell.log

    asyncio.run(scenario())


def _named(provider: str) -> dict[str, Any]:
    return spec_dict(steps=[{"setWeight": 30}], analysis=analysis(providerRef={"name": provider}))


def test_a_missing_metric_provider_holds_the_start_until_it_exists():
    async def scenario() -> None:
        shell = Shell(rollout(spec=_named("shared")))
        await shell.run()
        status = shell.rollouts.obj["status"]
        missing = "missing: MetricProvider shared named in spec.analysis.providerRef (not found)"
        assert status["phase"] == "Pending"
        assert status["message"] == missing
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert stalled["status"] == "True" and stalled["message"] == missing
        assert ("event", "MissingReference", missing) in shell.log
        assert not [e for e in shell.log if e[0] == "router"]
        assert ("MetricProvider", "", "shared") in shell.watched

        shell.store.put(
            "MetricProvider",
            {
                "metadata": {"name": "shared"},
                "spec": {"prometheus": {"address": "https://prom.monitoring:9090"}},
            },
        )
        shell.worker.obj = copy.deepcopy(shell.rollouts.obj)
        await shell.run()
        assert shell.rollouts.obj["status"]["phase"] == "Progressing"
        assert ("router", 30) in shell.log

    asyncio.run(scenario())


def test_a_metric_provider_vanishing_mid_way_does_not_stall_the_rollout():
    async def scenario() -> None:
        shell = Shell(rollout("Progressing", 30, spec=_named("shared")), weight=30)
        await shell.run()
        assert not [e for e in shell.log if e[0] == "event" and e[1] == "MissingReference"]
        assert shell.rollouts.obj["status"]["phase"] != "Failed"

    asyncio.run(scenario())


# -- supervisor -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "extra", "expected"),
    [
        (None, {}, True),
        ("Progressing", {}, True),
        ("Succeeded", {}, False),
        ("RolledBack", {"segue.dev/retry": "x"}, True),
        ("Succeeded", {"segue.dev/pause": ""}, False),
    ],
)
def test_only_rollouts_with_work_get_a_worker(phase, extra, expected):
    obj = rollout(phase, annotations=extra)
    assert needs_work(obj) is expected


def test_a_deleted_rollout_needs_work_only_while_it_holds_segues_finalizer():
    obj = rollout("Succeeded")
    obj["metadata"]["deletionTimestamp"] = "2026-03-01T12:00:00Z"
    assert needs_work(obj) is True
    obj["metadata"]["finalizers"] = []
    assert needs_work(obj) is False


def test_the_supervisor_wakes_workers_on_referenced_objects_and_ends_finished_ones():
    async def scenario() -> None:
        passes: list[str] = []
        done = asyncio.Event()

        async def reconcile(worker: Worker) -> float | None:
            passes.append(worker.obj["status"].get("phase") or "-")
            supervisor.watch(worker, [("Deployment", "ns", "checkout-v2")])
            done.set()
            return 300.0 if worker.obj["status"].get("phase") != "Succeeded" else None

        supervisor = Supervisor(reconcile)
        supervisor.rollout_event("ADDED", rollout("Progressing", 30))
        await asyncio.wait_for(done.wait(), 5)
        done.clear()
        # Something a Rollout references changed: its worker runs at once.
        supervisor.object_event(("Deployment", "ns", "checkout-v2"))
        await asyncio.wait_for(done.wait(), 5)
        assert passes == ["Progressing", "Progressing"]
        # Unrelated objects wake nobody.
        done.clear()
        supervisor.object_event(("Deployment", "ns", "other"))
        await asyncio.sleep(0.05)
        assert not done.is_set()
        # A newer Rollout that is finished: the worker ends and forgets its watches.
        newer = rollout("Succeeded", 100, annotations={"segue.dev/x": "1"})
        newer["metadata"]["resourceVersion"] = "11"
        supervisor.rollout_event("MODIFIED", newer)
        await asyncio.wait_for(done.wait(), 5)
        await until(lambda: not supervisor.workers, within=5)
        assert supervisor.workers == {}
        # An older copy (a late watch event) never replaces a newer one.
        worker = Worker(("ns", "checkout"), newer)
        assert worker.update(rollout("Progressing", 30)) is False

    asyncio.run(scenario())


def test_a_weight_the_status_already_records_is_asked_again_before_any_status_write():
    async def scenario() -> None:
        obj = rollout("Progressing", 20, targetWeight=30, step=0)
        shell = Shell(obj, weight=20)
        await shell.run()
        kinds = shell.kinds()
        assert ("router", 30) in shell.log
        if "status" in kinds:
            assert kinds.index("router") < kinds.index("status")
        # Raising traffic is ordinary progress: the normal lane.
        assert shell.router.lanes == [False]

    asyncio.run(scenario())


def test_raising_the_weight_writes_the_router_first_and_confirms_in_one_status_write():
    async def scenario() -> None:
        plan = [{"pause": {"duration": "1s"}}, {"setWeight": 30}, {"pause": {"duration": "1h"}}]
        obj = rollout(
            "Progressing",
            0,
            spec=spec_dict(steps=plan),
            step=0,
            stepStartedAt="2026-03-01T11:00:00Z",
        )
        shell = Shell(obj, weight=0)
        shell.router.atomic = True
        await shell.run()
        assert shell.kinds() == ["router", "status", "event"]
        status = shell.rollouts.obj["status"]
        assert (status["targetWeight"], status["step"]) == (30, 2)
        assert status["history"][-1]["event"] == "WeightSet"

    asyncio.run(scenario())


def test_raising_the_weight_on_a_slow_router_records_the_target_as_well():
    async def scenario() -> None:
        spec = spec_dict(steps=[{"pause": {"duration": "1s"}}, {"setWeight": 30}, {"pause": {}}])
        obj = rollout("Progressing", 0, spec=spec, step=0, stepStartedAt="2026-03-01T11:00:00Z")
        shell = Shell(obj, weight=0)  # pods to start: the router reads 30 only later
        await shell.run()
        assert shell.kinds()[:2] == ["router", "status"]
        assert shell.rollouts.obj["status"]["targetWeight"] == 30

    asyncio.run(scenario())


def test_the_router_s_reading_on_its_way_to_the_weight_asked_for_is_not_written():
    async def scenario() -> None:
        spec = spec_dict(steps=[{"pause": {"duration": "1s"}}, {"setWeight": 30}, {"pause": {}}])
        obj = rollout("Progressing", 0, spec=spec, step=0, stepStartedAt="2026-03-01T11:00:00Z")
        shell = Shell(obj, weight=0)  # a share of ready pods: it moves with every pod
        await shell.run()
        assert shell.rollouts.obj["status"]["targetWeight"] == 30
        shell.log.clear()
        shell.router.weight = 15
        await shell.run()
        assert shell.asked == 30  # the router is built with the weight status asked for
        assert "status" not in shell.kinds()  # asked again, nothing decided
        assert ("router", 30) in shell.log
        shell.router.weight = 30
        await shell.run()
        assert "status" in shell.kinds()
        status = shell.rollouts.obj["status"]
        assert (status["weight"], status["step"]) == (30, 2)
        assert "WeightSet" in [entry["event"] for entry in status["history"]]

    asyncio.run(scenario())


def test_a_rollback_s_progress_is_written_with_every_reading():
    async def scenario() -> None:
        rollback = {"mode": "immediate", "fromWeight": 50, "startedAt": "2026-03-01T11:59:00Z",
                    "reason": "GateFailed"}  # fmt: skip
        obj = rollout("RollingBack", 50, rollback=rollback)
        obj["status"]["targetWeight"] = 0
        shell = Shell(obj, weight=50)
        await shell.run()
        shell.log.clear()
        shell.router.weight = 20
        await shell.run()
        assert "status" in shell.kinds()
        assert shell.rollouts.obj["status"]["weight"] == 20

    asyncio.run(scenario())


def test_a_rollout_that_starts_at_once_gets_no_pending_event():
    async def scenario() -> None:
        shell = Shell(rollout(), weight=0)
        await shell.run()
        reasons = [entry[1] for entry in shell.log if entry[0] == "event"]
        assert reasons[0] == "Progressing" and "Pending" not in reasons
        history = [h["event"] for h in shell.rollouts.obj["status"]["history"]]
        assert history[:2] == ["Pending", "Progressing"]  # the audit trail keeps both

    asyncio.run(scenario())


def test_the_last_weight_confirmed_with_success_is_one_event():
    async def scenario() -> None:
        plan = [{"setWeight": 30}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]
        obj = rollout(
            "Progressing", 30, spec=spec_dict(steps=plan), stepStartedAt="2026-03-01T11:00:00Z"
        )
        shell = Shell(obj, weight=30)
        shell.router.atomic = True
        await shell.run()
        assert shell.rollouts.obj["status"]["phase"] == "Succeeded"
        reasons = [entry[1] for entry in shell.log if entry[0] == "event"]
        assert reasons == ["Succeeded"]  # "all traffic on the new version" says it
        history = [h["event"] for h in shell.rollouts.obj["status"]["history"]]
        assert history[-2:] == ["WeightSet", "Succeeded"]

    asyncio.run(scenario())


def test_a_rollout_that_waits_says_so_with_a_pending_event():
    async def scenario() -> None:
        shell = Shell(rollout(), weight=0)
        del shell.store.deployments[("ns", "checkout-v2")]  # its new version is missing
        await shell.run()
        reasons = [entry[1] for entry in shell.log if entry[0] == "event"]
        assert "Pending" in reasons

    asyncio.run(scenario())


def test_the_store_hashes_a_deployments_template_only_when_its_spec_changes():
    def body(generation: int, image: str, ready: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": "d", "generation": generation},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": image}]}}},
            "status": {"readyReplicas": ready, "updatedReplicas": ready},
        }

    store = Store()
    store.put("Deployment", body(1, "app:v1", 0))
    first = store.deployment("ns", "d")
    store.put("Deployment", body(1, "app:v1", 2))  # a status update
    ready = store.deployment("ns", "d")
    assert first is not None and ready is not None
    assert (ready.ready, ready.template_hash) == (2, first.template_hash)
    store.put("Deployment", body(2, "app:v2", 2))  # a new image: a new spec generation
    changed = store.deployment("ns", "d")
    assert changed is not None and changed.template_hash != first.template_hash
    assert changed.template_hash == DeploymentState.from_body(body(2, "app:v2", 0)).template_hash


def test_only_a_change_segue_reads_wakes_the_rollouts_of_an_object():
    def deployment(ready: int, available: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": "d", "generation": 1},
            "spec": {"replicas": 2, "template": {}},
            "status": {"readyReplicas": ready, "updatedReplicas": 2,
                       "availableReplicas": available},
        }  # fmt: skip

    store = Store()
    store.put("Deployment", deployment(1, 0))
    assert store.take_change("Deployment", "ns", "d")
    assert not store.take_change("Deployment", "ns", "d")  # taken once
    store.put("Deployment", deployment(1, 1))  # available replicas: Segue does not read it
    assert not store.take_change("Deployment", "ns", "d")
    store.put("Deployment", deployment(2, 1))  # a pod became ready
    assert store.take_change("Deployment", "ns", "d")
    scaled = deployment(2, 1)
    scaled["metadata"]["generation"] = 2  # a scale write's event: same template, same counts
    store.put("Deployment", scaled)
    assert not store.take_change("Deployment", "ns", "d")

    route: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "r", "resourceVersion": "5"},
        "spec": {"rules": [{"backendRefs": [{"name": "d", "weight": 100}]}]},
    }
    store.put("HTTPRoute", route)  # the answer to Segue's own write...
    store.put("HTTPRoute", copy.deepcopy(route))  # ...then its watch event: it still wakes
    assert store.take_change("HTTPRoute", "ns", "r")
    assert not store.take_change("HTTPRoute", "ns", "r")
    assert store.take_change("MetricProvider", "", "p")  # no summary: always wakes


def test_a_scale_answer_sets_the_count_until_a_newer_event_and_an_older_one_is_ignored():
    def deployment(version: int, replicas: int, ready: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": "d", "generation": version,
                         "resourceVersion": str(version)},
            "spec": {"replicas": replicas, "template": {}},
            "status": {"readyReplicas": ready, "updatedReplicas": ready},
        }  # fmt: skip

    def scale(version: int, replicas: int) -> dict[str, Any]:
        return {
            "kind": "Scale",
            "metadata": {"namespace": "ns", "name": "d", "resourceVersion": str(version)},
            "spec": {"replicas": replicas},
        }

    store = Store()
    store.put("Scale", scale(3, 2))  # a Deployment the store does not know: nothing to set
    assert store.deployment("ns", "d") is None
    store.put("Deployment", deployment(5, 1, 1))
    assert store.take_change("Deployment", "ns", "d")
    store.put("Scale", scale(6, 3))  # Segue's write, answered before its watch event
    state = store.deployment("ns", "d")
    assert state is not None and (state.desired, state.ready) == (3, 1)
    # Its writer acted on it already, and the pods coming up will wake the Rollout.
    assert not store.take_change("Deployment", "ns", "d")
    store.put("Deployment", deployment(5, 1, 1))  # an event from before the write, late
    state = store.deployment("ns", "d")
    assert state is not None and state.desired == 3
    store.put("Deployment", deployment(7, 3, 3))  # the watch catches up
    state = store.deployment("ns", "d")
    assert state is not None and (state.desired, state.ready) == (3, 3)
    store.put("Scale", scale(6, 3))  # a late answer does not go back either
    assert store.deployment("ns", "d") == state
    assert store.take_change("Deployment", "ns", "d")  # the pods came up
    store.put("Deployment", deployment(9, 3, 2))  # one pod will not start
    assert store.take_change("Deployment", "ns", "d")
    store.put("Scale", scale(10, 2))  # a count the ready pods already match: nothing
    assert store.take_change("Deployment", "ns", "d")  # else will change, so it wakes now
    store.put("Deployment", {})  # an answer that could not be read keeps nothing
    assert set(store.deployments) == {("ns", "d")}


UNRESOLVABLE = {"gates": [{"name": "t", "query": 'up{t="{{ tenant }}"}', "max": 1}]}
NAMED = "invalid spec: spec.analysis.gates[0].query: unknown placeholder {{ tenant }}"


def test_a_new_rollout_whose_gates_cannot_resolve_fails_before_any_traffic_moves():
    async def scenario() -> None:
        spec = spec_dict(steps=[{"setWeight": 30}], analysis=UNRESOLVABLE)
        shell = Shell(rollout(spec=spec), weight=0)
        await shell.run()
        status = shell.rollouts.obj["status"]
        assert status["phase"] == "Failed" and status["message"].startswith(NAMED)
        assert not [e for e in shell.log if e[0] == "router"]
        assert shell.gates.runs == 0
        assert [e for e in shell.log if e[0] == "event" and e[1] == "Failed"]

    asyncio.run(scenario())


def test_a_rollout_under_way_edited_into_an_unresolvable_gate_stops_where_it_is():
    async def scenario() -> None:
        spec = spec_dict(steps=[{"setWeight": 30}, {"pause": {}}], analysis=UNRESOLVABLE)
        obj = rollout("AwaitingApproval", 30, annotations={"segue.dev/approve": "1"}, spec=spec)
        obj["metadata"]["generation"] = 2
        shell = Shell(obj, weight=30)
        await shell.run()
        status = shell.rollouts.obj["status"]
        assert status["phase"] == "Failed" and status["message"].startswith(NAMED)
        assert status["weight"] == 30 and not [e for e in shell.log if e[0] == "router"]
        assert status.get("approvedStep") is None  # approvals wait for a spec that runs

    asyncio.run(scenario())


def test_an_abort_still_returns_traffic_when_the_gates_cannot_resolve():
    async def scenario() -> None:
        spec = spec_dict(steps=[{"setWeight": 30}, {"pause": {}}], analysis=UNRESOLVABLE)
        obj = rollout("AwaitingApproval", 30, annotations={"segue.dev/abort": "x"}, spec=spec)
        shell = Shell(obj, weight=30)
        await shell.run()
        assert ("router", 0) in shell.log
        assert shell.rollouts.obj["status"]["phase"] == "Failed"

    asyncio.run(scenario())


def test_a_second_approval_set_while_the_first_is_handled_is_not_removed():
    async def scenario() -> None:
        obj = rollout("AwaitingApproval", 30, annotations={"segue.dev/approve": "1"})
        shell = Shell(obj, weight=30)
        real_patch = shell.rollouts.patch_status

        async def patch_then_approve_again(*args: Any) -> dict[str, Any]:
            updated = await real_patch(*args)
            # Someone sets a new value between the status write and the removal.
            meta = shell.rollouts.obj["metadata"]
            meta["annotations"]["segue.dev/approve"] = "2"
            shell.rollouts._bump()
            return updated

        shell.rollouts.patch_status = patch_then_approve_again  # type: ignore[method-assign,assignment]
        await shell.run()
        assert not [e for e in shell.log if e[0] == "annotations"]
        assert shell.rollouts.obj["metadata"]["annotations"] == {"segue.dev/approve": "2"}

    asyncio.run(scenario())


# -- analysis rounds and holds ----------------------------------------------------------


def _holding_with_round(evaluated_ago_s: float) -> tuple[Shell, asyncio.Task[GateRound]]:
    """At 30 % in a 5 s hold that started NOW, analysis every 30 s, and a round evaluated
    ``evaluated_ago_s`` before NOW that has just completed (the next is on the interval's
    grid, 15 to 45 s away)."""
    spec = spec_dict(
        steps=[{"setWeight": 30}, {"pause": {"duration": "5s"}}, {"setWeight": 60}],
        analysis=analysis(),
    )
    obj = rollout("Progressing", 30, spec=spec, stepStartedAt="2026-03-01T12:00:00Z")
    shell = Shell(obj, weight=30)

    async def earlier() -> GateRound:
        return GateRound(evaluated_at=NOW - timedelta(seconds=evaluated_ago_s), results=())

    task = asyncio.ensure_future(earlier())
    shell.worker.rounds.maybe_start(asyncio.get_running_loop().time(), 30.0, lambda: task)
    return shell, task


def test_a_hold_gets_a_round_of_its_step_just_before_it_ends():
    async def scenario() -> None:
        shell, task = _holding_with_round(evaluated_ago_s=10)
        await task
        wait = await shell.run()
        loop = asyncio.get_running_loop()
        # The interval would bring the next round 30 s from now, 25 s after the hold's end.
        assert shell.worker.rounds.due_in(loop.time()) <= 5 - ROUND_LEAD_S
        assert wait is not None and wait <= 5 - ROUND_LEAD_S
        assert shell.gates.runs == 0  # not yet: the round runs near the hold's end

    asyncio.run(scenario())


def test_a_hold_with_a_round_of_its_step_keeps_the_interval():
    async def scenario() -> None:
        shell, task = _holding_with_round(evaluated_ago_s=-1)  # evaluated within the step
        await task
        await shell.run()
        # No round of its own before the hold ends (5 s): the next is the interval's, on
        # its grid at least half an interval (15 s) after the last one started.
        assert shell.worker.rounds.due_in(asyncio.get_running_loop().time()) > 10

    asyncio.run(scenario())


# -- gate readings in status ------------------------------------------------------------


def _waiting_with_gate(last_evaluated_ago_s: float) -> Shell:
    """At 30 % awaiting approval, its gate passing in status as of ``last_evaluated_ago_s``
    before NOW."""
    spec = spec_dict(steps=[{"setWeight": 30}, {"approval": {}}], analysis=analysis())
    written = NOW - timedelta(seconds=last_evaluated_ago_s)
    gate = {
        "name": "errors",
        "value": 0.01,
        "legacyValue": 0.01,
        "bound": "<= 0.05",
        "verdict": "Pass",
        "consecutiveFailures": 0,
        "consecutiveNoData": 0,
        "failureLimit": 1,
        "onFailure": "rollback",
        "lastEvaluated": written.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message": "errors pass",
    }
    obj = rollout(
        "AwaitingApproval", 30, spec=spec, stepStartedAt="2026-03-01T11:50:00Z", gates=[gate]
    )
    return Shell(obj, weight=30)


async def _one_round(shell: Shell, *verdicts: Any) -> None:
    shell.gates.round = gate_round(NOW, *verdicts)
    await shell.run()  # starts the round
    await asyncio.sleep(0)
    shell.log.clear()
    shell.worker.obj = copy.deepcopy(shell.rollouts.obj)
    await shell.run()  # folds it in


def test_a_round_that_only_refreshes_readings_is_not_written():
    async def scenario() -> None:
        shell = _waiting_with_gate(last_evaluated_ago_s=10)
        await _one_round(shell, verdict(value=0.02, message="errors 0.02 <= 0.05"))
        assert "status" not in shell.kinds()

    asyncio.run(scenario())


def test_old_readings_alone_are_not_written_either():
    async def scenario() -> None:
        shell = _waiting_with_gate(last_evaluated_ago_s=3600)
        await _one_round(shell, verdict(value=0.02))
        assert "status" not in shell.kinds()
        assert shell.rollouts.obj["status"]["gates"][0]["value"] != 0.02

    asyncio.run(scenario())


def test_fresh_readings_go_with_the_next_write():
    async def scenario() -> None:
        shell = _waiting_with_gate(last_evaluated_ago_s=3600)
        await _one_round(shell, verdict(value=0.02))
        shell.rollouts.obj["metadata"]["annotations"] = {"segue.dev/approve": "x"}
        shell.worker.obj = copy.deepcopy(shell.rollouts.obj)
        await shell.run()
        assert "status" in shell.kinds()
        assert shell.rollouts.obj["status"]["gates"][0]["value"] == 0.02

    asyncio.run(scenario())


def test_a_failing_round_is_written_at_once():
    async def scenario() -> None:
        shell = _waiting_with_gate(last_evaluated_ago_s=10)
        await _one_round(shell, verdict(result="Fail", value=0.5, limit=3))
        assert "status" in shell.kinds()
        assert shell.rollouts.obj["status"]["gates"][0]["consecutiveFailures"] == 1

    asyncio.run(scenario())


def test_a_failing_gate_writes_its_rollback_to_status_before_the_router():
    async def scenario() -> None:
        # The failed round lives only in memory: the status must say RollingBack before
        # traffic moves, or a restart in between would find nothing asking for it.
        shell = _waiting_with_gate(last_evaluated_ago_s=10)
        await _one_round(shell, verdict(result="Fail", value=0.5))
        kinds = shell.kinds()
        assert ("router", 0) in shell.log
        assert kinds.index("status") < kinds.index("router")
        assert shell.rollouts.obj["status"]["phase"] == "RollingBack"

    asyncio.run(scenario())


def _abort_after_success(read: Any) -> Shell:
    shell = Shell(
        rollout("Succeeded", 100, annotations={"segue.dev/abort": "bad"}, legacyReplicas=3),
        weight=100,
    )
    shell.reconciler.read_deployment = read
    return shell


def test_an_abort_after_success_reads_the_legacy_deployment_and_refuses_when_it_is_gone():
    """The watch has not yet told the store that the legacy Deployment was deleted: the
    one read past it finds it gone, and no traffic goes to pods on their way out."""
    reads: list[tuple[str, str]] = []

    async def gone(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append((namespace, name))
        return None

    async def scenario() -> None:
        shell = _abort_after_success(gone)
        await shell.run()
        assert reads == [("ns", "checkout-v1")]
        assert "router" not in shell.kinds()
        assert shell.store.deployment("ns", "checkout-v1") is None
        status = shell.rollouts.obj["status"]
        assert status["phase"] == "Succeeded"
        ignored = [h for h in status["history"] if h["event"] == "AnnotationIgnored"]
        assert "checkout-v1 no longer exists" in ignored[-1]["reason"]
        # Acted on: the next pass reads nothing more.
        shell.worker.obj = copy.deepcopy(shell.rollouts.obj)
        await shell.run()
        assert len(reads) == 1

    asyncio.run(scenario())


def test_an_abort_after_success_goes_ahead_when_the_read_finds_the_legacy_or_fails():
    async def present(namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name, "namespace": namespace}}

    async def failing(namespace: str, name: str) -> dict[str, Any] | None:
        raise ApiException(status=500, reason="Internal Server Error")

    async def scenario(read: Any) -> None:
        shell = _abort_after_success(read)
        await shell.run()
        assert ("router", 0) in shell.log  # the store decides, as without the read
        assert shell.router.lanes == [True]
        assert shell.rollouts.obj["status"]["phase"] == "RollingBack"

    asyncio.run(scenario(present))
    asyncio.run(scenario(failing))


def test_only_an_abort_of_a_succeeded_rollout_reads_past_the_store():
    reads: list[str] = []

    async def read(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return None

    async def scenario() -> None:
        shell = Shell(
            rollout("AwaitingApproval", 30, annotations={"segue.dev/abort": "bad"}), weight=30
        )
        shell.reconciler.read_deployment = read
        await shell.run()
        shell = Shell(rollout("Succeeded", 100), weight=100)
        shell.reconciler.read_deployment = read
        await shell.run()
        assert reads == []

    asyncio.run(scenario())
