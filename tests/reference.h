// The float64 reference of attention forward and backward (the only one), and the same plain math
// run in fp32 in the storage precision: the "naive" yardstick of the accuracy rule.
//
// Written straight from the ABI text (/work/shared/ABI.md), sharing no code with the library:
//   scores s_ij = scale * q_i . k_j over the keys row i sees (mask rule below),
//   lse_i = log sum_j exp(s_ij), P_ij = exp(s_ij - lse_i), o_i = sum_j P_ij v_j;
//   backward: dP_ij = dout_i . v_j, D_i = dout_i . o_i, dS_ij = P_ij (dP_ij - D_i),
//   dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i dS_ij q_i, dv_j = sum_i P_ij dout_i,
//   with dk/dv of a key/value head summed over the query heads of its group.
// Scores are materialized one row at a time; fine for the small shapes tests use.
// The same code in fp32 with storage-rounded intermediates is the naive yardstick (see stored()).
// Inputs are read through the ABI's own view (fattn_tensor_t: [B,H,N,D] shape + strides).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "fattn.h"
#include "tensor.h"

namespace fattn_test {

// Which keys query row i sees (ABI "Attention descriptor"): j >= i + (Nk - Nq) - window_left when
// window_left >= 0, and j <= i + (Nk - Nq) + window_right when window_right >= 0; causal means
// window_right = 0.
struct MaskRule {
    int64_t seqlen_q = 1, seqlen_k = 1;
    int64_t window_left = -1, window_right = -1;

    MaskRule(const fattn_attention_desc_t& desc, int64_t nq, int64_t nk)
        : seqlen_q(nq), seqlen_k(nk), window_left(desc.window_left),
          window_right(desc.causal ? 0 : desc.window_right) {}

