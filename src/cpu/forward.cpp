// Forward of the CPU backend: FlashAttention-2 on fp32 tiles, the CPU twin of the CUDA forward.
//
// One OpenMP task per (batch, query head, block of kBlockQ query rows). The task walks the key
// tiles its rows can see (tile.h: skipped / unmasked / masked), and per tile:
//   S = Q K^T                      raw scores, tile_gemm over the packed Q and K^T tiles
//   mask S                         only when the tile straddles a row's key range or the last key
//   P = 2^(S*scale_log2 - max)     online softmax: running max and sum per row, scale folded in
//   O = O * shrink + P V           the row's accumulator, rescaled only when its max moved
// and at the end O /= sum, lse = max*scale + ln(sum) (natural log), converted to the storage type.
// GQA: query head h reads key/value head h / heads_per_kv, in place.
//
// Scratch per thread (fp32, Dp = head_dim rounded up to 16): Q [kBlockQ x Dp], K^T [Dp x kBlockK],
// V [kBlockK x Dp], S [kBlockQ x kBlockK], O [kBlockQ x Dp]; about 330 KiB at head_dim 256.
//
// Determinism: every output row is produced by one task, in a fixed order of key tiles, with
// fixed-shape kernels, so o and lse are bit-identical whatever the thread count or schedule.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "microkernel.h"
#include "tile.h"

namespace fattn::cpu {
namespace {

struct ForwardTiles {
    float* q;       // [kBlockQ x Dp]
    float* kt;      // [Dp x kBlockK]
    float* v;       // [kBlockK x Dp]
    float* scores;  // [kBlockQ x kBlockK]: S, then P in place
    float* out;     // [kBlockQ x Dp]: the unnormalized output accumulator

    static ForwardTiles carve(ScratchCarver& carver, int64_t dp) {
        ForwardTiles t{};
        t.q = carver.take(kBlockQ * dp);
        t.kt = carver.take(dp * kBlockK);
        t.v = carver.take(kBlockK * dp);
        t.scores = carver.take(kBlockQ * kBlockK);
        t.out = carver.take(kBlockQ * dp);
        return t;
    }
};

std::size_t forward_tiles_bytes(int64_t dp) {
    ScratchCarver measure(nullptr);
    ForwardTiles::carve(measure, dp);
    return measure.bytes();
}

template <typename Element>
void forward_query_block(const AttnParams& p, int64_t batch, int64_t head, int64_t block, const ForwardTiles& t) {
    const int64_t dp = padded_width(p.head_dim);
    const int64_t kv_head = head / p.heads_per_kv;
    const int64_t row_begin = block * kBlockQ;
    const int64_t rows = std::min(kBlockQ, p.seqlen_q - row_begin);

    load_rows(row_pointer<Element>(p.q, batch, head, row_begin), p.q.row_stride, rows, p.head_dim, t.q, dp, rows);
    std::fill(t.out, t.out + rows * dp, 0.0f);
    RowStats stats[kBlockQ];

    const int64_t key_first = p.mask.block_key_begin(row_begin);
    const int64_t key_last = p.mask.block_key_end(row_begin + rows);
    for (int64_t key_begin = key_first / kBlockK * kBlockK; key_first < key_last && key_begin < key_last;
         key_begin += kBlockK) {
        const TilePair pair{row_begin, rows, key_begin, std::min(kBlockK, p.seqlen_k - key_begin)};
        const int64_t cols = padded_width(pair.keys);
        load_rows_transposed(row_pointer<Element>(p.k, batch, kv_head, key_begin), p.k.row_stride, pair.keys,
                             p.head_dim, t.kt, kBlockK);
        load_rows(row_pointer<Element>(p.v, batch, kv_head, key_begin), p.v.row_stride, pair.keys, p.head_dim,
                  t.v, dp, pair.keys);

        tile_gemm(rows, cols, dp, {t.q, dp, 1, t.kt, kBlockK, t.scores, kBlockK}, Accumulate::kOverwrite);
        if (pair_needs_mask(p.mask, pair, cols)) mask_scores(p.mask, pair, t.scores, kBlockK);
        for (int64_t r = 0; r < rows; ++r) {
            const float shrink = online_softmax_step(t.scores + r * kBlockK, cols, p.scale_log2, stats[r]);
            if (shrink != 1.0f) scale_row(t.out + r * dp, dp, shrink);
        }
        tile_gemm(rows, dp, pair.keys, {t.scores, kBlockK, 1, t.v, dp, t.out, dp}, Accumulate::kAdd);
    }

    for (int64_t r = 0; r < rows; ++r) {
        Element* out_row = mutable_row_pointer<Element>(p.o, batch, head, row_begin + r);
        if (stats[r].sum == 0.0f) {
            std::fill(out_row, out_row + p.head_dim, from_float<Element>(0.0f));  // the row sees no key
        } else {
            store_rows(t.out + r * dp, dp, 1, p.head_dim, 1.0f / stats[r].sum, out_row, 0);
        }
        if (p.lse.data != nullptr) *mutable_row_pointer<float>(p.lse, batch, head, row_begin + r) = row_lse(stats[r], p.scale);
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
