// Forward kernel for head_dim tile 96, bf16 storage (one instantiation per file: see dispatch.h).
#include "fwd_kernel.cuh"

template void fattn::cuda::run_forward<96, __nv_bfloat16>(const fattn::AttnParams&, const cudaDeviceProp&, cudaStream_t);
