// Host-side launch helpers shared by every kernel launcher: the dynamic shared-memory limit,
// the device's capacity check and the grid-size check, each turning a problem the device cannot
// run into FATTN_ERROR_UNSUPPORTED before any launch.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "error.h"
#include "params.h"

namespace fattn::cuda {

// Raises a kernel's dynamic shared-memory limit once per device (needed above 48 KB); racing
// first calls from several threads set the same value, which is harmless. A failure is left for
// the caller's cudaGetLastError().
template <auto kKernel>
void allow_shared_memory(int bytes) {
    constexpr int kMaxDevices = 64;
    static std::atomic<bool> configured[kMaxDevices] = {};
    int device_id = 0;
    if (cudaGetDevice(&device_id) != cudaSuccess) return;
    if (device_id < kMaxDevices && configured[device_id].load(std::memory_order_acquire)) return;
    if (cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) return;
    if (device_id < kMaxDevices) configured[device_id].store(true, std::memory_order_release);
}

inline void require_shared_memory(int bytes, const cudaDeviceProp& device, const AttnParams& params,
                                  const char* kernel_name) {
    if (static_cast<size_t>(bytes) > device.sharedMemPerBlockOptin)
        fail(FATTN_ERROR_UNSUPPORTED, "q.shape[3]=", params.head_dim, ": the ", kernel_name, " needs ", bytes,
             " bytes of shared memory per block; this GPU (", device.name, ") allows ",
             device.sharedMemPerBlockOptin);
}

inline unsigned grid_size(int64_t blocks, const char* what) {
    if (blocks > INT32_MAX)
        fail(FATTN_ERROR_UNSUPPORTED, what, " = ", blocks, " blocks exceeds the CUDA grid limit of 2^31 - 1");
    return static_cast<unsigned>(blocks);
}

}  // namespace fattn::cuda
