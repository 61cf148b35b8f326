"""Webhook bodies: a Slack-compatible message and a generic JSON document.

Both are plain dicts ready for ``json.dumps``; both say the same things: which Rollout, what
happened, phase, step and weight, and the reason (the gate and its numbers when a gate
decided it). Texts that may come from user input (the message, gate names and bounds) are
capped in bytes as in status (:mod:`segue.api.text`).
"""

from __future__ import annotations

import math
from typing import Any, Final

from segue.api import GateStatus, format_timestamp
from segue.api.text import MAX_GATE_TEXT_BYTES, MAX_MESSAGE_BYTES, cap
from segue.notify.types import Format, Notification

API_VERSION: Final = "segue.dev/v1alpha1"
# Slack rejects a section text above 3000 characters and a field above 2000.
_SECTION_LIMIT: Final = 3000
_FIELD_LIMIT: Final = 2000


def _message(n: Notification) -> str:
    """The notification's message, capped."""
    return cap(n.message, MAX_MESSAGE_BYTES)


def _gate_name(gate: GateStatus) -> str:
    return cap(gate.name, MAX_GATE_TEXT_BYTES)


def headline(n: Notification) -> str:
    """What happened, in a few words, naming the Rollout."""
    ref = f"{n.namespace}/{n.rollout}"
    match n.kind:
        case "ApprovalNeeded":
            return f"{ref} awaits approval of step {n.step}"
        case "GateFailed":
            gate = f"gate {_gate_name(n.gate)}" if n.gate else "a gate"
            return f"{ref} paused: {gate} failed"
        case "RollbackStarted":
            return f"{ref} is rolling back"
        case "RolledBack":
            return f"{ref} rolled back"
        case "Succeeded":
            return f"{ref} succeeded"
        case "Failed":
            return f"{ref} failed"
        case _:
            if n.previous_phase and n.previous_phase != n.phase:
                return f"{ref}: {n.previous_phase} -> {n.phase}"
            return f"{ref} is {n.phase}"


def format_value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "no data"
    return f"{value:.4g}"


def describe_gate(gate: GateStatus) -> str:
    """E.g. ``error-rate = 0.12 (legacy 0.01), bound <= 0.05``."""
    text = f"{_gate_name(gate)} = {format_value(gate.value)}"
    if gate.legacy_value is not None:
        text += f" (legacy {format_value(gate.legacy_value)})"
    if gate.bound:
        text += f", bound {cap(gate.bound, MAX_GATE_TEXT_BYTES)}"
    return text


def approve_hint(n: Notification) -> str:
    # The resource is spelled out: `rollout` alone may mean Argo Rollouts' kind.
    return (
        f"kubectl segue approve {n.rollout} -n {n.namespace} (or kubectl annotate "
        f"rollouts.segue.dev/{n.rollout} -n {n.namespace} segue.dev/approve={n.step})"
    )


def summary(n: Notification) -> str:
    """One plain line with everything: the fallback text of chat messages, and log lines."""
    parts = [f"{headline(n)} (phase {n.phase}, step {n.step}, weight {n.weight}%)"]
    text = _message(n)
    # The engine's messages usually name the gate and its numbers already; once is enough.
    if n.gate is not None and f"gate {_gate_name(n.gate)}" not in text:
        parts.append(f"gate {describe_gate(n.gate)}")
    if text:
        parts.append(text)
    if n.kind == "ApprovalNeeded":
        parts.append(f"approve with: {approve_hint(n)}")
    return ". ".join(parts)


def _escape(text: str) -> str:
    # Slack reads &, < and > as markup (links, mentions); a bound like "<= 0.05" must not be.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field(title: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(f"*{title}*\n{_escape(value)}", _FIELD_LIMIT)}


def slack_payload(n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message (also accepted by Mattermost and Rocket.Chat)."""
    body = f"*{_escape(headline(n))}*"
    if n.message:
        body += f"\n{_escape(_message(n))}"
    fields = [
        _field("Phase", n.phase if not n.previous_phase else f"{n.previous_phase} -> {n.phase}"),
        # The step index is also the number of steps done, so "3/7" reads as progress.
        _field("Step", str(n.step) if not n.total_steps else f"{n.step}/{n.total_steps}"),
        _field("Weight", f"{n.weight}%"),
    ]
    if n.gate is not None:
        fields.append(_field("Gate", describe_gate(n.gate)))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(body, _SECTION_LIMIT)}},
        {"type": "section", "fields": fields},
    ]
    if n.kind == "ApprovalNeeded":
        hint = f"Approve with `{_escape(approve_hint(n))}`"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": hint}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Segue {n.kind} at {format_timestamp(n.time)}"}
            ],
        }
    )
    return {"text": _escape(summary(n)), "blocks": blocks}


def _number(value: float | None) -> float | None:
    # NaN and infinities are not JSON; a receiver gets null, as for no data.
    return value if value is not None and math.isfinite(value) else None


def json_payload(n: Notification) -> dict[str, Any]:
    """Every field, camelCase, with a stable shape (absent values are null)."""
    gate = None
    if n.gate is not None:
        gate = {
            "name": _gate_name(n.gate),
            "value": _number(n.gate.value),
            "legacyValue": _number(n.gate.legacy_value),
            "bound": cap(n.gate.bound, MAX_GATE_TEXT_BYTES),
        }
    return {
        "apiVersion": API_VERSION,
        "kind": "Notification",
        # "kind" is the document's type, so the notification's own kind is the event.
        "event": n.kind,
        "namespace": n.namespace,
        "rollout": n.rollout,
        "phase": n.phase,
        "previousPhase": n.previous_phase,
        "step": n.step,
        "totalSteps": n.total_steps,
        "weight": n.weight,
        "message": _message(n),
        "time": format_timestamp(n.time),
        "gate": gate,
        "summary": summary(n),
    }


def payload(format: Format, n: Notification) -> dict[str, Any]:
    return slack_payload(n) if format == "slack" else json_payload(n)
