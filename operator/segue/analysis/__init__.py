"""Health gates: metric providers (Prometheus first), query templating, and the judge that
turns values into verdicts. ``round.evaluate_round`` is the entry point for the controller;
``types`` holds the plain values it takes and returns."""
