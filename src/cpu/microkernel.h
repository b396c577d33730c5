// tile_gemm: C (+)= A * B on fp32 tiles that live in the calling thread's scratch (L1/L2).
//
// Every product of the forward (S^T = K Q^T, O += P V) and of the backward (S = Q K^T,
// dP = dO V^T, dV += P^T dO, dK += dS^T Q, dQ += dS K) is one call. B and C are row-major with a
// width that is a multiple of 16 (tiles are padded); A is addressed by two strides,
// A(m, k) = a[m*a_row + k*a_col], so P^T and dS^T are read in place instead of being transposed.
//
// Why not Eigen's GEMM: these products are tiny (64 x 64 x D), Eigen packs both operands on every
// call, and the backward would need explicit transposes; a register-blocked kernel over operands
// already laid out for it runs at ~0.8 of the FMA peak, 1.1-1.2x Eigen's large-GEMM rate
// (bench/NOTES.md). The kernel keeps a kRowsPerBlock x kVecsPerBlock block of C in registers
// (6 x 4 vectors = 24 zmm accumulators), loads kVecsPerBlock vectors of B and broadcasts
// kRowsPerBlock elements of A per step of k.
//
// The summation order over k is fixed by the call's shape alone, never by threads or timing.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "simd.h"

namespace fattn::cpu {

constexpr int kRowsPerBlock = 6;
constexpr int kVecsPerBlock = 4;

struct GemmOperands {
    const float* a;
    int64_t a_row;  // stride of A between rows of C
    int64_t a_col;  // stride of A along the reduction
    const float* b;
    int64_t ldb;
    float* c;
    int64_t ldc;
};

enum class Accumulate { kOverwrite, kAdd };

// One Rows x Vecs register block of C over the whole reduction of length `depth`.
template <int Rows, int Vecs>
inline void gemm_register_block(int64_t depth, const GemmOperands& x, Accumulate mode) {
    Vec16 acc[Rows][Vecs];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < Vecs; ++v)
            acc[r][v] = mode == Accumulate::kAdd ? load(x.c + r * x.ldc + v * kLanes) : zero();

    const float* a = x.a;
    const float* b = x.b;
    for (int64_t k = 0; k < depth; ++k, a += x.a_col, b += x.ldb) {
        Vec16 b_vec[Vecs];
#pragma GCC unroll 4
        for (int v = 0; v < Vecs; ++v) b_vec[v] = load(b + v * kLanes);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
            const Vec16 a_elem = broadcast(a[r * x.a_row]);
#pragma GCC unroll 4
            for (int v = 0; v < Vecs; ++v) acc[r][v] = fma(a_elem, b_vec[v], acc[r][v]);
        }
    }

#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < Vecs; ++v) store(x.c + r * x.ldc + v * kLanes, acc[r][v]);
}

using RegisterBlockFn = void (*)(int64_t, const GemmOperands&, Accumulate);

template <int Rows, int... VecCounts>
constexpr auto register_block_row(std::integer_sequence<int, VecCounts...>) {
    return std::array<RegisterBlockFn, sizeof...(VecCounts)>{&gemm_register_block<Rows, VecCounts + 1>...};
}

template <int... RowCounts>
constexpr auto register_block_table(std::integer_sequence<int, RowCounts...>) {
    return std::array<std::array<RegisterBlockFn, kVecsPerBlock>, sizeof...(RowCounts)>{
        register_block_row<RowCounts + 1>(std::make_integer_sequence<int, kVecsPerBlock>{})...};
}

// [rows - 1][vecs - 1] -> the block kernel of that shape, for the edges of a tile.
inline constexpr auto kRegisterBlocks = register_block_table(std::make_integer_sequence<int, kRowsPerBlock>{});

// C[rows x cols] (+)= A[rows x depth] * B[depth x cols]; cols is a multiple of kLanes.
inline void tile_gemm(int64_t rows, int64_t cols, int64_t depth, const GemmOperands& x, Accumulate mode) {
    for (int64_t col = 0; col < cols; col += kVecsPerBlock * kLanes) {
        const int64_t vecs = std::min<int64_t>(kVecsPerBlock, (cols - col) / kLanes);
        for (int64_t row = 0; row < rows; row += kRowsPerBlock) {
            const int64_t block_rows = std::min<int64_t>(kRowsPerBlock, rows - row);
            const GemmOperands block{x.a + row * x.a_row, x.a_row, x.a_col, x.b + col, x.ldb,
                                     x.c + row * x.ldc + col, x.ldc};
            kRegisterBlocks[block_rows - 1][vecs - 1](depth, block, mode);
        }
    }
}

}  // namespace fattn::cpu
