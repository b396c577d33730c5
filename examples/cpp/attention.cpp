// attention.cpp: fattn from C++ through the header-only wrapper fattn.hpp. Runs causal
// sliding-window attention on data in FlashAttention's [batch, seqlen, heads, head_dim] layout on
// the CPU, checks the forward against a double-precision computation and the backward against
// central finite differences of loss = sum(out * dout), and shows an error being thrown.
//
// Build against an installed fattn:
//     cmake -S . -B build -DCMAKE_PREFIX_PATH=<fattn prefix> && cmake --build build
//     c++ -std=c++17 attention.cpp $(pkg-config --cflags --libs fattn) -o attention
#include "fattn.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

constexpr int64_t kBatch = 1, kHeads = 2, kSeq = 48, kDim = 32;
constexpr int32_t kWindowLeft = 16;  // each query sees itself and the 16 keys before it

struct Problem {
    std::vector<float> q, k, v, dout;
};

// Element (b, h, n, d) of a [B,N,H,D] buffer.
size_t at(int64_t b, int64_t h, int64_t n, int64_t d) {
    return static_cast<size_t>(((b * kSeq + n) * kHeads + h) * kDim + d);
}

fattn_tensor_t view(std::vector<float>& data) {
    return fattn::tensor_bnhd(data.data(), FATTN_DTYPE_F32, kBatch, kHeads, kSeq, kDim);
}

// out = attention(q, k, v) in double, straight from the definition.
std::vector<double> reference_forward(const Problem& p) {
    std::vector<double> out(p.q.size(), 0.0), weights(kSeq);
    const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));
    for (int64_t b = 0; b < kBatch; ++b)
        for (int64_t h = 0; h < kHeads; ++h)
            for (int64_t i = 0; i < kSeq; ++i) {
                const int64_t first = std::max<int64_t>(0, i - kWindowLeft);
                double total = 0.0;
                for (int64_t j = first; j <= i; ++j) {
                    double score = 0.0;
                    for (int64_t d = 0; d < kDim; ++d) score += double(p.q[at(b, h, i, d)]) * p.k[at(b, h, j, d)];
                    total += weights[j] = std::exp(scale * score);
                }
                for (int64_t j = first; j <= i; ++j)
                    for (int64_t d = 0; d < kDim; ++d) out[at(b, h, i, d)] += weights[j] / total * p.v[at(b, h, j, d)];
            }
    return out;
}

}  // namespace

int main() {
    std::mt19937 generator(7);
    std::normal_distribution<float> normal;
    const size_t size = static_cast<size_t>(kBatch * kSeq * kHeads * kDim);
    Problem p;
    for (auto* x : {&p.q, &p.k, &p.v, &p.dout}) {
        x->resize(size);
        std::generate(x->begin(), x->end(), [&] { return normal(generator); });
    }
    std::vector<float> out(size), dq(size), dk(size), dv(size), lse(static_cast<size_t>(kBatch * kHeads * kSeq));
    const fattn_tensor_t lse_view = fattn::tensor_bhnd(lse.data(), FATTN_DTYPE_F32, kBatch, kHeads, kSeq, 1);

    fattn::Handle handle(FATTN_BACKEND_CPU);
    const auto attention = fattn::Attention().causal().window(kWindowLeft, 0);
    handle.forward(attention, view(p.q), view(p.k), view(p.v), view(out), &lse_view);
    handle.backward(attention, view(p.q), view(p.k), view(p.v), view(out), view(p.dout), lse_view, view(dq),
                    view(dk), view(dv));

    const std::vector<double> expected = reference_forward(p);
    double forward_error = 0.0;
    for (size_t i = 0; i < size; ++i) forward_error = std::max(forward_error, std::abs(out[i] - expected[i]));

    // d loss / d x[i] ~ (loss(x[i] + h) - loss(x[i] - h)) / 2h, on a few elements of each input.
    auto loss = [&](Problem& perturbed) {
        std::vector<float> o(size);
        handle.forward(attention, view(perturbed.q), view(perturbed.k), view(perturbed.v), view(o));
        double sum = 0.0;
        for (size_t i = 0; i < size; ++i) sum += double(o[i]) * p.dout[i];
        return sum;
    };
    const float step = 1e-2f;
    double gradient_error = 0.0;
    const struct { std::vector<float> Problem::*input; const std::vector<float>& grad; } inputs[] = {
        {&Problem::q, dq}, {&Problem::k, dk}, {&Problem::v, dv}};
    for (const auto& input : inputs)
        for (size_t i = 0; i < size; i += size / 7) {
            Problem perturbed = p;
            float& x = (perturbed.*input.input)[i];
            const float original = x;
            x = original + step;
            const double up = loss(perturbed);
            x = original - step;
            const double down = loss(perturbed);
            gradient_error = std::max(gradient_error, std::abs((up - down) / (2 * step) - input.grad[i]));
        }

    try {  // a mismatched head_dim is reported, naming the argument
        fattn_tensor_t short_k = view(p.k);
        short_k.shape[3] = kDim / 2;
        handle.forward(attention, view(p.q), short_k, view(p.v), view(out));
    } catch (const fattn::InvalidArgument& error) {
        std::printf("caught fattn::InvalidArgument: %s\n", error.what());
    }

    std::printf("fattn %s, window attention B=%lld H=%lld N=%lld D=%lld in [B,N,H,D] layout on the CPU\n",
                fattn_version_string(), static_cast<long long>(kBatch), static_cast<long long>(kHeads),
                static_cast<long long>(kSeq), static_cast<long long>(kDim));
    std::printf("  forward  max |fattn - double reference|      = %.2e\n", forward_error);
    std::printf("  backward max |fattn - finite differences|    = %.2e\n", gradient_error);
    // float32 forward: a few ulps; finite differences in float32: O(step^2) plus rounding / step.
    const bool ok = forward_error < 1e-5 && gradient_error < 5e-3;
    std::puts(ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
