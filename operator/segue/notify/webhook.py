"""One webhook delivery: POST a JSON body, retrying what may succeed later.

Retried: connection errors, timeouts, 5xx and 429 (honouring a short Retry-After). Not
retried: any other status, since asking again will not fix a 400, 401 or 404 (redirects
included: they are not followed).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp

from segue.notify.types import WebhookTarget

log = logging.getLogger("segue.notify")

USER_AGENT: Final = "segue-notify/1"


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` after the first attempt, waiting ``backoff`` seconds, doubling each time
    (0.5, 1, 2 by default). ``timeout``: seconds for one whole attempt."""

    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(self.backoff * 2.0 ** (retry - 1), self.max_backoff))


DEFAULT_POLICY: Final = RetryPolicy()

Outcome = Literal["delivered", "rejected", "failed"]


@dataclass(frozen=True)
class DeliveryResult:
    """``rejected``: a status not worth retrying; ``failed``: retries ran out."""

    outcome: Outcome
    attempts: int
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(headers: Any) -> float | None:
    # Only the delta-seconds form: an HTTP date is rare for webhooks and not worth a parser.
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


async def post(
    session: aiohttp.ClientSession,
    target: WebhookTarget,
    body: dict[str, Any],
    policy: RetryPolicy = DEFAULT_POLICY,
) -> DeliveryResult:
    """POST ``body`` as JSON to ``target``, with ``policy``'s timeout and retries."""
    timeout = aiohttp.ClientTimeout(total=policy.timeout)
    status: int | None = None
    error: str | None = None
    attempt = 0
    while True:
        attempt += 1
        wait: float | None = None
        try:
            async with session.post(
                target.url,
                json=body,
                timeout=timeout,
                headers={"User-Agent": USER_AGENT},
                # A redirect is not followed: the body would go somewhere not configured.
                allow_redirects=False,
            ) as resp:
                status, error = resp.status, None
                if 200 <= resp.status < 300:
                    return DeliveryResult("delivered", attempt, status)
                # A little of the body says why; reading all of it could be large.
                head = await resp.content.read(200)
                error = head.decode("utf-8", "replace").strip() or resp.reason or ""
                if not _retryable(resp.status):
                    return DeliveryResult("rejected", attempt, status, error)
                wait = _retry_after(resp.headers) if resp.status == 429 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception text can carry the URL, which can carry a token: log the type.
            status, error = None, type(exc).__name__
        if attempt > policy.retries:
            return DeliveryResult("failed", attempt, status, error)
        delay = policy.delay(attempt)
        if wait is not None:
            delay = min(max(delay, wait), policy.max_backoff)
        log.debug(
            "webhook %s: attempt %d got %s; retrying in %.2fs",
            target.redacted,
            attempt,
            status or error,
            delay,
        )
        await asyncio.sleep(delay)
