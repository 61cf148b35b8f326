"""Building blocks of the end-to-end tests, the demo and the benchmarks: the cluster
(``Env``), manifests, a legacy/new pair of an app, the traffic simulator and the operator as
processes, and waiting and counting helpers. Everything is real; nothing here is a stand-in.
"""

from segue_testkit.scenario.api_requests import (
    by_method,
    requests_between,
)
from segue_testkit.scenario.bulk import create_all, pooled_client
from segue_testkit.scenario.env import Env, delete_namespace, ensure_namespace, start_cluster
from segue_testkit.scenario.hanging_server import hanging_server
from segue_testkit.scenario.history import confirmed_weights, finished_at, step_overheads
from segue_testkit.scenario.manifests import (
    deployment,
    flagd_configmap,
    httproute,
    new_weight,
    rollout,
    service,
)
from segue_testkit.scenario.operator_process import Operator, start_operator
from segue_testkit.scenario.pairs import replicas_pair, route_weight, service_pair
from segue_testkit.scenario.proc_stats import cpu_seconds, peak_rss_mib
from segue_testkit.scenario.processes import free_port, stop_process
from segue_testkit.scenario.progress import Progress
from segue_testkit.scenario.prometheus_queries import queries_served
from segue_testkit.scenario.sim import Sim, launch_sim, start_sim
from segue_testkit.scenario.waiting import parse_time, percentile, settled, spread, wait_for
from segue_testkit.scenario.watching import ObjectWatch, Seen

__all__ = [
    "Env",
    "ObjectWatch",
    "Operator",
    "Progress",
    "Seen",
    "Sim",
    "by_method",
    "confirmed_weights",
    "cpu_seconds",
    "create_all",
    "delete_namespace",
    "deployment",
    "ensure_namespace",
    "finished_at",
    "flagd_configmap",
    "free_port",
    "hanging_server",
    "httproute",
    "launch_sim",
    "new_weight",
    "parse_time",
    "peak_rss_mib",
    "percentile",
    "pooled_client",
    "queries_served",
    "replicas_pair",
    "requests_between",
    "rollout",
    "route_weight",
    "service",
    "service_pair",
    "settled",
    "spread",
    "start_cluster",
    "start_operator",
    "start_sim",
    "step_overheads",
    "stop_process",
    "wait_for",
]
