"""Health gates: metric providers as plugins (``providers/``, Prometheus first), and what
they share: the query pool (``pool``), cached query clients (``clients``), the round
(``round``), the judge that turns values into the API's ``GateStatus`` (``judge``) and a
gate's bounds (``bounds``). A provider takes the API's ``Gate`` and returns its
``GateStatus``; the controller reaches providers through ``providers.registry``."""
