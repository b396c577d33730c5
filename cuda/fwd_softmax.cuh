// The forward's per-row online softmax, shared by the sm_80 kernel (fwd_kernel.cuh) and the
// Hopper kernel (hopper/fwd_kernel.cuh). Both hold S and O in the same accumulator layout: each
// warp owns 16-row tiles, lane l holds rows l / 4 and l / 4 + 8 of each, columns
// 8 * t + 2 * (l % 4) + {0, 1} of each 8-column tile t (the mma.sync C fragment, which is also
// wgmma's m64nN accumulator layout per warp). A Traits type supplies Element, kBlockN,
// kMTiles (16-row tiles per warp), kSTiles (8-column tiles of S) and kOTiles (of O).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "params.h"
#include "ptx.cuh"
#include "tile.cuh"

namespace fattn::cuda {
// This thread's share of its warp's O accumulators and online-softmax state: rows g and g + 8
// (g = lane / 4) of each of the warp's 16-row tiles.
template <class Traits>
struct ForwardAccumulators {
    float o[Traits::kMTiles][Traits::kOTiles][4];
    float row_max[Traits::kMTiles][2];
    float row_sum[Traits::kMTiles][2];  // this thread's partial sums; quad-reduced at the end
};

// Sets S to -inf where (row, key) is invisible: key outside [key_begin(row), key_end(row)), which
// also excludes keys >= seqlen_k.
template <class Traits>
__device__ __forceinline__ void mask_scores(float (&s)[Traits::kMTiles][Traits::kSTiles][4], const MaskSpec& mask,
                                            int64_t warp_row0, int64_t key0, int lane) {
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int64_t row = warp_row0 + mt * 16 + lane / 4 + half * 8;
            // Clamped to the tile, the bounds fit in int: fewer registers in this branch. They are
            // taken relative to the lane's first column, so that each comparison is with a constant
            // (per-column key offsets would be hoisted out of the kernel's loop, into registers).
            const int column0 = (lane % 4) * 2;
            const int begin =
                static_cast<int>(std::clamp<int64_t>(mask.key_begin(row) - key0, 0, Traits::kBlockN)) - column0;
            const int end =
                static_cast<int>(std::clamp<int64_t>(mask.key_end(row) - key0, 0, Traits::kBlockN)) - column0;
            // Without a left window (causal, and the sequence end) begin is always 0: one comparison
            // per element instead of two, on the tiles that dominate the cost of short causal rows.
            const auto hide = [&](auto check_begin) {
#pragma unroll
                for (int nt = 0; nt < Traits::kSTiles; ++nt) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int key = nt * 8 + e;  // minus column0
                        if ((decltype(check_begin)::value && key < begin) || key >= end)
                            s[mt][nt][half * 2 + e] = -INFINITY;
                    }
                }
            };
            if (mask.window_left < 0)
                hide(std::false_type{});
            else
                hide(std::true_type{});
        }
    }
}

// A masked tile's P V runs on a V tile whose NaNs and infinities were replaced by 0 (its exact-zero
// P elements would turn them into NaNs of rows that never see them). After the last tile, this
// adds every non-finite V[key][column] of keys [key_begin, key_end) (`v` points at key 0) to the
// O elements of its column whose rows see the key, so exactly the rows that read a non-finite
// value come out non-finite (an unmasked tile's contribution, already non-finite, stays so).
// Runs only for a block that met one: slow, one key at a time.
template <class Traits>
__device__ __forceinline__ void add_nonfinite_values(ForwardAccumulators<Traits>& acc,
                                                     const typename Traits::Element* v, int64_t row_stride,
                                                     int64_t key_begin, int64_t key_end, int head_dim,
                                                     const MaskSpec& mask, int64_t warp_row0, int lane) {
#pragma unroll 1
    for (int64_t key = key_begin; key < key_end; ++key) {
#pragma unroll
        for (int mt = 0; mt < Traits::kMTiles; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int64_t row = warp_row0 + mt * 16 + lane / 4 + half * 8;
                if (key < mask.key_begin(row) || key >= mask.key_end(row)) continue;
#pragma unroll
                for (int ot = 0; ot < Traits::kOTiles; ++ot) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int col = ot * 8 + (lane % 4) * 2 + e;
                        const float value = col < head_dim ? static_cast<float>(v[key * row_stride + col]) : 0.0f;
                        if (!isfinite(value)) acc.o[mt][ot][half * 2 + e] += value;
                    }
                }
            }
        }
    }
}

// A row's running max moves only when a tile's max exceeds it by more than kRescaleSlack in the
// exponent (base 2): P = exp2(S * scale_log2 - max * scale_log2) may then reach 2^kRescaleSlack
// (256, far inside bf16's and f16's range), and O and the row sum carry the same stale max to the
// end, where O / rowsum and lse = max * scale + ln(rowsum) are exactly what the true max gives.
// The max then moves in a row's first tile and almost never after, so that the O rescale (a
// multiply per O element, on the consumers' path between a tile's P V and the next S) is skipped
// on nearly every tile (FlashAttention-4's conditional rescaling; bench/NOTES.md, forward v13).
constexpr float kRescaleSlack = 8.0f;

// Online softmax over one S tile, in two steps so that a kernel can run the previous tile's P V
// between them. softmax_update: new running maxima, S turned into
// P = exp2(S * scale_log2 - max * scale_log2) in place, row sums rescaled, and the factors by which
// O must be rescaled in `corrections`. Returns whether any row of the warp moved its max (the same
// answer in every lane); the warp skips rescale_output otherwise.
template <class Traits>
__device__ __forceinline__ bool softmax_update(float (&s)[Traits::kMTiles][Traits::kSTiles][4],
                                               ForwardAccumulators<Traits>& acc, float scale_log2,
                                               float (&corrections)[Traits::kMTiles][2]) {
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float tile_max = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < Traits::kSTiles; ++nt)
                tile_max = fmaxf(tile_max, fmaxf(s[mt][nt][half * 2], s[mt][nt][half * 2 + 1]));
            // A first visible tile moves a max of -inf (the difference is +inf); a NaN max (NaN
            // scores: the row's output is NaN anyway) or two -inf ones (nothing visible yet) do not.
            const float old_max = acc.row_max[mt][half];
            const float row_tile_max = tile::quad_max(tile_max);
            const bool move = (row_tile_max - old_max) * scale_log2 > kRescaleSlack;
            const float new_max = move ? row_tile_max : old_max;
            const float offset = tile::softmax_offset(new_max, scale_log2);
            const float correction = move ? ptx::exp2_approx(old_max * scale_log2 - offset) : 1.0f;
            acc.row_max[mt][half] = new_max;
            float sum = acc.row_sum[mt][half] * correction;
#pragma unroll
            for (int nt = 0; nt < Traits::kSTiles; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& value = s[mt][nt][half * 2 + e];
                    value = ptx::exp2_approx(fmaf(value, scale_log2, -offset));
                    sum += value;
                }
            }
            acc.row_sum[mt][half] = sum;
            corrections[mt][half] = correction;
            rescale = rescale || move;
        }
    }
    return __any_sync(0xffffffffu, rescale);
}

template <class Traits>
__device__ __forceinline__ void rescale_output(ForwardAccumulators<Traits>& acc,
                                               const float (&corrections)[Traits::kMTiles][2]) {
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt)
#pragma unroll
        for (int ot = 0; ot < Traits::kOTiles; ++ot)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc.o[mt][ot][e] *= corrections[mt][e / 2];
}

// Both steps, for a kernel whose P V follows at once.
template <class Traits>
__device__ __forceinline__ void online_softmax(float (&s)[Traits::kMTiles][Traits::kSTiles][4],
                                               ForwardAccumulators<Traits>& acc, float scale_log2) {
    float corrections[Traits::kMTiles][2];
    if (softmax_update<Traits>(s, acc, scale_log2, corrections)) rescale_output<Traits>(acc, corrections);
}

// The end of a row: `partial_sum` is this lane's share of the row sum. The row's O is multiplied
// by `inverse`; `lse` is its log-sum-exp. Only a row that saw no key has sum 0 (o zeros, lse
// -inf); a NaN sum (a NaN score or an infinite one) makes the row's o and lse NaN, which the
// backward relies on (bwd_kernel.cuh).
struct RowEnd {
    float inverse;
    float lse;
};

__device__ __forceinline__ RowEnd finish_row(float row_max, float partial_sum, float scale) {
    const float sum = tile::quad_sum(partial_sum);
    if (sum == 0.0f) return {0.0f, -INFINITY};
    return {1.0f / sum, row_max * scale + logf(sum)};
}

}  // namespace fattn::cuda
