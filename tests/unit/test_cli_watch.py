from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from segue.cli import watch
from segue.cli.kube import WatchEvent
from tests.unit.cli_samples import NOW, rollout


def _script(steps: Sequence[WatchEvent | None]) -> Callable[[float], WatchEvent | None]:
    """events(timeout): the scripted events and ticks (None), then Ctrl-C."""
    queue = list(steps)

    def events(timeout: float) -> WatchEvent | None:
        if timeout == 0:  # draining what is already queued: nothing more
            return None
        if not queue:
            raise KeyboardInterrupt
        return queue.pop(0)

    return events


def _clock() -> Callable[[], datetime]:
    ticks = iter(NOW + timedelta(seconds=i) for i in range(1000))
    return lambda: next(ticks)


def test_plain_output_prints_a_block_per_change_not_per_tick() -> None:
    out = io.StringIO()
    first = rollout()
    second = rollout(phase="AwaitingApproval", step=4, message="step 4 waits for approval")
    script = [WatchEvent("SNAPSHOT", [first]), None, None, WatchEvent("MODIFIED", [second]), None]
    code = watch.run(
        _script(script),
        watch.one_rollout("shop", "checkout"),
        watch.PlainDisplay(out),
        clock=_clock(),
        width=lambda: 80,
    )
    assert code == 0  # Ctrl-C is a normal end
    text = out.getvalue()
    assert "\x1b" not in text
    blocks = text.split("\n\nRollout shop/checkout")
    assert len(blocks) == 2  # three ticks of a moving countdown did not print new blocks
    assert "Progressing" in blocks[0]
    assert "AwaitingApproval" in blocks[1]
    assert all(len(line) <= 80 for line in text.splitlines())


def test_terminal_redraws_in_place_and_restores_the_cursor() -> None:
    out = io.StringIO()
    script = [WatchEvent("SNAPSHOT", [rollout()]), None]
    watch.run(
        _script(script),
        watch.one_rollout("shop", "checkout"),
        watch.TerminalDisplay(out),
        clock=_clock(),
        width=lambda: 80,
    )
    text = out.getvalue()
    assert text.count("\x1b[H") == 2  # the countdown moved: redrawn on the tick
    assert "20m00s left" in text and "19m59s left" in text
    assert text.endswith("\x1b[?25h")


def test_deleted_rollout_and_connection_errors_are_shown() -> None:
    out = io.StringIO()
    script = [
        WatchEvent("SNAPSHOT", [rollout()]),
        WatchEvent("ERROR", error="watch interrupted; reconnecting"),
        WatchEvent("SNAPSHOT", [rollout()]),
        WatchEvent("DELETED", [rollout()]),
    ]
    watch.run(
        _script(script),
        watch.one_rollout("shop", "checkout"),
        watch.PlainDisplay(out),
        clock=_clock(),
        width=lambda: 80,
    )
    text = out.getvalue()
    assert "! watch interrupted; reconnecting" in text
    assert "deleted; waiting for it to be created again" in text


def test_nothing_is_drawn_before_the_first_list() -> None:
    out = io.StringIO()
    watch.run(
        _script([None, None]),
        watch.one_rollout("shop", "checkout"),
        watch.PlainDisplay(out),
        clock=_clock(),
    )
    assert out.getvalue() == ""


def test_namespace_table_watch() -> None:
    out = io.StringIO()
    script = [
        WatchEvent("SNAPSHOT", []),
        WatchEvent("ADDED", [rollout(name="web")]),
        WatchEvent("ADDED", [rollout(name="api")]),
    ]
    watch.run(
        _script(script),
        watch.many_rollouts("shop"),
        watch.PlainDisplay(out),
        clock=_clock(),
        width=lambda: 80,
    )
    blocks = out.getvalue().split("\n\n")
    assert blocks[0] == "No rollouts in namespace shop yet."
    last = blocks[-1].splitlines()
    assert [line.split()[0] for line in last] == ["NAME", "api", "web"]
