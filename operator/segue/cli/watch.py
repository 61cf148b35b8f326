"""``get --watch``: keep a view of Rollouts or Migrations current until Ctrl-C.

A background thread follows the Kubernetes watch and queues events; the main thread wakes on
each event and at least once a second (so hold countdowns move), renders, and hands the
frame to a display. On a terminal the frame is redrawn in place; otherwise (a pipe, a CI
log) a new plain block is printed only when the content changed, ignoring the clock.
"""

from __future__ import annotations

import queue
import shutil
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Final, Protocol, TextIO

from segue.cli import render, render_migration
from segue.cli.kube import ROLLOUT, Obj, Resource, WatchEvent
from segue.cli.migration import MigrationView
from segue.cli.rollout import RolloutView

TICK_SECONDS: Final = 1.0
# Frames rendered at this fixed time differ only when the Rollout does: the change detector
# of the plain display, which must not print a new block every second for a countdown.
FROZEN: Final = datetime(2000, 1, 1, tzinfo=UTC)

_HIDE_CURSOR: Final = "\x1b[?25l"
_SHOW_CURSOR: Final = "\x1b[?25h"
_HOME: Final = "\x1b[H"
_CLEAR_SCREEN: Final = "\x1b[2J"
_CLEAR_LINE_END: Final = "\x1b[K"
_CLEAR_BELOW: Final = "\x1b[J"


@dataclass
class Tracker:
    """The latest copy of each watched object, folded from watch events."""

    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    ready: bool = False
    error: str | None = None

    def apply(self, event: WatchEvent) -> None:
        if event.kind == "ERROR":
            self.error = event.error
            return
        self.error = None
        if event.kind == "SNAPSHOT":
            self.ready = True
            self.objects = {}
        for obj in event.objects:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            if event.kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj

    def views(self) -> list[RolloutView]:
        return [RolloutView.from_object(self.objects[k]) for k in sorted(self.objects)]


Frame = Callable[[Tracker, datetime, int], list[str]]


def one_rollout(namespace: str, name: str) -> Frame:
    def frame(tracker: Tracker, now: datetime, width: int) -> list[str]:
        obj = tracker.objects.get((namespace, name))
        if obj is None:
            lines = render.gone_frame(f"{namespace}/{name}", now, width)
        else:
            lines = render.watch_frame(RolloutView.from_object(obj), now, width)
        return _with_error(lines, tracker, width)

    return frame


def many_rollouts(namespace: str | None) -> Frame:
    def frame(tracker: Tracker, now: datetime, width: int) -> list[str]:
        views = tracker.views()
        if views:
            lines = render.rollouts_table(views, now, width, all_namespaces=namespace is None)
        else:
            where = f"namespace {namespace}" if namespace else "any namespace"
            lines = [f"No rollouts in {where} yet."]
        return _with_error(lines, tracker, width)

    return frame


def one_migration(namespace: str, name: str) -> Frame:
    def frame(tracker: Tracker, now: datetime, width: int) -> list[str]:
        obj = tracker.objects.get((namespace, name))
        if obj is None:
            lines = render_migration.gone_frame(f"{namespace}/{name}", now, width)
        else:
            lines = render_migration.migration_frame(MigrationView.from_object(obj), now, width)
        return _with_error(lines, tracker, width)

    return frame


def many_migrations(namespace: str | None) -> Frame:
    def frame(tracker: Tracker, now: datetime, width: int) -> list[str]:
        views = [MigrationView.from_object(tracker.objects[k]) for k in sorted(tracker.objects)]
        if views:
            lines = render_migration.migrations_table(
                views, now, width, all_namespaces=namespace is None
            )
        else:
            where = f"namespace {namespace}" if namespace else "any namespace"
            lines = [f"No migrations in {where} yet."]
        return _with_error(lines, tracker, width)

    return frame


def _with_error(lines: list[str], tracker: Tracker, width: int) -> list[str]:
    if tracker.error:
        return [*lines, "", render.truncate(f"! {tracker.error}", width)]
    return lines


class Display(Protocol):
    def show(self, lines: list[str], key: str) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """A new block per change, no escapes: readable in a CI log or through ``tee``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last_key: str | None = None

    def show(self, lines: list[str], key: str) -> None:
        if key == self.last_key:
            return
        if self.last_key is not None:
            self.out.write("\n")
        self.last_key = key
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class TerminalDisplay:
    """Redraws in place from the top-left corner; only when the text changed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: str | None = None

    def show(self, lines: list[str], key: str) -> None:
        height = shutil.get_terminal_size().lines
        # Never scroll: a frame taller than the screen would break the in-place redraw.
        lines = [*lines[: max(1, height - 2)], "", "(Ctrl-C to exit)"]
        text = "".join(line + _CLEAR_LINE_END + "\n" for line in lines)
        if text == self.last:
            return
        prefix = _HIDE_CURSOR + _CLEAR_SCREEN if self.last is None else ""
        self.last = text
        self.out.write(prefix + _HOME + text + _CLEAR_BELOW)
        self.out.flush()

    def close(self) -> None:
        self.out.write(_SHOW_CURSOR)
        self.out.flush()


def width_now() -> int:
    return shutil.get_terminal_size().columns


def run(
    events: Callable[[float], WatchEvent | None],
    frame: Frame,
    display: Display,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    width: Callable[[], int] = width_now,
    tick: float = TICK_SECONDS,
) -> int:
    """Render on every event and every tick until Ctrl-C, which is a normal exit (0).

    ``events(timeout)`` returns the next event, or None when the tick passed first.
    """
    tracker = Tracker()
    try:
        while True:
            event = events(tick)
            while event is not None:  # fold everything already queued into one redraw
                tracker.apply(event)
                event = events(0)
            if not tracker.ready and tracker.error is None:
                continue
            cols = width()
            lines = frame(tracker, clock(), cols)
            display.show(lines, "\n".join(frame(tracker, FROZEN, cols)))
    except KeyboardInterrupt:
        return 0
    finally:
        display.close()


def follow(
    objects: Resource, namespace: str | None, name: str | None, out: TextIO, tty: bool
) -> int:
    """Watch one Rollout or Migration (``name``) or all of a namespace (None: every
    namespace)."""
    if name is not None and namespace is not None:
        objects.get(namespace, name)  # fail fast, with "not found", before any drawing
    inbox: queue.Queue[WatchEvent] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(
        target=objects.follow, args=(namespace, name, inbox.put, stop), daemon=True
    )
    thread.start()

    def next_event(timeout: float) -> WatchEvent | None:
        try:
            return inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
        except queue.Empty:
            return None

    rollouts = objects.kind == ROLLOUT
    if name is not None and namespace is not None:
        frame = (one_rollout if rollouts else one_migration)(namespace, name)
    else:
        frame = (many_rollouts if rollouts else many_migrations)(namespace)
    display: Display = TerminalDisplay(out) if tty else PlainDisplay(out)
    # `kill` ends the watch like Ctrl-C does: cursor restored, exit 0. Ctrl-C ends it even
    # when the watch was started with SIGINT ignored (a background job of a script, nohup),
    # where Python would leave it ignored; kubectl's watch does the same.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(next_event, frame, display)
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
