"""Metric providers as plugins, shaped like the routers of ``segue.traffic``.

Each provider is one folder (``prometheus/``) that owns its spec sections (``settings``),
its gate templates and query language (``templates``, ``templating``, ``planning``), its
credentials, its client and where it may send queries. ``catalog`` lists the providers, one
line each; the API assembles ``spec.analysis`` and the MetricProvider kind from it.
``registry`` gives the shell each provider's running half (operator flags, credentials,
rounds), so nothing outside a provider's folder names it.

Pure parts (``base``, ``catalog`` and a provider's ``provider``, ``settings``, ``labels``,
``templates``, ``templating``, ``planning``) do no I/O: the API and ``segue lint`` import
them. The rest (``runtime``, ``registry``, a provider's ``runtime``, ``client``,
``credentials``) runs in the operator.
"""

# The API builds spec.analysis and the MetricProvider kind from the catalog, whose settings
# models build on the API's base types. Importing the API first makes any import order
# work: a provider module first (the API then loads the catalog, and this package is already
# initialising), or the API first (the catalog then finds the API's modules loading).
import segue.api  # noqa: F401
