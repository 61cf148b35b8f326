"""The traffic simulator: synthesised requests to a legacy and a new version, split by the
live weight read from the cluster, exposed as Prometheus metrics.

``python -m segue_testkit.trafficsim --help``; see segue_testkit.trafficsim.cli.
"""
