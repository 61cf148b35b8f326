from __future__ import annotations

import pytest

from segue.cli.main import build_parser, main


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert "required: COMMAND" in _usage_error([], capsys)


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'aprove'" in _usage_error(["aprove", "checkout"], capsys)


@pytest.mark.parametrize("command", ["approve", "abort", "retry", "pause", "resume", "promote"])
def test_steering_commands_need_a_name(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "NAME" in _usage_error([command], capsys)


def test_lint_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert "FILE" in _usage_error(["lint"], capsys)


def test_get_name_with_all_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(["get", "checkout", "-A"], capsys)
    assert "a NAME cannot be combined with -A/--all-namespaces" in err


@pytest.mark.parametrize("step", ["four", "\u0661", "1_0", "+1", "1234", ""])
def test_approve_step_must_be_ascii_digits(step: str, capsys: pytest.CaptureFixture[str]) -> None:
    # int() takes "\u0661" (Arabic-Indic one), "1_0" and "+1"; the operator does not.
    err = _usage_error(["approve", "checkout", "--step", step], capsys)
    assert f"argument --step: {step!r} is not a step index: 1 to 3 ASCII digits (0-9)" in err


def test_approve_step_takes_ascii_digits() -> None:
    assert build_parser().parse_args(["approve", "checkout", "--step", "07"]).step == 7


def test_connection_flags_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["-n", "shop", "--context", "prod", "get"])
    after = parser.parse_args(["get", "-n", "shop", "--context", "prod"])
    for args in (before, after):
        assert (args.namespace, args.context, args.kubeconfig) == ("shop", "prod", None)
    # A flag given only before the command is not reset by the subcommand's parser.
    assert parser.parse_args(["--kubeconfig", "k", "approve", "x"]).kubeconfig == "k"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("segue ")


def test_missing_kubeconfig_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--kubeconfig", "/nonexistent/kubeconfig", "get"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load kubeconfig")
    assert "Traceback" not in err
