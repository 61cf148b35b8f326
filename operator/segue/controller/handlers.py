"""kopf handlers. The operator's settings are applied at start-up."""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping under Segue's own prefix, never under kopf's defaults.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="segue.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="segue.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "segue.dev/finalizer"
    settings.posting.level = 20  # INFO: Events for transitions, not kopf's debug chatter
    settings.watching.server_timeout = 300
