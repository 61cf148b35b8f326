"""Before kopf starts: can each enabled router watch and write its kinds here?

No Rollout is handled before the first listing of every watched kind (``handlers.py``). A
router whose kind is not served (its CRDs are not installed) or that the operator may not
list, watch or patch would hold every Rollout, whatever router it names, aborts included.
So each enabled router is checked once at start-up with discovery and SelfSubjectAccessReviews;
one that fails is not run: its kinds are not watched, and a Rollout naming it is Failed
before any traffic moves with the reason. The others run as usual.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from kubernetes import client

from segue.traffic.catalog import plugin
from segue.traffic.plugin import WatchedKind

log = logging.getLogger(__name__)

VERBS = ("list", "watch", "patch")
TIMEOUT_S = 5


def _served(api: client.ApiClient, kind: WatchedKind) -> bool | None:
    """Whether the API server serves the kind (None: could not tell)."""
    path = "/api/v1" if kind.group == "" else f"/apis/{kind.group}/{kind.version}"
    try:
        request = api.param_serialize(
            "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        answer = api.call_api(*request, _request_timeout=TIMEOUT_S)
        answer.read()  # type: ignore[no-untyped-call]
        if answer.status == 404:
            return False
        if not 200 <= answer.status <= 299:
            return None
        body = json.loads(answer.data or b"")
    except Exception:
        return None
    resources = body.get("resources") if isinstance(body, dict) else None
    if not isinstance(resources, list):
        return None
    return any(r.get("name") == kind.plural for r in resources if isinstance(r, dict))


def _allowed(api: client.ApiClient, kind: WatchedKind, verb: str, namespace: str | None) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                group=kind.group, resource=kind.plural, verb=verb, namespace=namespace
            )
        )
    )
    try:
        answer = client.AuthorizationV1Api(api).create_self_subject_access_review(
            review, _request_timeout=TIMEOUT_S
        )
    except Exception:
        return True  # cannot tell: let the informer try, as without this check
    return bool(answer.status and answer.status.allowed)


def router_problems(
    api: client.ApiClient, routers: Sequence[str], namespaces: Sequence[str]
) -> dict[str, str]:
    """``{router: why it cannot run}`` for the enabled routers that cannot run here."""
    problems: dict[str, str] = {}
    scopes: list[str | None] = list(namespaces) or [None]
    for key in routers:
        for kind in plugin(key).watches:
            what = f"{kind.plural}.{kind.group or 'core'}/{kind.version}"
            if _served(api, kind) is False:
                problems[key] = (
                    f"{kind.kind} ({what}) is not served by this cluster: install its CRDs, "
                    f"or remove {key} from --routers (chart value routers)"
                )
                break
            missing = [
                f"{verb} {kind.plural}" + (f" in {ns}" if ns else " cluster-wide")
                for ns in scopes
                for verb in VERBS
                if not _allowed(api, kind, verb, ns)
            ]
            if missing:
                problems[key] = (
                    f"the operator may not {', '.join(missing[:4])}: grant them (the chart "
                    f"does for the routers in its value routers), or remove {key} from "
                    "--routers"
                )
                break
    return problems
