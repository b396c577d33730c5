// AttnParams: the one plain parameter struct that the API layer builds and validates once
// (src/api.cpp) and both backends consume (src/cpu/, cuda/). Backends trust it: by the time they
// see it, every pointer is non-null where required, every extent is >= 1, every stride fits the
// buffer arithmetic in int64, heads_q % heads_kv == 0, and the mask is resolved to per-row key
// ranges. It is plain data, so it can be copied by value into a CUDA kernel's parameters.
#pragma once

#include <cstdint>

#include "fattn.h"

#if defined(__CUDACC__)
#define FATTN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FATTN_HOST_DEVICE inline
#endif

namespace fattn {

enum class DType : int32_t {
    F32 = FATTN_DTYPE_F32,
    F16 = FATTN_DTYPE_F16,
    BF16 = FATTN_DTYPE_BF16,
};

// A validated view of a logical [batch, heads, seqlen, head_dim] tensor. Strides are in elements;
// the head_dim stride is always 1, so a row of head_dim elements is contiguous.
struct TensorView {
    void* data = nullptr;
    int64_t batch_stride = 0;
    int64_t head_stride = 0;
    int64_t row_stride = 0;

    // Element offset of row `row` of head `head` in batch `batch`.
    FATTN_HOST_DEVICE int64_t offset(int64_t batch, int64_t head, int64_t row) const {
        return batch * batch_stride + head * head_stride + row * row_stride;
    }
};

// Which keys each query row sees, FlashAttention 2.1+ semantics: row i sees key j iff
//   j >= i + diag_offset - window_left   (when window_left >= 0)
//   j <= i + diag_offset + window_right  (when window_right >= 0)
// with diag_offset = Nk - Nq (bottom-right aligned); causal is window_right = 0.
// key_begin/key_end give the half-open range [begin, end) of visible keys, clamped to [0, Nk];
// a row with begin >= end sees nothing (output zeros, lse -inf, zero gradient).
struct MaskSpec {
    int64_t seqlen_q = 0;
    int64_t seqlen_k = 0;
    int64_t diag_offset = 0;
    int64_t window_left = -1;
    int64_t window_right = -1;

    FATTN_HOST_DEVICE int64_t key_begin(int64_t row) const {
        if (window_left < 0) return 0;
        const int64_t first = row + diag_offset - window_left;
        return first < 0 ? 0 : (first > seqlen_k ? seqlen_k : first);
    }
    FATTN_HOST_DEVICE int64_t key_end(int64_t row) const {
        if (window_right < 0) return seqlen_k;
        const int64_t last = row + diag_offset + window_right;
        return last < 0 ? 0 : (last >= seqlen_k ? seqlen_k : last + 1);
    }
    // Visible keys of the rows [row_begin, row_end): the union of their ranges. Both bounds are
    // monotone in the row, so the union is [key_begin(row_begin), key_end(row_end - 1)).
    FATTN_HOST_DEVICE int64_t block_key_begin(int64_t row_begin) const { return key_begin(row_begin); }
    FATTN_HOST_DEVICE int64_t block_key_end(int64_t row_end) const { return key_end(row_end - 1); }
    // Query rows that see key `key`: the inverse ranges, for the backward's key-major passes.
    FATTN_HOST_DEVICE int64_t query_begin(int64_t key) const {
        if (window_right < 0) return 0;
        const int64_t first = key - diag_offset - window_right;
        return first < 0 ? 0 : (first > seqlen_q ? seqlen_q : first);
    }
    FATTN_HOST_DEVICE int64_t query_end(int64_t key) const {
        if (window_left < 0) return seqlen_q;
        const int64_t last = key - diag_offset + window_left;
        return last < 0 ? 0 : (last >= seqlen_q ? seqlen_q : last + 1);
    }
    // True when every (row, key) of the tile is visible, so the tile needs no per-element mask.
    FATTN_HOST_DEVICE bool tile_fully_visible(int64_t row_begin, int64_t row_end, int64_t key_begin_,
                                              int64_t key_end_) const {
        // The tightest constraints come from the last row (left bound) and the first row (right bound).
        return key_begin_ >= key_begin(row_end - 1) && key_end_ <= key_end(row_begin);
    }
};

struct AttnParams {
    DType dtype = DType::F32;
    int64_t batch = 0;
    int64_t heads_q = 0;
    int64_t heads_kv = 0;
    int64_t seqlen_q = 0;
    int64_t seqlen_k = 0;
    int64_t head_dim = 0;
    int64_t heads_per_kv = 1;  // heads_q / heads_kv: query head h reads key/value head h / heads_per_kv

    float scale = 0.0f;       // softmax scale on q.k, resolved (never 0)
    float scale_log2 = 0.0f;  // scale * log2(e): softmax in exp2 with the scale folded in

    MaskSpec mask;
    bool deterministic = false;

    TensorView q, k, v;  // inputs
    TensorView o;        // forward: written; backward: input
    TensorView lse;      // float32 [B,Hq,Nq]; forward: written, data may be null; backward: input
};

struct AttnBwdParams : AttnParams {
    TensorView dout;    // input, like o
    TensorView dq;      // written, like q
    TensorView dk, dv;  // written, like k and v; summed over the heads_per_kv query heads that share them
};

}  // namespace fattn
