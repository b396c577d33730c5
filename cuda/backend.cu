// The CUDA backend's host side: device query, the handle's stream, its cached device workspace,
// pointer checks, and CUDA errors turned into statuses. Kernels live behind launch.h.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "backend.h"
#include "error.h"
#include "launch.h"
#include "memory.h"

namespace fattn {
namespace {

constexpr int kMinComputeMajor = 8;
constexpr int64_t kMaxHeadDim = 256;

void check_cuda(cudaError_t status, const char* what) {
    if (status == cudaSuccess) return;
    cudaGetLastError();  // clear the sticky-free error so the handle stays usable
    if (status == cudaErrorMemoryAllocation)
        fail(FATTN_ERROR_OUT_OF_MEMORY, what, ": ", cudaGetErrorString(status));
    fail(FATTN_ERROR_BACKEND, what, ": ", cudaGetErrorName(status), ": ", cudaGetErrorString(status));
}

// Device memory the handle owns and reuses; grows, never shrinks, until the handle is destroyed.
class DeviceWorkspace {
public:
    explicit DeviceWorkspace(const char* purpose) : purpose_(purpose) {}
    DeviceWorkspace(const DeviceWorkspace&) = delete;
    DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
    ~DeviceWorkspace() { cudaFree(data_); }

    // The previous buffer may still be read by work queued on `stream`, so it is freed only
    // after that work: cudaFreeAsync orders the free on the stream.
    void* reserve(std::size_t bytes, cudaStream_t stream) {
        if (bytes <= capacity_) return data_;
        void* grown = nullptr;
        if (allocation_should_fail())
            fail(FATTN_ERROR_OUT_OF_MEMORY, "could not allocate ", bytes,
                 " bytes of device memory for the ", purpose_, " (injected failure)");
        check_cuda(cudaMallocAsync(&grown, bytes, stream), purpose_);
        if (data_ != nullptr) cudaFreeAsync(data_, stream);
        data_ = grown;
        capacity_ = bytes;
        return data_;
    }

private:
    const char* purpose_;
    void* data_ = nullptr;
    std::size_t capacity_ = 0;
};

class CudaBackend final : public Backend {
public:
    CudaBackend() {
        check_cuda(cudaGetDevice(&device_id_), "cudaGetDevice");
        check_cuda(cudaGetDeviceProperties(&device_, device_id_), "cudaGetDeviceProperties");
        kernels_ = choose_kernels(device_);
    }

    fattn_backend_t kind() const noexcept override { return FATTN_BACKEND_CUDA; }

    void set_stream(void* stream) override { stream_ = static_cast<cudaStream_t>(stream); }

    void check_forward(const AttnParams& params) const override {
        check_problem(params);
        check_device_pointers({{params.q.data, "q"}, {params.k.data, "k"}, {params.v.data, "v"},
                               {params.o.data, "o"}, {params.lse.data, "lse"}});
    }

    void check_backward(const AttnBwdParams& params) const override {
        check_problem(params);
        check_device_pointers({{params.q.data, "q"}, {params.k.data, "k"}, {params.v.data, "v"},
                               {params.o.data, "o"}, {params.lse.data, "lse"}, {params.dout.data, "dout"},
                               {params.dq.data, "dq"}, {params.dk.data, "dk"}, {params.dv.data, "dv"}});
    }

    void forward(const AttnParams& params) override {
        ScopedDevice on_device(device_id_);
        void* workspace = kernels_ == cuda::KernelFamily::Hopper
                              ? forward_workspace_.reserve(cuda::kHopperForwardWorkspaceBytes, stream_)
                              : nullptr;
        cuda::launch_forward(params, workspace, device_, kernels_, stream_);
        check_cuda(cudaGetLastError(), "launching the forward kernel");
    }

