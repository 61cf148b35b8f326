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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from segue.analysis.bounds import BOUND_FIELDS, BOUND_NAMES, bounds, has_bound
from segue.analysis.providers.prometheus.labels import (
    LABEL_NAME_LABELS,
    LABEL_NAME_PATTERN,
    METRIC_LABELS,
    METRIC_NAME_PATTERN,
    QUANTILE_PATTERN,
    WINDOW_PLACEHOLDER_PATTERN,
)
from segue.analysis.providers.prometheus.templating import (
    TemplateError,
    check,
    escape_string_literal,
    validate_duration,
)

if TYPE_CHECKING:
    from segue.api.spec import Gate, OnFailure

# The CRD's CEL rules check the labels with the same patterns (``labels``).
_METRIC_NAME_RE: Final = re.compile(METRIC_NAME_PATTERN)
_LABEL_NAME_RE: Final = re.compile(LABEL_NAME_PATTERN)
_WINDOW_PLACEHOLDER_RE: Final = re.compile(WINDOW_PLACEHOLDER_PATTERN)
_QUANTILE_RE: Final = re.compile(QUANTILE_PATTERN)

# In the order of labels.TEMPLATE_LABELS (a unit test holds them equal).
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
CUSTOM_DEFAULT_ON_FAILURE: Final = "rollback"
CUSTOM_DEFAULT_FAILURE_LIMIT: Final = 1


@dataclass(frozen=True)
class _Names:
    metric: str
    histogram: str
    selector: str  # label matchers of one version, without braces
    code_label: str
    error_codes: str
    window: str
    quantile: str
    # Batched forms only: the labels every aggregation keeps (``app, version``).
    by: str = ""


@dataclass(frozen=True)
class Template:
    """A built-in template: its query and what it fills in on a gate that names it.
    ``bounds`` holds Gate bound fields (``max``, ``max_ratio_to_legacy``, ...)."""

    name: str
    description: str
    failure_limit: int
    on_failure: OnFailure
    per_traffic_share: bool
    build: Callable[[_Names], str]
    # The same measure for many Rollouts at once (``batching``): one series per
    # (app, version[, namespace]), each equal to what ``build`` gives for that one.
    build_batch: Callable[[_Names], str]
    bounds: Mapping[str, float] = field(default_factory=dict)


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


# Batched forms. Every aggregation keeps ``by (<app label>, <version label>[, namespace
# label])``, so each Rollout's version reads the series of its own label values; a ratio
# divides series with the same labels. The single forms' ``or vector(0)`` (errors absent:
# 0, not "no data") becomes ``or 0 * <all requests>``: 0 for exactly the groups that serve
# traffic, as ``vector(0) / sum(...)`` is 0 only where the denominator exists.


def _all_requests(n: _Names) -> str:
    return f"sum by ({n.by}) (rate({n.metric}{{{n.selector}}}[{n.window}]))"


def _error_rate_batch(n: _Names) -> str:
    errors = (
        f"sum by ({n.by}) "
        f'(rate({n.metric}{{{n.selector},{n.code_label}=~"{n.error_codes}"}}[{n.window}]))'
    )
    return f"({errors} or (0 * {_all_requests(n)})) / {_all_requests(n)}"


def _success_rate_batch(n: _Names) -> str:
    ok = (
        f"sum by ({n.by}) "
        f'(rate({n.metric}{{{n.selector},{n.code_label}!~"{n.error_codes}"}}[{n.window}]))'
    )
    return f"({ok} or (0 * {_all_requests(n)})) / {_all_requests(n)}"


def _latency_batch(n: _Names) -> str:
    return (
        f"histogram_quantile({n.quantile}, "
        f"sum by (le, {n.by}) (rate({n.histogram}{{{n.selector}}}[{n.window}])))"
    )


