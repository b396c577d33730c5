// Test tensors: host storage in any fattn dtype and layout, described by the same fattn_tensor_t
// ([B,H,N,D] shape + element strides) that callers pass to the ABI.
//
// Why this exists: every numeric test needs fresh random inputs stored exactly as a user would
// store them (f32/f16/bf16, [B,H,N,D] or [B,N,H,D] or padded), outputs filled with a NaN poison
// pattern before each call (so an element the library forgot to write is caught), and bytewise
// snapshots (so "nothing written on failure" and "padding left alone" can be checked).
// The fp16/bf16 conversions are written here from the IEEE formats so the tests share no code
// with the library.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fattn.h"

namespace fattn_test {

// ---- Storage formats ----------------------------------------------------------------------

inline uint32_t float_bits(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}
inline float bits_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// bfloat16 is the top half of a float32; round to nearest even, NaN kept quiet.
inline uint16_t float_to_bf16(float value) {
    const uint32_t bits = float_bits(value);
    if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
    const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>((bits + rounding) >> 16);
}
inline float bf16_to_float(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << 16); }

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
inline float f16_to_float(uint16_t bits) {
    const uint32_t sign = (bits & 0x8000u) ? 1u : 0u;
    const int exponent = (bits >> 10) & 0x1F;
    const uint32_t mantissa = bits & 0x3FFu;
    float magnitude;
    if (exponent == 0)
        magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
    else if (exponent == 31)
        magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    else
        magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), exponent - 25);
    return sign ? -magnitude : magnitude;
}

// Round to nearest even through the float's bits: exact for every float, including subnormals.
inline uint16_t float_to_f16(float value) {
    const uint32_t bits = float_bits(value);
    const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7FFFFFFFu;
    if (magnitude > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);  // NaN
    if (magnitude >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds past 65504: inf
    if (magnitude < 0x38800000u) {
        // Result is subnormal (or zero): value / 2^-24 rounded to an integer mantissa.
        const float scaled = std::ldexp(bits_float(magnitude), 24);
        return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
    }
    const uint32_t rebased = magnitude - (112u << 23);  // exponent bias 127 -> 15
    const uint32_t rounding = 0xFFFu + ((rebased >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rebased + rounding) >> 13));
}

inline int64_t dtype_bytes(fattn_dtype_t dtype) { return dtype == FATTN_DTYPE_F32 ? 4 : 2; }

inline const char* dtype_name(fattn_dtype_t dtype) {
    switch (dtype) {
        case FATTN_DTYPE_F32: return "f32";
        case FATTN_DTYPE_F16: return "f16";
        case FATTN_DTYPE_BF16: return "bf16";
    }
    return "?";
}

// Unit roundoff of the storage format (half an ulp at 1.0).
inline double storage_epsilon(fattn_dtype_t dtype) {
    switch (dtype) {
        case FATTN_DTYPE_F32: return std::ldexp(1.0, -24);
        case FATTN_DTYPE_F16: return std::ldexp(1.0, -11);
        case FATTN_DTYPE_BF16: return std::ldexp(1.0, -8);
    }
    return 0.0;
}

// The value `value` becomes once stored in `dtype`.
inline float round_to_storage(float value, fattn_dtype_t dtype) {
    switch (dtype) {
        case FATTN_DTYPE_F32: return value;
        case FATTN_DTYPE_F16: return f16_to_float(float_to_f16(value));
        case FATTN_DTYPE_BF16: return bf16_to_float(float_to_bf16(value));
    }
    return value;
}

// ---- Layouts ------------------------------------------------------------------------------

enum class Layout {
    BHND,    // [B,H,N,D] contiguous
    BNHD,    // [B,N,H,D] contiguous (FlashAttention's layout)
    Padded,  // [B,H,N,D] with gaps after every row, head and batch: checks the library honours
             // strides and writes nothing between elements
};

inline const char* layout_name(Layout layout) {
    switch (layout) {
        case Layout::BHND: return "BHND";
        case Layout::BNHD: return "BNHD";
        case Layout::Padded: return "padded";
    }
    return "?";
}

