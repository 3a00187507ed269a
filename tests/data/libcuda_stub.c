/* Test-only stand-in for the NVIDIA driver's libcuda.so.1 (never shipped): every driver call that
 * libmxnet.so (nm -D --undefined-only) and the CUDA runtime make answers CUDA_ERROR_NO_DEVICE, so the GPU
 * wheel imports on a machine without a GPU and reports 0 GPUs. */
#define CUDA_ERROR_NO_DEVICE 100
#define NO_DEVICE(name) int name(void) { return CUDA_ERROR_NO_DEVICE; }

NO_DEVICE(cuInit)
NO_DEVICE(cuDriverGetVersion)
NO_DEVICE(cuGetProcAddress)
NO_DEVICE(cuDeviceGet)
NO_DEVICE(cuDevicePrimaryCtxRetain)
NO_DEVICE(cuGetErrorString)
NO_DEVICE(cuGraphKernelNodeGetParams)
NO_DEVICE(cuGraphNodeGetType)
NO_DEVICE(cuLaunchKernel)
NO_DEVICE(cuModuleGetFunction)
NO_DEVICE(cuModuleLoadData)
NO_DEVICE(cuModuleLoadDataEx)
NO_DEVICE(cuModuleUnload)
