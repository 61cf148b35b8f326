"""The NGINX Ingress router: its settings, the canary annotations as ingress-nginx reads them,
the pairing of primary and canary Ingress, and the one guarded JSON patch per change, against
in-memory Ingresses and a fake Kubernetes call. The real API server is in
tests/e2e/test_rollout_nginx.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from segue.api.crd import crd
from segue.api.routing import SEGMENT_VALUE_PATTERN, Segment
from segue.api.spec import RolloutSpec, Traffic
from segue.controller.store import Store
from segue.traffic.base import RouterError
from segue.traffic.nginx import canary
from segue.traffic.nginx.pairing import Pairing
from segue.traffic.nginx.plugin import (
    MSG_DEFAULT_CANARY_NAME,
    MSG_DISTINCT_INGRESSES,
    MSG_DISTINCT_SERVICES,
    MSG_SEGMENT_HEADER,
    NginxSettings,
    ingress_summary,
)
from segue.traffic.nginx.router import NginxRouter
from tests.unit.conftest import spec_dict

T = TypeVar("T")
P = "nginx.ingress.kubernetes.io"
LABELLED = {"segue.dev/managed": "true"}
# What ingress-nginx's annotation validation accepts in canary-by-header-pattern
# (parser.IsValidRegex): letters, digits, -._~/: and the regex characters ^$[](){}*+?|&=\ .
INGRESS_NGINX_REGEX_CHARS = re.compile(r"[/\-._~a-zA-Z0-9:^$\[\](){}*+?|&=\\]*")


def ingress(
    name: str,
    service: str,
    *,
    annotations: dict[str, str] | None = None,
    paths: list[tuple[str, str, str]] | None = None,
    labels: dict[str, str] | None = None,
    rv: str = "7",
    class_name: str | None = "nginx",
) -> dict[str, Any]:
    """An Ingress as the API server returns it, routing ``paths`` (host, path, pathType) to
    ``service``."""
    rules: dict[str, list[dict[str, Any]]] = {}
    for host, path, path_type in paths or [("shop.example", "/", "Prefix")]:
        backend = {"service": {"name": service, "port": {"number": 80}}}
        rules.setdefault(host, []).append({"path": path, "pathType": path_type, "backend": backend})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "namespace": "shop",
            "name": name,
            "resourceVersion": rv,
            "labels": labels,
            "annotations": annotations,
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "ingressClassName": class_name,
            "rules": [
                {"host": h, "http": {"paths": ps}} if h else {"http": {"paths": ps}}
                for h, ps in rules.items()
            ],
        },
        "status": {"loadBalancer": {}},
    }


def pair(
    canary_annotations: dict[str, str] | None = None, **canary_kw: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    primary = ingress("checkout", "checkout-v1")
    annotations = {f"{P}/canary": "true"} if canary_annotations is None else canary_annotations
    return primary, ingress("checkout-canary", "checkout-v2", annotations=annotations, **canary_kw)


class Calls:
    """Records the JSON patches a router sends; answers like the API server would."""

    def __init__(self, error: int | None = None) -> None:
        self.error = error
        self.patches: list[list[dict[str, Any]]] = []
        self.full: dict[str, dict[str, Any]] = {}  # the Ingresses as stored, by name

    async def call(self, fn: Callable[[Any], T]) -> T:
        return fn(None)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def patch(
            api: Any,
            group: str,
            version: str,
            ns: str,
            plural: str,
            name: str,
            body: list[dict[str, Any]],
            **kw: Any,
        ) -> dict[str, Any]:
            assert (group, version, plural) == ("networking.k8s.io", "v1", "ingresses")
            assert kw == {"field_manager": "segue", "_content_type": "application/json-patch+json"}
            self.patches.append(body)
            if self.error is not None:
                raise ApiException(status=self.error)
            return apply_json_patch(self.full[name], body)

        monkeypatch.setattr(client.CustomObjectsApi, "patch_namespaced_custom_object", patch)


def apply_json_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """The subset of RFC 6902 the router uses, on annotations, labels and resourceVersion."""
    meta = obj["metadata"]
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = obj
        for part in parts[:-1]:
            parent = parent[part]
        if op["op"] == "test":
            assert parent.get(parts[-1]) == op["value"], op
        elif op["op"] == "add":
            parent[parts[-1]] = op["value"]
        elif op["op"] == "remove":
            del parent[parts[-1]]
    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
    return obj


def setup(
    primary: dict[str, Any] | None,
    canary_ingress: dict[str, Any] | None,
    monkeypatch: pytest.MonkeyPatch,
    *,
    require_managed: bool = False,
    error: int | None = None,
    prefix: str = P,
) -> tuple[NginxRouter, Calls, Store]:
    store = Store()
    calls = Calls(error)
    for body in (primary, canary_ingress):
        if body is not None:
            store.put("Ingress", body)
            calls.full[body["metadata"]["name"]] = body
    calls.install(monkeypatch)
    pairing = Pairing("shop", "checkout", "checkout-canary", "checkout-v1", "checkout-v2", prefix)
    return NginxRouter(store, calls, pairing, require_managed=require_managed), calls, store


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def ops(patch: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(op["op"], op["path"], op.get("value")) for op in patch]


def ann(name: str) -> str:
    return f"/metadata/annotations/nginx.ingress.kubernetes.io~1{name}"


# --- settings ----------------------------------------------------------------------------


def _settings(**fields: Any) -> NginxSettings:
    raw = {"ingress": "checkout", "legacyService": "checkout-v1", "newService": "checkout-v2"}
    return NginxSettings.model_validate({**raw, **fields})


def test_the_canary_ingress_defaults_to_the_primary_name_with_canary() -> None:
    s = _settings()
    assert (s.canary(), s.annotation_prefix) == ("checkout-canary", P)
    assert s.routing_object() == "Ingress checkout-canary"
    assert _settings(canaryIngress="web-b").canary() == "web-b"
    assert Traffic.model_validate({"nginx": {**s.model_dump(by_alias=True)}}).key() == "nginx"


@pytest.mark.parametrize(
    ("fields", "message", "where"),
    [
        ({"newService": "checkout-v1"}, MSG_DISTINCT_SERVICES, ("newService",)),
        ({"canaryIngress": "checkout"}, MSG_DISTINCT_INGRESSES, ()),
        ({"ingress": "a" * 247}, MSG_DEFAULT_CANARY_NAME, ()),
        ({"legacyService": "a" * 64}, "at most 63 characters", ("legacyService",)),
        ({"annotationPrefix": "Nginx/x"}, "should match pattern", ("annotationPrefix",)),
    ],
)
def test_bad_settings_name_the_field(
    fields: dict[str, Any], message: str, where: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as e:
        _settings(**fields)
    (err,) = e.value.errors()
    assert message in err["msg"]
    assert err["loc"] == where


def test_a_long_primary_name_is_fine_with_a_named_canary() -> None:
    assert _settings(ingress="a" * 253, canaryIngress="b").canary() == "b"


def test_the_crd_carries_the_same_rules() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = schema["properties"]["spec"]["properties"]["traffic"]["properties"]["nginx"]
    rules = {r["fieldPath"]: r for r in node["x-kubernetes-validations"]}
    assert rules[".newService"]["message"] == MSG_DISTINCT_SERVICES
    assert rules[".canaryIngress"]["message"] == MSG_DISTINCT_INGRESSES
    assert rules[".ingress"]["message"] == MSG_DEFAULT_CANARY_NAME
    assert rules[".ingress"]["rule"] == "has(self.canaryIngress) || size(self.ingress) <= 246"
    assert node["properties"]["annotationPrefix"]["default"] == P


def _with_segment(header: str, router: str = "nginx") -> dict[str, Any]:
    traffic = {
        "nginx": {"ingress": "checkout", "legacyService": "v1", "newService": "v2"},
        "gatewayAPI": {"httpRoute": "checkout", "legacyBackend": "v1", "newBackend": "v2"},
    }
    raw = spec_dict(steps=[{"setSegment": {"header": header, "values": ["acme"]}}])
    raw["traffic"] = {router: traffic[router]}
    return raw


def test_a_segment_header_nginx_would_drop_is_refused_in_the_spec() -> None:
    assert RolloutSpec.model_validate(_with_segment("x-customer-id")).steps
    with pytest.raises(ValidationError) as e:
        RolloutSpec.model_validate(_with_segment("x_customer.id"))
    assert MSG_SEGMENT_HEADER in str(e.value)
    # Another router takes it.
    assert RolloutSpec.model_validate(_with_segment("x_customer.id", "gatewayAPI")).steps
    spec_rules = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (rule,) = [
        r for r in spec_rules["x-kubernetes-validations"] if r["message"] == MSG_SEGMENT_HEADER
    ]
    assert rule["rule"] == (
        "!has(self.traffic.nginx) || !has(self.steps) || self.steps.all(s, !has(s.setSegment) "
        "|| s.setSegment.header.matches('^[a-z0-9-]+$'))"
    )


# --- the watched summary -----------------------------------------------------------------


def test_the_summary_keeps_what_the_router_reads_and_nothing_else() -> None:
    body = ingress(
        "checkout-canary",
        "checkout-v2",
        annotations={
            f"{P}/canary": "true",
            f"{P}/canary-weight": "10",
            "custom.example/canary-weight": "3",
            "kubernetes.io/ingress.class": "nginx",
            f"{P}/rewrite-target": "/",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        },
        labels={**LABELLED, "team": "a"},
        paths=[("shop.example", "/", "Prefix"), ("", "/api", "Exact")],
    )
    body["spec"]["defaultBackend"] = {"resource": {"kind": "Bucket", "name": "b"}}
    body["spec"]["rules"].append({"host": "bare.example"})  # no http: no paths
    assert ingress_summary(body) == {
        "metadata": {
            "resourceVersion": "7",
            "labels": LABELLED,
            "annotations": {
                f"{P}/canary": "true",
                f"{P}/canary-weight": "10",
                "custom.example/canary-weight": "3",
                "kubernetes.io/ingress.class": "nginx",
            },
        },
        "spec": {
            "ingressClassName": "nginx",
            "defaultBackend": {"service": None},
            "paths": [
                {
                    "host": "shop.example",
                    "path": "/",
                    "pathType": "Prefix",
                    "service": "checkout-v2",
                },
                {"host": "", "path": "/api", "pathType": "Exact", "service": "checkout-v2"},
            ],
        },
    }


# --- the annotations, as ingress-nginx reads them ------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "weight"),
    [
        ({}, 0),
        ({"canary-weight": "25"}, 25),
        ({"canary-weight": "25", "canary-weight-total": "100"}, 25),
        ({"canary-weight": "250", "canary-weight-total": "1000"}, 25),
        ({"canary-weight": "1", "canary-weight-total": "3"}, 33),
        ({"canary-weight": "150"}, 100),
        ({"canary-weight": "-5"}, 0),
        ({"canary-weight": "ten"}, 0),
        ({"canary-weight": " 5"}, 0),
        ({"canary-weight": "1_0"}, 0),
        ({"canary-weight": "5", "canary-weight-total": "x"}, 5),
        ({"canary-weight": "5", "canary-weight-total": "0"}, 5),
    ],
)
def test_the_weight_reads_as_ingress_nginx_reads_it(
    annotations: dict[str, str], weight: int
) -> None:
    full = {f"{P}/{k}": v for k, v in annotations.items()}
    assert canary.weight_of(P, full) == weight


@pytest.mark.parametrize("value", ["true", "True", "1", "t"])
def test_canary_is_a_go_boolean(value: str) -> None:
    assert canary.is_canary(P, {f"{P}/canary": value})
    assert not canary.is_canary(P, {f"{P}/canary": "yes"})
    assert not canary.is_canary("other.example", {f"{P}/canary": value})


def test_the_pattern_escapes_regex_characters_and_the_at_sign() -> None:
    pattern = canary.header_pattern(["b.c", "a+b@x.io", "z"])
    assert pattern == r"^(a\+b\x40x\.io|b\.c|z)$"
    assert canary.pattern_values(pattern) == ["a+b@x.io", "b.c", "z"]


segment_values = st.lists(
    st.from_regex(SEGMENT_VALUE_PATTERN, fullmatch=True).map(lambda v: v[:128]),
    min_size=1,
    max_size=32,
    unique=True,
)


@given(values=segment_values, probe=st.from_regex(SEGMENT_VALUE_PATTERN, fullmatch=True))
def test_the_pattern_matches_exactly_the_segment_values(values: list[str], probe: str) -> None:
    pattern = canary.header_pattern(values)
    # ingress-nginx's annotation validation lets it through, and it reads back the same.
    assert INGRESS_NGINX_REGEX_CHARS.fullmatch(pattern)
    assert canary.pattern_values(pattern) == sorted(values)
    # ingress-nginx searches the header value with it (ngx.re.match, unanchored).
    for value in values:
        assert re.search(pattern, value)
        assert not re.search(pattern, value + "x") and not re.search(pattern, "x" + value)
    assert bool(re.search(pattern, probe)) == (probe in values)


@pytest.mark.parametrize(
    "pattern",
    ["^(a|b)", "(a|b)$", "^(a.b)$", r"^(a\d)$", "^()$", "^(b|a)$", "^(a||b)$", "^(a\\)$", ".*"],
)
def test_a_pattern_segue_did_not_write_is_not_read_as_a_segment(pattern: str) -> None:
    assert canary.pattern_values(pattern) is None
    annotations = {f"{P}/canary-by-header": "x-customer", f"{P}/canary-by-header-pattern": pattern}
    assert canary.segment_of(P, annotations) is None


def test_a_segment_is_read_from_header_and_pattern_only() -> None:
    rule = {
        f"{P}/canary-by-header": "X-Customer",
        f"{P}/canary-by-header-pattern": "^(acme|globex)$",
    }
    assert canary.segment_of(P, rule) == Segment(header="x-customer", values=["acme", "globex"])
    # An exact value takes precedence over the pattern in ingress-nginx: not Segue's rule.
    assert canary.segment_of(P, {**rule, f"{P}/canary-by-header-value": "acme"}) is None
    assert canary.segment_of(P, {f"{P}/canary-by-header": "x-customer"}) is None


# --- the pairing of primary and canary Ingress ----------------------------------------------

PAIRING = Pairing("shop", "checkout", "checkout-canary", "checkout-v1", "checkout-v2", P)
C = "Ingress shop/checkout-canary (spec.traffic.nginx.canaryIngress)"
PR = "Ingress shop/checkout (spec.traffic.nginx.ingress)"


def problem(primary: dict[str, Any], canary_ingress: dict[str, Any]) -> str | None:
    return PAIRING.problem(ingress_summary(primary), ingress_summary(canary_ingress))


def test_a_matching_pair_has_no_problem() -> None:
    paths = [("shop.example", "/", "Prefix"), ("", "/api", "Exact")]
    primary = ingress("checkout", "checkout-v1", paths=paths)
    # The primary may route other paths to other Services: those are not split.
    other = ingress("x", "static", paths=[("shop.example", "/static", "Prefix")])
    primary["spec"]["rules"][0]["http"]["paths"] += other["spec"]["rules"][0]["http"]["paths"]
    canary_ingress = ingress(
        "checkout-canary", "checkout-v2", paths=paths, annotations={f"{P}/canary": "true"}
    )
    assert problem(primary, canary_ingress) is None


def test_the_canary_must_be_annotated_as_one() -> None:
    primary, canary_ingress = pair({})
    assert problem(primary, canary_ingress) == (
        f'{C} is not annotated {P}/canary: "true": add it (ingress-nginx serves an Ingress '
        "without it as a second primary, and its admission webhook refuses one for hosts and "
        "paths another Ingress has)"
    )


def test_the_primary_must_not_be_a_canary() -> None:
    primary, canary_ingress = pair()
    primary["metadata"]["annotations"] = {f"{P}/canary": "true"}
    assert problem(primary, canary_ingress) == (
        f'{PR} is annotated {P}/canary: "true": name the primary Ingress, the one routing to '
        "Service checkout-v1, in spec.traffic.nginx.ingress"
    )


def test_the_canary_routes_only_to_the_new_service() -> None:
    primary, _ = pair()
    canary_ingress = ingress("checkout-canary", "checkout-v3", annotations={f"{P}/canary": "true"})
    assert problem(primary, canary_ingress) == (
        f"{C} routes shop.example/ (Prefix) to Service shop/checkout-v3, but "
        "spec.traffic.nginx.newService is checkout-v2: route every path of the canary Ingress "
        "to the new version's Service"
    )
    canary_ingress = ingress("checkout-canary", "checkout-v2", annotations={f"{P}/canary": "true"})
    canary_ingress["spec"]["defaultBackend"] = {"resource": {"kind": "Bucket", "name": "b"}}
    message = problem(primary, canary_ingress)
    assert message is not None
    assert message.startswith(f"{C} routes the default backend to a resource backend, but")


def test_a_canary_without_paths_is_reported() -> None:
    primary, canary_ingress = pair()
    canary_ingress["spec"]["rules"] = []
    assert problem(primary, canary_ingress) == (
        f"{C} routes nothing: give it the hosts and paths of Ingress shop/checkout, with "
        "Service checkout-v2 as backend"
    )


def test_both_must_have_the_same_ingress_class() -> None:
    primary, canary_ingress = pair(class_name=None)
    assert problem(primary, canary_ingress) == (
        f"{C} has ingress class (default) and {PR} has nginx: ingress-nginx pairs a canary "
        "Ingress only with a primary of its own class; give both the same ingressClassName"
    )
    # The annotation that preceded ingressClassName counts the same.
    canary_ingress["metadata"]["annotations"]["kubernetes.io/ingress.class"] = "nginx"
    assert problem(primary, canary_ingress) is None


@pytest.mark.parametrize(
    ("canary_path", "described"),
    [
        (("other.example", "/", "Prefix"), "other.example/ (Prefix)"),
        (("shop.example", "/api", "Prefix"), "shop.example/api (Prefix)"),
        (("shop.example", "/", "Exact"), "shop.example/ (Exact)"),
        (("", "/", "Prefix"), "*/ (Prefix)"),
    ],
)
def test_every_canary_path_needs_the_same_primary_path(
    canary_path: tuple[str, str, str], described: str
) -> None:
    primary, canary_ingress = pair(paths=[("shop.example", "/", "Prefix"), canary_path])
    assert problem(primary, canary_ingress) == (
        f"{PR} has no {described}, which {C} routes: ingress-nginx ignores a canary path that "
        "no primary path matches (host, path and pathType); give both Ingresses the same hosts "
        "and paths"
    )


def test_the_primary_routes_the_paths_to_the_legacy_service() -> None:
    _, canary_ingress = pair()
    primary = ingress("checkout", "checkout-old")
    assert problem(primary, canary_ingress) == (
        f"{PR} routes shop.example/ (Prefix) to Service shop/checkout-old, but "
        "spec.traffic.nginx.legacyService is checkout-v1: name the Service the primary Ingress "
        "routes to"
    )


def test_a_legacy_path_missing_from_the_canary_would_keep_its_traffic() -> None:
    primary = ingress(
        "checkout",
        "checkout-v1",
        paths=[("shop.example", "/", "Prefix"), ("shop.example", "/api", "Prefix")],
    )
    _, canary_ingress = pair()
    assert problem(primary, canary_ingress) == (
        f"{C} has no shop.example/api (Prefix), which {PR} routes to Service checkout-v1: "
        "traffic there would stay on the legacy version whatever the weight; add it to the "
        "canary Ingress"
    )


# --- the router --------------------------------------------------------------------------


def test_missing_ingresses_are_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    primary, canary_ingress = pair()
    r, calls, _ = setup(None, canary_ingress, monkeypatch)
    with pytest.raises(
        RouterError, match=r"^Ingress shop/checkout \(spec.traffic.nginx.ingress\) not found$"
    ):
        r.read_weight()
    r, calls, _ = setup(primary, None, monkeypatch)
    with pytest.raises(RouterError) as e:
        r.read_segment()
    assert str(e.value) == (
        f"{C} not found: create it beside Ingress shop/checkout, with the same hosts and paths "
        f'routed to Service checkout-v2 and the annotation {P}/canary: "true"'
    )
    with pytest.raises(RouterError):
        run(r.set_weight(0))
    assert calls.patches == []
    assert r.watches() == [("Ingress", "shop", "checkout"), ("Ingress", "shop", "checkout-canary")]


def test_a_mismatched_pair_is_never_read_or_written(monkeypatch: pytest.MonkeyPatch) -> None:
    primary, canary_ingress = pair()
    primary = ingress("checkout", "checkout-old")
    r, calls, _ = setup(primary, canary_ingress, monkeypatch)
    with pytest.raises(RouterError, match="legacyService is checkout-v1"):
        r.read_weight()
    with pytest.raises(RouterError, match="legacyService is checkout-v1"):
        run(r.set_weight(10))
    assert calls.patches == []


def test_a_weight_is_one_patch_guarded_by_the_resource_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, calls, store = setup(*pair(), monkeypatch)
    assert (r.read_weight(), r.read_segment()) == (0, None)
    run(r.set_weight(10))
    (patch,) = calls.patches
    assert ops(patch) == [
        ("test", "/metadata/resourceVersion", "7"),
        ("add", ann("canary-weight"), "10"),
        ("add", ann("canary-weight-total"), "100"),
    ]
    # The response is what the router reads next, ahead of its watch event.
    assert r.read_weight() == 10
    kept = store.get("Ingress", "shop", "checkout-canary")
    assert kept is not None and kept["metadata"]["resourceVersion"] == "8"
    assert "managedFields" not in kept["metadata"]
    # Already there: nothing is written.
    run(r.set_weight(10))
    assert len(calls.patches) == 1
    run(r.set_weight(25))
    assert ops(calls.patches[1]) == [
        ("test", "/metadata/resourceVersion", "8"),
        ("add", ann("canary-weight"), "25"),
    ]


def test_a_segment_and_a_weight_are_one_write_and_a_rollback_clears_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, calls, _ = setup(*pair(), monkeypatch)
    segment = Segment(header="x-customer-id", values=["globex", "acme"])
    run(r.set_weight(0, segment))
    assert ops(calls.patches[0]) == [
        ("test", "/metadata/resourceVersion", "7"),
        ("add", ann("canary-weight"), "0"),
        ("add", ann("canary-weight-total"), "100"),
        ("add", ann("canary-by-header"), "x-customer-id"),
        ("add", ann("canary-by-header-pattern"), "^(acme|globex)$"),
    ]
    found = r.read_segment()
    assert found is not None and found.key() == segment.key()
    # The same customers in another order are the same segment: no write.
    run(r.set_weight(0, Segment(header="x-customer-id", values=["acme", "globex"])))
    assert len(calls.patches) == 1
    run(r.set_weight(20, segment))
    assert ops(calls.patches[1]) == [
        ("test", "/metadata/resourceVersion", "8"),
        ("add", ann("canary-weight"), "20"),
    ]
    run(r.set_weight(0, None))
    assert ops(calls.patches[2]) == [
        ("test", "/metadata/resourceVersion", "9"),
        ("add", ann("canary-weight"), "0"),
        ("remove", ann("canary-by-header"), None),
        ("remove", ann("canary-by-header-pattern"), None),
    ]
    assert (r.read_weight(), r.read_segment()) == (0, None)


def test_request_rules_segue_did_not_write_go_at_its_next_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    annotations = {
        f"{P}/canary": "true",
        f"{P}/canary-weight": "30",
        f"{P}/canary-by-header": "x-canary",
        f"{P}/canary-by-header-value": "yes",
        f"{P}/canary-by-cookie": "canary",
        f"{P}/affinity": "cookie",
    }
    r, calls, _ = setup(*pair(annotations), monkeypatch)
    assert (r.read_weight(), r.read_segment()) == (30, None)
    run(r.set_weight(30, Segment(header="x-customer-id", values=["acme"])))
    assert ops(calls.patches[0])[1:] == [
        ("add", ann("canary-weight-total"), "100"),
        ("add", ann("canary-by-header"), "x-customer-id"),
        ("add", ann("canary-by-header-pattern"), "^(acme)$"),
        ("remove", ann("canary-by-header-value"), None),
        ("remove", ann("canary-by-cookie"), None),
    ]


def test_a_custom_annotation_prefix_is_read_and_written(monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = "custom.example"
    primary, canary_ingress = pair({f"{prefix}/canary": "true", f"{P}/canary-weight": "50"})
    r, calls, _ = setup(primary, canary_ingress, monkeypatch, prefix=prefix)
    assert r.read_weight() == 0  # another prefix's weight is not ingress-nginx's here
    run(r.set_weight(5))
    assert ("add", "/metadata/annotations/custom.example~1canary-weight", "5") in ops(
        calls.patches[0]
    )


def test_a_header_nginx_would_drop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    r, calls, _ = setup(*pair(), monkeypatch)
    with pytest.raises(RouterError) as e:
        run(r.set_weight(10, Segment(header="x_customer", values=["acme"])))
    assert str(e.value) == (
        "setSegment.header x_customer: ingress-nginx matches only headers named with lower-case "
        "letters, digits and '-' (nginx drops the others by default); name such a header to "
        "send a segment through Ingress shop/checkout-canary"
    )
    assert calls.patches == []


@pytest.mark.parametrize("status", [409, 422])
def test_a_concurrent_edit_fails_the_write(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    r, calls, _ = setup(*pair(), monkeypatch, error=status)
    with pytest.raises(
        RouterError, match=r"^Ingress shop/checkout-canary changed while writing; retrying$"
    ):
        run(r.set_weight(10))
    assert len(calls.patches) == 1


def test_out_of_range_weights_are_a_programming_error(monkeypatch: pytest.MonkeyPatch) -> None:
    r, calls, _ = setup(*pair(), monkeypatch)
    for weight in (-1, 101):
        with pytest.raises(ValueError, match=r"outside 0\.\.100"):
            run(r.set_weight(weight))
    assert calls.patches == []


def test_only_a_labelled_canary_ingress_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    primary, canary_ingress = pair()
    r, calls, _ = setup(primary, canary_ingress, monkeypatch, require_managed=True)
    # Only the canary Ingress is written, so only it needs the label.
    assert r.unmanaged() == [("Ingress", "shop", "checkout-canary")]
    assert r.read_weight() == 0  # reading is fine
    with pytest.raises(RouterError, match="Ingress shop/checkout-canary is not labelled segue"):
        run(r.set_weight(10))
    assert calls.patches == []

    primary, canary_ingress = pair(labels=LABELLED)
    r, calls, _ = setup(primary, canary_ingress, monkeypatch, require_managed=True)
    assert r.unmanaged() == []
    run(r.set_weight(10))
    assert calls.patches[0][1] == {
        "op": "test",
        "path": "/metadata/labels/segue.dev~1managed",
        "value": "true",
    }
    lax, _, _ = setup(*pair(), monkeypatch)
    assert lax.unmanaged() == []
    # Not there at all: that is a missing Ingress, not an unmanaged one.
    missing, _, _ = setup(primary, None, monkeypatch, require_managed=True)
    assert missing.unmanaged() == []
