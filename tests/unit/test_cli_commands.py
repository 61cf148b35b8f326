from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from segue.cli import commands
from segue.cli.errors import CliError
from segue.cli.kube import Conflict, Obj
from segue.cli.rollout import RolloutView
from segue.engine.annotations import ABORT, APPROVE, PAUSE, PROMOTE, RETRY
from tests.unit.cli_samples import rollout, view

TOKEN = "2026-03-01T12:10:00.123456Z"


def _refused(fn: Any, *args: Any) -> str:
    with pytest.raises(CliError) as e:
        fn(*args)
    assert e.value.exit_code == 1
    return e.value.message


# --- approve ------------------------------------------------------------------------------


def test_approve_names_the_waiting_step() -> None:
    change = commands.check_approve(view(phase="AwaitingApproval", step=4))
    assert change.annotations == {APPROVE: "4"}
    assert change.message == (
        "rollout shop/checkout: approved step 4 (approval before setWeight 50)"
    )


def test_approve_while_progressing_is_refused_and_points_at_the_next_approval() -> None:
    message = _refused(commands.check_approve, view(phase="Progressing", step=2))
    assert message == (
        "rollout shop/checkout is Progressing at step 2; nothing awaits approval "
        "(the next approval is step 4)"
    )


@pytest.mark.parametrize("phase", ["Succeeded", "RolledBack", "RollingBack", "Pending"])
def test_approve_outside_the_plan_is_refused(phase: str) -> None:
    assert "nothing awaits approval" in _refused(commands.check_approve, view(phase=phase))


def test_approve_without_status_is_refused() -> None:
    v = RolloutView.from_object({**rollout(), "status": {}})
    assert "has no status yet" in _refused(commands.check_approve, v)


def test_approve_at_an_approval_step_while_paused() -> None:
    change = commands.check_approve(view(phase="Paused", pausedReason="Manual", step=4))
    assert change.annotations == {APPROVE: "4"}


def test_approve_step_guard() -> None:
    v = view(phase="AwaitingApproval", step=4)
    assert commands.check_approve(v, 4).annotations == {APPROVE: "4"}
    assert "waits for approval of step 4, not step 5" in _refused(commands.check_approve, v, 5)


def test_approve_twice_writes_nothing() -> None:
    done = view(phase="AwaitingApproval", step=4, approvedStep=4)
    assert commands.check_approve(done).annotations == {}
    assert "already approved" in commands.check_approve(done).message
    pending = view(phase="AwaitingApproval", step=4, annotations={APPROVE: "4"})
    assert commands.check_approve(pending).annotations == {}
    # A stale approval of an earlier step is replaced by one of this step.
    stale = view(phase="AwaitingApproval", step=4, annotations={APPROVE: "2"})
    assert commands.check_approve(stale).annotations == {APPROVE: "4"}


def test_approve_for_a_pause_without_duration() -> None:
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]
    change = commands.check_approve(view(steps=steps, phase="AwaitingApproval", step=1))
    assert change.message.endswith("approved step 1 (pause (until approved) before setWeight 50)")


# --- abort --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phase", ["Pending", "Waiting", "Progressing", "Paused", "AwaitingApproval"]
)
def test_abort_while_active(phase: str) -> None:
    change = commands.check_abort(view(phase=phase), "p99 doubled")
    assert change.annotations == {ABORT: "p99 doubled"}
    assert change.message == (
        "rollout shop/checkout: aborted at step 3 (25%): p99 doubled; "
        "the operator rolls back (graceful)"
    )


@pytest.mark.parametrize("phase", ["RolledBack", "Failed"])
def test_abort_when_finished_is_refused(phase: str) -> None:
    message = _refused(commands.check_abort, view(phase=phase), "x")
    assert message == f"rollout shop/checkout is {phase}; nothing to abort"


def test_abort_after_success_is_sent() -> None:
    change = commands.check_abort(view(phase="Succeeded"), "errors after the release")
    assert change.annotations == {ABORT: "errors after the release"}
    assert "rolls back (graceful) to the legacy Deployment" in change.message


def test_abort_escalates_a_graceful_rollback_only() -> None:
    rb = {"fromWeight": 25, "startedAt": "2026-03-01T12:00:00Z", "reason": "gate"}
    graceful = view(phase="RollingBack", rollback={**rb, "mode": "graceful"})
    assert "graceful rollback becomes immediate" in commands.check_abort(graceful, "").message
    immediate = view(phase="RollingBack", rollback={**rb, "mode": "immediate"})
    assert "already rolling back" in _refused(commands.check_abort, immediate, "")


# --- retry, pause, resume, promote ----------------------------------------------------------


@pytest.mark.parametrize("phase", ["RolledBack", "Failed"])
def test_retry_after_a_rollback(phase: str) -> None:
    change = commands.check_retry(view(phase=phase), TOKEN)
    assert change.annotations == {RETRY: TOKEN}
    assert "retry requested" in change.message


def test_retry_while_progressing_is_refused() -> None:
    message = _refused(commands.check_retry, view(phase="Progressing"), TOKEN)
    assert message == (
        "rollout shop/checkout is Progressing; retry applies after a rollback "
        "(RolledBack or Failed)"
    )


