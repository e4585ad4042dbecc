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
checked for the alignment WMMA requires, and a TF32 fragment's values for being TF32 ones (a
tensor core drops a float32's low 13 bits; the multiply-add here is exact either way). Dynamic shared memory is one static array of the most an
sm_90 block may have. An asynchronous copy (cp.async, a pipeline's async stages) lands on a GPU at
some time between its issue and the wait that retires its group, so a kernel with such copies runs
twice: each copy done where it is issued, then each group of them done at that wait (its addresses
checked for its size's alignment either way). A copy into a buffer still being read shows in the
first run as a wrong value, a read before its copy's wait in the second, and outputs that differ
between the runs fail the run.

It also counts shared-memory wavefronts, the one cost it can tell without a GPU: every access to a
static shared array and every vector access into shared memory is logged with its source line, and
the k-th access of a line by each thread of a warp is taken as one warp-wide request, served (as on
sm_80/sm_90: 32 banks of 4 bytes) in as many wavefronts as the most distinct words any bank must
deliver, 8-byte accesses a half-warp and 16-byte ones a quarter-warp at a time. `run` returns the
total beside the least the same bytes could take (one wavefront per 128 bytes a request moves): a
layout whose threads stride across banks shows as the ratio of the two. The accesses are the CUDA
source's; nvcc drops repeated loads of one address and may merge adjacent ones into vector loads,
so the counts say how a layout spreads over the banks, not how many loads the GPU issues.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm

CUDA_INCLUDE = Path("/usr/local/cuda/include")
_UNSUPPORTED = ("__shfl", "__activemask", "__ballot", "mma.sync", "atomic", "experimental::precision", "bmma_sync")
DYNAMIC_SHARED_BYTES = 227 * 1024   # an sm_90 block's most

_SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>
#include <cuda_runtime.h>
#undef __global__
#define __global__
#define __launch_bounds__(...)
#include <atomic>
#include <cstdint>
#include <map>
thread_local uint3 threadIdx;
thread_local unsigned emu_thread;   // the thread's index in its block
// Shared-memory accesses, each thread's in order: (source line, byte offset, size)
struct emu_access { int line; long offset; int size; };
static std::vector<std::vector<emu_access>> emu_log;
static std::vector<std::pair<const char*, const char*>> emu_shared_ranges;
static long emu_wavefronts = 0, emu_ideal = 0;
__attribute__((noinline)) static void emu_touch(int line, const void* p, int size) {
  for (auto [lo, hi] : emu_shared_ranges)
    if ((const char*)p >= lo && (const char*)p < hi) {
      emu_log[emu_thread].push_back({line, (const char*)p - lo, size});
      return;
    }
}
// a static shared array: its subscripts are logged (the source's X[i] becomes X.at(line, i))
template <class T, unsigned long N> struct emu_shared {
  alignas(64) T data[N];
  emu_shared() { emu_shared_ranges.push_back({(const char*)data, (const char*)(data + N)}); }
  T& at(int line, long i) { emu_touch(line, data + i, sizeof(T)); return data[i]; }
};
template <class T> static inline T& emu_at(int line, void* base, long i) {
  T* p = (T*)base + i;
  emu_touch(line, (const void*)p, sizeof(T));
  return *p;
}
struct emu_register_range {
  emu_register_range(const void* p, unsigned long bytes) {
    emu_shared_ranges.push_back({(const char*)p, (const char*)p + bytes});
  }
};
// A vector access must be aligned to its size on a GPU (x86 forgives it): each one is checked
static std::atomic<long> emu_misaligned{0};
// (a misaligned one is counted and served from a scratch copy: g++ may use aligned moves for T,
// which fault on x86 too, and the run fails on the count anyway)
template <class T, class P> static inline T* emu_aligned(int line, P* p) {
  emu_touch(line, p, sizeof(T));
  if (reinterpret_cast<uintptr_t>(p) % alignof(T)) {
    emu_misaligned++;
    alignas(T) static thread_local unsigned char scratch[sizeof(T)];
    std::memcpy(scratch, (const void*)p, sizeof(T));
    return (T*)scratch;
  }
  return (T*)p;
}
// A block's logs as warp-wide requests: the k-th access of a source line by each thread of a warp
static void emu_count_wavefronts(unsigned threads) {
  for (unsigned warp = 0; warp * 32 < threads; ++warp) {
    std::map<std::pair<int, int>, std::vector<emu_access>> requests;   // (line, k) -> its lanes' accesses
    for (unsigned lane = warp * 32; lane < std::min(threads, warp * 32 + 32); ++lane) {
      std::map<int, int> seen;
      for (const emu_access& a : emu_log[lane]) requests[{a.line, seen[a.line]++}].push_back(a);
      emu_log[lane].clear();
    }
    for (auto& [_, lanes] : requests) {
      const int size = lanes[0].size, phase = size <= 4 ? 32 : 128 / size;   // lanes a wavefront serves at best
      long bytes = 0;
      for (unsigned first = 0; first < lanes.size(); first += phase) {
        std::map<int, std::vector<long>> words;   // bank -> distinct words
        for (unsigned i = first; i < std::min<unsigned>(lanes.size(), first + phase); ++i)
          for (long w = lanes[i].offset / 4; w < (lanes[i].offset + lanes[i].size + 3) / 4; ++w) {
            auto& bank = words[w % 32];
            if (std::find(bank.begin(), bank.end(), w) == bank.end()) bank.push_back(w);
          }
        long most = 0;
        for (auto& [bank, ws] : words) most = std::max<long>(most, ws.size());
        emu_wavefronts += most;
      }
      for (const emu_access& a : lanes) bytes += a.size;
      emu_ideal += (bytes + 127) / 128;
    }
  }
}
// cp.async (see the module's docstring): done where it is issued, or with emu_async_late each group
// of copies done at the wait that retires it; a predicated one zero-fills where false
struct emu_copy { void* dst; const void* src; int bytes; int predicate; };
static bool emu_async_late = false;
static thread_local std::vector<emu_copy> emu_uncommitted;
static thread_local std::vector<std::vector<emu_copy>> emu_in_flight;   // committed groups, oldest first
static inline void emu_land(const emu_copy& c) {
  if (c.predicate) std::memcpy(c.dst, c.src, c.bytes);
  else std::memset(c.dst, 0, c.bytes);
}
static inline void emu_cp_async(int line, void* dst, const void* src, int bytes, int predicate) {
  emu_touch(line, dst, bytes);
  if (reinterpret_cast<uintptr_t>(dst) % bytes || (predicate && reinterpret_cast<uintptr_t>(src) % bytes))
    emu_misaligned++;
  if (emu_async_late) emu_uncommitted.push_back({dst, src, bytes, predicate});
  else emu_land({dst, src, bytes, predicate});
}
static inline void emu_cp_async_commit() {
  emu_in_flight.push_back(std::move(emu_uncommitted));
  emu_uncommitted.clear();
}
static inline void emu_cp_async_wait(unsigned pending) {   // all but the newest `pending` groups land
  while (emu_in_flight.size() > pending) {
    for (const emu_copy& c : emu_in_flight.front()) emu_land(c);
    emu_in_flight.erase(emu_in_flight.begin());
  }
}
static inline void emu_cp_async_drain() {   // (at a kernel's end: what it left in flight)
  emu_cp_async_commit();
  emu_cp_async_wait(0);
}
extern "C" void emu_set_async_late(int late) { emu_async_late = late; }
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
namespace precision { struct tf32 {}; }
// a TF32 operand must hold a TF32 value (tensor cores read its top 19 bits): one with any of its low
// 13 bits set is counted, and the run fails on the count
static std::atomic<long> emu_unrounded{0};
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
  if constexpr (std::is_same_v<T, precision::tf32>)
    for (float v : f.x) {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      if (bits & 0x1FFF) emu_unrounded++;
    }
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
  nvcuda::wmma::emu_unrounded = 0;
  emu_wavefronts = emu_ideal = 0;
  emu_log.assign(threads, {});
  std::barrier<> barrier(threads);
  emu_block_barrier = &barrier;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = make_uint3(t %% block[0], t / block[0] %% block[1], t / (block[0] * block[1]));
      emu_thread = t;
      for (unsigned b = 0; b < blocks; ++b) {
        if (t == 0) blockIdx = make_uint3(b %% grid[0], b / grid[0] %% grid[1], b / (grid[0] * grid[1]));
        barrier.arrive_and_wait();
        %(kernel)s(%(args)s);
        emu_cp_async_drain();
        barrier.arrive_and_wait();
        if (t == 0) emu_count_wavefronts(threads);
      }
    });
  }
  for (auto& thread : pool) thread.join();
  return emu_misaligned.load();
}
extern "C" long emu_shared_wavefronts() { return emu_wavefronts; }
extern "C" long emu_unrounded_operands() { return nvcuda::wmma::emu_unrounded.load(); }
extern "C" long emu_shared_ideal() { return emu_ideal; }
extern "C" int emu_async_copies() { return %(async_copies)d; }
"""


class Unsupported(RuntimeError):
    """The kernel uses something this emulator does not model."""


def _launch_extents(func: tvm.tirx.PrimFunc) -> dict[str, int]:
    """The kernel's launch extents (gconvgen.cuda.launch_extents), a function of several refused."""
    from gconvgen.cuda import launch_extents
    try:
        return launch_extents(func)
    except ValueError as e:
        raise Unsupported(str(e)) from None


