"""The Rollout's spec, as users write it. The single source of truth for the CRD schema.

Rules the structural schema cannot express are written twice, once as a pydantic validator
(for ``segue lint`` and the operator) and once as a CEL rule in ``x-kubernetes-validations``
(for the API server); the messages match.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, cast

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_snake

from segue.analysis.providers import catalog
from segue.api.base import LabelName, LabelValue, ObjectName, SpecModel, cel_rules, exactly_one
from segue.api.duration import DurationBounds, DurationText
from segue.api.routing import RouterSettings, Segment
from segue.traffic.catalog import ROUTERS

Risk = Literal["low", "medium", "critical"]
RollbackMode = Literal["immediate", "graceful"]
OnFailure = Literal["rollback", "rollback-graceful", "pause"]
NoDataPolicy = Literal["pause", "fail"]
if TYPE_CHECKING:
    GateTemplateName = str
else:
    # The built-in templates of the metric providers (catalog): a Literal of their names.
    GateTemplateName = Literal[catalog.TEMPLATE_NAMES]
NotificationFormat = Literal["slack", "json"]
NotificationKind = Literal[
    "PhaseChanged",
    "ApprovalNeeded",
    "GateFailed",
    "RollbackStarted",
    "RolledBack",
    "Succeeded",
    "Failed",
]

MAX_STEPS: Final = 64
MAX_GATES: Final = 16
MAX_DEPENDENCIES: Final = 16
MAX_NOTIFICATIONS: Final = 8
MAX_QUERY_LENGTH: Final = 4096

MSG_RISK_OR_STEPS: Final = "spec: set risk (low, medium or critical) or steps"
MSG_DISTINCT: Final = "spec.new.deployment must differ from spec.legacy.deployment"
MSG_HOLD_WITH_STEPS: Final = (
    "spec.hold only applies to a risk preset; with explicit steps, write pause steps instead"
)
ROUTER_KEYS: Final = tuple(p.key for p in ROUTERS)
MSG_ONE_ROUTER: Final = (
    f"spec.traffic: set exactly one router ({', '.join(ROUTER_KEYS[:-1])} or {ROUTER_KEYS[-1]})"
)
MSG_ONE_STEP_KIND: Final = (
    "each step must have exactly one of setWeight, setSegment, pause or approval"
)
SEGMENT_ROUTERS: Final = tuple(p.key for p in ROUTERS if p.settings.segments)
MSG_SEGMENT_ROUTER: Final = (
    "spec.steps: setSegment needs a router that routes by header or flag context ("
    + ", ".join(SEGMENT_ROUTERS)
    + "); this Rollout's router cannot send named customers to a version"
)
MSG_QUERY_XOR_TEMPLATE: Final = "spec.analysis.gates: set exactly one of query or template"
MSG_QUERY_NEEDS_BOUND: Final = (
    "spec.analysis.gates: a gate with a query needs a bound "
    "(max, min, maxRatioToLegacy or minRatioToLegacy)"
)
MSG_LABELS_NEED_TEMPLATE: Final = (
    "spec.analysis.gates: labels only apply to a template; write them into the query"
)
MSG_UNIQUE_GATES: Final = "spec.analysis.gates: gate names must be unique"
MSG_UNIQUE_DEPENDENCIES: Final = "spec.dependsOn: names must be unique"

# At most one of providerRef and the providers' own sections (spec.analysis.prometheus, ...).
_SOURCES: Final = ("providerRef", *catalog.KEYS)
MSG_PROVIDER_OR_INLINE: Final = (
    f"spec.analysis: set providerRef or {_SOURCES[1]}, not both "
    "(the MetricProvider holds the address, timeout and credentials)"
    if len(_SOURCES) == 2
    else f"spec.analysis: set at most one of {', '.join(_SOURCES)} "
    "(a MetricProvider holds the address, timeout and credentials)"
)
_PROVIDER_OR_INLINE_RULE: Final = (
    f"!has(self.providerRef) || !has(self.{_SOURCES[1]})"
    if len(_SOURCES) == 2
    else " + ".join(f"(has(self.{s}) ? 1 : 0)" for s in _SOURCES) + " <= 1"
)

# Bounds of the duration fields: a hold or pause longer than a month is a forgotten Rollout,
# an interval of 0s a busy loop (a provider bounds its own query timeout).
HOLD_BOUNDS: Final = DurationBounds("spec.hold", "1ms", "720h", " (30 days)")
PAUSE_BOUNDS: Final = DurationBounds("spec.steps[*].pause.duration", "1ms", "720h", " (30 days)")
INTERVAL_BOUNDS: Final = DurationBounds("spec.analysis.interval", "1s", "1h")
UNREACHABLE_BOUNDS: Final = DurationBounds("spec.analysis.unreachableLimit", "0s", "24h")
ROLLBACK_BOUNDS: Final = DurationBounds("spec.rollback.duration", "1s", "24h")
BAKE_BOUNDS: Final = DurationBounds("spec.bakeTime", "0s", "720h", " (30 days)")
MSG_HOLD_BOUNDS: Final = HOLD_BOUNDS.message
MSG_PAUSE_BOUNDS: Final = PAUSE_BOUNDS.message
MSG_INTERVAL_BOUNDS: Final = INTERVAL_BOUNDS.message
MSG_UNREACHABLE_BOUNDS: Final = UNREACHABLE_BOUNDS.message
MSG_ROLLBACK_BOUNDS: Final = ROLLBACK_BOUNDS.message
MSG_BAKE_BOUNDS: Final = BAKE_BOUNDS.message

HoldDuration = Annotated[DurationText, AfterValidator(HOLD_BOUNDS.check)]
PauseDuration = Annotated[DurationText, AfterValidator(PAUSE_BOUNDS.check)]
IntervalDuration = Annotated[DurationText, AfterValidator(INTERVAL_BOUNDS.check)]
UnreachableDuration = Annotated[DurationText, AfterValidator(UNREACHABLE_BOUNDS.check)]
RollbackDuration = Annotated[DurationText, AfterValidator(ROLLBACK_BOUNDS.check)]
BakeDuration = Annotated[DurationText, AfterValidator(BAKE_BOUNDS.check)]


_validations = cel_rules
_exactly_one = exactly_one


class Workload(SpecModel):
    """One side of the migration: a Deployment and the version label its pods carry."""

    deployment: ObjectName = Field(description="Name of the Deployment in the same namespace.")
    version: LabelValue | None = Field(
        None,
        description="Value of the version label in metric queries; default: the Deployment name.",
    )

    def effective_version(self) -> str:
        return self.version or self.deployment


class TrafficBase(SpecModel):
    """How traffic is split: exactly one router, each under its own key (see
    ``segue/traffic/catalog.py``)."""

    def chosen(self) -> tuple[str, RouterSettings]:
        """The router's key under spec.traffic and its settings."""
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                return str(field.alias or name), value
        raise ValueError(MSG_ONE_ROUTER)  # the validator guarantees one

    def settings(self) -> RouterSettings:
        return self.chosen()[1]

    def key(self) -> str:
        return self.chosen()[0]