TEMPLATES: Final[Mapping[str, Template]] = {
    t.name: t
    for t in (
        Template(
            name="error-rate",
            description="share of requests answered with an error code",
            bounds={"max": 0.05},
            failure_limit=1,
            on_failure="rollback",
            per_traffic_share=False,
            build=_error_rate,
            build_batch=_error_rate_batch,
        ),
        Template(
            name="latency",
            description="p99 request latency compared with the legacy version",
            bounds={"max_ratio_to_legacy": 2.0},
            failure_limit=3,
            on_failure="rollback-graceful",
            per_traffic_share=False,
            build=_latency,
            build_batch=_latency_batch,
        ),
        Template(
            name="throughput",
            description="requests per second per unit of traffic share, compared with legacy",
            bounds={"min_ratio_to_legacy": 0.9},
            failure_limit=3,
            on_failure="rollback-graceful",
            per_traffic_share=True,
            build=_throughput,
            build_batch=_all_requests,
        ),
        Template(
            name="success-rate",
            description="share of requests answered without an error code",
            bounds={"min": 0.95},
            failure_limit=3,
            on_failure="rollback-graceful",
            per_traffic_share=False,
            build=_success_rate,
            build_batch=_success_rate_batch,
        ),
    )
}
TEMPLATE_NAMES: Final = tuple(TEMPLATES)


def template_query(template: str, labels: Mapping[str, str] | None = None) -> str:
    """The query of a built-in template for these labels, with placeholders left in."""
    tpl = _template(template)
    return tpl.build(_names(labels or {}))


def merged_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """A gate's template labels with the defaults filled in (not checked)."""
    return {**DEFAULT_LABELS, **(labels or {})}


def batched_template_query(
    template: str, labels: Mapping[str, str], *, selector: str, by: str, window: str
) -> str:
    """The batched form of a built-in template for these labels: its series selected by
    ``selector`` (label matchers without braces), aggregated ``by`` these labels, over the
    rendered ``window``. TemplateError as :func:`template_query`."""
    tpl = _template(template)
    names = replace(_names(labels), selector=selector, by=by, window=window)
    return tpl.build_batch(names)


def with_policy(gate: Gate) -> Gate:
    """The gate with its bounds, ``failureLimit``, ``onFailure`` and ``perTrafficShare``
    filled in: bounds given on the gate replace the template's as a whole (what is written
    is what is checked); the policy fields fall back one by one, to the template's, else
    (a custom query) to 1, ``rollback`` and false. Never fails, so even a gate whose query
    cannot be built reports the bound and policy it would run with."""
    tpl = TEMPLATES.get(gate.template) if gate.template is not None else None
    update: dict[str, object] = {
        "failure_limit": gate.failure_limit
        or (tpl.failure_limit if tpl else CUSTOM_DEFAULT_FAILURE_LIMIT),
        "on_failure": gate.on_failure or (tpl.on_failure if tpl else CUSTOM_DEFAULT_ON_FAILURE),
        "per_traffic_share": gate.per_traffic_share
        if gate.per_traffic_share is not None
        else (tpl.per_traffic_share if tpl else False),
    }
    if tpl is not None and not has_bound(gate):
        update.update({f: tpl.bounds.get(f) for f in BOUND_FIELDS})
    return gate.model_copy(update=update)


def resolve_gate(gate: Gate) -> Gate:
    """The gate as it runs: :func:`with_policy`, and its query built from its template (or
    its own), placeholders still in. TemplateError when the query cannot be built."""
    _check_bounds(gate)
    if gate.template is not None:
        tpl = _template(gate.template)
        labels = gate.labels or {}
        query = tpl.build(_names(labels))
        _check_template_query(query, labels)
    else:
        if gate.query is None:  # the API model refuses this; kept for a model built unchecked
            raise TemplateError(f"gate {gate.name} needs exactly one of query or template")
        query = gate.query
        check(query)
    return with_policy(gate).model_copy(update={"query": query})


def _check_template_query(query: str, labels: Mapping[str, str]) -> None:
    """Placeholders in a template's query come from the labels copied into it."""
    try:
        check(query)
    except TemplateError as e:
        culprit = next((k for k in ("app", "errorCodes") if "{{" in labels.get(k, "")), None)
        raise TemplateError(str(e), e.field, label=culprit) from None


def _template(name: str) -> Template:
    tpl = TEMPLATES.get(name)
    if tpl is None:
        raise TemplateError(f"unknown gate template {name!r}; known: {', '.join(TEMPLATES)}")
    return tpl


def _check_bounds(gate: Gate) -> None:
    for label, b in zip(BOUND_NAMES, bounds(gate), strict=True):
        if b is not None and not math.isfinite(b):
            raise TemplateError(f"gate {gate.name}: {label} must be a finite number")
    for label, r in (
        ("maxRatioToLegacy", gate.max_ratio_to_legacy),
        ("minRatioToLegacy", gate.min_ratio_to_legacy),
    ):
        if r is not None and r <= 0:
            raise TemplateError(f"gate {gate.name}: {label} must be positive")


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
