"""Segue's test kit: the local cluster (``segue_testkit.cluster``), the traffic simulator
(``segue_testkit.trafficsim``) and the scenario helpers the end-to-end tests, the demo and the
benchmarks share (``segue_testkit.scenario``)."""