def _one_router(self: TrafficBase) -> TrafficBase:
    if sum(getattr(self, n) is not None for n in type(self).model_fields) != 1:
        raise ValueError(MSG_ONE_ROUTER)
    return self


def _traffic_model() -> type[TrafficBase]:
    """``spec.traffic``: one optional field per router in the catalog, exactly one set."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": "How traffic is split: exactly one router.",
        "__annotations__": annotations,
        "model_config": cel_rules((exactly_one(*ROUTER_KEYS), MSG_ONE_ROUTER)),
        "_one_router": model_validator(mode="after")(_one_router),
    }
    for p in ROUTERS:
        name = to_snake(p.key)
        annotations[name] = p.settings | None
        namespace[name] = Field(None, alias=p.key, description=p.description)
    return cast(type[TrafficBase], type("Traffic", (TrafficBase,), namespace))


if TYPE_CHECKING:
    Traffic = TrafficBase
else:
    Traffic = _traffic_model()


class Pause(SpecModel):
    """Hold for a duration; without one, wait until a person approves the step."""

    model_config = _validations(PAUSE_BOUNDS.cel("duration"))

    duration: PauseDuration | None = Field(
        None, description="1ms to 720h (30 days); without it, the step waits for approval."
    )


class Approval(SpecModel):
    """Wait until ``segue.dev/approve=<index of this step>`` is set on the Rollout."""


class Step(SpecModel):
    """One step of the plan: exactly one of setWeight, setSegment, pause or approval."""

    model_config = _validations(
        (_exactly_one("setWeight", "setSegment", "pause", "approval"), MSG_ONE_STEP_KIND)
    )

    set_weight: int | None = Field(
        None, ge=1, le=100, description="Percentage of traffic for the new version."
    )
    set_segment: Segment | None = Field(
        None,
        description="Send these customers (requests whose header or flag-context value is "
        "one of values) to the new version, before or beside the percentage; it stays until "
        "100% or a rollback.",
    )
    pause: Pause | None = Field(
        None, description="Hold for a duration; without one, wait for approval."
    )
    approval: Approval | None = Field(
        None, description="Wait for segue.dev/approve=<index of this step>."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = (self.set_weight, self.set_segment, self.pause, self.approval)
        if sum(k is not None for k in kinds) != 1:
            raise ValueError(MSG_ONE_STEP_KIND)
        return self

    @property
    def needs_approval(self) -> bool:
        """An approval step, or a pause without a duration (both wait for a person)."""
        return self.approval is not None or (self.pause is not None and self.pause.duration is None)


Query = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_LENGTH)]


class Gate(SpecModel):
    """A health check: a PromQL query (or a built-in template) and the bounds it must meet.

    ``{{ version }}`` in a query is replaced by the version under test; ratio bounds run the
    same query for the legacy version and compare.
    """

    model_config = _validations(
        ("has(self.query) != has(self.template)", MSG_QUERY_XOR_TEMPLATE),
        (
            "!has(self.query) || has(self.max) || has(self.min)"
            " || has(self.maxRatioToLegacy) || has(self.minRatioToLegacy)",
            MSG_QUERY_NEEDS_BOUND,
        ),
        ("!has(self.labels) || has(self.template)", MSG_LABELS_NEED_TEMPLATE),
        *catalog.GATE_RULES,
    )

    name: LabelName = Field(description="Unique name of the gate, shown in status and Events.")
    query: Query | None = Field(
        None,
        description="A query of the provider's language (PromQL); {{ version }}, "
        "{{ namespace }}, {{ rollout }} and {{ interval }} are filled in. Exclusive with "
        "template.",
    )
    template: GateTemplateName | None = Field(
        None, description="A built-in gate template; its labels fill its query."
    )
    labels: dict[str, Annotated[str, StringConstraints(max_length=1024)]] | None = Field(
        None,
        max_length=16,
        description="Template parameters (app, metric, versionLabel, ...).",
    )
    max: float | None = Field(None, description="Upper bound on the new version's value.")
    min: float | None = Field(None, description="Lower bound on the new version's value.")
    max_ratio_to_legacy: float | None = Field(
        None, gt=0, description="Upper bound on new / legacy."
    )
    min_ratio_to_legacy: float | None = Field(
        None, gt=0, description="Lower bound on new / legacy."
    )
    failure_limit: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Consecutive failures before acting; default: the template's, else 1.",
    )
    on_failure: OnFailure | None = Field(
        None, description="What a failure does; default: the template's, else rollback."
    )
    per_traffic_share: bool | None = Field(
        None,
        description="Divide each version's value by its traffic share before judging "
        "(throughput-like metrics); default: the template's, else false.",
    )

    @model_validator(mode="after")
    def _shape(self) -> Gate:
        if (self.query is None) == (self.template is None):
            raise ValueError(MSG_QUERY_XOR_TEMPLATE)
        bounds = (self.max, self.min, self.max_ratio_to_legacy, self.min_ratio_to_legacy)
        if self.query is not None and all(b is None for b in bounds):
            raise ValueError(MSG_QUERY_NEEDS_BOUND)
        if self.labels is not None and self.template is None:
            raise ValueError(MSG_LABELS_NEED_TEMPLATE)
        return self


class ProviderRef(SpecModel):
    """A MetricProvider (cluster-scoped, declared by the platform team)."""

    name: ObjectName = Field(description="Name of the MetricProvider.")


class _AnalysisSource(SpecModel):
    interval: IntervalDuration = Field("30s", description="Time between analysis rounds: 1s to 1h.")
    provider_ref: ProviderRef | None = Field(
        None,
        description="The MetricProvider to query (address, timeout and credentials); "
        f"exclusive with {' and '.join(catalog.KEYS)}.",
    )


if TYPE_CHECKING:
    _AnalysisProviders = _AnalysisSource
else:
    # One optional section per metric provider (spec.analysis.prometheus, ...), in catalog
    # order, right after providerRef. Read them through ``catalog.inline_section``.
    _AnalysisProviders = create_model(
        "_AnalysisProviders",
        __base__=_AnalysisSource,
        **{
            p.key: (
                p.inline | None,
                Field(
                    None,
                    description=f"Where {p.title} is and how to reach it, for this Rollout "
                    "alone; only addresses the operator allows. Prefer providerRef.",
                ),
            )
            for p in catalog.PROVIDERS
        },
    )


class Analysis(_AnalysisProviders):
    model_config = _validations(
        INTERVAL_BOUNDS.cel("interval"),
        UNREACHABLE_BOUNDS.cel("unreachableLimit"),
        {
            "rule": _PROVIDER_OR_INLINE_RULE,
            "message": MSG_PROVIDER_OR_INLINE,
            "fieldPath": ".providerRef",
        },
    )

    unreachable_limit: UnreachableDuration = Field(
        "1m",
        description="How long the provider may be unreachable before the Rollout pauses: "
        "at most 24h.",
    )
    no_data: NoDataPolicy = Field(
        "pause", description="Inconclusive results: pause (never promote) or count as failure."
    )
    gates: list[Gate] = Field(
        description="The gates, 1 to 16, with unique names; each judged every interval.",
        min_length=1,
        max_length=MAX_GATES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _unique(self) -> Analysis:
        if (self.provider_ref is not None) + len(catalog.sections(self)) > 1:
            raise ValueError(MSG_PROVIDER_OR_INLINE)
        names = [g.name for g in self.gates]
        if len(set(names)) != len(names):
            raise ValueError(MSG_UNIQUE_GATES)
        return self


class Rollback(SpecModel):
    model_config = _validations(ROLLBACK_BOUNDS.cel("duration"))

    mode: RollbackMode = Field(
        "immediate", description="immediate: all traffic back at once; graceful: ramp down."
    )
    duration: RollbackDuration = Field("5m", description="Length of a graceful ramp: 1s to 24h.")


class Dependency(SpecModel):
    name: ObjectName = Field(description="A Rollout in the same namespace.")


class WebhookSecretRef(SpecModel):
    """The Secret (same namespace) holding a webhook URL: URLs carry credentials."""

    name: ObjectName = Field(description="Name of the Secret in the Rollout's namespace.")
    key: str = Field("url", max_length=253, description="Key of the URL in the Secret.")


class Notification(SpecModel):
    """A webhook told about phase changes, approvals needed, gate failures and rollbacks."""

    secret_ref: WebhookSecretRef
    format: NotificationFormat = Field(
        "json", description="slack: a Slack-compatible message; json: every field."
    )
    events: list[NotificationKind] | None = Field(
        None, max_length=7, description="Which kinds to send; default: all."
    )


def _segment_header_rules() -> list[dict[str, str]]:
    """CEL: a setSegment header is one the router can route by (``segment_header``)."""
    rules = []
    for p in ROUTERS:
        if p.settings.segment_header is not None:
            pattern, message = p.settings.segment_header
            rules.append(
                {
                    "rule": f"!has(self.traffic.{p.key}) || !has(self.steps) || self.steps.all("
                    f"s, !has(s.setSegment) || s.setSegment.header.matches('{pattern}'))",
                    "message": message,
                    "fieldPath": ".steps",
                }
            )
    return rules


class RolloutSpec(SpecModel):
    """Move traffic from the legacy to the new version in gated steps."""

    model_config = _validations(
        ("has(self.risk) || has(self.steps)", MSG_RISK_OR_STEPS),
        ("self.legacy.deployment != self.new.deployment", MSG_DISTINCT),
        ("!has(self.hold) || !has(self.steps)", MSG_HOLD_WITH_STEPS),
        HOLD_BOUNDS.cel("hold"),
        BAKE_BOUNDS.cel("bakeTime"),
        *(
            {
                "rule": f"!has(self.traffic.{p.key}) || !has(self.steps) || "
                "!self.steps.exists(s, has(s.setSegment))",
                "message": MSG_SEGMENT_ROUTER,
                "fieldPath": ".steps",
            }
            for p in ROUTERS
            if not p.settings.segments
        ),
        *_segment_header_rules(),
    )

    legacy: Workload = Field(description="What serves traffic today.")
    new: Workload = Field(description="What should serve it tomorrow.")
    traffic: Traffic = Field(description="How traffic is split: exactly one router.")
    risk: Risk | None = Field(None, description="Preset plan; explicit steps override it.")
    steps: list[Step] | None = Field(
        None,
        min_length=1,
        max_length=MAX_STEPS,
        description="The plan, 1 to 64 steps, walked in order; overrides risk. A plan whose "
        "last setWeight is below 100 gets a final setWeight: 100.",
    )
    hold: HoldDuration | None = Field(
        None, description="Replaces the preset's hold after each step; at most 720h (30 days)."
    )
    bake_time: BakeDuration | None = Field(
        None,
        description="After the plan reaches 100%, keep evaluating the gates this long before "
        "Succeeded; a failing gate rolls back by its onFailure. 0s to 720h (30 days).",
    )
    analysis: Analysis | None = Field(
        None,
        description="Health gates evaluated while traffic is split; a failing gate pauses "
        "or rolls back.",
    )
    rollback: Rollback | None = Field(
        None, description="How traffic returns to the legacy version; default immediate."
    )
    notifications: list[Notification] | None = Field(
        None,
        max_length=MAX_NOTIFICATIONS,
        description="Webhooks told about transitions; 0 to 8, each URL read from a Secret.",
    )
    depends_on: list[Dependency] | None = Field(
        None,
        max_length=MAX_DEPENDENCIES,
        description="Rollouts in the same namespace that must have succeeded first.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _whole(self) -> RolloutSpec:
        if self.risk is None and self.steps is None:
            raise ValueError(MSG_RISK_OR_STEPS)
        if self.legacy.deployment == self.new.deployment:
            raise ValueError(MSG_DISTINCT)
        if self.hold is not None and self.steps is not None:
            raise ValueError(MSG_HOLD_WITH_STEPS)
        if (
            self.steps is not None
            and any(s.set_segment is not None for s in self.steps)
            and not self.traffic.settings().segments
        ):
            raise ValueError(MSG_SEGMENT_ROUTER)
        headers = type(self.traffic.settings()).segment_header
        if headers is not None and any(
            s.set_segment is not None and not re.fullmatch(headers[0], s.set_segment.header)
            for s in self.steps or []
        ):
            raise ValueError(headers[1])
        if self.depends_on is not None:
            names = [d.name for d in self.depends_on]
            if len(set(names)) != len(names):
                raise ValueError(MSG_UNIQUE_DEPENDENCIES)
        return self

    def effective_rollback(self) -> Rollback:
        return self.rollback or Rollback()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
