"""Built-in gate templates, and resolution of a gate into the query and bounds it runs with.

The templates carry the default thresholds of the risk presets: error rate above 5 % rolls
back immediately; p99 latency above 2x legacy, throughput below 90 % of legacy per unit of
traffic share, or success rate below 95 % roll back gracefully.

Metric and label names follow a gate's ``labels`` map, so the templates fit services that do
not use the conventional names (defaults in brackets):

- ``metric``: request counter [http_requests_total]
- ``histogram``: latency histogram buckets [http_request_duration_seconds_bucket]
- ``appLabel`` / ``app``: label naming the application and its value [app / ``{{ rollout }}``]
- ``versionLabel``: label naming the version [version]
- ``codeLabel`` / ``errorCodes``: status code label and the regex of error codes [code / 5..]
- ``namespaceLabel``: if set, this label must also equal the Rollout's namespace [unset]
- ``window``: rate() window, a duration or ``{{ interval }}`` [1m]
- ``quantile``: latency quantile [0.99]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from segue.analysis.templating import (
    TemplateError,
    check,
    escape_string_literal,
    validate_duration,
)
from segue.analysis.types import SEVERITIES, GateSpec, Severity
from segue.api.gate_labels import (
    LABEL_NAME_LABELS,
    LABEL_NAME_PATTERN,
    METRIC_LABELS,
    METRIC_NAME_PATTERN,
    QUANTILE_PATTERN,
    WINDOW_PLACEHOLDER_PATTERN,
)

# The CRD's CEL rules check the labels with the same patterns (segue.api.gate_labels).
_METRIC_NAME_RE: Final = re.compile(METRIC_NAME_PATTERN)
_LABEL_NAME_RE: Final = re.compile(LABEL_NAME_PATTERN)
_WINDOW_PLACEHOLDER_RE: Final = re.compile(WINDOW_PLACEHOLDER_PATTERN)
_QUANTILE_RE: Final = re.compile(QUANTILE_PATTERN)

# In the order of segue.api.gate_labels.TEMPLATE_LABELS (a unit test holds them equal).
DEFAULT_LABELS: Final[Mapping[str, str]] = {
    "metric": "http_requests_total",
    "histogram": "http_request_duration_seconds_bucket",
    "appLabel": "app",
    "app": "{{ rollout }}",
    "versionLabel": "version",
    "codeLabel": "code",
    "errorCodes": "5..",
    "namespaceLabel": "",
    "window": "1m",
    "quantile": "0.99",
}

# A custom query that states no failure policy rolls back at once: a bound the user wrote
# is a hard limit unless they say otherwise (the CRD documents the same default).
CUSTOM_DEFAULT_SEVERITY: Final[Severity] = "rollback"
CUSTOM_DEFAULT_FAILURE_LIMIT: Final = 1


@dataclass(frozen=True)
class Bounds:
    max: float | None = None
    min: float | None = None
    max_ratio_to_legacy: float | None = None
    min_ratio_to_legacy: float | None = None

    @property
    def empty(self) -> bool:
        return all(b is None for b in self.as_tuple())

    @property
    def relative(self) -> bool:
        return self.max_ratio_to_legacy is not None or self.min_ratio_to_legacy is not None

    def as_tuple(self) -> tuple[float | None, ...]:
        return (self.max, self.min, self.max_ratio_to_legacy, self.min_ratio_to_legacy)


@dataclass(frozen=True)
class ResolvedGate:
    """A gate ready to run: its query (still with placeholders) and everything to judge it."""

    name: str
    query: str
    bounds: Bounds
    failure_limit: int
    severity: Severity
    per_traffic_share: bool = False


@dataclass(frozen=True)
class _Names:
    metric: str
    histogram: str
    selector: str  # label matchers of one version, without braces
    code_label: str
    error_codes: str
    window: str
    quantile: str


@dataclass(frozen=True)
class GateTemplate:
    name: str
    description: str
    bounds: Bounds
    failure_limit: int
    severity: Severity
    per_traffic_share: bool
    build: Callable[[_Names], str]


def _error_rate(n: _Names) -> str:
    # "or vector(0)": with no error series yet the numerator is empty, and an empty result
    # would read as "no data" although the version serves traffic without errors.
    return (
        f'(sum(rate({n.metric}{{{n.selector},{n.code_label}=~"{n.error_codes}"}}[{n.window}]))'
        f" or vector(0))"
        f" / sum(rate({n.metric}{{{n.selector}}}[{n.window}]))"
    )


def _success_rate(n: _Names) -> str:
    return (
        f'(sum(rate({n.metric}{{{n.selector},{n.code_label}!~"{n.error_codes}"}}[{n.window}]))'
        f" or vector(0))"
        f" / sum(rate({n.metric}{{{n.selector}}}[{n.window}]))"
    )


def _latency(n: _Names) -> str:
    return (
        f"histogram_quantile({n.quantile}, "
        f"sum by (le) (rate({n.histogram}{{{n.selector}}}[{n.window}])))"
    )


def _throughput(n: _Names) -> str:
    return f"sum(rate({n.metric}{{{n.selector}}}[{n.window}]))"


TEMPLATES: Final[Mapping[str, GateTemplate]] = {
    t.name: t
    for t in (
        GateTemplate(
            name="error-rate",
            description="share of requests answered with an error code",
            bounds=Bounds(max=0.05),
            failure_limit=1,
            severity="rollback",
            per_traffic_share=False,
            build=_error_rate,
        ),
        GateTemplate(
            name="latency",
            description="p99 request latency compared with the legacy version",
            bounds=Bounds(max_ratio_to_legacy=2.0),
            failure_limit=3,
            severity="rollback-graceful",
            per_traffic_share=False,
            build=_latency,
        ),
        GateTemplate(
            name="throughput",
            description="requests per second per unit of traffic share, compared with legacy",
            bounds=Bounds(min_ratio_to_legacy=0.9),
            failure_limit=3,
            severity="rollback-graceful",
            per_traffic_share=True,
            build=_throughput,
        ),
        GateTemplate(
            name="success-rate",
            description="share of requests answered without an error code",
            bounds=Bounds(min=0.95),
            failure_limit=3,
            severity="rollback-graceful",
            per_traffic_share=False,
            build=_success_rate,
        ),
    )
}


def template_query(template: str, labels: Mapping[str, str] | None = None) -> str:
    """The query of a built-in template for these labels, with placeholders left in."""
    tpl = _template(template)
    return tpl.build(_names(labels or {}))


def resolve_gate(spec: GateSpec) -> ResolvedGate:
    """Merge a gate with its template. Bounds given on the gate replace the template's as a
    whole (what is written is what is checked); the policy fields fall back one by one."""
    if not spec.name:
        raise TemplateError("a gate needs a name")
    if (spec.query is None) == (spec.template is None):
        raise TemplateError(f"gate {spec.name} needs exactly one of query or template")
    own = Bounds(spec.max, spec.min, spec.max_ratio_to_legacy, spec.min_ratio_to_legacy)
    _check_bounds(spec.name, own)
    if spec.template is not None:
        tpl = _template(spec.template)
        query = tpl.build(_names(spec.labels))
        _check_template_query(query, spec.labels)
        bounds = tpl.bounds if own.empty else own
        failure_limit = tpl.failure_limit
        severity = tpl.severity
        per_share = tpl.per_traffic_share
    else:
        assert spec.query is not None
        if spec.labels:
            raise TemplateError(
                f"gate {spec.name}: labels only apply to templates; write them into the query"
            )
        query = spec.query
        bounds = own
        failure_limit = CUSTOM_DEFAULT_FAILURE_LIMIT
        severity = CUSTOM_DEFAULT_SEVERITY
        per_share = False
    check(query)
    if bounds.empty:
        raise TemplateError(
            f"gate {spec.name} has no bound: set max, min, maxRatioToLegacy or minRatioToLegacy"
        )
    if spec.failure_limit is not None:
        if spec.failure_limit < 1:
            raise TemplateError(f"gate {spec.name}: failureLimit must be at least 1")
        failure_limit = spec.failure_limit
    if spec.on_failure is not None:
        severity = parse_severity(spec.name, spec.on_failure)
    if spec.per_traffic_share is not None:
        per_share = spec.per_traffic_share
    return ResolvedGate(
        name=spec.name,
        query=query,
        bounds=bounds,
        failure_limit=failure_limit,
        severity=severity,
        per_traffic_share=per_share,
    )


def _check_template_query(query: str, labels: Mapping[str, str]) -> None:
    """Placeholders in a template's query come from the labels copied into it."""
    try:
        check(query)
    except TemplateError as e:
        culprit = next((k for k in ("app", "errorCodes") if "{{" in labels.get(k, "")), None)
        raise TemplateError(str(e), e.field, label=culprit) from None


