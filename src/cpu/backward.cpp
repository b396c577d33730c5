// Backward of the CPU backend: FlashAttention-2's backward on fp32 tiles, the CPU twin of the
// CUDA backward.
//
// For every (query block i, key tile j) pair whose rows may see its keys (pair_may_see):
//   S  = Q_i K_j^T,  P = exp(S*scale - lse)              P recomputed from the forward's lse
//   dP = dO_i V_j^T, dS = P * (dP - delta)               delta = rowsum(dO * O), computed first
//   dV_j += P^T dO_i,  dK_j += dS^T Q_i,  dQ_i += dS K_j
// and at the end dK and dQ are multiplied by the softmax scale. Masked pairs with a NaN or infinity
// among their operands sum each output row over its visible range only (tile.h), so a non-finite
// input reaches exactly the gradients that read it. No atomics; two schedules:
//   fused     one task per (batch, kv head) owns all its key tiles and every query head of its
//             GQA group: dK/dV stay in a key-tile accumulator, dQ goes to a per-thread fp32
//             accumulator of the group's rows. Five products per pair. Used when there are at
//             least as many (batch, kv head) tasks as threads.
//   two-pass  pass A, one task per (batch, kv head, key tile), accumulates dK/dV; pass B, one task
//             per (batch, query head, query block), recomputes S/P/dP/dS and accumulates dQ.
//             Seven products per pair, but parallel over tiles; used for few heads.
// Determinism: both schedules visit the pairs in the same order per accumulator (dK_j, dV_j: query
// heads of the group, then query blocks, ascending; dQ_i: key tiles ascending), start from zero
// and use the same fixed-shape kernels, so dq, dk and dv are bit-identical for any thread count,
// whichever schedule the thread count selects.
//
// Scratch: per thread, the tiles below (544 KiB at head_dim 256); shared, delta
// [B x Hq x Nq]; with the fused schedule, per thread, a dQ accumulator [heads_per_kv x Nq x Dp].
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels.h"
#include "microkernel.h"
#include "tile.h"

namespace fattn::cpu {
namespace {

// Above this, the fused schedule's per-thread dQ accumulators cost more memory than its speed is
// worth, and the two-pass schedule (tiles only) runs instead.
constexpr std::size_t kFusedDqBudgetBytes = std::size_t{128} << 20;

struct BackwardTiles {
    float* kt;       // K_j^T [Dp x kBlockK], for S
    float* k;        // K_j   [kBlockK x Dp], for dQ
    float* vt;       // V_j^T [Dp x kBlockK], for dP
    float* q;        // Q_i   [kBlockQ x Dp]
    float* dout;     // dO_i  [kBlockQ x Dp]
    float* probs;    // P     [kBlockQ x kBlockK]
    float* dscores;  // dP, then dS in place [kBlockQ x kBlockK]
    float* dk;       // dK_j accumulator [kBlockK x Dp]
    float* dv;       // dV_j accumulator [kBlockK x Dp]
    float* dq;       // dQ_i accumulator of pass B [kBlockQ x Dp]

