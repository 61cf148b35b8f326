"""The Migration engine: waves in order, approvals, bakes, rollback scopes, the log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segue.api.migration import MigrationSpec, MigrationStatus
from segue.api.status import HistoryEntry
from segue.engine.migration import (
    AbortMember,
    MemberView,
    MigrationDecision,
    decide_migration,
    owners,
    resolve,
)
from segue.engine.types import ClearAnnotation, EmitEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAME = "shop-v2"


def spec(scope: str = "service", **extra: Any) -> MigrationSpec:
    waves = extra.pop(
        "waves",
        [
            {"name": "low", "rollouts": ["catalog", "search"]},
            {"name": "medium", "rollouts": ["cart"]},
            {"name": "critical", "rollouts": ["payments"]},
        ],
    )
    return MigrationSpec.model_validate({"rollbackScope": scope, "waves": waves, **extra})


def views(**phases: str | None) -> dict[str, MemberView]:
    return {
        n: MemberView(name=n, phase=p, weight=100 if p == "Succeeded" else 0)
        for n, p in phases.items()
    }


ALL_PENDING = {"catalog": "Pending", "search": "Pending", "cart": "Waiting", "payments": "Waiting"}


def run(
    sp: MigrationSpec,
    status: MigrationStatus | None,
    members: Mapping[str, MemberView],
    now: datetime = T0,
    annotations: Mapping[str, str] | None = None,
) -> MigrationDecision:
    return decide_migration(NAME, sp, status, members, now, annotations or {}, generation=1)


def events(d: MigrationDecision) -> list[tuple[str, str]]:
    return [(a.reason, a.message) for a in d.actions if isinstance(a, EmitEvent)]


def aborts(d: MigrationDecision) -> list[str]:
    return [a.name for a in d.actions if isinstance(a, AbortMember)]


def cond(d: MigrationDecision, type_: str) -> tuple[str, str]:
    c = d.status.condition(type_)
    assert c is not None
    return c.status, c.reason


def rolled(
    name: str, at: datetime, *, gate: bool = True, reason: str = "gate failed"
) -> MemberView:
    history: tuple[HistoryEntry, ...]
    if gate:
        history = (
            HistoryEntry(
                time=at,
                step=3,
                weight=25,
                event="RollingBack",
                reason=reason,
                actor="gate error-rate",
                gate="error-rate",
                value=0.12,
                legacy_value=0.0,
                bound="<= 0.05",
            ),
        )
    else:
        history = (
            HistoryEntry(time=at, step=3, weight=25, event="Aborted", reason=reason, actor="alice"),
        )
    return MemberView(
        name=name,
        phase="RollingBack",
        weight=25,
        rollback_reason=reason,
        rollback_started_at=at,
        history=history,
    )


# -- waves ------------------------------------------------------------------------------


def test_first_pass_starts_wave_zero_only() -> None:
    d = run(spec(), None, views(**ALL_PENDING))
    assert d.status.phase == "Progressing"
    assert d.status.wave == 0
    assert d.status.waves[0].phase == "Progressing"
    assert d.status.waves[0].started_at == T0
    assert [w.started_at for w in d.status.waves[1:]] == [None, None]
    assert [r for r, _ in events(d)] == ["WaveStarted"]
    assert [m.name for m in d.status.waves[0].members] == ["catalog", "search"]
    assert not aborts(d)
    assert cond(d, "Reconciling") == ("True", "Progressing")
    assert cond(d, "Stalled")[0] == "False"


def test_replay_changes_nothing() -> None:
    sp = spec()
    d1 = run(sp, None, views(**ALL_PENDING))
    d2 = run(sp, d1.status, views(**ALL_PENDING), now=T0 + timedelta(seconds=5))
    assert d2.status == d1.status
    assert d2.actions == ()


def test_next_wave_starts_when_every_member_succeeded() -> None:
    sp = spec()
    d = run(sp, None, views(**ALL_PENDING))
    d = run(
        sp,
        d.status,
        views(catalog="Succeeded", search="Progressing", cart="Waiting", payments="Waiting"),
    )
    assert d.status.wave == 0
    assert "search (Progressing)" in (d.status.message or "")
    now = T0 + timedelta(minutes=1)
    d = run(
        sp,
        d.status,
        views(catalog="Succeeded", search="Succeeded", cart="Waiting", payments="Waiting"),
        now,
    )
    assert d.status.wave == 1
    assert d.status.waves[0].phase == "Succeeded"
    assert d.status.waves[1].started_at == now
    assert [r for r, _ in events(d)] == ["WaveSucceeded", "WaveStarted"]


def test_last_wave_succeeds_the_migration() -> None:
    sp = spec()
    d = run(sp, None, views(**ALL_PENDING))
    done = views(catalog="Succeeded", search="Succeeded", cart="Succeeded", payments="Succeeded")
    d = run(sp, d.status, done)
    assert d.status.phase == "Succeeded"
    assert [w.phase for w in d.status.waves] == ["Succeeded"] * 3
    assert cond(d, "Ready") == ("True", "Succeeded")
    assert cond(d, "Reconciling")[0] == "False"
    assert ("Succeeded", f"Migration {NAME}: all 3 waves succeeded") in events(d)
    assert run(sp, d.status, done).actions == ()


def test_bake_holds_the_next_wave_until_it_passes() -> None:
    sp = spec(
        waves=[
            {"name": "low", "rollouts": ["a"], "bakeTime": "5m"},
            {"name": "high", "rollouts": ["b"]},
        ]
    )
    d = run(sp, None, views(a="Pending", b="Waiting"))
    d = run(sp, d.status, views(a="Succeeded", b="Waiting"))
    assert d.status.phase == "Baking"
    assert d.status.waves[0].bake_until == T0 + timedelta(minutes=5)
    assert d.requeue_after == 300
    later = T0 + timedelta(minutes=4)
    d = run(sp, d.status, views(a="Succeeded", b="Waiting"), later)
    assert d.status.phase == "Baking" and d.status.wave == 0
    assert d.requeue_after == 60
    d = run(sp, d.status, views(a="Succeeded", b="Waiting"), T0 + timedelta(minutes=5))
    assert d.status.wave == 1 and d.status.phase == "Progressing"


def test_approval_names_the_wave() -> None:
    sp = spec(
        waves=[
            {"name": "low", "rollouts": ["a"]},
            {"name": "high", "rollouts": ["b"], "approval": True},
        ]
    )
    d = run(sp, None, views(a="Pending", b="Waiting"))
    d = run(sp, d.status, views(a="Succeeded", b="Waiting"))
    assert d.status.phase == "AwaitingApproval"
    assert "segue.dev/approve=1" in (d.status.message or "")
    # A stale or wrong value is ignored, said so, and removed.
    wrong = run(
        sp, d.status, views(a="Succeeded", b="Waiting"), annotations={"segue.dev/approve": "2"}
    )
    assert wrong.status.phase == "AwaitingApproval"
    assert [r for r, _ in events(wrong)] == ["AnnotationIgnored"]
    assert ClearAnnotation("segue.dev/approve") in wrong.actions
    bad = run(
        sp, d.status, views(a="Succeeded", b="Waiting"), annotations={"segue.dev/approve": "\uff11"}
    )
    assert "ASCII digits" in events(bad)[0][1]
    ok = run(
        sp,
        d.status,
        views(a="Succeeded", b="Waiting"),
        annotations={"segue.dev/approve": "1", "segue.dev/approved-by": "alice"},
    )
    assert ok.status.wave == 1 and ok.status.phase == "Progressing"
    assert ("Approved", "wave 1 approved by alice") in events(ok)
    # Replayed before the removal is seen: handled once.
    again = run(
        sp, ok.status, views(a="Succeeded", b="Waiting"), annotations={"segue.dev/approve": "1"}
    )
    assert [a for a in again.actions if isinstance(a, EmitEvent)] == []
    assert ClearAnnotation("segue.dev/approve") in again.actions


def test_selector_members_and_problems() -> None:
    sp = spec(
        waves=[
            {"name": "low", "selector": {"matchLabels": {"risk": "low"}}},
            {"name": "high", "rollouts": ["b", "ghost"]},
        ]
    )
    members = {
        "a": MemberView(name="a", labels={"risk": "low"}),
        "b": MemberView(name="b", labels={"risk": "low"}),
        "c": MemberView(name="c", labels={"risk": "high"}),
    }
    m = resolve(NAME, sp, members)
    assert m.waves == (("a", "b"), ("ghost",))  # missing: kept, so its wave cannot succeed
    assert any("Rollout b is in waves low and high" in p for p in m.problems)
    assert any("Rollout ghost (wave high) not found" in p for p in m.problems)
    d = run(sp, None, members)
    assert d.status.phase == "Pending"
    assert cond(d, "Stalled") == ("True", "InvalidMembers")
    assert [r for r, _ in events(d)] == ["InvalidMembers"]
    assert "ghost" not in events(d)[0][1]  # a missing member: the condition only
    assert run(sp, d.status, members).actions == ()


def test_a_rollout_belongs_to_the_oldest_migration() -> None:
    first = spec(waves=[{"name": "w", "rollouts": ["a"]}])
    second = spec(waves=[{"name": "w", "selector": {"matchLabels": {"team": "x"}}}])
    labels = {"a": {"team": "x"}, "b": {"team": "x"}}
    owner = owners([("first", first), ("second", second)], labels)
    assert owner == {"a": "first", "b": "second"}
    members = {n: MemberView(name=n, labels=labels[n], owner=owner[n]) for n in labels}
    m = resolve("second", second, members)
    assert m.waves == (("b",),)
    assert "already belongs to Migration first" in m.problems[0]


# -- rollbacks --------------------------------------------------------------------------


def _in_wave_one(sp: MigrationSpec) -> MigrationStatus:
    d = run(sp, None, views(**ALL_PENDING))
    d = run(
        sp,
        d.status,
        views(catalog="Succeeded", search="Succeeded", cart="Progressing", payments="Waiting"),
    )
    assert d.status.wave == 1
    return d.status


def test_service_scope_holds_and_resumes_after_retry() -> None:
    sp = spec("service")
    status = _in_wave_one(sp)
    at = T0 + timedelta(minutes=3)
    members = {
        **views(catalog="Succeeded", search="Succeeded", payments="Waiting"),
        "cart": rolled("cart", at),
    }
    d = run(sp, status, members, at)
    assert d.status.phase == "Held"
    assert cond(d, "Stalled") == ("True", "DependencyRolledBack")
    rb = d.status.rollbacks[0]
    assert (rb.id, rb.scope, rb.members, rb.outcome) == ("rb-1", "service", ["cart"], "InProgress")
    assert (rb.trigger.gate, rb.trigger.value, rb.trigger.bound) == ("error-rate", 0.12, "<= 0.05")
    assert rb.initiated_at == at
    assert [r for r, _ in events(d)] == ["RollbackStarted", "DependencyRolledBack"]
    assert not aborts(d)
    assert run(sp, d.status, members, at).actions == ()
    done = {**members, "cart": replace(members["cart"], phase="RolledBack", weight=0)}
    d = run(sp, d.status, done, at + timedelta(seconds=30))
    assert d.status.rollbacks[0].outcome == "Completed"
    assert d.status.phase == "Held"
    assert [r for r, _ in events(d)] == ["RollbackCompleted"]
    # Retried and successful: the Migration goes on; no new log entry.
    again = {**done, "cart": MemberView(name="cart", phase="Succeeded", weight=100)}
    d = run(sp, d.status, again, at + timedelta(minutes=5))
    assert d.status.wave == 2 and d.status.phase == "Progressing"
    assert len(d.status.rollbacks) == 1


def test_wave_scope_aborts_every_member_of_the_wave_including_succeeded() -> None:
    sp = spec("wave")
    d = run(sp, None, views(**ALL_PENDING))
    at = T0 + timedelta(minutes=1)
    members = {
        **views(catalog="Succeeded", cart="Waiting", payments="Waiting"),
        "search": rolled("search", at),
    }
    d = run(sp, d.status, members, at)
    rb = d.status.rollbacks[0]
    assert rb.members == ["search", "catalog"]
    assert d.status.phase == "RollingBack"
    assert aborts(d) == ["catalog"]
    value = next(a.value for a in d.actions if isinstance(a, AbortMember))
    assert value.startswith(
        f"migration {NAME} rollback rb-1 (wave scope): search: gate error-rate 0.12"
    )
    # The annotation is on the member now: nothing to write again.
    seen = {**members, "catalog": replace(members["catalog"], abort=value)}
    assert run(sp, d.status, seen, at).actions == ()
    # The member took it: RollingBack, annotation removed; no second log entry.
    taking = {
        **members,
        "catalog": MemberView(
            name="catalog",
            phase="RollingBack",
            weight=100,
            rollback_started_at=at + timedelta(seconds=1),
        ),
    }
    d2 = run(sp, d.status, taking, at + timedelta(seconds=2))
    assert d2.actions == () and len(d2.status.rollbacks) == 1
    finished = {
        **taking,
        "catalog": replace(taking["catalog"], phase="RolledBack", weight=0),
        "search": replace(members["search"], phase="RolledBack", weight=0),
    }
    d3 = run(sp, d2.status, finished, at + timedelta(seconds=9))
    assert d3.status.rollbacks[0].outcome == "Completed"
    assert d3.status.phase == "RolledBack"
    assert d3.status.waves[0].phase == "RolledBack"
    assert d3.status.wave == 0 and d3.status.waves[1].started_at is None
    assert cond(d3, "Stalled") == ("True", "RolledBack")
    assert run(sp, d3.status, finished, at + timedelta(minutes=9)).actions == ()


def test_crash_between_status_and_annotations_rewrites_only_the_missing() -> None:
    sp = spec("wave", waves=[{"name": "w", "rollouts": ["a", "b", "c", "d"]}])
    d = run(sp, None, views(a="Pending", b="Pending", c="Pending", d="Pending"))
    at = T0 + timedelta(minutes=1)
    members = {**views(b="Succeeded", c="Progressing", d="Progressing"), "a": rolled("a", at)}
    d = run(sp, d.status, members, at)
    assert aborts(d) == ["b", "c", "d"]
    # Crash after the status and b's annotation: b already RollingBack, c untouched, d
    # annotated but not yet handled.
    value = next(x.value for x in d.actions if isinstance(x, AbortMember))
    later = at + timedelta(seconds=2)
    resumed = {
        **members,
        "b": MemberView(name="b", phase="RollingBack", rollback_started_at=later),
        "d": replace(members["d"], abort=value),
    }
    d2 = run(sp, d.status, resumed, later)
    assert aborts(d2) == ["c"]
    assert len(d2.status.rollbacks) == 1


def test_migration_scope_goes_latest_wave_first() -> None:
    sp = spec("migration")
    status = _in_wave_one(sp)
    at = T0 + timedelta(minutes=3)
    members = {
        **views(catalog="Succeeded", search="Succeeded", payments="Waiting"),
        "cart": rolled("cart", at),
    }
    d = run(sp, status, members, at)
    assert d.status.rollbacks[0].members == ["cart", "catalog", "search"]
    assert aborts(d) == []  # cart first: it rolls itself back
    assert d.status.phase == "RollingBack"
    cart_done = {**members, "cart": replace(members["cart"], phase="RolledBack", weight=0)}
    d = run(sp, d.status, cart_done, at + timedelta(seconds=5))
    assert aborts(d) == ["catalog", "search"]
    all_done = {
        **cart_done,
        "catalog": MemberView(
            name="catalog", phase="RolledBack", rollback_started_at=at + timedelta(seconds=6)
        ),
        "search": MemberView(
            name="search", phase="RolledBack", rollback_started_at=at + timedelta(seconds=6)
        ),
    }
    d = run(sp, d.status, all_done, at + timedelta(seconds=9))
    assert d.status.phase == "RolledBack"
    assert [w.phase for w in d.status.waves] == ["RolledBack", "RolledBack", "Pending"]
    assert [r for r, _ in events(d)] == ["RollbackCompleted"]


def test_refused_abort_fails_the_rollback_with_the_reason() -> None:
    sp = spec("wave", waves=[{"name": "w", "rollouts": ["a", "b"]}])
    d = run(sp, None, views(a="Pending", b="Pending"))
    at = T0 + timedelta(minutes=1)
    members = {
        "a": rolled("a", at, gate=False, reason="bad"),
        "b": MemberView(name="b", phase="Succeeded"),
    }
    d = run(sp, d.status, members, at)
    assert d.status.rollbacks[0].trigger.actor == "alice"
    value = next(x.value for x in d.actions if isinstance(x, AbortMember))
    ignored = HistoryEntry(
        time=at + timedelta(seconds=1),
        step=9,
        weight=100,
        event="AnnotationIgnored",
        reason=f"segue.dev/abort={value!r} ignored: the legacy Deployment b-v1 no longer exists",
    )
    refused = {**members, "b": MemberView(name="b", phase="Succeeded", history=(ignored,))}
    d = run(sp, d.status, refused, at + timedelta(seconds=2))
    rb = d.status.rollbacks[0]
    assert rb.outcome == "Failed"
    assert "legacy Deployment b-v1 no longer exists" in (rb.message or "")
    assert d.status.phase == "Failed"
    assert [r for r, _ in events(d)] == ["RollbackFailed"]
    assert aborts(d) == []


def test_log_is_bounded_and_ids_keep_increasing() -> None:
    sp = spec("service", waves=[{"name": "w", "rollouts": ["a"]}])
    d = run(sp, None, views(a="Pending"))
    status = d.status
    for n in range(25):
        at = T0 + timedelta(minutes=n + 1)
        d = run(sp, status, {"a": rolled("a", at)}, at)
        status = d.status
    assert len(status.rollbacks) == 20
    assert status.rollbacks[-1].id == "rb-25"
    assert status.rollbacks[0].id == "rb-6"


PHASES = st.sampled_from(
    [None, "Pending", "Waiting", "Progressing", "Succeeded", "RollingBack", "RolledBack", "Failed"]
)


@settings(max_examples=150, deadline=None)
@given(
    scope=st.sampled_from(["service", "wave", "migration"]),
    steps=st.lists(st.tuples(PHASES, PHASES, PHASES, PHASES), min_size=1, max_size=6),
)
def test_replay_is_idempotent_and_never_aborts_a_member_twice(
    scope: str, steps: list[tuple[str | None, ...]]
) -> None:
    sp = spec(scope)
    status: MigrationStatus | None = None
    now = T0
    names = ["catalog", "search", "cart", "payments"]
    for phases in steps:
        now += timedelta(minutes=1)
        members = {
            n: MemberView(
                name=n,
                phase=p,
                rollback_started_at=now if p in ("RollingBack", "RolledBack") else None,
            )
            for n, p in zip(names, phases, strict=True)
        }
        d = run(sp, status, members, now)
        replay = run(sp, d.status, members, now)
        assert replay.status == d.status
        assert [a for a in replay.actions if not isinstance(a, AbortMember)] == []
        assert set(aborts(replay)) <= set(aborts(d))
        for name in aborts(d):
            assert members[name].phase not in ("RollingBack", "RolledBack")
        assert len(d.status.rollbacks) <= 20
        status = d.status