def parse_severity(gate: str, value: str) -> Severity:
    if value not in SEVERITIES:
        raise TemplateError(
            f"gate {gate}: onFailure {value!r} is not one of {', '.join(SEVERITIES)}"
        )
    return value


def fallback_severity(spec: GateSpec) -> Severity:
    """The severity to report for a gate that could not even be resolved."""
    if spec.on_failure in SEVERITIES:
        return spec.on_failure
    if spec.template is not None and spec.template in TEMPLATES:
        return TEMPLATES[spec.template].severity
    return CUSTOM_DEFAULT_SEVERITY


def bound_text(bounds: Bounds, per_traffic_share: bool = False) -> str:
    """Human-readable bounds, e.g. ``<= 0.05`` or ``<= 2x legacy and <= 0.5``."""
    parts = []
    if bounds.max is not None:
        parts.append(f"<= {_fmt_bound(bounds.max)}")
    if bounds.min is not None:
        parts.append(f">= {_fmt_bound(bounds.min)}")
    if bounds.max_ratio_to_legacy is not None:
        parts.append(f"<= {_fmt_bound(bounds.max_ratio_to_legacy)}x legacy")
    if bounds.min_ratio_to_legacy is not None:
        parts.append(f">= {_fmt_bound(bounds.min_ratio_to_legacy)}x legacy")
    text = " and ".join(parts) if parts else "no bound"
    return text + (" per unit of traffic share" if per_traffic_share and parts else "")


