// The seam between the CUDA backend's host side (backend.cu: device, stream, workspace, errors)
// and its kernels. Launchers only enqueue work on `stream`: no synchronization, no allocation.
// They may assume validated AttnParams (api.cpp) that passed CudaBackend::check_* (head_dim a
// multiple of 8 up to 256, f16/bf16, device-addressable pointers). A launch error is left for the
// caller to collect with cudaGetLastError().
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "params.h"

namespace fattn::cuda {

// The kernel families: the sm_80 ones run on every supported GPU; on compute capability 9.0 the
// Hopper ones (cuda/hopper/) take the problems they serve.
enum class KernelFamily { Sm80, Hopper };

// Device scratch the forward needs with the Hopper kernels (their work-item counter); the sm_80
// kernels need none.
inline constexpr std::size_t kHopperForwardWorkspaceBytes = 256;

// o (and lse when params.lse.data != nullptr) = attention(q, k, v). `workspace` holds
// kHopperForwardWorkspaceBytes (256-byte aligned, any contents) when family is Hopper, else may be
// null; the launcher initializes what it needs on `stream`.
void launch_forward(const AttnParams& params, void* workspace, const cudaDeviceProp& device, KernelFamily family,
                    cudaStream_t stream);

// Device scratch the backward needs for this problem (fp32 dq accumulator, rowsum(dO*O), ...).
std::size_t backward_workspace_bytes(const AttnBwdParams& params, const cudaDeviceProp& device);

// dq, dk, dv. `workspace` holds backward_workspace_bytes(params, device) bytes, 256-byte aligned,
// with unspecified contents; the launcher initializes what it needs on `stream`.
void launch_backward(const AttnBwdParams& params, void* workspace, const cudaDeviceProp& device, KernelFamily family,
                     cudaStream_t stream);

}  // namespace fattn::cuda
