"""The running simulator: reads the split in one thread, synthesises requests on a steady
tick in another, and holds the configuration ``PUT /config`` changes."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from segue_testkit.trafficsim.config import SimConfig, apply_patch
from segue_testkit.trafficsim.metrics import Metrics
from segue_testkit.trafficsim.sources import Split, WeightSource
from segue_testkit.trafficsim.synthesizer import Synthesizer

# The longest tick counted: a suspended process does not dump a burst on resume.
MAX_TICK_S = 5.0


def log(msg: str) -> None:
    print(f"trafficsim: {msg}", file=sys.stderr, flush=True)


class Simulator:
    def __init__(
        self,
        source: WeightSource,
        metrics: Metrics,
        config: SimConfig,
        *,
        tick_s: float = 0.1,
        poll_s: float = 0.5,
        seed: int | None = None,
        customers: Sequence[str] = (),
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.customers = tuple(customers)
        self.synth = Synthesizer(seed, self.customers)
        self.tick_s = tick_s
        self.poll_s = poll_s
        self.lock = threading.Lock()
        self.config = config
        self.split = Split(None)
        self.weight_error: str | None = None
        self.stop = threading.Event()

    @property
    def weight(self) -> float | None:
        return self.split.weight

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out = self.config.to_json()
            out["weight"] = self.split.weight
            out["segment"] = sorted(self.split.segment)
            out["customers"] = list(self.customers)
            out["weightSource"] = self.source.describe()
            out["weightError"] = self.weight_error
            return out

    def update(self, patch: object) -> dict[str, Any]:
        with self.lock:
            self.config = apply_patch(self.config, patch)
        return self.snapshot()

    def refresh_weight(self) -> None:
        try:
            split = self.source.read()
        except Exception as e:  # keep the last weight; the cluster may come back
            message = f"{type(e).__name__}: {e}"
            with self.lock:
                changed = message != self.weight_error
                self.weight_error = message
            if changed:
                log(f"cannot read weight from {self.source.describe()}: {message}")
            return
        with self.lock:
            old, self.split, self.weight_error = self.split, split, None
        if split.weight != old.weight:
            log(f"weight {old.weight} -> {split.weight}")
        if split.segment != old.segment:
            unknown = sorted(split.segment - set(self.customers))
            note = f" (not among --customers, so without requests: {unknown})" if unknown else ""
            log(f"segment {sorted(old.segment)} -> {sorted(split.segment)}{note}")

    def poll_weight(self) -> None:
        """Runs in its own thread so a slow API server never stalls the ticks."""
        while not self.stop.wait(self.poll_s):
            self.refresh_weight()

    def run_ticks(self) -> None:
        last = time.monotonic()
        deadline = last
        while True:
            deadline += self.tick_s
            if self.stop.wait(max(0.0, deadline - time.monotonic())):
                return
            now = time.monotonic()
            # Elapsed time, not the nominal tick, so rates stay exact when a tick runs late;
            # capped so a suspended process does not dump a burst on resume.
            dt = min(now - last, MAX_TICK_S)
            last = now
            with self.lock:
                split, config = self.split, self.config
            for batch in self.synth.step(dt, split, config):
                self.metrics.record(batch)
            if deadline < now - MAX_TICK_S:
                deadline = now
