"""Every public-suite layer, both layouts, against torch.nn.functional.conv2d (+ epilogue):
once as served (the shipped tuning log where it has the layer) and once from the rules alone."""
import dataclasses

import pytest

from gconvgen import suites

from helpers import relative_error

WORKLOADS = suites.load("public")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_public_layer_matches_torch(workload, layout, host):
    spec = workload.spec.with_layout(layout)
    assert relative_error(spec, host) < 1e-4


@pytest.fixture(scope="session")
def rules_only(host, tmp_path_factory):
    return dataclasses.replace(host, logs=(str(tmp_path_factory.mktemp("no-log")),))


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_public_layer_from_rules_alone_matches_torch(workload, rules_only):
    from gconvgen.schedule import schedule
    assert schedule(workload.spec, rules_only).kind in ("rule", "fallback")
    assert relative_error(workload.spec, rules_only) < 1e-4
