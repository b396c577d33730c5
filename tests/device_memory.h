// Device copies of host test tensors, for running the numeric cases on the CUDA backend.
// The CUDA runtime is only linked when the project is configured with CUDA (FATTN_TEST_WITH_CUDA);
// without it the CUDA backend is never available, so a mirror is never requested and its
// constructor only reports the misuse.
#pragma once

#include <stdexcept>
#include <string>

#include "tensor.h"

#if defined(FATTN_TEST_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace fattn_test {

#if defined(FATTN_TEST_WITH_CUDA)

inline void check_cuda(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Device memory holding a copy of a host tensor's bytes (outputs carry their poison over too).
class DeviceMirror {
public:
    explicit DeviceMirror(HostTensor& host) : host_(host) {
        check_cuda(cudaMalloc(&device_, host.byte_size()), "cudaMalloc");
        check_cuda(cudaMemcpy(device_, host.bytes(), host.byte_size(), cudaMemcpyHostToDevice), "cudaMemcpy to device");
    }
    DeviceMirror(const DeviceMirror&) = delete;
    DeviceMirror& operator=(const DeviceMirror&) = delete;
    ~DeviceMirror() { cudaFree(device_); }

    void* device_data() const { return device_; }
    // Waits for all queued work (fattn is asynchronous on its stream), then copies back.
    void copy_to_host() {
        check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after fattn calls");
        check_cuda(cudaMemcpy(host_.bytes(), device_, host_.byte_size(), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    }

private:
    HostTensor& host_;
    void* device_ = nullptr;
};

#else

class DeviceMirror {
public:
    explicit DeviceMirror(HostTensor&) {
        throw std::logic_error("device memory requested, but the tests were built without the CUDA runtime");
    }
    void* device_data() const { return nullptr; }
    void copy_to_host() {}
};

#endif

}  // namespace fattn_test