    void backward(const AttnBwdParams& params) override {
        ScopedDevice on_device(device_id_);
        void* workspace = workspace_.reserve(cuda::backward_workspace_bytes(params, device_), stream_);
        cuda::launch_backward(params, workspace, device_, kernels_, stream_);
        check_cuda(cudaGetLastError(), "launching the backward kernels");
    }

private:
    struct NamedPointer {
        const void* pointer;
        const char* name;
    };

    // Calls run on the handle's device even if the caller switched devices since fattn_create.
    class ScopedDevice {
    public:
        explicit ScopedDevice(int device) {
            check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
            if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
        }
        ~ScopedDevice() { cudaSetDevice(previous_); }

    private:
        int previous_ = 0;
    };

    // Hopper's own kernels on compute capability 9.0 unless FATTN_CUDA_KERNELS=sm80 asks for the
    // portable ones (to compare the two, or to test the sm_80 path on a Hopper GPU).
    static cuda::KernelFamily choose_kernels(const cudaDeviceProp& device) {
        const char* requested = std::getenv("FATTN_CUDA_KERNELS");
        const bool portable = requested != nullptr && std::strcmp(requested, "sm80") == 0;
        return device.major == 9 && device.minor == 0 && !portable ? cuda::KernelFamily::Hopper
                                                                   : cuda::KernelFamily::Sm80;
    }

    static void check_problem(const AttnParams& params) {
        if (params.dtype == DType::F32)
            fail(FATTN_ERROR_UNSUPPORTED, "q.dtype=FATTN_DTYPE_F32 is not supported by the CUDA backend (use f16 or bf16)");
        if (params.head_dim % 8 != 0 || params.head_dim > kMaxHeadDim)
            fail(FATTN_ERROR_UNSUPPORTED, "q.shape[3]=", params.head_dim,
                 " is not supported by the CUDA backend (head_dim must be a multiple of 8 up to 256)");
    }

    // Every tensor must be memory this device can address: device or pinned/managed host memory.
    // Pageable host memory would fault inside a kernel, so it is refused here.
    void check_device_pointers(std::initializer_list<NamedPointer> pointers) const {
        for (const NamedPointer& entry : pointers) {
            if (entry.pointer == nullptr) continue;  // optional lse
            cudaPointerAttributes attributes{};
            check_cuda(cudaPointerGetAttributes(&attributes, entry.pointer), "cudaPointerGetAttributes");
            const bool addressable = attributes.type == cudaMemoryTypeDevice ||
                                     attributes.type == cudaMemoryTypeManaged ||
                                     (attributes.type == cudaMemoryTypeHost && attributes.devicePointer != nullptr);
            if (!addressable)
                fail(FATTN_ERROR_INVALID_ARGUMENT, entry.name, ".data=", entry.pointer,
                     " is pageable host memory; the CUDA backend needs device (or pinned host) memory");
            if (attributes.type == cudaMemoryTypeDevice && attributes.device != device_id_)
                fail(FATTN_ERROR_INVALID_ARGUMENT, entry.name, ".data=", entry.pointer, " lives on device ",
                     attributes.device, " but the handle was created on device ", device_id_);
        }
    }

    int device_id_ = 0;
    cudaDeviceProp device_{};
    cuda::KernelFamily kernels_ = cuda::KernelFamily::Sm80;
    cudaStream_t stream_ = nullptr;
    DeviceWorkspace forward_workspace_{"forward's device workspace"};
    DeviceWorkspace workspace_{"backward's device workspace"};
};

}  // namespace

bool cuda_backend_available() noexcept {
    int device = 0;
    int major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return major >= kMinComputeMajor;
}

std::unique_ptr<Backend> make_cuda_backend() {
    if (!cuda_backend_available())
        fail(FATTN_ERROR_NO_DEVICE, "no CUDA device of compute capability >= ", kMinComputeMajor,
             ".0 is usable (no GPU, no driver, or an older GPU)");
    return std::make_unique<CudaBackend>();
}

}  // namespace fattn
