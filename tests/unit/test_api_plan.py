from __future__ import annotations

from segue.api import plan
from tests.unit.conftest import make_spec


def _describe(spec_plan: list) -> list[str]:  # type: ignore[type-arg]
    out = []
    for s in spec_plan:
        if s.set_weight is not None:
            out.append(f"w{s.set_weight}")
        elif s.approval is not None:
            out.append("approve")
        else:
            out.append(f"pause {s.pause.duration}")
    return out


def test_low_preset() -> None:
    assert _describe(plan(make_spec(risk="low"))) == [
        "w10", "pause 30m", "w25", "pause 30m", "w50", "pause 30m", "w75", "pause 30m", "w100",
    ]  # fmt: skip


def test_medium_preset() -> None:
    assert _describe(plan(make_spec(risk="medium"))) == [
        "w5", "pause 1h", "w10", "pause 1h", "w25", "pause 1h", "w50", "pause 1h",
        "w75", "pause 1h", "w100",
    ]  # fmt: skip


def test_critical_preset_asks_approval_from_50() -> None:
    assert _describe(plan(make_spec(risk="critical"))) == [
        "w1", "pause 2h", "w5", "pause 2h", "w10", "pause 2h", "w25", "pause 2h",
        "approve", "w50", "pause 2h", "approve", "w75", "pause 2h", "approve", "w100",
    ]  # fmt: skip


def test_hold_replaces_the_preset_hold() -> None:
    described = _describe(plan(make_spec(risk="medium", hold="5s")))
    assert [d for d in described if d.startswith("pause")] == ["pause 5s"] * 5


def test_explicit_steps_win_and_end_at_100() -> None:
    steps = [{"setWeight": 5}, {"pause": {"duration": "10m"}}, {"approval": {}}, {"setWeight": 50}]
    assert _describe(plan(make_spec(risk="critical", steps=steps))) == [
        "w5", "pause 10m", "approve", "w50", "w100",
    ]  # fmt: skip


def test_explicit_steps_already_at_100_are_kept() -> None:
    steps = [{"setWeight": 100}, {"pause": {"duration": "1m"}}]
    assert _describe(plan(make_spec(steps=steps))) == ["w100", "pause 1m"]


def test_untimed_pause_needs_approval() -> None:
    p = plan(make_spec(steps=[{"pause": {}}, {"pause": {"duration": "1s"}}, {"approval": {}}]))
    assert [s.needs_approval for s in p] == [True, False, True, False]


def test_plan_does_not_alias_the_spec() -> None:
    spec = make_spec(steps=[{"setWeight": 10}])
    steps = plan(spec)
    steps[0].set_weight = 20
    assert spec.steps is not None
    assert spec.steps[0].set_weight == 10


def test_the_plan_kept_for_a_spec_goes_with_it_and_is_never_another_specs() -> None:
    from segue.api.plan import plan_digest

    low = make_spec(risk="low")
    assert plan(low) == plan(low) and plan(low) is not plan(low)  # a list of its own
    digest = plan_digest(low)
    # Specs made and dropped one after another: CPython reuses their ids at once, and a
    # plan kept by id alone would be handed to the next spec.
    for risk, first in (("medium", "w5"), ("critical", "w1"), ("low", "w10")) * 3:
        spec = make_spec(risk=risk)
        assert _describe(plan(spec))[0] == first
        assert (plan_digest(spec) == digest) == (risk == "low")
        del spec
