"""The labels a gate template accepts, and the CEL rules that check them in the CRD.

``templates`` checks the same labels with the same patterns when it resolves a gate (for the
operator and ``segue lint``); this module is the single list of names and patterns, so the
API server refuses what resolution would refuse, as far as CEL can say it. Resolution checks
more than CEL can: placeholders inside ``app``, and the query as a whole.
"""

from __future__ import annotations

from typing import Final

TEMPLATE_LABELS: Final = (
    "metric",
    "histogram",
    "appLabel",
    "app",
    "versionLabel",
    "codeLabel",
    "errorCodes",
    "namespaceLabel",
    "window",
    "quantile",
)
METRIC_LABELS: Final = ("metric", "histogram")
LABEL_NAME_LABELS: Final = ("appLabel", "versionLabel", "codeLabel", "namespaceLabel")
STRING_LABELS: Final = ("app", "errorCodes")

# Prometheus' metric and label name grammars.
METRIC_NAME_PATTERN: Final = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME_PATTERN: Final = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# A rate() window: {{ interval }} or a Prometheus duration (units in decreasing order).
WINDOW_PLACEHOLDER_PATTERN: Final = r"^\{\{\s*interval\s*\}\}$"
PROMETHEUS_DURATION_PATTERN: Final = (
    r"^([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"
)
# A quantile strictly between 0 and 1, written as a decimal: 0.99, .5, 0.999.
QUANTILE_PATTERN: Final = r"^0*\.[0-9]*[1-9][0-9]*$"

_GATE: Final = "spec.analysis.gates[*].labels"
MSG_UNKNOWN_LABEL: Final = f"{_GATE}: unknown template label; known: {', '.join(TEMPLATE_LABELS)}"
MSG_METRIC_NAME: Final = (
    "must be a Prometheus metric name (letters, digits, '_' and ':', not starting with a digit)"
)
MSG_LABEL_NAME: Final = (
    "must be a Prometheus label name (letters, digits and '_', not starting with a digit)"
)
MSG_WINDOW: Final = (
    "must be {{ interval }} or a Prometheus duration longer than zero (e.g. 1m, 30s, 1m30s)"
)
MSG_QUANTILE: Final = "must be a decimal number between 0 and 1 (e.g. 0.99)"
MSG_CONTROL: Final = "must not contain control or format characters"


def _label(key: str, condition: str, message: str) -> dict[str, str]:
    """A rule on one label, skipped when it is absent; ``$v`` in ``condition`` is its value."""
    value = f"self.labels['{key}']"
    return {
        "rule": f"!has(self.labels) || !('{key}' in self.labels) || ("
        + condition.replace("$v", value)
        + ")",
        "message": f"{_GATE}.{key}: {message}",
        "fieldPath": f".labels.{key}",
    }


def _known() -> str:
    return "[" + ", ".join(f"'{k}'" for k in TEMPLATE_LABELS) + "]"


TEMPLATE_LABEL_RULES: Final[tuple[dict[str, str], ...]] = (
    {
        "rule": f"!has(self.labels) || self.labels.all(k, k in {_known()})",
        "message": MSG_UNKNOWN_LABEL,
        "fieldPath": ".labels",
    },
    *(
        _label(key, "$v.matches(r'" + METRIC_NAME_PATTERN + "')", MSG_METRIC_NAME)
        for key in METRIC_LABELS
    ),
    *(
        _label(
            key,
            ("$v == '' || " if key == "namespaceLabel" else "")
            + "$v.matches(r'"
            + LABEL_NAME_PATTERN
            + "')",
            MSG_LABEL_NAME,
        )
        for key in LABEL_NAME_LABELS
    ),
    _label(
        "window",
        "$v.matches(r'"
        + WINDOW_PLACEHOLDER_PATTERN
        + "') || ($v.matches(r'"
        + PROMETHEUS_DURATION_PATTERN
        + "') && $v.matches('[1-9]'))",
        MSG_WINDOW,
    ),
    _label("quantile", "$v.matches(r'" + QUANTILE_PATTERN + "')", MSG_QUANTILE),
    *(
        _label(key, r"!$v.matches(r'[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]')", MSG_CONTROL)
        for key in STRING_LABELS
    ),
)
