// Tiles of the CPU backend: their geometry, the scratch they live in, conversion between storage
// rows (f32, f16, bf16, any strides) and fp32 tiles, masks, and the online-softmax steps.
//
// Same tiling as the CUDA kernels: a query block of kBlockQ rows meets key tiles of kBlockK keys
// that start at multiples of kBlockK; tiles entirely outside a row range are skipped, tiles
// entirely inside it run unmasked, and only the tiles that straddle a bound (in the backward,
// also the last, partial key tile) are masked element by element. Tiles are fp32 with a width
// padded to a multiple of kLanes (zeros in the padding), so the micro-kernels never need a
// remainder loop.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "microkernel.h"
#include "params.h"
#include "simd.h"

namespace fattn::cpu {

constexpr int64_t kBlockQ = 64;  // query rows per tile
constexpr int64_t kBlockK = 64;  // keys per tile

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t padded_width(int64_t width) { return ceil_div(width, kLanes) * kLanes; }

// ---- scratch ------------------------------------------------------------------------------

// Hands out consecutive 64-byte aligned float regions of one buffer. Run over a null base, it
// only measures: the same code sizes the scratch and lays it out, so the two cannot disagree.
class ScratchCarver {
public:
    explicit ScratchCarver(float* base) : base_(base) {}
    float* take(int64_t count) {
        float* region = base_ == nullptr ? nullptr : base_ + used_;
        used_ += padded_width(count);
        return region;
    }
    std::size_t bytes() const { return static_cast<std::size_t>(used_) * sizeof(float); }

private:
    float* base_;
    int64_t used_ = 0;
};

// ---- storage <-> fp32 -----------------------------------------------------------------------

template <typename Element>
inline float to_float(Element x) {
    return static_cast<float>(x);
}

template <typename Element>
inline Element from_float(float x) {
    return static_cast<Element>(x);  // Eigen::half / Eigen::bfloat16 round to nearest even
}

template <typename Element>
inline const Element* row_pointer(const TensorView& view, int64_t batch, int64_t head, int64_t row) {
    return static_cast<const Element*>(view.data) + view.offset(batch, head, row);
}

template <typename Element>
inline Element* mutable_row_pointer(const TensorView& view, int64_t batch, int64_t head, int64_t row) {
    return static_cast<Element*>(view.data) + view.offset(batch, head, row);
}

// dst[r][c] = src[r][c] for r < rows, c < width; zeros elsewhere in [padded_rows x ld].
template <typename Element>
void load_rows(const Element* src, int64_t src_stride, int64_t rows, int64_t width, float* dst, int64_t ld,
               int64_t padded_rows) {
    for (int64_t r = 0; r < rows; ++r) {
        const Element* in = src + r * src_stride;
        float* out = dst + r * ld;
        int64_t c = 0;
        for (; c + kLanes <= width; c += kLanes) store(out + c, load(in + c));
        for (; c < width; ++c) out[c] = to_float(in[c]);
        std::fill(out + width, out + ld, 0.0f);
    }
    std::fill(dst + rows * ld, dst + padded_rows * ld, 0.0f);
}

// dst[c][r] = src[r][c] for r < rows, c < width; zeros elsewhere in [padded_width(width) x ld].
template <typename Element>
void load_rows_transposed(const Element* src, int64_t src_stride, int64_t rows, int64_t width, float* dst,
                          int64_t ld) {
    std::fill(dst, dst + padded_width(width) * ld, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
        const Element* in = src + r * src_stride;
        for (int64_t c = 0; c < width; ++c) dst[c * ld + r] = to_float(in[c]);
    }
}

// dst[r][c] = factor * src[r][c] for r < rows, c < width, converted to the storage type.
template <typename Element>
void store_rows(const float* src, int64_t ld, int64_t rows, int64_t width, float factor, Element* dst,
                int64_t dst_stride) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* in = src + r * ld;
        Element* out = dst + r * dst_stride;
        for (int64_t c = 0; c < width; ++c) out[c] = from_float<Element>(factor * in[c]);
    }
}

// Runs body(ElementTag<T>{}) with T the storage type of `dtype`.
template <typename T>
struct ElementTag {
    using type = T;
};

template <typename Body>
void dispatch_element_type(DType dtype, Body&& body) {
    switch (dtype) {
        case DType::F32: return body(ElementTag<float>{});
        case DType::F16: return body(ElementTag<Eigen::half>{});
        case DType::BF16: return body(ElementTag<Eigen::bfloat16>{});
    }
}

// ---- masks --------------------------------------------------------------------------------

// A query block [row_begin, row_begin + rows) against a key tile [key_begin, key_begin + keys).
struct TilePair {
    int64_t row_begin;
    int64_t rows;
    int64_t key_begin;
    int64_t keys;
};

