"""TVM's tensor intrinsics (`tvm.s_tir.tensor_intrin`), imported without TVMScript's frame lookups, and
ours beside them (a WMMA multiply-add with its operands in the other order).

MetaSchedule's TuneContext and DLight's tensor-core GEMM import that module, which parses about 500
TVMScript functions. Each parse calls `inspect.stack()`, which finds every frame's source file, and
for a frame that has none (`<frozen importlib._bootstrap>`, `<string>`) scans all of `sys.modules`:
the import took 88 s on a 2-core EPYC, and every `gconvgen tune` paid it. The parser reads only the
frames' locals, so for this import `inspect.stack` walks the frames and looks up no source (6 s)."""
from __future__ import annotations

import inspect
import sys


def _frames_only(context: int = 1) -> list[inspect.FrameInfo]:
    frame, frames = sys._getframe(1), []
    while frame is not None:
        code = frame.f_code
        frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None))
        frame = frame.f_back
    return frames


_registered = False


def load() -> None:
    """Import tvm.s_tir.tensor_intrin (once per process) before anything of TVM's does, and register
    ours (once, whoever imported TVM's)."""
    global _registered
    if _registered:
        return
    stack, inspect.stack = inspect.stack, _frames_only
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401 - registers the intrinsics
        _register_wmma_sync_weight_first()
        _registered = True
    finally:
        inspect.stack = stack


WMMA_SYNC_WEIGHT_FIRST = "gconvgen_wmma_sync_16x16x16_f16f32_weight_first"


def _register_wmma_sync_weight_first() -> None:
    """TVM's float16 WMMA multiply-add (C += A B, float32 C), for a block that multiplies in the other
    order, C[i, j] += B[k, j] * A[i, k]: our convs multiply input by weight, and an NCHW conv's GEMM
    has the weight as its A (output channels as rows, pixels as columns). Tensorize matches operands
    in order, so TVM's own does not match it; this one runs the same mma_sync."""
    from tvm.s_tir.tensor_intrin.cuda import get_wmma_fragment_index
    from tvm.script import tirx as T
    from tvm.s_tir import TensorIntrin

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_a")
        B = T.match_buffer(b, (16, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_b")
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope="wmma.accumulator")
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], B[0:16, 0:16], A[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for i, j, k in T.grid(16, 16, 16):
                with T.sblock(""):
                    vii, vjj, vkk = T.axis.remap("SSR", [i, j, k])
                    C[vii, vjj] = C[vii, vjj] + T.Cast("float32", B[vkk, vjj]) * T.Cast("float32", A[vii, vkk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        a1, a0, b1, b0, c1, c0 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_a", strides=[a1, a0])
        B = T.match_buffer(b, (16, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_b", strides=[b1, b0])
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope="wmma.accumulator",
                           strides=[c1, c0])
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], B[0:16, 0:16], A[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            T.evaluate(T.tvm_mma_sync(C.data, get_wmma_fragment_index(C, c1, 16, 16),
                                      A.data, get_wmma_fragment_index(A, a1, 16, 16),
                                      B.data, get_wmma_fragment_index(B, b1, 16, 16),
                                      C.data, get_wmma_fragment_index(C, c1, 16, 16), dtype="void"))

    TensorIntrin.register(WMMA_SYNC_WEIGHT_FIRST, desc, impl)
