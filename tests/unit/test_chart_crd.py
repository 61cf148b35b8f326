"""The Helm chart carries the generated CRD unchanged."""

from __future__ import annotations

from pathlib import Path

from segue.api.crd import CRD_PATH

CHART_CRD = Path(__file__).resolve().parents[2] / "charts" / "segue" / "crds" / CRD_PATH.name


def test_chart_crd_is_a_byte_identical_copy_of_the_generated_crd() -> None:
    assert CHART_CRD.read_bytes() == CRD_PATH.read_bytes(), (
        f"{CHART_CRD} differs from {CRD_PATH}; run `make crds` to regenerate and copy it"
    )