    static BackwardTiles carve(ScratchCarver& carver, int64_t dp) {
        BackwardTiles t{};
        t.kt = carver.take(dp * kBlockK);
        t.k = carver.take(kBlockK * dp);
        t.vt = carver.take(dp * kBlockK);
        t.q = carver.take(kBlockQ * dp);
        t.dout = carver.take(kBlockQ * dp);
        t.probs = carver.take(kBlockQ * kBlockK);
        t.dscores = carver.take(kBlockQ * kBlockK);
        t.dk = carver.take(kBlockK * dp);
        t.dv = carver.take(kBlockK * dp);
        t.dq = carver.take(kBlockQ * dp);
        return t;
    }
};

// The whole scratch of a backward call, laid out by one function for sizing and for use.
struct BackwardScratch {
    float* delta;     // [B x Hq x Nq]
    float* fused_dq;  // [threads x heads_per_kv x Nq x Dp], only with the fused schedule
    float* tiles;     // [threads x tiles_floats]
    int64_t tiles_floats;
    int64_t fused_dq_floats;  // per thread
    std::size_t bytes;
};

BackwardScratch lay_out_scratch(const AttnBwdParams& p, int threads, float* base) {
    const int64_t dp = padded_width(p.head_dim);
    ScratchCarver tiles_measure(nullptr);
    BackwardTiles::carve(tiles_measure, dp);

    BackwardScratch s{};
    s.tiles_floats = static_cast<int64_t>(tiles_measure.bytes() / sizeof(float));
    const int64_t fused_dq_floats = p.heads_per_kv * p.seqlen_q * dp;
    const bool fused = p.batch * p.heads_kv >= threads &&
                       static_cast<std::size_t>(threads * fused_dq_floats) * sizeof(float) <= kFusedDqBudgetBytes;
    s.fused_dq_floats = fused ? fused_dq_floats : 0;

    ScratchCarver carver(base);
    s.delta = carver.take(p.batch * p.heads_q * p.seqlen_q);
    s.fused_dq = carver.take(threads * s.fused_dq_floats);
    s.tiles = carver.take(threads * s.tiles_floats);
    s.bytes = carver.bytes();
    return s;
}

// delta[b][h][row] = sum_d dO * O, the softmax-gradient correction of each query row. Summed
// exactly as the dP product sums dO * V (one FMA chain over d, ascending), so that when O is a
// single value row (a one-hot softmax, e.g. a huge scale) dP - delta is exactly 0 for that key
// instead of a rounding difference that the scale then multiplies.
template <typename Element>
void compute_delta(const AttnBwdParams& p, float* delta, int threads) {
    const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t index = 0; index < rows; ++index) {
        const int64_t row = index % p.seqlen_q;
        const int64_t head = index / p.seqlen_q % p.heads_q;
        const int64_t batch = index / p.seqlen_q / p.heads_q;
        const Element* o = row_pointer<Element>(p.o, batch, head, row);
        const Element* dout = row_pointer<Element>(p.dout, batch, head, row);
        float sum = 0.0f;
        for (int64_t d = 0; d < p.head_dim; ++d) sum = std::fma(to_float(dout[d]), to_float(o[d]), sum);
        delta[index] = sum;
    }
}

// Loads K_j, K_j^T and V_j^T; returns whether they are all finite (for the exact path, tile.h).
template <typename Element>
bool load_key_tile(const AttnBwdParams& p, int64_t batch, int64_t kv_head, int64_t key_begin, int64_t keys,
                   const BackwardTiles& t) {
    const int64_t dp = padded_width(p.head_dim);
    const Element* k = row_pointer<Element>(p.k, batch, kv_head, key_begin);
    load_rows_transposed(k, p.k.row_stride, keys, p.head_dim, t.kt, kBlockK);
    load_rows(k, p.k.row_stride, keys, p.head_dim, t.k, dp, keys);
    load_rows_transposed(row_pointer<Element>(p.v, batch, kv_head, key_begin), p.v.row_stride, keys, p.head_dim,
                         t.vt, kBlockK);
    return all_finite(t.k, keys, dp, dp) && all_finite(t.vt, dp, kBlockK, kBlockK);
}

// A query block as the kernels read it: Q and dO row-major fp32 with leading dimensions (in place
// when the storage is fp32 with a head_dim of whole vectors, else converted into the tiles), and
// each row's lse and delta.
struct QueryBlock {
    const float* q;
    int64_t q_ld;
    const float* dout;
    int64_t dout_ld;
    float lse[kBlockQ];
    float delta[kBlockQ];
};

template <typename Element>
void load_query_block(const AttnBwdParams& p, const float* delta, int64_t batch, int64_t head,
                      int64_t row_begin, int64_t rows, const BackwardTiles& t, QueryBlock& out) {
    const int64_t dp = padded_width(p.head_dim);
    const Element* q = row_pointer<Element>(p.q, batch, head, row_begin);
    const Element* dout = row_pointer<Element>(p.dout, batch, head, row_begin);
    bool in_place = false;
    if constexpr (std::is_same_v<Element, float>) {
        in_place = p.head_dim == dp;
        if (in_place) {
            out.q = q;
            out.q_ld = p.q.row_stride;
            out.dout = dout;
            out.dout_ld = p.dout.row_stride;
        }
    }
    if (!in_place) {
        load_rows(q, p.q.row_stride, rows, p.head_dim, t.q, dp, rows);
        load_rows(dout, p.dout.row_stride, rows, p.head_dim, t.dout, dp, rows);
        out.q = t.q;
        out.q_ld = dp;
        out.dout = t.dout;
        out.dout_ld = dp;
    }
    const float* head_delta = delta + (batch * p.heads_q + head) * p.seqlen_q;
    for (int64_t r = 0; r < rows; ++r) {
        out.lse[r] = *row_pointer<float>(p.lse, batch, head, row_begin + r);
        out.delta[r] = head_delta[row_begin + r];
    }
}

// How a pair's products run: a pair that straddles a mask bound (or ends in key padding) masks
// its scores, and if one of the operands its masked zeros multiply is not finite, each output row
// of its products sums over its visible range only (the exact path, tile.h).
struct PairPath {
    bool masked;
    bool exact;
};

bool query_block_finite(const QueryBlock& block, int64_t rows, int64_t dp) {
    for (int64_t r = 0; r < rows; ++r)
        if (std::isnan(block.lse[r]) || !std::isfinite(block.delta[r])) return false;
    return all_finite(block.q, rows, dp, block.q_ld) && all_finite(block.dout, rows, dp, block.dout_ld);
}

PairPath pair_path(const AttnBwdParams& p, const TilePair& pair, bool key_tile_finite, const QueryBlock& block) {
    const bool masked = pair_needs_mask(p.mask, pair, padded_width(pair.keys));
    return {masked,
            masked && !(key_tile_finite && query_block_finite(block, pair.rows, padded_width(p.head_dim)))};
}

// P (t.probs) and dS (t.dscores) of one pair.
inline void score_gradients(const AttnBwdParams& p, const TilePair& pair, PairPath path, const QueryBlock& block,
                            const BackwardTiles& t) {
    const int64_t cols = padded_width(pair.keys);
    tile_gemm(pair.rows, cols, p.head_dim, {block.q, block.q_ld, 1, t.kt, kBlockK, t.probs, kBlockK},
              Accumulate::kOverwrite);
    if (path.masked) mask_scores(p.mask, pair, t.probs, kBlockK);
    for (int64_t r = 0; r < pair.rows; ++r) exp_row_from_lse(t.probs + r * kBlockK, cols, p.scale, block.lse[r]);

    tile_gemm(pair.rows, cols, p.head_dim, {block.dout, block.dout_ld, 1, t.vt, kBlockK, t.dscores, kBlockK},
              Accumulate::kOverwrite);
    for (int64_t r = 0; r < pair.rows; ++r) {
        const float* prob = t.probs + r * kBlockK;
        float* ds = t.dscores + r * kBlockK;
        const Vec16 delta = broadcast(block.delta[r]);
        for (int64_t c = 0; c < cols; c += kLanes) store(ds + c, load(prob + c) * (load(ds + c) - delta));
    }
}

// dV_j += P^T dO_i and dK_j += dS^T Q_i (dK's scale is applied when it is stored).
inline void accumulate_key_grads(const AttnBwdParams& p, const TilePair& pair, PairPath path,
                                 const QueryBlock& block, const BackwardTiles& t) {
    const int64_t dp = padded_width(p.head_dim);
    const GemmOperands dv{t.probs, 1, kBlockK, block.dout, block.dout_ld, t.dv, dp};
    const GemmOperands dk{t.dscores, 1, kBlockK, block.q, block.q_ld, t.dk, dp};
    if (path.exact) {
        auto rows_seeing = [&](int64_t j) { return visible_rows(p.mask, pair, j); };
        tile_gemm_visible(pair.keys, dp, dv, Accumulate::kAdd, rows_seeing);
        tile_gemm_visible(pair.keys, dp, dk, Accumulate::kAdd, rows_seeing);
    } else {
        tile_gemm(pair.keys, dp, pair.rows, dv, Accumulate::kAdd);
        tile_gemm(pair.keys, dp, pair.rows, dk, Accumulate::kAdd);
    }
}

// dQ_i += dS K_j into `dq` [rows x Dp] (dQ's scale is applied when it is stored).
inline void accumulate_query_grads(const AttnBwdParams& p, const TilePair& pair, PairPath path,
                                   const BackwardTiles& t, float* dq) {
    const int64_t dp = padded_width(p.head_dim);
    const GemmOperands x{t.dscores, kBlockK, 1, t.k, dp, dq, dp};
    if (path.exact) {
        tile_gemm_visible(pair.rows, dp, x, Accumulate::kAdd, [&](int64_t r) { return visible_keys(p.mask, pair, r); });
    } else {
        tile_gemm(pair.rows, dp, pair.keys, x, Accumulate::kAdd);
    }
}

// dK_j and dV_j of one key tile, summed over the kv head's query heads and their query blocks.
// With `group_dq` (the fused schedule) it also accumulates dQ of those heads, [heads_per_kv x Nq x Dp].
template <typename Element>
void key_tile_grads(const AttnBwdParams& p, const float* delta, int64_t batch, int64_t kv_head,
                    int64_t key_begin, const BackwardTiles& t, float* group_dq) {
    const int64_t dp = padded_width(p.head_dim);
    const int64_t keys = std::min(kBlockK, p.seqlen_k - key_begin);
    const int64_t blocks = ceil_div(p.seqlen_q, kBlockQ);
    const bool key_tile_finite = load_key_tile<Element>(p, batch, kv_head, key_begin, keys, t);
    std::fill(t.dk, t.dk + keys * dp, 0.0f);
    std::fill(t.dv, t.dv + keys * dp, 0.0f);

    QueryBlock query;
    for (int64_t group_head = 0; group_head < p.heads_per_kv; ++group_head) {
        const int64_t head = kv_head * p.heads_per_kv + group_head;
        for (int64_t block = 0; block < blocks; ++block) {
            const int64_t row_begin = block * kBlockQ;
            const TilePair pair{row_begin, std::min(kBlockQ, p.seqlen_q - row_begin), key_begin, keys};
            if (!pair_may_see(p.mask, pair)) continue;
            load_query_block<Element>(p, delta, batch, head, row_begin, pair.rows, t, query);
            const PairPath path = pair_path(p, pair, key_tile_finite, query);
            score_gradients(p, pair, path, query, t);
            accumulate_key_grads(p, pair, path, query, t);
            if (group_dq != nullptr)
                accumulate_query_grads(p, pair, path, t, group_dq + (group_head * p.seqlen_q + row_begin) * dp);
        }
    }

    store_rows(t.dk, dp, keys, p.head_dim, p.scale, mutable_row_pointer<Element>(p.dk, batch, kv_head, key_begin),
               p.dk.row_stride);
    store_rows(t.dv, dp, keys, p.head_dim, 1.0f, mutable_row_pointer<Element>(p.dv, batch, kv_head, key_begin),
               p.dv.row_stride);
}

// Fused schedule: one task per (batch, kv head).
template <typename Element>
void backward_fused(const AttnBwdParams& p, const BackwardScratch& s, int threads) {
    const int64_t dp = padded_width(p.head_dim);
    const int64_t key_tiles = ceil_div(p.seqlen_k, kBlockK);
    const int64_t tasks = p.batch * p.heads_kv;
#pragma omp parallel num_threads(threads)
    {
        const int thread = omp_get_thread_num();
        ScratchCarver carver(s.tiles + thread * s.tiles_floats);
        const BackwardTiles tiles = BackwardTiles::carve(carver, dp);
        float* group_dq = s.fused_dq + thread * s.fused_dq_floats;
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; ++task) {
            const int64_t kv_head = task % p.heads_kv;
            const int64_t batch = task / p.heads_kv;
            std::fill(group_dq, group_dq + s.fused_dq_floats, 0.0f);
            for (int64_t tile = 0; tile < key_tiles; ++tile)
                key_tile_grads<Element>(p, s.delta, batch, kv_head, tile * kBlockK, tiles, group_dq);
            for (int64_t group_head = 0; group_head < p.heads_per_kv; ++group_head) {
                const int64_t head = kv_head * p.heads_per_kv + group_head;
                store_rows(group_dq + group_head * p.seqlen_q * dp, dp, p.seqlen_q, p.head_dim, p.scale,
                           mutable_row_pointer<Element>(p.dq, batch, head, 0), p.dq.row_stride);
            }
        }
    }
}

