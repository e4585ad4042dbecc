"""TVM's tensor intrinsics (`tvm.s_tir.tensor_intrin`), imported without TVMScript's frame lookups, and
ours beside them (a WMMA multiply-add with its operands in the other order; WMMA's TF32 shape).

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
        _register_wmma_tf32()
        _register_wmma_sync_shared_a()
        _registered = True
    finally:
        inspect.stack = stack


WMMA_SYNC_WEIGHT_FIRST = "gconvgen_wmma_sync_16x16x16_f16f32_weight_first"
# A float16 WMMA multiply-add whose A is read from shared memory by the intrinsic itself: a banded
# depthwise conv's A tile starts at a row its kernel row offsets (rows h + r of the staged plane), which
# no cache_read into a fragment can express (TVM blockizes such a copy only at multiples of 16)
WMMA_SYNC_SHARED_A = "gconvgen_wmma_sync_16x16x16_f16f32_shared_a"
# WMMA's TF32 shape, 16x16x8, from float32 operands in shared memory into a float32 tile: what
# cuda.TensorCoreGemmTF32 tensorizes with. Its operand fragments are float16 to TVM, whose CUDA code
# declares no float32 ones (they are TF32 in the source: gconvgen.cuda.tf32_fragments), so a load
# is a cast as TVM sees it and the multiply-add float16's, of the 16x16x8 shape.
WMMA_TF32 = {"load_a": "gconvgen_wmma_load_16x16x8_f32_a_shared_dyn",
             "load_b": "gconvgen_wmma_load_16x16x8_f32_b_shared_dyn",
             "compute": "gconvgen_wmma_sync_16x16x8_f32f32f32",
             "weight_first": "gconvgen_wmma_sync_16x16x8_f32f32f32_weight_first",
             "init": "gconvgen_wmma_fill_16x16x8_f32", "store": "gconvgen_wmma_store_16x16x8_f32_shared"}


def _register_wmma_sync_weight_first() -> None:
    """TVM's float16 WMMA multiply-add (C += A B, float32 C), for a block that multiplies in the other
    order, C[i, j] += B[k, j] * A[i, k]: our convs multiply input by weight, and an NCHW conv's GEMM
    has the weight as its A (output channels as rows, pixels as columns). Tensorize matches operands
    in order, so TVM's own does not match it; this one runs the same mma_sync."""
    from tvm.s_tir import TensorIntrin
    TensorIntrin.register(WMMA_SYNC_WEIGHT_FIRST, *_wmma_sync_weight_first(16))


def _register_wmma_tf32() -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin import cuda
    for name, (desc, impl) in {
            "load_a": _wmma_load_tf32("wmma.matrix_a", (16, 8)),
            "load_b": _wmma_load_tf32("wmma.matrix_b", (8, 16)),
            "compute": cuda.get_wmma_sync_intrin(16, 16, 8, "float16", "float32", False),
            "weight_first": _wmma_sync_weight_first(8),
            "init": cuda.get_wmma_fill_intrin(16, 16, 8, "float32"),
            "store": cuda.get_wmma_store_intrin(16, 16, 8, "float32", "shared")}.items():
        TensorIntrin.register(WMMA_TF32[name], desc, impl)


def _wmma_load_tf32(scope: str, shape: tuple[int, int]):
    """(desc, impl) of a WMMA load of a row-major float32 operand from shared memory into a TF32
    fragment (a float16 one to TVM: see WMMA_TF32)."""
    from tvm.s_tir.tensor_intrin.cuda import get_wmma_fragment_index
    from tvm.script import tirx as T
    rows, columns = shape

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, shape, "float32", align=64, offset_factor=columns, scope="shared.dyn")
        C = T.match_buffer(c, shape, "float16", align=64, offset_factor=columns, scope=scope)
        with T.sblock("root"):
            T.reads(A[0:rows, 0:columns])
            T.writes(C[0:rows, 0:columns])
            for i, j in T.grid(rows, columns):
                with T.sblock("load"):
                    vii, vjj = T.axis.remap("SS", [i, j])
                    C[vii, vjj] = T.Cast("float16", A[vii, vjj])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s1, s0, d1, d0 = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, shape, "float32", align=64, offset_factor=columns, scope="shared.dyn", strides=[s1, s0])
        C = T.match_buffer(c, shape, "float16", align=64, offset_factor=columns, scope=scope, strides=[d1, d0])
        with T.sblock("root"):
            T.reads(A[0:rows, 0:columns])
            T.writes(C[0:rows, 0:columns])
            T.evaluate(T.tvm_load_matrix_sync(C.data, 16, 16, 8, get_wmma_fragment_index(C, d1, rows, columns),
                                              A.access_ptr("r", ptr_type="float32"), s1, "row_major", dtype="void"))

    return desc, impl


