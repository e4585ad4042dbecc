/* A libcuda.so.1 for machines with the CUDA toolkit but no GPU driver: every call reports
 * CUDA_ERROR_NO_DEVICE. It exists so that TVM's CUDA runtime plugin loads, which is what makes
 * tvm.compile call nvcc and embed a fatbin (without it the library would carry CUDA source, which
 * a runtime-only GPU host cannot load). Nothing ever runs on it. */
typedef int CUresult;
#define NO_DEVICE 100
static const char* kMessage = "no CUDA device (gconvgen's compile-only libcuda stub)";
CUresult cuInit(unsigned int flags) { (void)flags; return NO_DEVICE; }
CUresult cuGetErrorName(CUresult e, const char** s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
CUresult cuGetErrorString(CUresult e, const char** s) { (void)e; *s = kMessage; return 0; }
CUresult cuDeviceGetName(char* name, int len, int dev) { (void)name; (void)len; (void)dev; return NO_DEVICE; }
CUresult cuFuncSetAttribute(void* f, int a, int v) { (void)f; (void)a; (void)v; return NO_DEVICE; }
CUresult cuLaunchKernelEx(const void* c, void* f, void** p, void** e) { (void)c; (void)f; (void)p; (void)e; return NO_DEVICE; }
CUresult cuModuleGetFunction(void** f, void* m, const char* n) { (void)f; (void)m; (void)n; return NO_DEVICE; }
CUresult cuModuleLoadData(void** m, const void* d) { (void)m; (void)d; return NO_DEVICE; }
CUresult cuModuleUnload(void* m) { (void)m; return NO_DEVICE; }
CUresult cuTensorMapEncodeTiled(void* t, int d, unsigned r, void* g, const void* a, const void* b, const void* c,
                                const void* e, int i, int s, int p, int o) {
  (void)t; (void)d; (void)r; (void)g; (void)a; (void)b; (void)c; (void)e; (void)i; (void)s; (void)p; (void)o;
  return NO_DEVICE;
}
