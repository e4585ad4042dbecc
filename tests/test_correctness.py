"""Every public-suite layer, both layouts, against torch.nn.functional.conv2d (+ epilogue)."""
import pytest

from gconvgen import suites

from helpers import relative_error

WORKLOADS = suites.load("public")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_public_layer_matches_torch(workload, layout, host):
    spec = workload.spec.with_layout(layout)
    assert relative_error(spec, host) < 1e-4