using Shape = std::array<int64_t, 4>;

inline std::array<int64_t, 4> layout_strides(const Shape& shape, Layout layout) {
    const int64_t heads = shape[1], rows = shape[2], dim = shape[3];
    switch (layout) {
        case Layout::BHND: return {heads * rows * dim, rows * dim, dim, 1};
        case Layout::BNHD: return {rows * heads * dim, dim, heads * dim, 1};
        case Layout::Padded: {
            const int64_t row = dim + 3, head = rows * row + 5, batch = heads * head + 7;
            return {batch, head, row, 1};
        }
    }
    return {0, 0, 0, 1};
}

// ---- Host tensors -------------------------------------------------------------------------

// The element at `element_offset` of host storage in `dtype`, widened to float.
inline float load_element(const void* base, fattn_dtype_t dtype, int64_t element_offset) {
    const auto* bytes = static_cast<const unsigned char*>(base);
    if (dtype == FATTN_DTYPE_F32) {
        float value;
        std::memcpy(&value, bytes + element_offset * 4, 4);
        return value;
    }
    uint16_t bits;
    std::memcpy(&bits, bytes + element_offset * 2, 2);
    return dtype == FATTN_DTYPE_F16 ? f16_to_float(bits) : bf16_to_float(bits);
}

// Storage bytes plus the ABI description of them. Elements are addressed by logical index.
class HostTensor {
public:
    HostTensor() = default;
    HostTensor(fattn_dtype_t dtype, const Shape& shape, Layout layout)
        : HostTensor(dtype, shape, layout_strides(shape, layout)) {}
    HostTensor(fattn_dtype_t dtype, const Shape& shape, const std::array<int64_t, 4>& strides)
        : dtype_(dtype), shape_(shape), strides_(strides) {
        int64_t last = 0;
        for (int i = 0; i < 4; ++i) last += strides_[i] * (shape_[i] - 1);
        // Whole 8-byte words, so the buffer is aligned for every dtype.
        storage_.resize(static_cast<size_t>(((last + 1) * dtype_bytes(dtype) + 7) / 8));
    }

    fattn_dtype_t dtype() const { return dtype_; }
    const Shape& shape() const { return shape_; }
    int64_t count() const { return shape_[0] * shape_[1] * shape_[2] * shape_[3]; }
    size_t byte_size() const { return storage_.size() * 8; }
    unsigned char* bytes() { return reinterpret_cast<unsigned char*>(storage_.data()); }
    const unsigned char* bytes() const { return reinterpret_cast<const unsigned char*>(storage_.data()); }

    // The ABI view of this tensor with its data at `data` (host storage, or a device mirror).
    fattn_tensor_t view(void* data) const {
        fattn_tensor_t tensor{};
        tensor.data = data;
        tensor.dtype = dtype_;
        tensor.reserved = 0;
        for (int i = 0; i < 4; ++i) {
            tensor.shape[i] = shape_[i];
            tensor.strides[i] = strides_[i];
        }
        return tensor;
    }
    // fattn_tensor_t::data is non-const for inputs too; the library never writes through them.
    fattn_tensor_t view() const { return view(const_cast<unsigned char*>(bytes())); }

    int64_t offset(int64_t b, int64_t h, int64_t n, int64_t d) const {
        return b * strides_[0] + h * strides_[1] + n * strides_[2] + d * strides_[3];
    }
    // Logical index i of the [B,H,N,D] row-major enumeration -> element offset.
    int64_t offset_of_index(int64_t index) const {
        const int64_t d = index % shape_[3];
        const int64_t n = (index / shape_[3]) % shape_[2];
        const int64_t h = (index / (shape_[3] * shape_[2])) % shape_[1];
        const int64_t b = index / (shape_[3] * shape_[2] * shape_[1]);
        return offset(b, h, n, d);
    }

