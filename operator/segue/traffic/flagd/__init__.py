"""OpenFeature flagd router: the targeting of one flag in a flagd flag-definitions document
held in a ConfigMap, a fractional split between two variants and, for a segment, an ``if``
that sends named evaluation-context values to the new variant."""
