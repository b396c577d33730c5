// The one list of compiled kernel variants. Every launcher dispatches through these switches, and
// each (head-dim tile, dtype) pair has one instantiation file per kernel family in inst/, so adding
// a tile width here and a file there is the whole change.
//
// head_dim (a multiple of 8, 8..256) is served by the smallest tile width >= it; the kernels
// predicate the columns between head_dim and the tile width.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "error.h"
#include "params.h"

// FATTN_HEADDIM_SWITCH(head_dim, kHeadDim, ...): runs the body with constexpr int kHeadDim.
#define FATTN_HEADDIM_SWITCH(HEAD_DIM, CONST_NAME, ...)                                       \
    [&] {                                                                                      \
        if ((HEAD_DIM) <= 32) { constexpr int CONST_NAME = 32; return __VA_ARGS__(); }         \
        else if ((HEAD_DIM) <= 64) { constexpr int CONST_NAME = 64; return __VA_ARGS__(); }    \
        else if ((HEAD_DIM) <= 96) { constexpr int CONST_NAME = 96; return __VA_ARGS__(); }    \
        else if ((HEAD_DIM) <= 128) { constexpr int CONST_NAME = 128; return __VA_ARGS__(); }  \
        else if ((HEAD_DIM) <= 192) { constexpr int CONST_NAME = 192; return __VA_ARGS__(); }  \
        else { constexpr int CONST_NAME = 256; return __VA_ARGS__(); }                         \
    }()

// FATTN_SM90_HEADDIM_SWITCH(head_dim, kHeadDim, ...): the Hopper kernels' tile widths (head_dim <= 128).
#define FATTN_SM90_HEADDIM_SWITCH(HEAD_DIM, CONST_NAME, ...)                                  \
    [&] {                                                                                      \
        if ((HEAD_DIM) <= 64) { constexpr int CONST_NAME = 64; return __VA_ARGS__(); }         \
        else { constexpr int CONST_NAME = 128; return __VA_ARGS__(); }                         \
    }()

// FATTN_DTYPE_SWITCH(dtype, Element, ...): runs the body with `using Element = __half` or
// `__nv_bfloat16`. Only 16-bit dtypes reach the kernels (CudaBackend::check_* refuses f32).
#define FATTN_DTYPE_SWITCH(DTYPE, TYPE_NAME, ...)                                              \
    [&] {                                                                                      \
        if ((DTYPE) == ::fattn::DType::F16) { using TYPE_NAME = __half; return __VA_ARGS__(); } \
        else { using TYPE_NAME = __nv_bfloat16; return __VA_ARGS__(); }                        \
    }()

// FATTN_BOOL_SWITCH(condition, kFlag, ...): runs the body with constexpr bool kFlag.
#define FATTN_BOOL_SWITCH(CONDITION, CONST_NAME, ...)                                          \
    [&] {                                                                                      \
        if (CONDITION) { constexpr bool CONST_NAME = true; return __VA_ARGS__(); }             \
        else { constexpr bool CONST_NAME = false; return __VA_ARGS__(); }                      \
    }()
