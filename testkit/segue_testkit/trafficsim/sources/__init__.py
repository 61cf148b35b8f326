"""Where the simulator reads the split from: one module per source, each defining ``KIND``.
A new router adds its module here and one entry to ``KINDS``."""

from segue_testkit.trafficsim.sources import flagd, gatewayapi, istio, nginx, replicas, static
from segue_testkit.trafficsim.sources.base import SourceKind, Split, WeightSource

KINDS: tuple[SourceKind, ...] = (
    gatewayapi.KIND,
    replicas.KIND,
    flagd.KIND,
    nginx.KIND,
    static.KIND,
    istio.KIND,
)

__all__ = ["KINDS", "SourceKind", "Split", "WeightSource"]