// Whether any (row, key) of the pair may be visible. Decided from the block's key range alone, so
// every pass of the backward skips exactly the same pairs, whichever loop order it uses.
inline bool pair_may_see(const MaskSpec& mask, const TilePair& pair) {
    const int64_t first = mask.block_key_begin(pair.row_begin);
    const int64_t last = mask.block_key_end(pair.row_begin + pair.rows);
    return first < last && first < pair.key_begin + pair.keys && last > pair.key_begin;
}

// Whether the pair's score tile (of `cols` columns, keys beyond pair.keys being padding) needs
// the per-element mask.
inline bool pair_needs_mask(const MaskSpec& mask, const TilePair& pair, int64_t cols) {
    return cols != pair.keys || !mask.tile_fully_visible(pair.row_begin, pair.row_begin + pair.rows,
                                                         pair.key_begin, pair.key_begin + pair.keys);
}

// A half-open range of indices within a tile.
struct IndexRange {
    int64_t begin;
    int64_t end;
};

// The keys of the pair (tile-relative) that the pair's query row r sees.
inline IndexRange visible_keys(const MaskSpec& mask, const TilePair& pair, int64_t r) {
    const int64_t row = pair.row_begin + r;
    const int64_t lo = std::clamp<int64_t>(mask.key_begin(row) - pair.key_begin, 0, pair.keys);
    return {lo, std::clamp<int64_t>(mask.key_end(row) - pair.key_begin, lo, pair.keys)};
}

// The query rows of the pair (block-relative) that see the pair's key j.
inline IndexRange visible_rows(const MaskSpec& mask, const TilePair& pair, int64_t j) {
    const int64_t key = pair.key_begin + j;
    const int64_t lo = std::clamp<int64_t>(mask.query_begin(key) - pair.row_begin, 0, pair.rows);
    return {lo, std::clamp<int64_t>(mask.query_end(key) - pair.row_begin, lo, pair.rows)};
}

// -inf for the entries of one line of a score tile outside `visible`, up to `length`.
inline void mask_line(float* line, IndexRange visible, int64_t length) {
    std::fill(line, line + visible.begin, -INFINITY);
    std::fill(line + visible.end, line + length, -INFINITY);
}

// Score tile S [rows x keys] of the backward: -inf for every score its row cannot see, and for
// the padding columns up to ld.
inline void mask_scores(const MaskSpec& mask, const TilePair& pair, float* scores, int64_t ld) {
    for (int64_t r = 0; r < pair.rows; ++r) mask_line(scores + r * ld, visible_keys(mask, pair, r), ld);
}

// Transposed tile S^T [keys x queries] of the forward: -inf for every score its query row cannot
// see. Query lanes beyond pair.rows are left alone: each lane is a row of its own, never stored.
inline void mask_scores_transposed(const MaskSpec& mask, const TilePair& pair, float* scores_t, int64_t ld) {
    for (int64_t j = 0; j < pair.keys; ++j) mask_line(scores_t + j * ld, visible_rows(mask, pair, j), pair.rows);
}

// ---- non-finite inputs ---------------------------------------------------------------------
//
// A masked score becomes an exact 0 in P and dS, but 0 * NaN = NaN: multiplied with a NaN or an
// infinity of another row, it would reach a row that never reads that value. The masked tiles
// whose operands are not all finite therefore take an exact path: each output row of a product
// sums over its visible range only (tile_gemm_visible). Its result equals the fast path's
// whenever the fast path is finite (adding 0 through an FMA changes nothing).

// True when every element of rows x cols (cols a multiple of kLanes) is finite.
inline bool all_finite(const float* tile, int64_t rows, int64_t cols, int64_t ld) {
    Vec16 any_nonfinite = zero();  // x - x is 0 for a finite x, NaN for an infinity or NaN
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; c += kLanes) {
            const Vec16 x = load(tile + r * ld + c);
            any_nonfinite = any_nonfinite + (x - x);
        }
    float lanes[kLanes];
    store(lanes, any_nonfinite);
    return std::all_of(lanes, lanes + kLanes, [](float lane) { return lane == 0.0f; });
}

// C (+)= A * B like tile_gemm, but output row m sums only over the reduction indices range(m).
template <typename RangeOfRow>
void tile_gemm_visible(int64_t rows, int64_t cols, const GemmOperands& x, Accumulate mode, RangeOfRow range) {
    for (int64_t m = 0; m < rows; ++m) {
        const IndexRange visible = range(m);
        const GemmOperands row{x.a + m * x.a_row + visible.begin * x.a_col, x.a_row, x.a_col,
                               x.b + visible.begin * x.ldb, x.ldb, x.c + m * x.ldc, x.ldc};
        tile_gemm(1, cols, visible.end - visible.begin, row, mode);
    }
}

// ---- online softmax --------------------------------------------------------------------------
//
// The forward works on transposed score tiles S^T [keys x queries], one query per lane, so the
// running max and sum of sixteen query rows are one vector each and no step needs a horizontal
// reduction. Statistics are in raw (unscaled) score units; the scale is folded into the exponent.

