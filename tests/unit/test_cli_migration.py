"""``kubectl segue`` for Migrations: the views, approving a wave, and the command line."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest

from segue.cli import commands, render_migration, watch
from segue.cli.errors import CliError
from segue.cli.kube import MIGRATION, ROLLOUT, WatchEvent
from segue.cli.main import build_parser, main
from segue.cli.migration import MigrationView
from segue.engine.annotations import APPROVE
from tests.unit.cli_samples import NOW
from tests.unit.migration_samples import at, member, migration, mview, rolling_back
from tests.unit.test_cli_commands import FakeRollouts


def _fits(lines: list[str], width: int = 80) -> None:
    assert not [line for line in lines if len(line) > width], "\n".join(lines)


def awaiting_wave_2() -> dict[str, Any]:
    """Waves 0 and 1 Succeeded; wave 2 (approval: true) waits for a person."""
    return {
        "phase": "AwaitingApproval",
        "wave": 1,
        "message": "wave 2 (critical) waits for segue.dev/approve=2",
        "waves": [
            {"name": "low", "phase": "Succeeded", "startedAt": at(40), "succeededAt": at(30),
             "members": [member("catalog", "Succeeded", 100)]},
            {"name": "medium", "phase": "Succeeded", "startedAt": at(29), "succeededAt": at(5),
             "members": [member("cart", "Succeeded", 100), member("orders", "Succeeded", 100)]},
            {"name": "critical", "phase": "Pending",
             "members": [member("payments", "Waiting", 0)]},
        ],
    }  # fmt: skip


# --- the live view ----------------------------------------------------------------------------


def test_frame_during_a_wave_scope_rollback() -> None:
    lines = render_migration.migration_frame(mview(), NOW, 80)
    _fits(lines)
    assert lines[0] == "Migration shop/shop-v2" + " " * 38 + "2026-03-01 12:10:00Z"
    text = "\n".join(lines)
    for expected in (
        "Phase     RollingBack",
        "Scope     wave: a member's rollback returns its whole wave to legacy",
        "Wave      1/3 medium",
        "    0  low       Succeeded    succeeded 11:48:00Z, baked until 11:53:00Z",
        "       catalog   Succeeded    [####################] 100%",
        "  > 1  medium    RollingBack  started 11:54:00Z",
        "       cart      RolledBack   [....................]   0%",
        "       orders    RollingBack  [########............]  40%",
        "    2  critical  Pending      starts after approval",
        "       payments  Waiting      [....................]   0%",
        "Rollbacks (last 1 of 1)",
        "  rb-1  wave  InProgress  12:08:00Z",
        "    trigger   cart: gate error-rate = 0.12 (legacy 0), bound <= 0.05; error-rate",
        "              0.12 above 0.05",
        "    members   cart, orders",
    ):
        assert expected in lines, f"{expected!r} not in:\n{text}"
    assert "Approve" not in text  # nothing waits for a person


def test_frame_names_the_wave_to_approve_and_the_command() -> None:
    lines = render_migration.migration_frame(mview(status=awaiting_wave_2()), NOW, 80)
    _fits(lines)
    assert "Approve   kubectl segue approve migration shop-v2 -n shop --wave 2" in lines
    assert "    2  critical  Pending      waiting for approval (segue.dev/approve=2)" in lines


def test_frame_counts_down_a_bake() -> None:
    status = rolling_back()
    status.update(phase="Baking", wave=0, rollbacks=[])
    status["waves"][0].update(phase="Baking", bakeUntil=at(-3.5))
    del status["waves"][0]["succeededAt"]
    status["waves"][1] = {"name": "medium", "phase": "Pending"}
    lines = render_migration.migration_frame(mview(status=status), NOW, 80)
    assert "  > 0  low       Baking       baking until 12:13:30Z, 3m30s left" in lines
    # Before the status lists them, the members come from the spec, without a weight.
    assert "       cart      -            [                    ]    -" in lines
    assert not any(line.startswith("Rollbacks") for line in lines)


def test_frame_of_a_held_migration_shows_why() -> None:
    status = rolling_back()
    status.update(phase="Held", rollbacks=[])
    status["conditions"] = [
        {"type": "Stalled", "status": "True", "reason": "DependencyRolledBack",
         "message": "cart rolled back; wave critical holds", "lastTransitionTime": at(1)},
    ]  # fmt: skip
    lines = render_migration.migration_frame(mview(status=status), NOW, 80)
    assert "Stalled   DependencyRolledBack: cart rolled back; wave critical holds" in lines


def test_frame_without_status_shows_the_spec() -> None:
    lines = render_migration.migration_frame(mview(status={}), NOW, 80)
    text = "\n".join(lines)
    assert "Phase     no status yet (is the operator running?)" in lines
    assert "Wave " not in text
    assert "    1  medium    Pending" in lines
    assert "       orders    -" in text


def test_selector_members_are_shown_until_the_status_lists_them() -> None:
    spec = {"waves": [{"name": "low", "selector": {"matchLabels": {"risk": "low"}}}]}
    lines = render_migration.migration_frame(mview(spec=spec, status={}), NOW, 80)
    assert "       selector  risk=low" in lines
    assert "Scope     service: a member's rollback rolls back only that member; later waves" in (
        lines
    )


def test_a_status_from_a_newer_operator_is_shown_as_far_as_understood() -> None:
    status = rolling_back()
    status["rollbacks"].insert(0, {"id": "rb-0", "scope": "galaxy", "trigger": {"rollout": "x"},
                                   "initiatedAt": at(9)})  # fmt: skip
    status["phase"] = "Teleporting"
    v = mview(status=status)
    assert v.raw_phase == "Teleporting"
    assert [r.id for r in v.status.rollbacks] == ["rb-1"]
    assert v.status_error == "status fields not understood by this CLI: phase, rollbacks[0]"
    lines = render_migration.migration_frame(v, NOW, 80)
    assert "Phase     Teleporting" in lines
    assert "Note      status fields not understood by this CLI: phase, rollbacks[0]" in lines


def test_the_frame_fits_narrow_terminals() -> None:
    _fits(render_migration.migration_frame(mview(), NOW, 50), 50)


# --- the table and the log --------------------------------------------------------------------


def test_table_of_migrations() -> None:
    views = [mview(), mview(name="billing", status=awaiting_wave_2())]
    lines = render_migration.migrations_table(views, NOW, width=100)
    assert lines[0].split() == ["NAME", "PHASE", "WAVE", "DONE", "ROLLBACKS", "AGE", "MESSAGE"]
    assert lines[1].split()[:7] == ["shop-v2", "RollingBack", "1/3", "medium", "1/4", "1", "60m"]
    billing = ["billing", "AwaitingApproval", "1/3", "medium", "3/4", "0", "60m"]
    assert lines[2].split()[:7] == billing
    every = render_migration.migrations_table(views, NOW, width=100, all_namespaces=True)
    assert every[0].startswith("NAMESPACE") and every[1].startswith("shop ")


def test_history_shows_every_rollback_with_times_outcome_and_reason() -> None:
    status = rolling_back()
    status["rollbacks"][0].update(outcome="Completed", completedAt=at(0.5))
    status["rollbacks"].append(
        {"id": "rb-2", "scope": "service", "outcome": "Failed", "initiatedAt": at(0.2),
         "completedAt": at(0), "trigger": {"rollout": "catalog", "actor": "alice",
                                           "reason": "support tickets"},
         "members": ["catalog"],
         "message": "the legacy Deployment catalog-v1 no longer exists; nothing to roll back to"}
    )  # fmt: skip
    lines = render_migration.history_lines(mview(status=status), 80)
    _fits(lines)
    assert lines == [
        "Rollbacks of migration shop/shop-v2 (2, oldest first)",
        "  rb-1  wave  Completed  2026-03-01 12:08:00Z -> 2026-03-01 12:09:30Z (1m30s)",
        "    trigger   cart: gate error-rate = 0.12 (legacy 0), bound <= 0.05; error-rate",
        "              0.12 above 0.05",
        "    members   cart, orders",
        "  rb-2  service  Failed  2026-03-01 12:09:48Z -> 2026-03-01 12:10:00Z (12s)",
        "    trigger   catalog: by alice; support tickets",
        "    members   catalog",
        "    message   the legacy Deployment catalog-v1 no longer exists; nothing to roll",
        "              back to",
    ]
    assert render_migration.history_lines(mview(status={}), 80) == [
        "migration shop/shop-v2 has no rollbacks"
    ]


# --- approve migration NAME [--wave N] ---------------------------------------------------------


def test_approve_the_waiting_wave() -> None:
    change = commands.check_approve_migration(mview(status=awaiting_wave_2()))
    assert change.annotations == {APPROVE: "2"}
    assert change.message == (
        "migration shop/shop-v2: approved wave 2 (critical); it starts at the operator's next pass"
    )
    assert commands.check_approve_migration(mview(status=awaiting_wave_2()), 2).annotations


def test_approve_refuses_another_wave() -> None:
    with pytest.raises(CliError) as e:
        commands.check_approve_migration(mview(status=awaiting_wave_2()), 1)
    assert e.value.message == (
        "migration shop/shop-v2 waits for approval of wave 2 (critical), not wave 1; "
        "nothing approved"
    )


def test_approve_refuses_when_nothing_waits_and_names_the_next_approval() -> None:
    status = awaiting_wave_2()
    status.update(phase="Progressing")
    status["waves"][1]["phase"] = "Progressing"
    with pytest.raises(CliError) as e:
        commands.check_approve_migration(mview(status=status))
    assert e.value.message == (
        "migration shop/shop-v2 is Progressing at wave 1; nothing awaits approval "
        "(the next approval is wave 2, critical)"
    )
    with pytest.raises(CliError, match="has no status yet"):
        commands.check_approve_migration(mview(status={}))


def test_approve_twice_is_not_written_twice() -> None:
    v = mview(status=awaiting_wave_2(), annotations={APPROVE: "2"})
    change = commands.check_approve_migration(v)
    assert change.annotations == {}
    assert change.message == (
        "migration shop/shop-v2: approval of wave 2 (critical) already requested"
    )


def test_approving_a_migration_writes_the_approver_with_the_version_checked() -> None:
    fake = FakeRollouts([migration(status=awaiting_wave_2())])
    commands.apply_checked(
        fake, "shop", "shop-v2", MigrationView.from_object,
        commands.check_approve_migration, user="alice", noun="migration",
    )  # fmt: skip
    assert fake.patches == [({APPROVE: "2", "segue.dev/approved-by": "alice"}, "200")]


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "kind", "name"),
    [
        (["get"], ROLLOUT, None),
        (["get", "checkout"], ROLLOUT, "checkout"),
        (["get", "migrations"], MIGRATION, None),
        (["get", "sgm"], MIGRATION, None),
        (["get", "migration", "shop-v2"], MIGRATION, "shop-v2"),
        (["get", "rollout", "migration"], ROLLOUT, "migration"),
        (["history", "migration", "shop-v2"], MIGRATION, "shop-v2"),
        (["history", "checkout"], ROLLOUT, "checkout"),
        (["approve", "migrations.segue.dev", "shop-v2", "--wave", "2"], MIGRATION, "shop-v2"),
    ],
)
def test_the_first_word_may_name_the_kind(argv: list[str], kind: object, name: str | None) -> None:
    from segue.cli.main import _resolve_kind

    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_kind(parser, args)
    assert args.kind == kind
    assert args.name == name


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["approve", "migration", "x", "--step", "1"], "--step is for a Rollout"),
        (["approve", "x", "--wave", "1"], "--wave is for a Migration"),
        (["get", "deployment", "x"], "unknown kind 'deployment'; use rollout or migration"),
        (["get", "migration", "x", "-A"], "a NAME cannot be combined with -A"),
        (["history", "a", "b", "c"], "expected [KIND] NAME"),
        (["approve", "migration", "x", "--wave", "two"], "'two' is not a wave index"),
    ],
)
def test_usage_errors(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert error in capsys.readouterr().err


# --- get migration NAME --watch -----------------------------------------------------------------


def test_watch_prints_a_block_per_change_of_the_migration() -> None:
    out = io.StringIO()
    first = migration(status=awaiting_wave_2())
    second = migration()
    script: list[WatchEvent | None] = [
        WatchEvent("SNAPSHOT", [first]),
        None,
        WatchEvent("MODIFIED", [second]),
        None,
    ]
    ticks = iter(NOW + timedelta(seconds=i) for i in range(100))

    def events(timeout: float) -> WatchEvent | None:
        if timeout == 0:
            return None
        if not script:
            raise KeyboardInterrupt
        return script.pop(0)

    code = watch.run(
        events, watch.one_migration("shop", "shop-v2"), watch.PlainDisplay(out),
        clock=lambda: next(ticks), width=lambda: 80,
    )  # fmt: skip
    assert code == 0
    blocks = out.getvalue().split("\n\nMigration shop/shop-v2")
    assert len(blocks) == 2
    assert "AwaitingApproval" in blocks[0] and "RollingBack" in blocks[1]
    assert "rb-1  wave  InProgress" in blocks[1]


def test_members_with_long_names_keep_the_phase_column() -> None:
    status = rolling_back()
    status["waves"][0]["members"] = [member("inventory-service", "Succeeded", 100)]
    lines = render_migration.migration_frame(mview(status=status), NOW, 80)
    wave = next(line for line in lines if " low " in line)
    row = next(line for line in lines if "inventory-service" in line)
    assert wave.index("Succeeded") == row.index("Succeeded") == 26


def test_a_gate_s_own_reason_is_not_repeated_after_its_numbers() -> None:
    from segue.api.migration import RollbackTrigger

    gate = RollbackTrigger(
        rollout="cart", gate="error-rate", value=0.15, bound="<= 0.05",
        reason="gate error-rate failed 1/1: value 0.15, bound <= 0.05",
    )  # fmt: skip
    assert render_migration.trigger_text(gate) == "cart: gate error-rate = 0.15, bound <= 0.05"
    person = RollbackTrigger(rollout="cart", actor="alice", reason="p99 up")
    assert render_migration.trigger_text(person) == "cart: by alice; p99 up"
