"""The flagd router: its settings, reading and writing a flag in a flagd document (checked
with flagd's own evaluator, openfeature-flagd-core), and the one guarded JSON patch, against
the operator's store and a fake Kubernetes call. The real API server is in
tests/e2e/test_rollout_flagd.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from pydantic import ValidationError

from segue.api.routing import Segment
from segue.api.spec import Traffic
from segue.controller.store import Store
from segue.traffic.base import RouterError
from segue.traffic.flagd.plugin import MAX_DOCUMENT_BYTES, PLUGIN, FlagdSettings
from segue.traffic.flagd.router import FlagdRouter
from segue.traffic.flagd.targeting import Variants, desired, render, with_split

NAMES = Variants("checkout", "v1", "v2")
LABELLED = {"segue.dev/managed": "true"}
KEY = "flags.flagd.json"
WHERE = f"ConfigMap shop/flags key {KEY}: "
SEGMENT = Segment(header="customer-id", values=["acme", "globex"])


def flag(**extra: Any) -> dict[str, Any]:
    return {
        "state": "ENABLED",
        "variants": {"v1": "checkout-v1", "v2": "checkout-v2"},
        "defaultVariant": "v1",
        **extra,
    }


def document(checkout: Any = None, **flags: Any) -> str:
    checkout = flag() if checkout is None else checkout
    flags_ = {**flags, "checkout": checkout}
    return json.dumps({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags_})


def configmap(text: str | None, labels: dict[str, str] | None = None, rv: str = "1") -> Any:
    data = {} if text is None else {KEY: text}
    return {
        "metadata": {
            "namespace": "shop",
            "name": "flags",
            "resourceVersion": rv,
            "labels": LABELLED if labels is None else labels,
        },
        "data": {**data, "other.json": "{}"},
        "binaryData": {"blob": "AAEC"},
    }


class Calls:
    """Runs the router's call against a fake CoreV1Api patch that applies nothing but
    records the patch; ``fail`` makes it raise an ApiException with that status."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
        self.patches: list[list[dict[str, Any]]] = []
        self.fail: tuple[int, str] | None = None
        self.store = store
        monkeypatch.setattr(client.CoreV1Api, "patch_namespaced_config_map", self._patch)

    def _patch(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        assert (name, namespace) == ("flags", "shop")
        assert kw == {
            "field_manager": "segue",
            "_content_type": "application/json-patch+json",
        }
        self.patches.append(body)
        if self.fail is not None:
            e = ApiException(status=self.fail[0], reason="Unprocessable Entity")
            e.body = json.dumps({"kind": "Status", "message": self.fail[1], "code": self.fail[0]})
            raise e
        # What the API server returns: the ConfigMap with the replaced text.
        current = self.store.get("ConfigMap", "shop", "flags")
        assert current is not None
        text = next(op["value"] for op in body if op["op"] == "replace")
        rv = str(int(current["metadata"]["resourceVersion"]) + 1)
        return client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                namespace="shop", name="flags", resource_version=rv, labels=LABELLED
            ),
            data={KEY: text},
        )

    async def call(self, fn: Any) -> Any:
        return fn(client.ApiClient())


def router(
    monkeypatch: pytest.MonkeyPatch, text: str | None, *, require: bool = False, **kw: Any
) -> tuple[FlagdRouter, Calls, Store]:
    store = Store()
    store.put("ConfigMap", configmap(text, **kw))
    calls = Calls(monkeypatch, store)
    return (
        FlagdRouter(store, calls, "shop", "flags", KEY, NAMES, require_managed=require),
        calls,
        store,
    )


def evaluate(text: str, key: str, context: dict[str, Any] | None = None) -> str | None:
    core = FlagdCore()
    core.set_flags(text)
    ctx = EvaluationContext(targeting_key=key, attributes=context or {})
    return core.resolve_string_value("checkout", "code-default", ctx).variant


# --- settings ------------------------------------------------------------------------