_GXX_FLAGS = ["-std=c++20", "-O1", "-w", "-fPIC", "-pthread", f"-I{CUDA_INCLUDE}"]
# The shim and the headers TVM's CUDA source includes, compiled once (a precompiled header): parsing
# them took 2 s of each kernel's build, a few hundred builds a test run
_PRELUDE = _SHIM + "#include <cstdint>\n#include <type_traits>\n#include <cuda.h>\n#include <cuda_fp16.h>\n"


@functools.lru_cache(maxsize=None)
def _prelude() -> Path:
    """The shim's header, precompiled beside it (g++ takes header.gch in its place where its flags
    match; else it parses the header), built once per content and compiler by whichever test
    process gets there first."""
    from gconvgen.paths import cache_dir
    version = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha1((_PRELUDE + version + " ".join(_GXX_FLAGS)).encode()).hexdigest()[:16]
    header = cache_dir() / "cuda-emulator" / key / "emu_prelude.h"
    if not header.with_suffix(".h.gch").exists():
        header.parent.mkdir(parents=True, exist_ok=True)
        for path, make in ((header, lambda out: out.write_text(_PRELUDE)),
                           (header.with_suffix(".h.gch"), lambda out: subprocess.run(
                               ["g++", *_GXX_FLAGS, "-x", "c++-header", "-o", str(out), str(header)],
                               check=True, capture_output=True))):
            partial = path.with_name(f"{path.name}.{os.getpid()}")   # (renamed whole: another process may read it)
            make(partial)
            partial.replace(path)
    return header


def cuda_source(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> str:
    """The CUDA source TVM writes for func, lowered as gconvgen builds it, without nvcc: TVM hands
    the source to the compile callback, whose answer here is a stub PTX (nvcc took 14-20 s of a
    750 KB grouped kernel, and most of the emulated tests' time; that nvcc accepts each rule's code
    is tests/test_cuda.py's test_nvcc_compiles_every_rules_kernel)."""
    import tvm_ffi
    from gconvgen.build import compile_module
    from gconvgen.cuda import prepare
    prepare()   # TVM's CUDA build settings
    nvcc = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", lambda code, *_: b"// source only", override=True)
    try:
        return compile_module(tvm.IRModule({"main": func}), target).mod.imports[0].inspect_source()
    finally:
        tvm_ffi.register_global_func("tvm_callback_cuda_compile", nvcc, override=True)


def compile_kernel(func: tvm.tirx.PrimFunc, target: tvm.target.Target, workdir: Path) -> tuple[ctypes.CDLL, list[str]]:
    """Build func for the CUDA target, then its source for this CPU; returns the library and the
    kernel's buffer names in its argument order."""
    from gconvgen.cuda import tf32_fragments
    source = tf32_fragments(cuda_source(func, target))   # (as nvcc is given it)
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
    # the helpers TVM declares __device__ (half max/min, cp.async) run on the host here
    host_source = _async_copies(re.sub(r"^(__forceinline__ )?__device__ ", "inline ", source, flags=re.M))
    # vector loads and stores through a cast pointer: checked for alignment
    host_source = re.sub(r"\*\((u?int[248]|float[24]|half[248])\*\)\(", r"*emu_aligned<\1>(__LINE__, ", host_source)
    # a block's shared arrays: statics, which the block running now owns; the dynamic one's range and
    # the static ones' subscripts logged for the wavefront count
    host_source = re.sub(r"extern __shared__ (__align__\(\d+\) )?(\w+) (\w+)\[\];",
                         lambda m: f"{m.group(1) or ''}static {m.group(2)} {m.group(3)}[{DYNAMIC_SHARED_BYTES}]; "
                                   f"static emu_register_range emu_range_{m.group(3)}({m.group(3)}, sizeof({m.group(3)}));",
                         host_source)
    for array in re.findall(r"emu_register_range emu_range_(\w+)\(", host_source):
        host_source = _logged_casts(host_source, array)
    shared = re.findall(r"__shared__ (?:alignas\(\d+\) )?\w+ (\w+)\[\d+\];", host_source)
    host_source = re.sub(r"__shared__ (alignas\(\d+\) )?(\w+) (\w+)\[(\d+)\];",
                         lambda m: f"{m.group(1) or ''}static emu_shared<{m.group(2)}, {m.group(4)}> {m.group(3)};",
                         host_source)
    for array in shared:
        host_source = _logged_subscripts(_logged_casts(host_source, array), array)
    host_source = host_source.replace("#include <mma.h>", "")
    code = host_source + _LAUNCHER % {"grid": dims("blockIdx"), "block": dims("threadIdx"),
                                      "kernel": name, "args": call_args,
                                      "async_copies": host_source.count("emu_cp_async(__LINE__")}
    digest = hashlib.sha1(code.encode()).hexdigest()[:16]
    cpp, lib = workdir / f"{digest}.cpp", workdir / f"{digest}.so"
    cpp.write_text(code)
    done = subprocess.run(["g++", *_GXX_FLAGS, "-include", str(_prelude()), "-shared", "-o", str(lib), str(cpp)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"g++ could not build the kernel for the host:\n{done.stderr[-3000:]}")
    library = ctypes.CDLL(str(lib))
    library.emu_launch.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    library.emu_launch.restype = ctypes.c_long
    library.emu_shared_wavefronts.restype = library.emu_shared_ideal.restype = ctypes.c_long
    library.emu_unrounded_operands.restype = ctypes.c_long
    return library, buffers


def _async_copies(source: str) -> str:
    """TVM's cp.async helpers (plain and predicated: cp.async where the predicate holds, zeros stored
    where not) -> emu_cp_async, their commits and waits -> emu_cp_async_commit and _wait."""
    source = source.replace("unsigned int dst_addr = __cvta_generic_to_shared(dst_p);", "")
    source = re.sub(r'asm volatile\("cp\.async\.c[ag]\.shared\.global \[%0\], \[%1\], %2;"\s*'
                    r'::\s*"r"\(dst_addr\), "l"\(src_p\), "n"\((\d+)\)\);',
                    r"emu_cp_async(__LINE__, dst_p, src_p, \1, 1);", source)
    source = re.sub(r'__asm__ __volatile__\(\s*(?:"[^"]*"\s*)+::\s*"r"\(dst_addr\), "l"\(src_p\), "n"\((\d+)\), '
                    r'"r"\(predicate\), "r"\(0\)\s*\);',
                    r"emu_cp_async(__LINE__, dst_p, src_p, \1, predicate);", source)
    source = re.sub(r'asm volatile\("cp\.async\.commit_group;"[^;]*\);', "emu_cp_async_commit();", source)
    source = re.sub(r'asm volatile\("cp\.async\.wait_group (\d+);"[^;]*\);', r"emu_cp_async_wait(\1);", source)
    if "cp.async" in source:
        raise Unsupported("a form of cp.async the emulator does not model")
    return source


def _closing(source: str, start: int) -> int:
    """The index of the ']' closing the '[' at start."""
    depth, end = 0, start
    while True:
        depth += {"[": 1, "]": -1}.get(source[end], 0)
        if depth == 0:
            return end
        end += 1


def _logged_casts(source: str, name: str) -> str:
    """((T*)name)[i] -> emu_at<T>(__LINE__, name, i): a logged access through a cast of a shared
    array (TVM's reductions and the dynamic shared array are read so)."""
    out, at = [], 0
    for m in re.finditer(rf"\(\(((?:volatile )?\w+)\*\){name}\)\[", source):
        if m.start() < at:
            continue
        end = _closing(source, m.end() - 1)
        out += [source[at:m.start()], f"emu_at<{m.group(1)}>(__LINE__, {name}, ",
                _logged_casts(source[m.end():end], name), ")"]
        at = end + 1
    return "".join(out) + source[at:]


def _logged_subscripts(source: str, name: str) -> str:
    """name[i] -> name.at(__LINE__, i), a logged access to the shared array; its other uses (a
    pointer to cast) -> name.data."""
    out, at = [], 0
    for m in re.finditer(rf"\b{name}\b(?!>)", source):
        if m.start() < at:
            continue
        out.append(source[at:m.start()])
        after = m.end()
        if source.startswith("[", after):
            end = _closing(source, after)
            out.append(f"{name}.at(__LINE__, {_logged_subscripts(source[after + 1:end], name)})")
            at = end + 1
        elif re.match(r"\s*;", source[after:]) and re.search(r"emu_shared<[^>]*>\s*$", source[max(0, m.start() - 80):m.start()]):
            out.append(name)   # the declaration
            at = after
        else:
            out.append(f"{name}.data")
            at = after
    return "".join(out) + source[at:]


@dataclass(frozen=True)
class Stats:
    """What a run counted: vector accesses a GPU would fault on, and shared-memory wavefronts
    against the least the same requests could take (see the module's docstring)."""
    misaligned: int
    shared_wavefronts: int
    shared_ideal: int


def run(func: tvm.tirx.PrimFunc, target: tvm.target.Target, arrays: dict[str, np.ndarray]) -> Stats:
    """Run func's kernel on arrays (by buffer name: input, weight, bias, out...), writing its outputs
    into them."""
    with tempfile.TemporaryDirectory() as workdir:
        library, buffers = compile_kernel(func, target, Path(workdir))
        missing = [b for b in buffers if b not in arrays]
        if missing:
            raise KeyError(f"no array for the kernel's buffers {missing}")
        runs = []
        # (async copies landing where issued, then at their waits: see the module's docstring)
        for late in (False, True) if library.emu_async_copies() else (False,):
            library.emu_set_async_late(late)
            # on the device every tensor starts 256-byte aligned (cudaMalloc); here too, so the
            # alignment checks mean what they would there
            staged = {b: _aligned_copy(arrays[b]) for b in buffers}
            pointers = (ctypes.c_void_p * len(buffers))(*[staged[b].ctypes.data for b in buffers])
            misaligned = library.emu_launch(pointers)
            if misaligned:
                raise AssertionError(f"{misaligned} vector accesses were misaligned: a GPU faults on them")
            unrounded = library.emu_unrounded_operands()
            if unrounded:
                raise AssertionError(f"{unrounded} TF32 operands held float32 values not rounded to TF32: tensor "
                                     f"cores drop their low bits")
            runs.append((staged, Stats(misaligned, library.emu_shared_wavefronts(), library.emu_shared_ideal())))
        (staged, stats), *later = runs
        for other, _ in later:
            differ = [b for b in buffers if not np.array_equal(staged[b], other[b], equal_nan=True)]
            if differ:
                raise AssertionError(f"{differ} differ between cp.async copies landing where issued and at their "
                                     f"waits: a buffer is read before its copy's wait, or copied into while read")
        for b in buffers:
            arrays[b][...] = staged[b]
        return stats


def _aligned_copy(array: np.ndarray, alignment: int = 256) -> np.ndarray:
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy
