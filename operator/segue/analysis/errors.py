"""What can go wrong when a metric provider answers a query.

Every provider raises these, so rounds and messages treat all providers alike.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A query could not produce a value."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or did not answer in time (the query may be fine)."""


class QueryRejected(ProviderError):
    """The provider refused the query itself; retrying will not help.

    ``detail`` is the provider's own explanation, kept verbatim for the user.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnusableResult(QueryRejected):
    """The query ran but its answer is not one number (several series, a range vector...)."""


class QueryTimedOut(ProviderUnavailable):
    """A query did not return within its deadline (its thread may still be running)."""


class PoolSaturated(ProviderUnavailable):
    """The provider's query pool refuses new queries: every worker is held by a query that
    did not answer in time, its backlog is full, or it has been shut down."""
