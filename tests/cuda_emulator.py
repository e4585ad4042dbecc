"""Runs a CUDA kernel TVM generated on this CPU, to check what a CUDA schedule computes where no GPU is
lent: the kernel's source is compiled as host C++ by g++ (the CUDA toolkit's headers give half, its
conversions and the vector types), every thread of a block is an OS thread, `__syncthreads()` is a
barrier of the block's threads, and the blocks run one after another (their shared arrays become
statics, which one block at a time may own). Every vector load and store is checked for the
alignment a GPU requires (x86 forgives a misaligned one; a GPU faults). It checks values, not speed, and only what the C++
memory model shares with CUDA's for such code: kernels whose blocks communicate through global
memory, or use warp-level intrinsics (shuffles, votes: TVM's cross-thread reductions), are refused
with a clear error rather than run wrongly.

Tensor cores run as their WMMA API says, not as the hardware spreads a fragment over a warp: every
thread of the warp holds the whole 16x16 tile of each fragment and does the whole load, multiply
and store (each store writes the same values as its warp's others). A fragment is only ever touched
through the API in the code TVM writes, so what a warp computes is the same; a missing barrier
between warps still reads stale shared memory, as on a GPU; a fragment's pointer and stride are
checked for the alignment WMMA requires. Dynamic shared memory is one static array of the most an
sm_90 block may have.
"""
from __future__ import annotations

import ctypes
import hashlib
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import tvm

CUDA_INCLUDE = Path("/usr/local/cuda/include")
_UNSUPPORTED = ("__shfl", "__activemask", "__ballot", "mma.sync", "atomic", "precision::", "bmma_sync")
DYNAMIC_SHARED_BYTES = 227 * 1024   # an sm_90 block's most

_SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <thread>
#include <type_traits>
#include <vector>
#include <cuda_runtime.h>
#undef __global__
#define __global__
#define __launch_bounds__(...)
#include <atomic>
#include <cstdint>
thread_local uint3 threadIdx;
// A vector access must be aligned to its size on a GPU (x86 forgives it): each one is checked
static std::atomic<long> emu_misaligned{0};
template <class T, class P> static inline T* emu_aligned(P* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T)) emu_misaligned++;
  return (T*)p;
}
static uint3 blockIdx;
static std::barrier<>* emu_block_barrier;
static inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
using std::max;   // CUDA's device max/min of two floats or ints
using std::min;
static inline float __fdividef(float a, float b) { return a / b; }
// WMMA: a fragment is its whole tile, row-major, in every thread of the warp (see the docstring)
namespace nvcuda { namespace wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {}; struct row_major {}; struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr bool col_major_in_memory = std::is_same_v<Layout, struct col_major>;
  float x[rows * cols];
};
// a fragment's pointer must be 256-bit aligned and its stride whole 16 bytes
template <class T> static inline void emu_check_fragment(const T* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 || ldm * sizeof(T) % 16) emu_misaligned++;
}
template <class F, class T> static inline void emu_load(F& f, const T* p, unsigned ldm, bool col_major) {
  emu_check_fragment(p, ldm);
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = (float)(col_major ? p[c * ldm + r] : p[r * ldm + c]);
}
template <class U, int M, int N, int K, class T, class L, class P>
static inline void load_matrix_sync(fragment<U, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  emu_load(f, p, ldm, fragment<U, M, N, K, T, L>::col_major_in_memory);
}
template <int M, int N, int K, class T, class P>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const P* p, unsigned ldm, layout_t layout) {
  emu_load(f, p, ldm, layout == mem_col_major);
}
template <int M, int N, int K, class T, class P>
static inline void store_matrix_sync(P* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  emu_check_fragment(p, ldm);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) p[layout == mem_col_major ? c * ldm + r : r * ldm + c] = (T)f.x[r * N + c];
}
template <class F, class V> static inline void fill_fragment(F& f, V v) {
  for (float& e : f.x) e = (float)v;
}
template <int M, int N, int K, class TA, class LA, class TB, class LB, class T>
static inline void mma_sync(fragment<accumulator, M, N, K, T>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                            const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, T>& c) {
  float sum[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s += a.x[i * K + k] * b.x[k * N + j];
      sum[i * N + j] = (float)(T)s;   // a float16 accumulator rounds each step
    }
  std::copy(sum, sum + M * N, d.x);
}
}}
"""

_LAUNCHER = r"""
extern "C" long emu_launch(void** args) {
  const unsigned grid[3] = {%(grid)s}, block[3] = {%(block)s};
  const unsigned threads = block[0] * block[1] * block[2], blocks = grid[0] * grid[1] * grid[2];
  emu_misaligned = 0;
  std::barrier<> barrier(threads);
  emu_block_barrier = &barrier;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = make_uint3(t %% block[0], t / block[0] %% block[1], t / (block[0] * block[1]));
      for (unsigned b = 0; b < blocks; ++b) {
        if (t == 0) blockIdx = make_uint3(b %% grid[0], b / grid[0] %% grid[1], b / (grid[0] * grid[1]));
        barrier.arrive_and_wait();
        %(kernel)s(%(args)s);
        barrier.arrive_and_wait();
      }
    });
  }
  for (auto& thread : pool) thread.join();
  return emu_misaligned.load();
}
"""


class Unsupported(RuntimeError):
    """The kernel uses something this emulator does not model."""


def _launch_extents(func: tvm.tirx.PrimFunc) -> dict[str, int]:
    """threadIdx.* / blockIdx.* extents of the function's one kernel, from its thread bindings as
    TVMScript prints them (this TVM has no Python statement visitor)."""
    extents: dict[str, int] = {}
    for extent, tag in re.findall(r'T\.thread_binding\((?:0, )?(\d+), thread="(\w+\.[xyz])"\)', func.script()):
        if extents.setdefault(tag, int(extent)) != int(extent):
            raise Unsupported(f"{tag} has two extents ({extents[tag]} and {extent}): more than one kernel")
    return extents


def compile_kernel(func: tvm.tirx.PrimFunc, target: tvm.target.Target, workdir: Path) -> tuple[ctypes.CDLL, list[str]]:
    """Build func for the CUDA target, then its source for this CPU; returns the library and the
    kernel's buffer names in its argument order."""
    from gconvgen.cuda import prepare
    prepare()   # TVM's CUDA build settings (nvcc)
    with target:
        built = tvm.compile(tvm.IRModule({"main": func}), target=target)
    source = built.mod.imports[0].inspect_source()
    kernels = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\)\s*\{', source)
    if len(kernels) != 1:
        raise Unsupported(f"{len(kernels)} kernels in one function: the emulator runs one")
    used = [name for name in _UNSUPPORTED if name in source]
    if used:
        raise Unsupported(f"the kernel uses {', '.join(used)}, which the emulator does not model")
    name, params = kernels[0]
    buffers = [re.search(r"(\w+)_ptr$", p.strip()).group(1) for p in params.split(",")]
    extents = _launch_extents(func)
    dims = lambda kind: ", ".join(str(extents.get(f"{kind}.{axis}", 1)) for axis in "xyz")  # noqa: E731
    types = [p.strip().rsplit(" ", 1)[0].replace("__restrict__", "").strip() for p in params.split(",")]
    call_args = ", ".join(f"({t})args[{i}]" for i, t in enumerate(types))
    # the helpers TVM declares __device__ (half max/min) run on the host here
    host_source = re.sub(r"^__device__ ", "inline ", source, flags=re.M)
    # vector loads and stores through a cast pointer: checked for alignment
    host_source = re.sub(r"\*\((u?int[248]|float[24]|half[248])\*\)\(", r"*emu_aligned<\1>(", host_source)
    # a block's shared arrays: statics, which the block running now owns
    host_source = re.sub(r"extern __shared__ (__align__\(\d+\) )?(\w+) (\w+)\[\];",
                         lambda m: f"{m.group(1) or ''}static {m.group(2)} {m.group(3)}[{DYNAMIC_SHARED_BYTES}];", host_source)
    host_source = re.sub(r"__shared__ (alignas\(\d+\) )?", lambda m: f"{m.group(1) or ''}static ", host_source)
    host_source = host_source.replace("#include <mma.h>", "")
    code = _SHIM + host_source + _LAUNCHER % {"grid": dims("blockIdx"), "block": dims("threadIdx"),
                                             "kernel": name, "args": call_args}
    digest = hashlib.sha1(code.encode()).hexdigest()[:16]
    cpp, lib = workdir / f"{digest}.cpp", workdir / f"{digest}.so"
    cpp.write_text(code)
    done = subprocess.run(["g++", "-std=c++20", "-O1", "-w", "-shared", "-fPIC", "-pthread", f"-I{CUDA_INCLUDE}",
                           "-o", str(lib), str(cpp)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"g++ could not build the kernel for the host:\n{done.stderr[-3000:]}")
    library = ctypes.CDLL(str(lib))
    library.emu_launch.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    library.emu_launch.restype = ctypes.c_long
    return library, buffers


def run(func: tvm.tirx.PrimFunc, target: tvm.target.Target, arrays: dict[str, np.ndarray]) -> None:
    """Run func's kernel on arrays (by buffer name: input, weight, bias, out...), writing its outputs
    into them."""
    with tempfile.TemporaryDirectory() as workdir:
        library, buffers = compile_kernel(func, target, Path(workdir))
        missing = [b for b in buffers if b not in arrays]
        if missing:
            raise KeyError(f"no array for the kernel's buffers {missing}")
        # on the device every tensor starts 256-byte aligned (cudaMalloc); here too, so the
        # alignment checks mean what they would there
        staged = {b: _aligned_copy(arrays[b]) for b in buffers}
        pointers = (ctypes.c_void_p * len(buffers))(*[staged[b].ctypes.data for b in buffers])
        misaligned = library.emu_launch(pointers)
        for b in buffers:
            arrays[b][...] = staged[b]
        if misaligned:
            raise AssertionError(f"{misaligned} vector accesses were misaligned: a GPU faults on them")


def _aligned_copy(array: np.ndarray, alignment: int = 256) -> np.ndarray:
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy
