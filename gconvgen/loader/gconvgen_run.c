/* gconvgen_run: load a gconvgen bundle through tvm-ffi's C ABI and check every kernel on the bundle's
 * test vectors. The calls here are all a C program needs to use a kernel: load the module, look a
 * function up by the name in manifest.json ("function"), call it with DLTensor pointers.
 *
 *   gconvgen_run BUNDLE            (reads BUNDLE/gconvgen.so and BUNDLE/vectors/index.txt)
 *
 * Build: see Makefile (links libtvm_ffi and libtvm_runtime from the bundle's lib/). */
#include <dlpack/dlpack.h>
#include <tvm/ffi/c_api.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 8
#define MAX_DIMS 8

static void die_ffi(const char* what) {
  TVMFFIObjectHandle err = NULL;
  TVMFFIErrorMoveFromRaised(&err);
  if (err != NULL) {
    /* The error cell follows the object header. */
    const TVMFFIErrorCell* cell = (const TVMFFIErrorCell*)((const char*)err + sizeof(TVMFFIObject));
    fprintf(stderr, "gconvgen_run: %s: %.*s: %.*s\n", what, (int)cell->kind.size, cell->kind.data,
            (int)cell->message.size, cell->message.data);
  } else {
    fprintf(stderr, "gconvgen_run: %s failed\n", what);
  }
  exit(2);
}

static TVMFFIObjectHandle global_function(const char* name) {
  TVMFFIByteArray bytes = {name, strlen(name)};
  TVMFFIObjectHandle f = NULL;
  if (TVMFFIFunctionGetGlobal(&bytes, &f) != 0 || f == NULL) die_ffi(name);
  return f;
}

static TVMFFIAny raw_str(const char* s) {
  TVMFFIAny a;
  memset(&a, 0, sizeof(a));
  a.type_index = kTVMFFIRawStr;
  a.v_c_str = s;
  return a;
}

/* ffi.ModuleLoadFromFile(path) -> Module */
static TVMFFIObjectHandle load_module(const char* path) {
  TVMFFIObjectHandle load = global_function("ffi.ModuleLoadFromFile");
  TVMFFIAny args[1] = {raw_str(path)};
  TVMFFIAny result;
  memset(&result, 0, sizeof(result));
  if (TVMFFIFunctionCall(load, args, 1, &result) != 0) die_ffi(path);
  TVMFFIObjectDecRef(load);
  return result.v_obj;
}

/* ffi.ModuleGetFunction(module, name, query_imports) -> Function */
static TVMFFIObjectHandle get_function(TVMFFIObjectHandle module, const char* name) {
  TVMFFIObjectHandle get = global_function("ffi.ModuleGetFunction");
  TVMFFIAny args[3];
  memset(args, 0, sizeof(args));
  args[0].type_index = ((TVMFFIObject*)module)->type_index;
  args[0].v_obj = (TVMFFIObject*)module;
  args[1] = raw_str(name);
  args[2].type_index = kTVMFFIBool;
  args[2].v_int64 = 0;
  TVMFFIAny result;
  memset(&result, 0, sizeof(result));
  if (TVMFFIFunctionCall(get, args, 3, &result) != 0) die_ffi(name);
  TVMFFIObjectDecRef(get);
  if (result.type_index != kTVMFFIFunction) {
    fprintf(stderr, "gconvgen_run: no function %s in the library\n", name);
    exit(2);
  }
  return result.v_obj;
}

/* Kernels use aligned vector loads: every tensor must start on a 64-byte boundary (malloc gives 16). */
static void* alloc_tensor(size_t bytes) {
  void* data = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (data == NULL) { fprintf(stderr, "gconvgen_run: out of memory\n"); exit(2); }
  return data;
}

static void* read_file(const char* path, size_t bytes) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) { perror(path); exit(2); }
  void* data = alloc_tensor(bytes);
  if (fread(data, 1, bytes, f) != bytes || fgetc(f) != EOF) {
    fprintf(stderr, "gconvgen_run: %s is not %zu bytes\n", path, bytes);
    exit(2);
  }
  fclose(f);
  return data;
}

/* IEEE half -> float, for comparing float16 outputs (no compiler support for _Float16 needed). */
static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else { /* subnormal: normalize */
      exponent = 127 - 15 + 1;
      while (!(mantissa & 0x400)) { mantissa <<= 1; exponent--; }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}

static double element(const void* data, size_t j, int half) {
  return half ? half_to_float(((const uint16_t*)data)[j]) : ((const float*)data)[j];
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s BUNDLE\n", argv[0]);
    return 2;
  }
  char path[4096];
  snprintf(path, sizeof(path), "%s/gconvgen.so", argv[1]);
  TVMFFIObjectHandle module = load_module(path);
  snprintf(path, sizeof(path), "%s/vectors/index.txt", argv[1]);
  FILE* index = fopen(path, "r");
  if (index == NULL) { perror(path); return 2; }

  char key[512], function[128], dtype[16];
  int nargs, failures = 0, kernels = 0;
  while (fscanf(index, "%511s %127s %15s %d", key, function, dtype, &nargs) == 4) {
    int half = strcmp(dtype, "float16") == 0;
    if ((!half && strcmp(dtype, "float32") != 0) || nargs < 1 || nargs > MAX_ARGS) {
      fprintf(stderr, "gconvgen_run: %s: this example checks float32/float16 kernels with at most %d arguments\n",
              key, MAX_ARGS);
      return 2;
    }
    size_t size = half ? 2 : 4;
    double tolerance = half ? 1e-2 : 1e-4;
    DLTensor tensors[MAX_ARGS];
    int64_t shapes[MAX_ARGS][MAX_DIMS];
    void* expected = NULL;
    size_t count = 0;
    TVMFFIAny args[MAX_ARGS];
    for (int i = 0; i < nargs; ++i) {
      char file[256];
      int ndim;
      if (fscanf(index, "%255s %d", file, &ndim) != 2 || ndim < 1 || ndim > MAX_DIMS) {
        fprintf(stderr, "gconvgen_run: %s: bad line in index.txt\n", key);
        return 2;
      }
      count = 1;
      for (int d = 0; d < ndim; ++d) {
        long long dim;
        if (fscanf(index, "%lld", &dim) != 1) { fprintf(stderr, "gconvgen_run: bad shape\n"); return 2; }
        shapes[i][d] = dim;
        count *= (size_t)dim;
      }
      snprintf(path, sizeof(path), "%s/vectors/%s", argv[1], file);
      void* data = read_file(path, count * size);
      if (i == nargs - 1) { /* the output: its file holds the expected values */
        expected = data;
        data = alloc_tensor(count * size);
        memset(data, 0, count * size);
      }
      DLTensor t = {data, {kDLCPU, 0}, ndim, {kDLFloat, (uint8_t)(8 * size), 1}, shapes[i], NULL, 0};
      tensors[i] = t;
      memset(&args[i], 0, sizeof(args[i]));
      args[i].type_index = kTVMFFIDLTensorPtr;
      args[i].v_ptr = &tensors[i];
    }
    TVMFFIObjectHandle fn = get_function(module, function);
    TVMFFIAny result;
    memset(&result, 0, sizeof(result));
    if (TVMFFIFunctionCall(fn, args, nargs, &result) != 0) die_ffi(key);
    TVMFFIObjectDecRef(fn);

    const void* got = tensors[nargs - 1].data;
    double worst = 0, scale = 0;
    int ok = 1;
    for (size_t j = 0; j < count; ++j) scale = fmax(scale, fabs(element(expected, j, half)));
    for (size_t j = 0; j < count; ++j) {
      double want = element(expected, j, half), diff = fabs(element(got, j, half) - want);
      if (diff > worst) worst = diff;
      /* float32: elementwise; float16: relative to the output's largest value, as the Python checks */
      if (!(diff <= (half ? tolerance * scale : 1e-4 + 1e-4 * fabs(want)))) ok = 0;
    }
    printf("%s %s max abs err %.2e\n", ok ? "ok  " : "FAIL", key, worst);
    failures += !ok;
    kernels += 1;
    for (int i = 0; i < nargs; ++i) free(tensors[i].data);
    free(expected);
  }
  fclose(index);
  TVMFFIObjectDecRef(module);
  printf("%d of %d kernels match\n", kernels - failures, kernels);
  return failures ? 1 : 0;
}
