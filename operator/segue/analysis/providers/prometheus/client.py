"""Prometheus' query client, on prometheus-api-client.

Blocking by nature (requests underneath): callers run :meth:`PrometheusClient.query_scalar`
on the worker threads of the query pool of its address (``segue.analysis.clients``). One query
keeps to ``settings.timeout_s`` in all: every request carries what is left of it as its
connect and read timeout, and Prometheus gets it as its evaluation timeout. Connection
errors and 5xx answers are retried while time is left, with a short backoff; 4xx answers
never (a 400 ``bad_data`` is a broken query, and asking again will not fix it). A read
timeout is not retried either: the server took the request and is slow.
"""

from __future__ import annotations

import ast
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from segue.analysis.batches import Series
from segue.analysis.clients import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S
from segue.analysis.errors import ProviderUnavailable, QueryRejected, UnusableResult

DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_S = 0.2

_STATUS_RE = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)
# Prometheus answers 400 (bad_data) for a query that does not parse and 422 (execution)
# for one that parses but cannot run; both are the query's fault.
_QUERY_STATUSES = frozenset({400, 422})
# Prometheus' own error text is kept up to this many characters; nothing else of a reply is.
MAX_ERROR_CHARS = 200

DEFAULT_ADDRESS: Final = "http://127.0.0.1:9090"
# A batched query returns a few series per Rollout in its batch (see ``batching``); more
# than this is not a batch Segue built, and is refused rather than held in memory.
MAX_VECTOR_SERIES: Final = 10_000


@dataclass(frozen=True)
class PrometheusSettings:
    """Where and how to reach Prometheus, credentials included. ``hash`` lets clients be
    cached per settings.

    ``timeout_s`` bounds one query (the HTTP timeouts and Prometheus' own evaluation
    timeout); anything above :data:`~segue.analysis.clients.MAX_TIMEOUT_S` is capped to it.
    """

    address: str = DEFAULT_ADDRESS
    bearer_token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.timeout_s <= MAX_TIMEOUT_S:  # also catches NaN
            object.__setattr__(self, "timeout_s", MAX_TIMEOUT_S)