def _wmma_sync_weight_first(k_dim: int):
    """(desc, impl) of a 16x16xk_dim float16 WMMA multiply-add into float32, C[i, j] += B[k, j] * A[i, k]."""
    from tvm.s_tir.tensor_intrin.cuda import get_wmma_fragment_index
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, k_dim), "float16", align=64, offset_factor=k_dim, scope="wmma.matrix_a")
        B = T.match_buffer(b, (k_dim, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_b")
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope="wmma.accumulator")
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], B[0:k_dim, 0:16], A[0:16, 0:k_dim])
            T.writes(C[0:16, 0:16])
            for i, j, k in T.grid(16, 16, k_dim):
                with T.sblock(""):
                    vii, vjj, vkk = T.axis.remap("SSR", [i, j, k])
                    C[vii, vjj] = C[vii, vjj] + T.Cast("float32", B[vkk, vjj]) * T.Cast("float32", A[vii, vkk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        a1, a0, b1, b0, c1, c0 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (16, k_dim), "float16", align=64, offset_factor=k_dim, scope="wmma.matrix_a",
                           strides=[a1, a0])
        B = T.match_buffer(b, (k_dim, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_b",
                           strides=[b1, b0])
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope="wmma.accumulator",
                           strides=[c1, c0])
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], B[0:k_dim, 0:16], A[0:16, 0:k_dim])
            T.writes(C[0:16, 0:16])
            T.evaluate(T.tvm_mma_sync(C.data, get_wmma_fragment_index(C, c1, 16, 16),
                                      A.data, get_wmma_fragment_index(A, a1, 16, k_dim),
                                      B.data, get_wmma_fragment_index(B, b1, k_dim, 16),
                                      C.data, get_wmma_fragment_index(C, c1, 16, 16), dtype="void"))

    return desc, impl


def _register_wmma_sync_shared_a() -> None:
    """C += A B, float16 operands, float32 C, A a 16x16 tile of a float16 array in dynamic shared memory
    (any row pitch that keeps it 32-byte aligned, as WMMA requires), loaded into a fragment of the
    intrinsic's own and multiplied at once (WMMA_SYNC_SHARED_A)."""
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin.cuda import get_wmma_fragment_index
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=1, scope="shared.dyn")
        B = T.match_buffer(b, (16, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_b")
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope="wmma.accumulator")
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for i, j, k in T.grid(16, 16, 16):
                with T.sblock(""):
                    vii, vjj, vkk = T.axis.remap("SSR", [i, j, k])
                    C[vii, vjj] = C[vii, vjj] + T.Cast("float32", A[vii, vkk]) * T.Cast("float32", B[vkk, vjj])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        a1, a0, b1, b0, c1, c0 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=1, scope="shared.dyn", strides=[a1, a0])
        B = T.match_buffer(b, (16, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_b", strides=[b1, b0])
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope="wmma.accumulator",
                           strides=[c1, c0])
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            F = T.alloc_buffer((16, 16), "float16", scope="wmma.matrix_a")
            T.evaluate(T.tvm_load_matrix_sync(F.data, 16, 16, 16, 0, A.access_ptr("r", ptr_type="float16"), a1,
                                              "row_major", dtype="void"))
            T.evaluate(T.tvm_mma_sync(C.data, get_wmma_fragment_index(C, c1, 16, 16), F.data, 0,
                                      B.data, get_wmma_fragment_index(B, b1, 16, 16),
                                      C.data, get_wmma_fragment_index(C, c1, 16, 16), dtype="void"))

    TensorIntrin.register(WMMA_SYNC_SHARED_A, desc, impl)