    bool visible(int64_t i, int64_t j) const {
        const int64_t diagonal = i + (seqlen_k - seqlen_q);
        if (window_left >= 0 && j < diagonal - window_left) return false;
        if (window_right >= 0 && j > diagonal + window_right) return false;
        return true;
    }
    bool row_sees_nothing(int64_t i) const {
        for (int64_t j = 0; j < seqlen_k; ++j)
            if (visible(i, j)) return false;
        return true;
    }
};

// The softmax scale the descriptor selects: its float value, or float(1/sqrt(D)) for 0.
inline float resolved_scale(const fattn_attention_desc_t& desc, int64_t head_dim) {
    return desc.softmax_scale > 0.0f ? desc.softmax_scale
                                     : static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

// A logical [B,H,N,D] tensor, row-major, in precision Real.
template <typename Real>
struct Dense {
    Shape shape{1, 1, 1, 1};
    std::vector<Real> data;

    Dense() = default;
    explicit Dense(const Shape& s) : shape(s), data(static_cast<size_t>(s[0] * s[1] * s[2] * s[3]), Real(0)) {}

    size_t index(int64_t b, int64_t h, int64_t n, int64_t d) const {
        return static_cast<size_t>(((b * shape[1] + h) * shape[2] + n) * shape[3] + d);
    }
    Real& at(int64_t b, int64_t h, int64_t n, int64_t d) { return data[index(b, h, n, d)]; }
    Real at(int64_t b, int64_t h, int64_t n, int64_t d) const { return data[index(b, h, n, d)]; }
};

// Reads a host tensor through its ABI view: data + element strides.
template <typename Real>
Dense<Real> gather(const fattn_tensor_t& tensor) {
    Dense<Real> out(Shape{tensor.shape[0], tensor.shape[1], tensor.shape[2], tensor.shape[3]});
    const auto dtype = static_cast<fattn_dtype_t>(tensor.dtype);
    for (int64_t b = 0; b < tensor.shape[0]; ++b)
        for (int64_t h = 0; h < tensor.shape[1]; ++h)
            for (int64_t n = 0; n < tensor.shape[2]; ++n)
                for (int64_t d = 0; d < tensor.shape[3]; ++d) {
                    const int64_t offset = b * tensor.strides[0] + h * tensor.strides[1] +
                                           n * tensor.strides[2] + d * tensor.strides[3];
                    out.at(b, h, n, d) = static_cast<Real>(load_element(tensor.data, dtype, offset));
                }
    return out;
}

// Besides each output, the sum of the absolute values of the terms that produce it ("terms"): the
// scale at which any fp32 summation order may round differently, so the accuracy rule can allow a
// few fp32 roundings of it where the result itself cancels to ~0 (e.g. dq of a row with one key).
template <typename Real>
struct ForwardResult {
    Dense<Real> o;          // like q
    Dense<Real> lse;        // [B,Hq,Nq,1]; -inf for rows that see no key
    Dense<Real> o_terms;    // sum_j P_ij |v_jd|
    Dense<Real> lse_terms;  // sum_j P_ij scale sum_d |q_id k_jd|: the scale of the scores' rounding
    // sum_j P_ij (|v_jd| + |o_id|) scale sum_d |q_id k_jd|: to first order, how much o moves per
    // unit of relative rounding in the scores (dP_ij = P_ij (ds_ij - sum_l P_il ds_il)), which
    // every fp32 implementation pays and a large softmax_scale magnifies.
    Dense<Real> o_score_terms;
};

template <typename Real>
struct Gradients {
    Dense<Real> dq, dk, dv;
    Dense<Real> dq_terms, dk_terms, dv_terms;
    // As ForwardResult::o_score_terms: each gradient's first-order response to relative rounding
    // in the scores and in lse, through P_ij = exp(s_ij - lse_i).
    Dense<Real> dq_score_terms, dk_score_terms, dv_score_terms;
};

// Precision policy: Real = double is the reference (nothing rounded). Real = float is the naive
// yardstick, "attention in the storage precision": fp32 scores and accumulation, and every
// materialized matrix a storage-precision implementation hands to its matrix products (the
// probabilities P, and dS in the backward) or returns (o, dq, dk, dv) rounded to the storage dtype,
// as PyTorch's math backend and FlashAttention's tensor-core GEMMs both do.
template <typename Real>
Real stored(Real value, fattn_dtype_t storage) {
    if constexpr (std::is_same_v<Real, float>) return round_to_storage(value, storage);
    return value;
}

namespace detail {

template <typename Real>
Real dot(const Dense<Real>& a, int64_t ab, int64_t ah, int64_t an, const Dense<Real>& b, int64_t bb,
         int64_t bh, int64_t bn) {
    Real sum = 0;
    for (int64_t d = 0; d < a.shape[3]; ++d) sum += a.at(ab, ah, an, d) * b.at(bb, bh, bn, d);
    return sum;
}

template <typename Real>
Real dot_of_magnitudes(const Dense<Real>& a, int64_t ab, int64_t ah, int64_t an, const Dense<Real>& b, int64_t bb,
                       int64_t bh, int64_t bn) {
    Real sum = 0;
    for (int64_t d = 0; d < a.shape[3]; ++d) sum += std::abs(a.at(ab, ah, an, d) * b.at(bb, bh, bn, d));
    return sum;
}

// Row i's scaled scores over all keys; masked keys get -inf.
template <typename Real>
void score_row(const Dense<Real>& q, const Dense<Real>& k, const MaskRule& mask, Real scale, int64_t b,
               int64_t h, int64_t kv_head, int64_t i, std::vector<Real>& scores) {
    for (int64_t j = 0; j < k.shape[2]; ++j)
        scores[static_cast<size_t>(j)] = mask.visible(i, j) ? scale * dot(q, b, h, i, k, b, kv_head, j)
                                                            : -std::numeric_limits<Real>::infinity();
}

}  // namespace detail

template <typename Real>
ForwardResult<Real> attention_forward(const Dense<Real>& q, const Dense<Real>& k, const Dense<Real>& v,
                                      const fattn_attention_desc_t& desc, fattn_dtype_t storage) {
    const int64_t batch = q.shape[0], heads_q = q.shape[1], nq = q.shape[2], dim = q.shape[3];
    const int64_t nk = k.shape[2], group = heads_q / k.shape[1];
    const MaskRule mask(desc, nq, nk);
    const Real scale = resolved_scale(desc, dim);
    const Shape lse_shape{batch, heads_q, nq, 1};
    ForwardResult<Real> out{Dense<Real>(q.shape), Dense<Real>(lse_shape), Dense<Real>(q.shape), Dense<Real>(lse_shape),
                            Dense<Real>(q.shape)};
    std::vector<Real> scores(static_cast<size_t>(nk));
    std::vector<Real> accumulator(static_cast<size_t>(dim)), terms(static_cast<size_t>(dim)),
        score_response(static_cast<size_t>(dim));
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t h = 0; h < heads_q; ++h)
            for (int64_t i = 0; i < nq; ++i) {
                detail::score_row(q, k, mask, scale, b, h, h / group, i, scores);
                Real row_max = -std::numeric_limits<Real>::infinity();
                for (Real s : scores) row_max = std::max(row_max, s);
                if (row_max == -std::numeric_limits<Real>::infinity()) {  // sees no key
                    out.lse.at(b, h, i, 0) = row_max;
                    continue;  // o stays zero
                }
                // Softmax, materialized: P_ij = exp(s_ij - max) / sum, as the storage precision holds it.
                Real denominator = 0;
                for (int64_t j = 0; j < nk; ++j)
                    if (mask.visible(i, j)) denominator += std::exp(scores[static_cast<size_t>(j)] - row_max);
                Real score_terms = 0;
                std::fill(accumulator.begin(), accumulator.end(), Real(0));
                std::fill(terms.begin(), terms.end(), Real(0));
                std::fill(score_response.begin(), score_response.end(), Real(0));
                for (int64_t j = 0; j < nk; ++j) {
                    if (!mask.visible(i, j)) continue;
                    const Real p = std::exp(scores[static_cast<size_t>(j)] - row_max) / denominator;
                    const Real p_stored = stored(p, storage);
                    const Real exponent_terms = scale * detail::dot_of_magnitudes(q, b, h, i, k, b, h / group, j);
                    score_terms += p * exponent_terms;
                    for (int64_t d = 0; d < dim; ++d) {
                        const Real value = v.at(b, h / group, j, d);
                        accumulator[static_cast<size_t>(d)] += p_stored * value;
                        terms[static_cast<size_t>(d)] += p * std::abs(value);
                        score_response[static_cast<size_t>(d)] += p * exponent_terms * std::abs(value);
                    }
                }
                out.lse.at(b, h, i, 0) = row_max + std::log(denominator);
                out.lse_terms.at(b, h, i, 0) = score_terms;
                for (int64_t d = 0; d < dim; ++d) {
                    out.o.at(b, h, i, d) = stored(accumulator[static_cast<size_t>(d)], storage);
                    out.o_terms.at(b, h, i, d) = terms[static_cast<size_t>(d)];
                    out.o_score_terms.at(b, h, i, d) = score_response[static_cast<size_t>(d)] +
                                                       std::abs(accumulator[static_cast<size_t>(d)]) * score_terms;
                }
            }
    return out;
}

// `forward` is this precision's own forward of the same inputs (its o enters D_i = dout_i . o_i).
template <typename Real>
Gradients<Real> attention_backward(const Dense<Real>& q, const Dense<Real>& k, const Dense<Real>& v,
                                   const Dense<Real>& dout, const ForwardResult<Real>& forward,
                                   const fattn_attention_desc_t& desc, fattn_dtype_t storage) {
    const int64_t batch = q.shape[0], heads_q = q.shape[1], nq = q.shape[2], dim = q.shape[3];
    const int64_t nk = k.shape[2], group = heads_q / k.shape[1];
    const MaskRule mask(desc, nq, nk);
    const Real scale = resolved_scale(desc, dim);
    Gradients<Real> grad{Dense<Real>(q.shape), Dense<Real>(k.shape), Dense<Real>(k.shape),
                         Dense<Real>(q.shape), Dense<Real>(k.shape), Dense<Real>(k.shape),
                         Dense<Real>(q.shape), Dense<Real>(k.shape), Dense<Real>(k.shape)};
    std::vector<Real> scores(static_cast<size_t>(nk)), probabilities(static_cast<size_t>(nk)),
        exponent_terms(static_cast<size_t>(nk));
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t h = 0; h < heads_q; ++h) {
            const int64_t kv = h / group;
            for (int64_t i = 0; i < nq; ++i) {
                const Real lse = forward.lse.at(b, h, i, 0);
                if (lse == -std::numeric_limits<Real>::infinity()) continue;  // sees no key: zero gradient
                detail::score_row(q, k, mask, scale, b, h, kv, i, scores);
                // Each probability and score's term magnitude, and the row's lse's (forward.lse_terms,
                // recomputed: callers may hand only o and lse).
                Real lse_terms = 0;
                for (int64_t j = 0; j < nk; ++j) {
                    const auto at = static_cast<size_t>(j);
                    if (scores[at] == -std::numeric_limits<Real>::infinity()) continue;
                    probabilities[at] = std::exp(scores[at] - lse);
                    exponent_terms[at] = scale * detail::dot_of_magnitudes(q, b, h, i, k, b, kv, j);
                    lse_terms += probabilities[at] * exponent_terms[at];
                }
                const Real row_delta = detail::dot(dout, b, h, i, forward.o, b, h, i);
                const Real row_delta_terms = detail::dot_of_magnitudes(dout, b, h, i, forward.o, b, h, i);
                for (int64_t j = 0; j < nk; ++j) {
                    if (scores[static_cast<size_t>(j)] == -std::numeric_limits<Real>::infinity()) continue;
                    const Real p = probabilities[static_cast<size_t>(j)];
                    const Real dp = detail::dot(dout, b, h, i, v, b, kv, j);
                    // P and dS enter their products as the storage precision holds them.
                    const Real p_stored = stored(p, storage);
                    const Real ds = stored(p * (dp - row_delta), storage);
                    const Real ds_terms = p * (detail::dot_of_magnitudes(dout, b, h, i, v, b, kv, j) + row_delta_terms);
                    // Relative rounding of s_ij and of lse_i moves P_ij (and dS_ij) by this factor.
                    const Real p_response = exponent_terms[static_cast<size_t>(j)] + lse_terms;
                    for (int64_t d = 0; d < dim; ++d) {
                        const Real q_value = q.at(b, h, i, d), k_value = k.at(b, kv, j, d), dout_value = dout.at(b, h, i, d);
                        grad.dq.at(b, h, i, d) += scale * ds * k_value;
                        grad.dk.at(b, kv, j, d) += scale * ds * q_value;
                        grad.dv.at(b, kv, j, d) += p_stored * dout_value;
                        grad.dq_terms.at(b, h, i, d) += scale * ds_terms * std::abs(k_value);
                        grad.dk_terms.at(b, kv, j, d) += scale * ds_terms * std::abs(q_value);
                        grad.dv_terms.at(b, kv, j, d) += p * std::abs(dout_value);
                        grad.dq_score_terms.at(b, h, i, d) += scale * ds_terms * p_response * std::abs(k_value);
                        grad.dk_score_terms.at(b, kv, j, d) += scale * ds_terms * p_response * std::abs(q_value);
                        grad.dv_score_terms.at(b, kv, j, d) += p * p_response * std::abs(dout_value);
                    }
                }
            }
        }
    for (Dense<Real>* g : {&grad.dq, &grad.dk, &grad.dv})
        for (Real& value : g->data) value = stored(value, storage);
    return grad;
}

}  // namespace fattn_test