def test_the_settings_default_the_key_and_name_every_field() -> None:
    s = FlagdSettings.model_validate(
        {"configMap": "flags", "flag": "checkout", "legacyVariant": "v1", "newVariant": "v2"}
    )
    assert s.key == "flags.flagd.json"
    assert s.routing_object() == "flag checkout in ConfigMap flags"
    assert FlagdSettings.segments
    with pytest.raises(ValidationError, match=r"spec\.traffic\.flagd\.newVariant: must differ"):
        FlagdSettings.model_validate(
            {"configMap": "flags", "flag": "checkout", "legacyVariant": "on", "newVariant": "on"}
        )
    for bad in ({"key": "a/b"}, {"flag": "has space"}, {"flag": "x" * 129}):
        with pytest.raises(ValidationError):
            FlagdSettings.model_validate(
                {
                    "configMap": "flags",
                    "flag": "checkout",
                    "legacyVariant": "v1",
                    "newVariant": "v2",
                    **bad,
                }
            )
    traffic = Traffic.model_validate(
        {"flagd": {"configMap": "f", "flag": "c", "legacyVariant": "a", "newVariant": "b"}}
    )
    assert traffic.chosen()[0] == "flagd"


def test_only_labelled_config_maps_are_watched_and_only_their_text_is_kept() -> None:
    (watched,) = PLUGIN.watches
    assert (watched.kind, watched.group, watched.version, watched.plural) == (
        "ConfigMap",
        "",
        "v1",
        "configmaps",
    )
    assert watched.labels == (("segue.dev/managed", "true"),)
    body = configmap("{}", labels={**LABELLED, "team": "a"})
    assert watched.summary(body) == {
        "metadata": {"resourceVersion": "1", "labels": LABELLED},
        "data": {KEY: "{}", "other.json": "{}"},
    }
    (rule,) = PLUGIN.permissions
    assert rule.resources == ("configmaps",) and "patch" in rule.verbs


# --- reading ---------------------------------------------------------------------------


def test_a_flag_without_targeting_reads_as_its_default_variant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, _, _ = router(monkeypatch, document())
    assert (r.read_weight(), r.read_segment()) == (0, None)
    r, _, _ = router(monkeypatch, document(flag(defaultVariant="v2", targeting={})))
    assert (r.read_weight(), r.read_segment()) == (100, None)


def test_a_fractional_split_by_hand_reads_as_its_percentage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = {"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}
    by_hand = flag(targeting={"fractional": [bucket, ["v2", 30], ["v1", 60], ["v1"]]})
    r, _, _ = router(monkeypatch, document(by_hand))
    assert r.read_weight() == 33  # 30 of 30 + 60 + 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "ConfigMap shop/flags has no key flags.flagd.json (spec.traffic.flagd.key) "
         "(it has: other.json); put the flag document there, or name its key"),
        ('{"flags": ', WHERE + "the document (spec.traffic.flagd.key) is not valid JSON "
         "(Expecting value: line 1 column 11 (char 10)); it must be a flagd flag-definitions "
         "document"),
        ('{"flags": {"checkout": NaN}}', WHERE + "the document (spec.traffic.flagd.key) is "
         "not valid JSON (NaN is not JSON); it must be a flagd flag-definitions document"),
        ("[" * 100_000, WHERE + "the document (spec.traffic.flagd.key) is JSON nested too "
         "deeply"),
        ('{"flag": {}}', WHERE + 'the document (spec.traffic.flagd.key) has no "flags" '
         'object; it must be a flagd flag-definitions document ({"flags": {"<flag>": {...}}})'),
        (json.dumps({"flags": {"a": {}, "b": {}}}), WHERE + "the document has no flag checkout "
         "(spec.traffic.flagd.flag) under flags (it has: a, b)"),
        (document([]), WHERE + "flags.checkout is not an object (spec.traffic.flagd.flag)"),
        (document({"state": "ENABLED"}), WHERE + "flags.checkout.variants is missing or not an "
         "object; the flag needs a variant for each version (spec.traffic.flagd.legacyVariant, "
         "newVariant)"),
        (document(flag(variants={"v1": 1, "on": 2})), WHERE + "flags.checkout.variants has no "
         "variant v2 (spec.traffic.flagd.newVariant) (it has: v1, on)"),
        (document(flag(state="DISABLED")), WHERE + "flags.checkout.state is DISABLED: flagd "
         "then serves the application's code default whatever the targeting; set it to ENABLED"),
        (document(flag(defaultVariant="off")), WHERE + 'flags.checkout.defaultVariant is "off", '
         "neither v1 (spec.traffic.flagd.legacyVariant) nor v2 (spec.traffic.flagd.newVariant); "
         "set it to the legacy variant"),
        (document(flag(targeting={"if": [{"==": [{"var": "tier"}, "gold"]}, "v2", "v1"]})),
         WHERE + "flags.checkout.targeting is not a fractional split between v1 and v2 nor a "
         "segment Segue wrote; Segue owns the targeting of the flag it splits "
         "(spec.traffic.flagd.flag): remove it, or give the rules to another flag"),
        (document(flag(targeting={"fractional": [["v1", 50], ["v3", 50]]})), WHERE +
         'flags.checkout.targeting.fractional splits to "v3", which is neither v1 nor v2; '
         "Segue owns the targeting"),
        (document(flag(targeting={"fractional": [["v1", 0], ["v2", 0]]})), WHERE +
         "flags.checkout.targeting.fractional: the weights add up to 0"),
    ],
)  # fmt: skip
def test_a_document_that_cannot_be_read_names_the_place_the_field_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, text: str | None, message: str
) -> None:
    r, calls, _ = router(monkeypatch, text)
    with pytest.raises(RouterError) as e:
        r.read_weight()
    assert str(e.value).startswith(message)
    with pytest.raises(RouterError):
        asyncio.run(r.set_weight(10))
    assert calls.patches == []  # nothing written


