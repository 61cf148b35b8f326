"""The client-side rate limit of the operator's Kubernetes requests: a token bucket, as
client-go's QPS and burst, so a thousand Rollouts stepping at once queue here instead of
flooding the API server, and a 429 (API priority and fairness turning requests away)
holds the bucket for the Retry-After the server asked for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

# Sized for 1,000 Rollouts: a weight step costs two requests of the operator's (the
# status and the router), so 1,000 holds ending together clear in about ten seconds,
# within what API priority and fairness gives one workload on a default API server.
DEFAULT_QPS: Final = 200.0
DEFAULT_BURST: Final = 400
# The events lane's own limit: Events wait (or, past the queue, Normal ones are dropped)
# rather than take the API server's time from weight moves on a busy cluster.
DEFAULT_EVENT_QPS: Final = 20.0
DEFAULT_EVENT_BURST: Final = 50
MAX_QPS: Final = 10_000.0
MAX_BURST: Final = 100_000
# A Retry-After is obeyed up to this long (a server asking for more is asked again then).
MAX_RETRY_AFTER_S: Final = 30.0


class TokenBucket:
    """``qps`` requests a second on average, up to ``burst`` at once after a quiet spell.

    ``reserve`` takes a token at once and says how long to wait before sending, so waiting
    requests keep their order and none is starved."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < qps <= MAX_QPS:
            raise ValueError(f"qps must be above 0 and at most {MAX_QPS:g}, not {qps:g}")
        if not 1 <= burst <= MAX_BURST:
            raise ValueError(f"burst must be 1 to {MAX_BURST}, not {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now

    def reserve(self) -> float:
        """Take one token; seconds to wait before sending the request (0: now)."""
        self._refill()
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def hold(self, seconds: float) -> None:
        """The server said to retry after ``seconds``: no token until then."""
        self._refill()
        seconds = min(max(0.0, seconds), MAX_RETRY_AFTER_S)
        self._tokens = min(self._tokens, -seconds * self.qps)


def retry_after(headers: object) -> float:
    """The Retry-After of a 429 in seconds (1 when absent or not a number of seconds)."""
    value = None
    if headers is not None and hasattr(headers, "get"):
        value = headers.get("Retry-After")
    try:
        seconds = float(str(value))
    except (TypeError, ValueError):
        return 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if seconds == seconds else 1.0