// A query block's running softmax statistics, one entry per query row.
struct QueryStats {
    alignas(64) float max[kBlockQ];     // raw scores
    alignas(64) float offset[kBlockQ];  // max * scale_log2 rounded to float: what the exponents subtract
    alignas(64) float sum[kBlockQ];     // of 2^(s * scale_log2 - offset)
    alignas(64) float shrink[kBlockQ];  // of the last step: the factor the output rows must shrink by

    QueryStats() {
        std::fill(max, max + kBlockQ, -INFINITY);
        std::fill(offset, offset + kBlockQ, -INFINITY);
        std::fill(sum, sum + kBlockQ, 0.0f);
    }
};

// The running max of 16 query lanes folded with one column strip of a transposed score tile.
inline Vec16 strip_max(const float* strip, int64_t keys, int64_t ld, Vec16 running_max) {
    for (int64_t j = 0; j < keys; ++j) running_max = max(running_max, load(strip + j * ld));
    return running_max;
}

// p = 2^(s * scale - offset) in place down a column strip; returns the 16 lanes' sums of p.
inline Vec16 strip_exp2(float* strip, int64_t keys, int64_t ld, Vec16 scale, Vec16 offset) {
    Vec16 sum = zero();
    for (int64_t j = 0; j < keys; ++j) {
        const Vec16 p = exp2(load(strip + j * ld) * scale - offset);
        store(strip + j * ld, p);
        sum = sum + p;
    }
    return sum;
}

// Folds a transposed tile of raw scores (keys rows of `cols` query lanes, leading dimension ld)
// into the running max and sum, turns the scores into unnormalized probabilities, and leaves
// in stats.shrink the factor by which each query's output accumulator must shrink.
// Accuracy: scores are scaled first (s * scale_log2, rounded) and the offset is the max of those,
// so the largest score gives exactly 2^0 = 1, like a naive softmax; the sum is relative to the
// offset as rounded, so the lse carries no rounding of the offset.
inline void online_softmax_step(float* scores_t, int64_t keys, int64_t ld, int64_t cols, float scale_log2,
                                QueryStats& stats) {
    const Vec16 scale = broadcast(scale_log2);
    for (int64_t c = 0; c < cols; c += kLanes) {
        const Vec16 new_max = strip_max(scores_t + c, keys, ld, load(stats.max + c));
        const Vec16 new_offset = new_max * scale;
        // A query that has seen only masked keys keeps offset -inf; subtracting 0 instead keeps
        // 2^(-inf - offset) = 0 rather than NaN. Its old offset is -inf too: shrink 2^-inf = 0.
        const Vec16 subtracted = zero_where_minus_inf(new_offset);
        const Vec16 shrink = exp2(load(stats.offset + c) - subtracted);
        const Vec16 tile_sum = strip_exp2(scores_t + c, keys, ld, scale, subtracted);
        store(stats.sum + c, fma(load(stats.sum + c), shrink, tile_sum));
        store(stats.max + c, new_max);
        store(stats.offset + c, new_offset);
        store(stats.shrink + c, shrink);
    }
}

// Natural-log log-sum-exp of query row r's scaled scores; -inf for a row that saw no key.
// Computed in double from the statistics the probabilities were made with, rounded once.
inline float row_lse(const QueryStats& stats, int64_t r) {
    if (stats.sum[r] == 0.0f) return -INFINITY;
    const double log2_sum_exp = double{stats.offset[r]} + std::log2(double{stats.sum[r]});
    return static_cast<float>(log2_sum_exp * 0.6931471805599453);
}

// The backward's P = exp(s * scale - lse), evaluated as 2^((s * scale - lse) * log2e) over one
// row of raw scores, in place. Natural units up to the subtraction, as a naive implementation
// computes it: with huge scores (a large softmax_scale) an error in the scale would be multiplied
// by them, and scale is exact where scale_log2 is rounded. s * scale - lse is one fma: rounding
// the product first would add an error of up to |s * scale| * 2^-24 to the exponent, which for
// the largest probabilities is as large as the lse's own rounding (the test's accuracy bound
// caught a row at 2.6x the naive error that way). A row that saw no key (lse -inf) is given lse
// +inf, so each of its scores becomes 2^-inf = 0 instead of NaN.
inline void exp_row_from_lse(float* s, int64_t cols, float scale, float lse) {
    const Vec16 scale_v = broadcast(scale);
    const Vec16 minus_lse = broadcast(lse == -INFINITY ? -INFINITY : -lse);
    const Vec16 log2e = broadcast(1.4426950408889634f);
    for (int64_t c = 0; c < cols; c += kLanes) store(s + c, exp2(fma(load(s + c), scale_v, minus_lse) * log2e));
}

inline void scale_row(float* o, int64_t cols, float factor) {
    const Vec16 f = broadcast(factor);
    for (int64_t c = 0; c < cols; c += kLanes) store(o + c, load(o + c) * f);
}

}  // namespace fattn::cpu
