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

// Device memory of a fixed size, freed with its owner.
class DeviceBuffer {
public:
    explicit DeviceBuffer(size_t bytes) : bytes_(bytes) { check_cuda(cudaMalloc(&data_, bytes), "cudaMalloc"); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { cudaFree(data_); }

    unsigned char* data() const { return static_cast<unsigned char*>(data_); }
    size_t bytes() const { return bytes_; }

private:
    void* data_ = nullptr;
    size_t bytes_;
};

// Device memory holding a copy of a host tensor's bytes (outputs carry their poison over too).
class DeviceMirror {
public:
    explicit DeviceMirror(HostTensor& host) : host_(host), device_(host.byte_size()) {
        check_cuda(cudaMemcpy(device_.data(), host.bytes(), host.byte_size(), cudaMemcpyHostToDevice),
                   "cudaMemcpy to device");
    }

    void* device_data() const { return device_.data(); }
    // Waits for all queued work (fattn is asynchronous on its stream), then copies back.
    void copy_to_host() {
        check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after fattn calls");
        check_cuda(cudaMemcpy(host_.bytes(), device_.data(), host_.byte_size(), cudaMemcpyDeviceToHost),
                   "cudaMemcpy to host");
    }

private:
    HostTensor& host_;
    DeviceBuffer device_;
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