    float load(int64_t element_offset) const { return load_element(bytes(), dtype_, element_offset); }
    void store(int64_t element_offset, float value) {
        switch (dtype_) {
            case FATTN_DTYPE_F32: std::memcpy(bytes() + element_offset * 4, &value, 4); return;
            case FATTN_DTYPE_F16: store_bits16(element_offset, float_to_f16(value)); return;
            case FATTN_DTYPE_BF16: store_bits16(element_offset, float_to_bf16(value)); return;
        }
    }
    float at(int64_t b, int64_t h, int64_t n, int64_t d) const { return load(offset(b, h, n, d)); }
    float at_index(int64_t index) const { return load(offset_of_index(index)); }

    // All logical elements, [B,H,N,D] row-major, widened to double.
    std::vector<double> values() const {
        std::vector<double> out(static_cast<size_t>(count()));
        for (int64_t i = 0; i < count(); ++i) out[static_cast<size_t>(i)] = at_index(i);
        return out;
    }

    // Fills every logical element with a fresh draw, and every gap byte with NaN, so a library
    // that reads outside the logical elements produces NaN and is caught.
    void fill_random(std::mt19937_64& rng, double stddev = 1.0) {
        poison();
        std::normal_distribution<float> normal(0.0f, static_cast<float>(stddev));
        for (int64_t i = 0; i < count(); ++i) {
            float value = normal(rng);
            // Never an exact zero: a zero hides sign and scaling bugs.
            if (round_to_storage(value, dtype_) == 0.0f) value = 0.5f;
            store(offset_of_index(i), value);
        }
    }

    // Every byte gets the NaN pattern of the dtype: an element the library fails to write stays NaN.
    void poison() {
        const size_t elements = byte_size() / static_cast<size_t>(dtype_bytes(dtype_));
        for (size_t i = 0; i < elements; ++i) {
            if (dtype_ == FATTN_DTYPE_F32)
                std::memcpy(bytes() + i * 4, &kPoisonF32, 4);
            else
                std::memcpy(bytes() + i * 2, dtype_ == FATTN_DTYPE_F16 ? &kPoisonF16 : &kPoisonBF16, 2);
        }
    }

    std::vector<unsigned char> snapshot() const { return {bytes(), bytes() + byte_size()}; }
    bool same_bytes(const std::vector<unsigned char>& before) const {
        return before.size() == byte_size() && std::memcmp(before.data(), bytes(), byte_size()) == 0;
    }

    // True when every byte outside the logical elements still holds `before` (the poison).
    bool gaps_unchanged(const std::vector<unsigned char>& before) const {
        std::vector<unsigned char> is_element(byte_size(), 0);
        const auto width = static_cast<size_t>(dtype_bytes(dtype_));
        for (int64_t i = 0; i < count(); ++i)
            std::memset(is_element.data() + static_cast<size_t>(offset_of_index(i)) * width, 1, width);
        for (size_t i = 0; i < byte_size(); ++i)
            if (!is_element[i] && bytes()[i] != before[i]) return false;
        return true;
    }

    static constexpr uint32_t kPoisonF32 = 0x7FC0DEADu;  // quiet NaN with a recognizable payload
    static constexpr uint16_t kPoisonF16 = 0x7E5Au;
    static constexpr uint16_t kPoisonBF16 = 0x7FDAu;

private:
    void store_bits16(int64_t element_offset, uint16_t bits) { std::memcpy(bytes() + element_offset * 2, &bits, 2); }

    fattn_dtype_t dtype_ = FATTN_DTYPE_F32;
    Shape shape_{1, 1, 1, 1};
    std::array<int64_t, 4> strides_{1, 1, 1, 1};
    std::vector<uint64_t> storage_;
};

// The lse tensor of a query tensor of shape [B,Hq,Nq,D]: f32 [B,Hq,Nq,1], contiguous.
inline HostTensor make_lse(const Shape& q_shape) {
    return HostTensor(FATTN_DTYPE_F32, Shape{q_shape[0], q_shape[1], q_shape[2], 1}, Layout::BHND);
}

}  // namespace fattn_test
