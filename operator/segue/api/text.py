"""Bounds on text copied from user input into status, Events and notifications.

Annotation values, reasons and error texts can be any size; the object they end up in has to
stay small enough to be written (etcd refuses requests above ~1.5 MiB, and a Rollout whose
status cannot be written cannot be steered any more). Limits are in UTF-8 bytes, as the API
server counts them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Final

ELLIPSIS: Final = "…"
_ELLIPSIS_BYTES: Final = len(ELLIPSIS.encode("utf-8"))

MAX_MESSAGE_BYTES: Final = 1024
"""status.message, condition messages, Event messages."""
MAX_REASON_BYTES: Final = 512
"""A history entry's reason, the rollback's reason."""
MAX_GATE_TEXT_BYTES: Final = 256
"""A gate's message and bound, in status and in history."""
MAX_LABEL_BYTES: Final = 256
"""Short identifiers copied into status: a history entry's actor and gate, a reason word."""
MAX_NOTE_BYTES: Final = 200
"""User text (an annotation value) quoted inside a longer message; even at the worst
``repr`` expansion (4 characters per byte) the message stays under MAX_MESSAGE_BYTES."""
MAX_ANNOTATION_BYTES: Final = 256
"""Longer values of handled one-shot annotations are remembered by digest."""
MAX_HISTORY_BYTES: Final = 24 * 1024
"""The serialized status.history; the oldest entries go first."""
MAX_STATUS_BYTES: Final = 64 * 1024
"""The serialized status, whatever was copied into it."""

DIGEST_PREFIX: Final = "sha256:"
_DIGEST_HEX_CHARS: Final = 32  # 128 bits: collisions are not a practical concern


def utf8(text: str) -> bytes:
    """The UTF-8 bytes of ``text``; a lone surrogate (possible after ``json.loads``) becomes
    ``?`` instead of raising."""
    return text.encode("utf-8", "replace")


def cap(text: str, max_bytes: int) -> str:
    """``text`` if it fits in ``max_bytes`` UTF-8 bytes, else its longest prefix that fits
    together with a closing ``…``. Never splits a character."""
    data = utf8(text)
    if len(data) <= max_bytes:
        return text
    if max_bytes < _ELLIPSIS_BYTES:
        return data[:max_bytes].decode("utf-8", "ignore")
    # "ignore" drops the partial character a byte cut may leave at the end.
    return data[: max_bytes - _ELLIPSIS_BYTES].decode("utf-8", "ignore") + ELLIPSIS


def capper(max_bytes: int) -> Callable[[str], str]:
    """``cap`` with a fixed limit, for pydantic validators and serializers."""

    def _cap(text: str) -> str:
        return cap(text, max_bytes)

    return _cap


def annotation_mark(value: str) -> str:
    """What status.handledAnnotations keeps of a one-shot annotation's value: the value itself
    up to MAX_ANNOTATION_BYTES, else ``sha256:`` and a prefix of its digest. Comparing the
    marks of two values tells whether they are equal; ``annotation_mark`` of a mark is the
    mark itself, so marks can be stored, read back and marked again."""
    data = utf8(value)
    if len(data) <= MAX_ANNOTATION_BYTES:
        return value
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()[:_DIGEST_HEX_CHARS]


def wire_size(value: Any) -> int:
    """Bytes of ``value`` as JSON with ASCII escapes: the largest of the encodings a
    Kubernetes client sends (every non-ASCII character as ``\\uXXXX``)."""
    return len(json.dumps(value))