def test_a_document_larger_than_a_config_map_is_refused_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = document() + " " * MAX_DOCUMENT_BYTES
    r, _, _ = router(monkeypatch, text)
    with pytest.raises(RouterError, match=r"more than the 1048576 a ConfigMap holds"):
        r.read_weight()


def test_an_unlabelled_or_absent_config_map_is_named_with_the_label_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    r = FlagdRouter(store, Calls(monkeypatch, store), "shop", "flags", KEY, NAMES)
    with pytest.raises(RouterError) as e:
        r.read_weight()
    assert str(e.value) == (
        "ConfigMap shop/flags not found among the ConfigMaps labelled segue.dev/managed=true "
        "(spec.traffic.flagd.configMap; Segue watches no others): create it, or label it: "
        "kubectl label configmap flags -n shop segue.dev/managed=true"
    )
    assert r.watches() == [("ConfigMap", "shop", "flags")]
    unlabelled, calls, _ = router(monkeypatch, document(), require=True, labels={})
    assert unlabelled.unmanaged() == [("ConfigMap", "shop", "flags")]
    with pytest.raises(RouterError, match=r"ConfigMap shop/flags is not labelled segue\.dev"):
        asyncio.run(unlabelled.set_weight(10))
    assert calls.patches == []


# --- writing ---------------------------------------------------------------------------


def test_one_guarded_patch_writes_the_split_and_keeps_the_rest_of_the_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
    text = document(flag(metadata={"team": "shop"}), banner=other)
    r, calls, store = router(monkeypatch, text)
    asyncio.run(r.set_weight(25, SEGMENT))
    (patch,) = calls.patches
    path = "/data/flags.flagd.json"
    assert patch[:2] == [
        {"op": "test", "path": "/metadata/labels/segue.dev~1managed", "value": "true"},
        {"op": "test", "path": path, "value": text},
    ]
    assert [(op["op"], op["path"]) for op in patch[2:]] == [("replace", path)]
    written = json.loads(patch[2]["value"])
    before = json.loads(text)
    assert written["$schema"] == before["$schema"]
    assert written["flags"]["banner"] == other
    assert list(written["flags"]["checkout"]) == [
        "state",
        "variants",
        "defaultVariant",
        "metadata",
        "targeting",
    ]
    assert written["flags"]["checkout"]["targeting"] == {
        "if": [
            {"in": [{"var": "customer-id"}, ["acme", "globex"]]},
            "v2",
            {"fractional": [["v1", 75], ["v2", 25]]},
        ]
    }
    # The response is kept at once (ahead of its watch event) and reads back as asked.
    assert store.get("ConfigMap", "shop", "flags") is not None
    assert (r.read_weight(), r.read_segment()) == (25, SEGMENT)
    # Asked again: nothing to write.
    asyncio.run(r.set_weight(25, Segment(header="customer-id", values=["acme", "globex"])))
    assert len(calls.patches) == 1


