// Vec16: sixteen fp32 lanes, the one vector type the CPU kernels are written in.
//
// With AVX-512 (the library is built with -march=native by default) every operation is one
// instruction on a zmm register. Without it, the same names work on a plain array of sixteen
// floats that the compiler vectorizes as far as the target allows: one algorithm, two spellings
// of its primitives, chosen at compile time. Only primitives live here; the kernels that use them
// are in microkernel.h and tile.h.
#pragma once

#include <cmath>
#include <cstdint>

// GCC 12 reports its own _mm512_undefined_ps() inside some intrinsics as maybe-uninitialized;
// Eigen includes the intrinsics too, so both are included under the same silence.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#pragma GCC diagnostic pop

namespace fattn::cpu {

constexpr int64_t kLanes = 16;

// exp2 on [-0.5, 0.5]: a degree-6 minimax polynomial for 2^f, relative error 1.6e-8 (a quarter
// of an fp32 ulp) before rounding; the integer part of the argument is applied exactly by
// scaling the exponent.
constexpr float kExp2Coeff[7] = {1.0f,
                                 0.6931471824645996f,
                                 0.24022646248340607f,
                                 0.05550328642129898f,
                                 0.009618489071726799f,
                                 0.0013399930903688073f,
                                 0.00015345764404628426f};
// Below this, 2^x rounds to zero in fp32 even after the polynomial (<= 1.42) is applied; clamping
// here keeps -inf (masked scores) out of the polynomial, where it would turn into NaN.
constexpr float kExp2Floor = -152.0f;

#if defined(__AVX512F__)

struct Vec16 {
    __m512 v;
};

inline Vec16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
// Sixteen 16-bit storage elements widened to fp32 (exact).
inline Vec16 load(const Eigen::half* p) {
    return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
inline Vec16 load(const Eigen::bfloat16* p) {
    const __m512i widened = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(widened, 16))};
}
inline void store(float* p, Vec16 a) { _mm512_storeu_ps(p, a.v); }
inline Vec16 broadcast(float s) { return {_mm512_set1_ps(s)}; }
inline Vec16 zero() { return {_mm512_setzero_ps()}; }
inline Vec16 operator+(Vec16 a, Vec16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec16 operator-(Vec16 a, Vec16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec16 operator*(Vec16 a, Vec16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
// a * b + c, one rounding.
inline Vec16 fma(Vec16 a, Vec16 b, Vec16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec16 max(Vec16 a, Vec16 b) { return {_mm512_max_ps(a.v, b.v)}; }
inline Vec16 zero_where_minus_inf(Vec16 a) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ), a.v,
                                 _mm512_setzero_ps())};
}

inline Vec16 exp2(Vec16 x) {
    // max_ps returns its second operand when either is NaN: NaN scores stay NaN.
    const __m512 clamped = _mm512_max_ps(_mm512_set1_ps(kExp2Floor), x.v);
    const __m512 whole = _mm512_roundscale_ps(clamped, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 frac = _mm512_sub_ps(clamped, whole);
    __m512 poly = _mm512_set1_ps(kExp2Coeff[6]);
    for (int i = 5; i >= 0; --i) poly = _mm512_fmadd_ps(poly, frac, _mm512_set1_ps(kExp2Coeff[i]));
    return {_mm512_scalef_ps(poly, whole)};
}

#else  // portable spelling

struct Vec16 {
    float lane[kLanes];
};

template <typename Op>
inline Vec16 lanewise(Op op) {
    Vec16 r;
    for (int64_t i = 0; i < kLanes; ++i) r.lane[i] = op(i);
    return r;
}

template <typename Element>
inline Vec16 load(const Element* p) {
    return lanewise([&](int64_t i) { return static_cast<float>(p[i]); });
}
inline void store(float* p, Vec16 a) {
    for (int64_t i = 0; i < kLanes; ++i) p[i] = a.lane[i];
}
inline Vec16 broadcast(float s) { return lanewise([&](int64_t) { return s; }); }
inline Vec16 zero() { return broadcast(0.0f); }
inline Vec16 operator+(Vec16 a, Vec16 b) { return lanewise([&](int64_t i) { return a.lane[i] + b.lane[i]; }); }
inline Vec16 operator-(Vec16 a, Vec16 b) { return lanewise([&](int64_t i) { return a.lane[i] - b.lane[i]; }); }
inline Vec16 operator*(Vec16 a, Vec16 b) { return lanewise([&](int64_t i) { return a.lane[i] * b.lane[i]; }); }
inline Vec16 fma(Vec16 a, Vec16 b, Vec16 c) {
    return lanewise([&](int64_t i) { return std::fma(a.lane[i], b.lane[i], c.lane[i]); });
}
inline Vec16 max(Vec16 a, Vec16 b) {
    return lanewise([&](int64_t i) { return a.lane[i] > b.lane[i] || std::isnan(b.lane[i]) ? a.lane[i] : b.lane[i]; });
}
inline Vec16 zero_where_minus_inf(Vec16 a) {
    return lanewise([&](int64_t i) { return a.lane[i] == -INFINITY ? 0.0f : a.lane[i]; });
}

inline Vec16 exp2(Vec16 x) {
    return lanewise([&](int64_t i) {
        const float clamped = std::isnan(x.lane[i]) ? x.lane[i] : std::fmax(x.lane[i], kExp2Floor);
        const float whole = std::nearbyint(clamped);
        const float frac = clamped - whole;
        float poly = kExp2Coeff[6];
        for (int c = 5; c >= 0; --c) poly = std::fma(poly, frac, kExp2Coeff[c]);
        return std::isnan(whole) ? whole : std::ldexp(poly, static_cast<int>(whole));
    });
}

#endif

}  // namespace fattn::cpu