class PrometheusClient:
    """One Prometheus endpoint. Safe to share between threads: each thread gets its own
    client, since a requests session is not guaranteed thread-safe."""

    def __init__(
        self,
        settings: PrometheusSettings,
        *,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.settings = settings
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._clock = clock
        self._local = threading.local()
        self._clients: list[PrometheusConnect] = []
        self._clients_lock = threading.Lock()

    @property
    def name(self) -> str:
        return "Prometheus"

    def _client(self) -> PrometheusConnect:
        client: PrometheusConnect | None = getattr(self._local, "client", None)
        if client is None:
            session = requests.Session()
            session.verify = self.settings.ca_file or True
            # No proxy or .netrc credentials from the environment, and no redirect: the query
            # and the token go to the configured address and nowhere else.
            session.trust_env = False
            session.max_redirects = 0
            headers = None
            if self.settings.bearer_token:
                headers = {"Authorization": f"Bearer {self.settings.bearer_token}"}
            client = PrometheusConnect(
                url=self.settings.address.rstrip("/"),
                headers=headers,
                # Retries are ours (see query_scalar): the library's default retries 5xx
                # three times with 1 s backoff and cannot tell them from our 4xx policy.
                # read=False makes urllib3 re-raise a read timeout as itself, so requests
                # reports ReadTimeout rather than a generic ConnectionError.
                retry=Retry(total=0, read=False, raise_on_status=False),
                session=session,
                timeout=self.settings.timeout_s,
            )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def query_scalar(self, query: str) -> float | None:
        """Run an instant query; one number, or None for no data (empty, NaN, ±Inf)."""
        return parse_result(self._instant(query))

    def query_vector(self, query: str) -> list[Series]:
        """Run an instant query that returns a vector: each series' labels and its number
        (None for NaN or ±Inf). At most :data:`MAX_VECTOR_SERIES` series are accepted."""
        return parse_vector(self._instant(query))

    def _instant(self, query: str) -> Any:
        """The ``data.result`` of an instant query, with this client's retries and timeout."""
        client = self._client()
        # Prometheus stops evaluating at this server-side timeout too, so a heavy query does
        # not keep running after we gave up on it.
        timeout = self.settings.timeout_s
        params = {"timeout": f"{timeout:g}s"}
        deadline = self._clock() + timeout
        last = "no attempt made"
        attempts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff_s * 2.0 ** (attempt - 1)
                if self._clock() + pause >= deadline:
                    break
                self._sleep(pause)
            left = deadline - self._clock()
            if left <= 0:
                break
            attempts += 1
            try:
                # (connect, read): each bounded by what is left of the query's time. A read
                # timeout applies per socket read, so a trickling answer can outlast it; the
                # pool's deadline covers that.
                result = client.custom_query(query, params=params, timeout=(left, left))
            except requests.exceptions.SSLError as e:
                raise ProviderUnavailable(
                    f"TLS error talking to {self._where()}: {_short(e)}"
                ) from e
            except requests.exceptions.ReadTimeout as e:
                # The server took the request but is slow: retrying would only double the wait.
                raise ProviderUnavailable(
                    f"{self._where()} did not answer within {timeout:g}s"
                ) from e
            except requests.exceptions.ConnectionError as e:
                last = f"cannot connect to {self._where()}: {_short(e)}"
                continue
            except PrometheusApiClientException as e:
                status, error = _parse_status_error(str(e))
                summary = f"HTTP {status}" if status is not None else "an unexpected reply"
                if error is None:
                    summary += ", not a Prometheus error reply"
                if status in _QUERY_STATUSES:
                    raise QueryRejected(error or summary) from e
                detail = f"{summary}: {error}" if error else summary
                if status is not None and status >= 500:
                    last = f"{self._where()} answered {detail}"
                    continue
                hint = " (check the bearer token)" if status in (401, 403) else ""
                raise ProviderUnavailable(f"{self._where()} answered {detail}{hint}") from e
            except (ValueError, KeyError, TypeError) as e:
                # A 200 that is not a Prometheus API answer: the address points elsewhere.
                # The parse error would quote the reply, so it is not shown.
                raise ProviderUnavailable(
                    f"{self._where()} did not answer like Prometheus (HTTP 200, "
                    "not a Prometheus API reply)"
                ) from e
            except requests.exceptions.TooManyRedirects as e:
                raise ProviderUnavailable(
                    f"{self._where()} answered with a redirect, which is not followed"
                ) from e
            except requests.exceptions.RequestException as e:
                raise ProviderUnavailable(f"request to {self._where()} failed: {_short(e)}") from e
            return result
        tries = "attempt" if attempts == 1 else "attempts"
        within = "" if attempts == self.retries + 1 else f", no time left within {timeout:g}s"
        raise ProviderUnavailable(f"{last} (after {attempts} {tries}{within})")

    def _where(self) -> str:
        return f"Prometheus at {self.settings.address}"


def parse_result(result: Any) -> float | None:
    """The ``data.result`` of an instant query as one number, or None for no data.

    prometheus-api-client drops ``resultType``, so the shape tells: a scalar or string is
    ``[time, "value"]``, a vector or matrix a list of ``{"metric": ..., ...}`` objects.
    """
    if not isinstance(result, list):
        raise UnusableResult("not a Prometheus query result")
    if len(result) == 2 and not isinstance(result[0], dict):
        return _to_float(result[1])
    if not result:
        return None
    if any(isinstance(item, dict) and "values" in item for item in result):
        raise UnusableResult(
            "query returns a range vector; an instant value is needed "
            "(wrap the [range] selector in a function such as rate(...))"
        )
    if len(result) > 1:
        raise UnusableResult(f"query returns {len(result)} series; aggregate it (e.g. sum(...))")
    item = result[0]
    value = item.get("value") if isinstance(item, dict) else None
    if not isinstance(value, list) or len(value) != 2:
        raise UnusableResult("not a Prometheus query result")
    return _to_float(value[1])


def parse_vector(result: Any) -> list[Series]:
    """The ``data.result`` of an instant vector query as (labels, number) pairs; NaN and ±Inf
    read as None. An empty result is an empty list."""
    if not isinstance(result, list):
        raise UnusableResult("not a Prometheus query result")
    if len(result) == 2 and not isinstance(result[0], dict):
        raise UnusableResult("query returns a scalar; a vector is needed")
    if len(result) > MAX_VECTOR_SERIES:
        raise UnusableResult(
            f"query returns {len(result)} series, more than the {MAX_VECTOR_SERIES} accepted"
        )
    series: list[Series] = []
    for item in result:
        if not isinstance(item, dict) or "values" in item:
            raise UnusableResult("query returns a range vector; an instant vector is needed")
        metric = item.get("metric")
        value = item.get("value")
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            raise UnusableResult("not a Prometheus query result")
        labels = {str(k): str(v) for k, v in metric.items()}
        series.append((labels, _to_float(value[1])))
    return series


def _to_float(raw: Any) -> float | None:
    if not isinstance(raw, str | int | float):
        raise UnusableResult("not a Prometheus query result")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise UnusableResult("query returns a string, not a number") from None
    # NaN (0/0, a quantile of nothing) and ±Inf are "no data": neither a pass nor a failure.
    if math.isnan(value) or math.isinf(value):
        return None
    return value


def _parse_status_error(message: str) -> tuple[int | None, str | None]:
    """The status code and Prometheus' own ``error`` field from the library's exception
    message, which is ``HTTP Status Code 400 (b'{"status":"error",...}')``. The error is
    None unless the body is a Prometheus error reply, and is kept to at most
    :data:`MAX_ERROR_CHARS` printable characters. Nothing else of the body is kept."""
    m = _STATUS_RE.match(message)
    if not m:
        return None, None
    status = int(m.group(1))
    try:
        body = ast.literal_eval(m.group(2))
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        payload = json.loads(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        return status, None
    if not isinstance(payload, dict) or payload.get("status") != "error":
        return status, None
    error = payload.get("error")
    if not isinstance(error, str) or not error.strip():
        return status, None
    return status, _bounded(error)


def _bounded(text: str) -> str:
    """At most MAX_ERROR_CHARS printable characters on one line."""
    clean = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(clean) > MAX_ERROR_CHARS:
        clean = clean[: MAX_ERROR_CHARS - 1] + "…"
    return clean


def _short(e: BaseException) -> str:
    # requests wraps urllib3 errors which wrap the socket error; the innermost is the useful
    # part ("Connection refused"), the outer ones repeat the URL.
    seen: set[int] = set()
    inner: BaseException = e
    while id(inner) not in seen:
        seen.add(id(inner))
        reason = getattr(inner, "reason", None)
        if isinstance(reason, BaseException):
            inner = reason
        elif inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
    text = str(inner) or type(inner).__name__
    return _bounded(text)
