// Forward kernel for head_dim tile 32, bf16 storage (one instantiation per file: see dispatch.h).
#include "fwd_kernel.cuh"

template void fattn::cuda::run_forward<32, __nv_bfloat16>(const fattn::AttnParams&, const cudaDeviceProp&, cudaStream_t);
