// Forward of the CPU backend: FlashAttention-2 on fp32 tiles, the CPU twin of the CUDA forward.
//
// One OpenMP task per (batch, query head, block of kBlockQ query rows). The task walks the key
// tiles its rows can see (tile.h: skipped / unmasked / masked), and per tile:
//   S^T = K Q^T                    raw scores, transposed: one query per vector lane
//   mask S^T                       only when the tile straddles a row's key range (and then, if
//                                  V holds a NaN or infinity, P V sums over visible keys only)
//   P^T = 2^(S^T*scale_log2 - max) online softmax: running max and sum per query, scale folded in
//   O = O * shrink + P V           the row's accumulator, rescaled only when its max moved
// and at the end O /= sum, lse = max*scale + ln(sum) (natural log), converted to the storage type.
// Why transposed: Q^T is packed once per task and then serves every key tile, while K and V are
// read in place (fp32 storage) or converted without a transpose (f16/bf16), and the softmax
// statistics of sixteen queries are one vector, with no horizontal reduction.
// GQA: query head h reads key/value head h / heads_per_kv, in place.
//
// Scratch per thread (fp32, Dp = head_dim rounded up to 16): Q^T [Dp x kBlockQ], K and V
// [kBlockK x Dp] (conversions), S^T [kBlockK x kBlockQ], O [kBlockQ x Dp]; 272 KiB at head_dim 256.
//
// Determinism: every output row is produced by one task, in a fixed order of key tiles, with
// fixed-shape kernels, so o and lse are bit-identical whatever the thread count or schedule.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels.h"
#include "microkernel.h"
#include "tile.h"

namespace fattn::cpu {
namespace {

struct ForwardTiles {
    float* qt;        // Q^T [Dp x kBlockQ]
    float* k;         // K   [kBlockK x Dp], when K is not read in place
    float* v;         // V   [kBlockK x Dp], when V is not read in place
    float* scores_t;  // S^T, then P^T in place [kBlockK x kBlockQ]
    float* out;       // [kBlockQ x Dp]: the unnormalized output accumulator

    static ForwardTiles carve(ScratchCarver& carver, int64_t dp) {
        ForwardTiles t{};
        t.qt = carver.take(dp * kBlockQ);
        t.k = carver.take(kBlockK * dp);
        t.v = carver.take(kBlockK * dp);
        t.scores_t = carver.take(kBlockK * kBlockQ);
        t.out = carver.take(kBlockQ * dp);
        return t;
    }
};

std::size_t forward_tiles_bytes(int64_t dp) {
    ScratchCarver measure(nullptr);
    ForwardTiles::carve(measure, dp);
    return measure.bytes();
}

// A key tile and its value tile as the kernels read them: row-major fp32 with leading dimensions.
struct KeyValueTile {
    const float* k;
    int64_t k_ld;
    const float* v;
    int64_t v_ld;
};

// Reads fp32 storage in place (K is only broadcast from, so any head_dim; V is loaded by whole
// vectors, so only when head_dim is a multiple of them) and converts everything else.
template <typename Element>
KeyValueTile key_value_tile(const AttnParams& p, int64_t batch, int64_t kv_head, int64_t key_begin, int64_t keys,
                            const ForwardTiles& t) {
    const int64_t dp = padded_width(p.head_dim);
    const Element* k = row_pointer<Element>(p.k, batch, kv_head, key_begin);
    const Element* v = row_pointer<Element>(p.v, batch, kv_head, key_begin);
    KeyValueTile tile{t.k, dp, t.v, dp};
    if constexpr (std::is_same_v<Element, float>) {
        tile.k = k;
        tile.k_ld = p.k.row_stride;
        if (p.head_dim == dp) {
            tile.v = v;
            tile.v_ld = p.v.row_stride;
            return tile;
        }
    } else {
        load_rows(k, p.k.row_stride, keys, p.head_dim, t.k, dp, keys);
    }
    load_rows(v, p.v.row_stride, keys, p.head_dim, t.v, dp, keys);
    return tile;
}

template <typename Element>
void forward_query_block(const AttnParams& p, int64_t batch, int64_t head, int64_t block, const ForwardTiles& t) {
    const int64_t dp = padded_width(p.head_dim);
    const int64_t kv_head = head / p.heads_per_kv;
    const int64_t row_begin = block * kBlockQ;
    const int64_t rows = std::min(kBlockQ, p.seqlen_q - row_begin);
    const int64_t query_lanes = padded_width(rows);

    load_rows_transposed(row_pointer<Element>(p.q, batch, head, row_begin), p.q.row_stride, rows, p.head_dim, t.qt,
                         kBlockQ);
    std::fill(t.out, t.out + rows * dp, 0.0f);
    QueryStats stats;

    const int64_t key_first = p.mask.block_key_begin(row_begin);
    const int64_t key_last = p.mask.block_key_end(row_begin + rows);
    for (int64_t key_begin = key_first / kBlockK * kBlockK; key_first < key_last && key_begin < key_last;
         key_begin += kBlockK) {
        const TilePair pair{row_begin, rows, key_begin, std::min(kBlockK, p.seqlen_k - key_begin)};
        const KeyValueTile kv = key_value_tile<Element>(p, batch, kv_head, key_begin, pair.keys, t);

        tile_gemm(pair.keys, query_lanes, p.head_dim, {kv.k, kv.k_ld, 1, t.qt, kBlockQ, t.scores_t, kBlockQ},
                  Accumulate::kOverwrite);
        const bool masked = !p.mask.tile_fully_visible(row_begin, row_begin + rows, key_begin, key_begin + pair.keys);
        if (masked) mask_scores_transposed(p.mask, pair, t.scores_t, kBlockQ);
        online_softmax_step(t.scores_t, pair.keys, kBlockQ, query_lanes, p.scale_log2, stats);
        for (int64_t r = 0; r < rows; ++r)
            if (stats.shrink[r] != 1.0f) scale_row(t.out + r * dp, dp, stats.shrink[r]);
        const GemmOperands pv{t.scores_t, 1, kBlockQ, kv.v, kv.v_ld, t.out, dp};
        if (masked && !all_finite(kv.v, pair.keys, dp, kv.v_ld)) {  // exact path (tile.h)
            tile_gemm_visible(rows, dp, pv, Accumulate::kAdd, [&](int64_t r) { return visible_keys(p.mask, pair, r); });
        } else {
            tile_gemm(rows, dp, pair.keys, pv, Accumulate::kAdd);
        }
    }

    for (int64_t r = 0; r < rows; ++r) {
        Element* out_row = mutable_row_pointer<Element>(p.o, batch, head, row_begin + r);
        if (stats.sum[r] == 0.0f) {
            std::fill(out_row, out_row + p.head_dim, from_float<Element>(0.0f));  // the row sees no key
        } else {
            store_rows(t.out + r * dp, dp, 1, p.head_dim, 1.0f / stats.sum[r], out_row, 0);
        }
        if (p.lse.data != nullptr)
            *mutable_row_pointer<float>(p.lse, batch, head, row_begin + r) = row_lse(stats, r);
    }
}

}  // namespace

std::size_t forward_scratch_bytes(const AttnParams& params, int threads) {
    return static_cast<std::size_t>(threads) * forward_tiles_bytes(padded_width(params.head_dim));
}

void forward(const AttnParams& params, float* scratch, int threads) {
    const int64_t dp = padded_width(params.head_dim);
    const int64_t per_thread_floats = static_cast<int64_t>(forward_tiles_bytes(dp) / sizeof(float));
    const int64_t blocks = ceil_div(params.seqlen_q, kBlockQ);
    const int64_t tasks = params.batch * params.heads_q * blocks;

    dispatch_element_type(params.dtype, [&](auto tag) {
        using Element = typename decltype(tag)::type;
#pragma omp parallel num_threads(threads)
        {
            ScratchCarver carver(scratch + omp_get_thread_num() * per_thread_floats);
            const ForwardTiles tiles = ForwardTiles::carve(carver, dp);
            // Last blocks first: under a causal mask they see the most keys, so the schedule's tail
            // is made of short tasks.
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < tasks; ++task) {
                const int64_t block = blocks - 1 - task % blocks;
                const int64_t head = task / blocks % params.heads_q;
                const int64_t batch = task / blocks / params.heads_q;
                forward_query_block<Element>(params, batch, head, block, tiles);
            }
        }
    });
}

}  // namespace fattn::cpu
