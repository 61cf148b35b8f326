"""``segue`` / ``kubectl segue``: watch, steer and lint Rollouts from a terminal or CI.

The CLI never changes a Rollout's spec or status: it reads them, and steers the operator
only through the annotations in :mod:`segue.engine.annotations`.
"""
