// Hopper forward kernel for head_dim tile 64, bf16 storage (one instantiation per file: see dispatch.h).
#include "hopper/fwd_kernel.cuh"

template void fattn::cuda::sm90::run_forward<64, __nv_bfloat16>(const fattn::AttnParams&, void*, const cudaDeviceProp&,
                                                                 cudaStream_t);
