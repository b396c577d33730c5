// Forward kernel for head_dim tile 192, f16 storage (one instantiation per file: see dispatch.h).
#include "fwd_kernel.cuh"

template void fattn::cuda::run_forward<192, __half>(const fattn::AttnParams&, const cudaDeviceProp&, cudaStream_t);
