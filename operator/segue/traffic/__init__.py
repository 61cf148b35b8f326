"""Routers: one module each behind the `Router` protocol, chosen by `spec.traffic`."""

from segue.traffic.base import FIELD_MANAGER, Router, RouterError

__all__ = ["FIELD_MANAGER", "Router", "RouterError"]