// Two-pass schedule: pass A over key tiles (dK, dV), pass B over query blocks (dQ).
template <typename Element>
void backward_two_pass(const AttnBwdParams& p, const BackwardScratch& s, int threads) {
    const int64_t dp = padded_width(p.head_dim);
    const int64_t key_tiles = ceil_div(p.seqlen_k, kBlockK);
    const int64_t query_blocks = ceil_div(p.seqlen_q, kBlockQ);
#pragma omp parallel num_threads(threads)
    {
        ScratchCarver carver(s.tiles + omp_get_thread_num() * s.tiles_floats);
        const BackwardTiles t = BackwardTiles::carve(carver, dp);

        // nowait: the passes write disjoint outputs, so a thread done with pass A starts on pass B.
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t task = 0; task < p.batch * p.heads_kv * key_tiles; ++task) {
            const int64_t tile = task % key_tiles;
            const int64_t kv_head = task / key_tiles % p.heads_kv;
            const int64_t batch = task / key_tiles / p.heads_kv;
            key_tile_grads<Element>(p, s.delta, batch, kv_head, tile * kBlockK, t, nullptr);
        }

#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < p.batch * p.heads_q * query_blocks; ++task) {
            const int64_t block = query_blocks - 1 - task % query_blocks;
            const int64_t head = task / query_blocks % p.heads_q;
            const int64_t batch = task / query_blocks / p.heads_q;
            const int64_t row_begin = block * kBlockQ;
            const int64_t rows = std::min(kBlockQ, p.seqlen_q - row_begin);
            QueryBlock query;
            load_query_block<Element>(p, s.delta, batch, head, row_begin, rows, t, query);
            std::fill(t.dq, t.dq + rows * dp, 0.0f);
            const int64_t key_first = p.mask.block_key_begin(row_begin);
            const int64_t key_last = p.mask.block_key_end(row_begin + rows);
            for (int64_t key_begin = key_first / kBlockK * kBlockK; key_first < key_last && key_begin < key_last;
                 key_begin += kBlockK) {
                const TilePair pair{row_begin, rows, key_begin, std::min(kBlockK, p.seqlen_k - key_begin)};
                if (!pair_may_see(p.mask, pair)) continue;
                const bool key_tile_finite = load_key_tile<Element>(p, batch, head / p.heads_per_kv, key_begin, pair.keys, t);
                const PairPath path = pair_path(p, pair, key_tile_finite, query);
                score_gradients(p, pair, path, query, t);
                accumulate_query_grads(p, pair, path, t, t.dq);
            }
            store_rows(t.dq, dp, rows, p.head_dim, p.scale, mutable_row_pointer<Element>(p.dq, batch, head, row_begin),
                       p.dq.row_stride);
        }
    }
}

}  // namespace

std::size_t backward_scratch_bytes(const AttnBwdParams& params, int threads) {
    return lay_out_scratch(params, threads, nullptr).bytes;
}

void backward(const AttnBwdParams& params, float* scratch, int threads) {
    const BackwardScratch s = lay_out_scratch(params, threads, scratch);
    dispatch_element_type(params.dtype, [&](auto tag) {
        using Element = typename decltype(tag)::type;
        compute_delta<Element>(params, s.delta, threads);
        if (s.fused_dq_floats > 0) {
            backward_fused<Element>(params, s, threads);
        } else {
            backward_two_pass<Element>(params, s, threads);
        }
    });
}

}  // namespace fattn::cpu
