"""Notifications: tell people (chat, webhooks) when a Rollout changes phase, needs an
approval, fails a gate or rolls back.

Kubernetes stays out of this package: the controller resolves the Secrets that hold webhook
URLs and hands over ``WebhookTarget`` values. ``notifications_for`` turns a status change
into notifications; ``Dispatcher.publish`` queues them without ever blocking a reconcile.
"""

from segue.notify.dispatcher import DeliveryObserver, Dispatcher, DispatcherStats
from segue.notify.events import notifications_for
from segue.notify.hook import NotificationHook, TargetsFor
from segue.notify.payloads import json_payload, payload, slack_payload, summary
from segue.notify.types import (
    FORMATS,
    KINDS,
    Format,
    Kind,
    Notification,
    WebhookTarget,
)
from segue.notify.webhook import DeliveryResult, RetryPolicy, post

__all__ = [
    "FORMATS",
    "KINDS",
    "DeliveryObserver",
    "DeliveryResult",
    "Dispatcher",
    "DispatcherStats",
    "Format",
    "Kind",
    "Notification",
    "NotificationHook",
    "RetryPolicy",
    "TargetsFor",
    "WebhookTarget",
    "json_payload",
    "notifications_for",
    "payload",
    "post",
    "slack_payload",
    "summary",
]
