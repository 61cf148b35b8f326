"""Prometheus as a metric provider.

- ``provider``: what the API and ``segue lint`` know of it (its entry in the catalog).
- ``settings``: ``spec.analysis.prometheus`` and a MetricProvider's ``spec.prometheus``.
- ``labels``, ``templates``: the built-in gate templates and the labels they take.
- ``templating``: ``{{ placeholders }}`` in PromQL, validated and escaped.
- ``planning``: a gate resolved and its PromQL rendered for both versions.
- ``addresses``: which inline addresses the operator allows.
- ``credentials``: the bearer token and CA bundle from a Secret.
- ``client``: the HTTP client (prometheus-api-client), its retries and error summaries.
- ``runtime``: the running half: operator flags, where a round's queries go, the round.
"""
