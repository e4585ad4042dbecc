"""Op definitions as TVM tensor expressions: what each kernel computes, never how or where."""
from __future__ import annotations

import json

import tvm
from tvm import te

from ..spec import KernelSpec
from .conv import group_conv2d
from .shuffle import channel_shuffle
from .dgrad import conv2d_input_grad
from .pool import avg_pool2d, max_pool2d
from .wgrad import conv2d_weight_grad

_COMPUTES = {"conv2d": group_conv2d, "channel_shuffle": channel_shuffle, "conv2d_wgrad": conv2d_weight_grad,
             "conv2d_dgrad": conv2d_input_grad, "max_pool2d": max_pool2d,
             "avg_pool2d": avg_pool2d}

SPEC_ATTR = "gconvgen.spec"


def prim_func(spec: KernelSpec) -> tvm.tirx.PrimFunc:
    """The kernel's PrimFunc; its arguments follow `spec.arg_names` and it carries the spec
    (as JSON in the `gconvgen.spec` attribute) so schedule rules can read what they schedule."""
    tensors = _COMPUTES[spec.op](spec)
    func = te.create_prim_func(tensors)
    return func.with_attr("global_symbol", spec.func_name).with_attr(SPEC_ATTR, json.dumps(spec.to_json()))


def spec_of(func: tvm.tirx.PrimFunc) -> KernelSpec | None:
    """The spec a PrimFunc was made from, or None for a function that is not ours."""
    if func.attrs is None or SPEC_ATTR not in func.attrs:
        return None
    return KernelSpec.from_json(str(func.attrs[SPEC_ATTR]))


__all__ = ["prim_func", "spec_of", "group_conv2d", "channel_shuffle", "conv2d_weight_grad", "conv2d_input_grad",
           "SPEC_ATTR"]