def _fmt_bound(x: float) -> str:
    return f"{x:.4g}"


def fallback_bound(spec: GateSpec) -> str:
    """The bound to report for a gate that could not be resolved (best effort)."""
    own = Bounds(spec.max, spec.min, spec.max_ratio_to_legacy, spec.min_ratio_to_legacy)
    if own.empty and spec.template is not None and spec.template in TEMPLATES:
        tpl = TEMPLATES[spec.template]
        return bound_text(tpl.bounds, tpl.per_traffic_share)
    return bound_text(own) if not own.empty else ""


def fallback_failure_limit(spec: GateSpec) -> int:
    if spec.failure_limit is not None and spec.failure_limit >= 1:
        return spec.failure_limit
    if spec.template is not None and spec.template in TEMPLATES:
        return TEMPLATES[spec.template].failure_limit
    return CUSTOM_DEFAULT_FAILURE_LIMIT


def _template(name: str) -> GateTemplate:
    tpl = TEMPLATES.get(name)
    if tpl is None:
        raise TemplateError(f"unknown gate template {name!r}; known: {', '.join(TEMPLATES)}")
    return tpl


def _check_bounds(gate: str, bounds: Bounds) -> None:
    for label, b in zip(
        ("max", "min", "maxRatioToLegacy", "minRatioToLegacy"), bounds.as_tuple(), strict=True
    ):
        if b is not None and not math.isfinite(b):
            raise TemplateError(f"gate {gate}: {label} must be a finite number")
    for label, r in (
        ("maxRatioToLegacy", bounds.max_ratio_to_legacy),
        ("minRatioToLegacy", bounds.min_ratio_to_legacy),
    ):
        if r is not None and r <= 0:
            raise TemplateError(f"gate {gate}: {label} must be positive")


def _names(labels: Mapping[str, str]) -> _Names:
    unknown = sorted(set(labels) - set(DEFAULT_LABELS))
    if unknown:
        raise TemplateError(
            f"unknown template label {', '.join(unknown)}; known: {', '.join(DEFAULT_LABELS)}",
            label=unknown[0],
        )
    v = {**DEFAULT_LABELS, **labels}
    for key in METRIC_LABELS:
        if not _METRIC_NAME_RE.fullmatch(v[key]):
            raise TemplateError(
                f"template label {key}: {v[key]!r} is not a metric name", key, label=key
            )
    for key in LABEL_NAME_LABELS:
        if key == "namespaceLabel" and not v[key]:
            continue
        if not _LABEL_NAME_RE.fullmatch(v[key]):
            raise TemplateError(
                f"template label {key}: {v[key]!r} is not a label name", key, label=key
            )
    window = v["window"]
    if not _WINDOW_PLACEHOLDER_RE.fullmatch(window):
        try:
            validate_duration("template label window", window)
        except TemplateError as e:
            raise TemplateError(str(e), e.field, label="window") from None
    quantile = v["quantile"]
    if not _QUANTILE_RE.fullmatch(quantile):
        raise TemplateError(
            f"template label quantile: {quantile!r} is not a decimal number between 0 and 1 "
            "(e.g. 0.99)",
            "quantile",
            label="quantile",
        )
    # The app value is escaped like any string-literal content; placeholders in it (the
    # default "{{ rollout }}") survive escaping and are rendered with the rest.
    matchers = [
        f'{v["appLabel"]}="{_escaped(v, "app")}"',
        f'{v["versionLabel"]}="{{{{ version }}}}"',
    ]
    if v["namespaceLabel"]:
        matchers.append(f'{v["namespaceLabel"]}="{{{{ namespace }}}}"')
    return _Names(
        metric=v["metric"],
        histogram=v["histogram"],
        selector=",".join(matchers),
        code_label=v["codeLabel"],
        error_codes=_escaped(v, "errorCodes"),
        window=window,
        quantile=repr(float(quantile)),
    )


def _escaped(labels: Mapping[str, str], key: str) -> str:
    try:
        return escape_string_literal(labels[key], f"template label {key}")
    except TemplateError as e:
        raise TemplateError(str(e), e.field, label=key) from None