def test_a_rollback_sets_the_legacy_default_and_drops_weight_and_segment_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, calls, _ = router(monkeypatch, document())
    asyncio.run(r.set_weight(40, SEGMENT))
    asyncio.run(r.set_weight(0, None))
    assert len(calls.patches) == 2
    checkout = json.loads(calls.patches[1][2]["value"])["flags"]["checkout"]
    assert checkout == flag()  # defaultVariant legacy, no targeting
    assert (r.read_weight(), r.read_segment()) == (0, None)
    asyncio.run(r.set_weight(0))
    assert len(calls.patches) == 2


def test_at_100_the_new_variant_is_the_default_and_there_is_no_targeting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, calls, _ = router(monkeypatch, document(flag(targeting={"fractional": [["v1"], ["v2"]]})))
    assert r.read_weight() == 50
    asyncio.run(r.set_weight(100))
    checkout = json.loads(calls.patches[0][2]["value"])["flags"]["checkout"]
    assert checkout == flag(defaultVariant="v2")


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (422, "the server rejected our request due to an error in our request",
         "ConfigMap shop/flags changed while writing; retrying"),
        (404, "Not Found", "ConfigMap shop/flags not found"),
        (422, 'ConfigMap "flags" is invalid: []: Too long: may not be more than 1048576 bytes',
         "ConfigMap shop/flags key flags.flagd.json: the API server refused the new document: "
         'ConfigMap "flags" is invalid: []: Too long'),
    ],
)  # fmt: skip
def test_a_refused_write_is_a_router_error(
    monkeypatch: pytest.MonkeyPatch, status: int, reason: str, message: str
) -> None:
    r, calls, _ = router(monkeypatch, document())
    calls.fail = (status, reason)
    with pytest.raises(RouterError) as e:
        asyncio.run(r.set_weight(10))
    assert str(e.value).startswith(message)


def test_a_weight_outside_0_to_100_is_a_bug_not_a_write(monkeypatch: pytest.MonkeyPatch) -> None:
    r, calls, _ = router(monkeypatch, document())
    with pytest.raises(ValueError, match=r"weight 101 outside 0\.\.100"):
        asyncio.run(r.set_weight(101))
    assert calls.patches == []


# --- what flagd makes of it --------------------------------------------------------------

segments = st.none() | st.builds(
    Segment,
    header=st.sampled_from(["customer-id", "tenant", "x-customer-id", "org.id"]),
    values=st.lists(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True), min_size=1, max_size=5,
                    unique=True),
)  # fmt: skip


@settings(derandomize=True, max_examples=60, deadline=None)
@given(weight=st.integers(0, 100), segment=segments)
def test_every_split_reads_back_as_written(weight: int, segment: Segment | None) -> None:
    from segue.traffic.flagd.targeting import find_flag, parse_document, read_split

    want = desired(weight, segment, NAMES)
    text = render({"flags": {"checkout": with_split(flag(), want)}})
    split = read_split(find_flag(parse_document(text), NAMES), NAMES)
    assert split.weight == weight
    assert (split.segment.key() if split.segment else None) == (segment.key() if segment else None)


@pytest.mark.parametrize("weight", [0, 10, 50, 90, 100])
def test_flagd_sends_the_segment_to_new_and_splits_the_others(weight: int) -> None:
    text = render({"flags": {"checkout": with_split(flag(), desired(weight, SEGMENT, NAMES))}})
    keys = [f"request-{i}" for i in range(2000)]
    for customer in SEGMENT.values:
        assert {evaluate(text, k, {"customer-id": customer}) for k in keys[:50]} == {"v2"}
    others = [evaluate(text, k, {"customer-id": "initech"}) for k in keys]
    assert abs(others.count("v2") / len(keys) - weight / 100) <= 0.03
    # No targeting key: flagd cannot bucket, and the default (legacy below 100 %) answers.
    assert evaluate(text, "", {"customer-id": "initech"}) == ("v2" if weight == 100 else "v1")