def test_retry_pending_is_not_repeated_but_a_handled_one_is() -> None:
    pending = view(phase="RolledBack", annotations={RETRY: "earlier"})
    assert commands.check_retry(pending, TOKEN).annotations == {}
    handled = view(
        phase="RolledBack", annotations={RETRY: "earlier"}, handledAnnotations={RETRY: "earlier"}
    )
    assert commands.check_retry(handled, TOKEN).annotations == {RETRY: TOKEN}


def test_pause_and_resume() -> None:
    change = commands.check_pause(view(), "freeze")
    assert change.annotations == {PAUSE: "freeze"}
    assert "paused at step 3 (25%): freeze" in change.message
    paused = view(phase="Paused", pausedReason="Manual", annotations={PAUSE: "freeze"})
    assert commands.check_pause(paused, "freeze").annotations == {}
    resume = commands.check_resume(paused)
    assert resume.annotations == {PAUSE: None}
    assert resume.message == "rollout shop/checkout: resumed (removed segue.dev/pause)"


@pytest.mark.parametrize("phase", ["Succeeded", "RolledBack", "RollingBack"])
def test_pause_when_nothing_moves_is_refused(phase: str) -> None:
    _refused(commands.check_pause, view(phase=phase), "")


def test_resume_without_the_annotation_is_refused() -> None:
    assert "nothing to resume" in _refused(commands.check_resume, view())
    by_gate = view(phase="Paused", pausedReason="GateFailed")
    assert "Paused (GateFailed), not by segue.dev/pause" in _refused(commands.check_resume, by_gate)


@pytest.mark.parametrize("phase", ["Progressing", "Paused", "AwaitingApproval"])
def test_promote_while_stepping(phase: str) -> None:
    change = commands.check_promote(view(phase=phase), TOKEN)
    assert change.annotations == {PROMOTE: TOKEN}
    assert "promoting from step 3 (25%) straight to 100%; gates still apply" in change.message


@pytest.mark.parametrize("phase", ["Pending", "Succeeded", "RollingBack", "RolledBack"])
def test_promote_outside_the_plan_is_refused(phase: str) -> None:
    assert "promote applies while it progresses" in _refused(
        commands.check_promote, view(phase=phase), TOKEN
    )


def test_promote_when_already_promoting_writes_nothing() -> None:
    assert commands.check_promote(view(promoting=True), TOKEN).annotations == {}


# --- apply: read, check, write with a resourceVersion guard ---------------------------------


class FakeRollouts:
    def __init__(self, objects: list[Obj], conflicts: int = 0) -> None:
        self.objects = objects
        self.conflicts = conflicts
        self.patches: list[tuple[dict[str, str | None], str | None]] = []

    def get(self, namespace: str, name: str) -> Obj:
        return self.objects.pop(0) if len(self.objects) > 1 else self.objects[0]

    def patch_annotations(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str | None = None,
    ) -> Obj:
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict("changed")
        self.patches.append((dict(annotations), resource_version))
        return {}


def test_apply_patches_with_the_resource_version_it_checked() -> None:
    fake = FakeRollouts([rollout(phase="AwaitingApproval", step=4)])
    change = commands.apply(fake, "shop", "checkout", commands.check_approve)
    assert fake.patches == [({APPROVE: "4"}, "100")]
    assert change.annotations == {APPROVE: "4"}


def test_apply_rechecks_after_a_conflict() -> None:
    # Between read and write the step advanced past the approval: nothing is written.
    before = rollout(phase="AwaitingApproval", step=4)
    after = rollout(phase="Progressing", step=5)
    fake = FakeRollouts([before, after], conflicts=1)
    with pytest.raises(CliError, match="is Progressing at step 5; nothing awaits approval"):
        commands.apply(fake, "shop", "checkout", commands.check_approve)
    assert fake.patches == []


def test_apply_gives_up_when_the_rollout_keeps_changing() -> None:
    fake = FakeRollouts([rollout(phase="AwaitingApproval", step=4)], conflicts=99)
    with pytest.raises(CliError, match="keeps changing"):
        commands.apply(fake, "shop", "checkout", commands.check_approve)


def test_apply_writes_who_approves_next_to_the_approval() -> None:
    fake = FakeRollouts([rollout(phase="AwaitingApproval", step=4)])
    commands.apply(fake, "shop", "checkout", commands.check_approve, user="alice")
    assert fake.patches == [({APPROVE: "4", "segue.dev/approved-by": "alice"}, "100")]


def test_companions_follow_their_annotation() -> None:
    assert commands.with_companions({PAUSE: "lunch"}, "bob") == {
        PAUSE: "lunch",
        "segue.dev/paused-by": "bob",
    }
    # Resuming removes who paused, whoever resumes.
    assert commands.with_companions({PAUSE: None}, "carol") == {
        PAUSE: None,
        "segue.dev/paused-by": None,
    }
    # Without a user name (the server could not say) the companion is left to the server.
    assert commands.with_companions({ABORT: "x"}, None) == {ABORT: "x"}


def test_an_admission_refusal_is_shown_in_the_policy_s_own_words() -> None:
    import json

    from kubernetes.client.exceptions import ApiException

    from segue.cli.kube import translate

    words = 'user "bob" may not set segue.dev/approve (rollouts.segue.dev "web" ...)'
    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps(
        {
            "message": 'rollouts.segue.dev "web" is forbidden: ValidatingAdmissionPolicy '
            f"'segue-steering' with binding 'segue-steering' denied request: {words}"
        }
    )
    assert translate(e, "rollout shop/web").message == (
        f"rollout shop/web: refused by the API server: {words}"
    )
