"""Routers: one folder each (``plugin.py`` declares it, ``router.py`` moves traffic), listed
in ``catalog.py`` and built by ``registry.py``.

``spec.traffic`` is assembled from the catalog, so the API package is imported first: that
way importing a router declaration before the API (the chart generator does) cannot meet a
half-built ``segue.api.spec``.
"""

import segue.api  # noqa: F401
