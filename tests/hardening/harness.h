// What the hardening programs (fuzzer, fault injection, edge numerics, soak) share: one attention
// call as real host buffers plus the checks every call gets.
//
// An Operand pairs storage (a fattn_test::HostTensor, sized to exactly what its layout reaches) with
// the descriptor handed to the library. They start equal; the fuzzer corrupts the descriptor only,
// so the reference always reads the true layout. Outputs are poisoned before each call: after a
// failure every output byte must still be the poison (nothing written), after a success every
// element must match the float64 reference of ../reference.h and every gap byte between elements
// must still be the poison (nothing written outside the tensor).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../harness.h"  // fattn_test::Placement: device copies of host tensors for the CUDA backend
#include "../reference.h"
#include "../tensor.h"
#include "fattn.h"

namespace fattn_hardening {

using fattn_test::Dense;
using fattn_test::HostTensor;
using fattn_test::max_terms;
using fattn_test::Shape;
using Strides = std::array<int64_t, 4>;

struct Dims {
    int64_t batch = 1, heads_q = 1, heads_kv = 1, seqlen_q = 1, seqlen_k = 1, head_dim = 1;

    Shape q_shape() const { return {batch, heads_q, seqlen_q, head_dim}; }
    Shape kv_shape() const { return {batch, heads_kv, seqlen_k, head_dim}; }
    Shape lse_shape() const { return {batch, heads_q, seqlen_q, 1}; }
    // Multiply-adds of one forward: the reference's cost, used to keep generated problems small.
    int64_t work() const { return batch * heads_q * seqlen_q * seqlen_k * head_dim; }
};

// Storage plus the descriptor the library is given for it.
struct Operand {
    HostTensor storage;
    fattn_tensor_t arg{};

    Operand() = default;
    Operand(fattn_dtype_t dtype, const Shape& shape, const Strides& strides)
        : storage(dtype, shape, strides), arg(storage.view()) {}
    // Moving keeps the storage's heap block, so `arg.data` stays valid; a copy would not.
    Operand(Operand&&) = default;
    Operand& operator=(Operand&&) = default;
    Operand(const Operand&) = delete;
    Operand& operator=(const Operand&) = delete;
    // The true layout, whatever was done to `arg`.
    fattn_tensor_t truth() const { return storage.view(const_cast<unsigned char*>(storage.bytes())); }
};

// Contiguous [B,H,N,D] strides of a shape.
inline Strides packed_strides(const Shape& shape) {
    return fattn_test::layout_strides(shape, fattn_test::Layout::BHND);
}

inline const char* status_name(fattn_status_t status) {
    switch (status) {
        case FATTN_SUCCESS: return "FATTN_SUCCESS";
        case FATTN_ERROR_INVALID_ARGUMENT: return "FATTN_ERROR_INVALID_ARGUMENT";
        case FATTN_ERROR_UNSUPPORTED: return "FATTN_ERROR_UNSUPPORTED";
        case FATTN_ERROR_OUT_OF_MEMORY: return "FATTN_ERROR_OUT_OF_MEMORY";
        case FATTN_ERROR_NO_DEVICE: return "FATTN_ERROR_NO_DEVICE";
        case FATTN_ERROR_BACKEND: return "FATTN_ERROR_BACKEND";
        case FATTN_ERROR_INTERNAL: return "FATTN_ERROR_INTERNAL";
    }
    return "an undocumented status";
}

// How a non-finite expected value must be matched: by the same value (NaN by NaN, -inf by -inf),
// or by any non-finite value (where NaN versus Inf depends on the order of operations).
enum class NonFinite { SameValue, AnyKind };

// Worst elementwise error of `got` against `expected` rounded to got's dtype; non-finite values
// must be matched as `rule` says, finite values count |got - expected|.
struct Deviation {
    double max_error = 0.0;       // over elements where both are finite
    double max_expected = 0.0;    // max |expected| over finite elements
    int64_t nonfinite_mismatches = 0;
    int64_t first_mismatch = -1;  // logical index of the first non-finite mismatch

    bool within(double tolerance) const { return nonfinite_mismatches == 0 && max_error <= tolerance; }
};

inline Deviation deviation(const HostTensor& got, const Dense<double>& expected,
                           NonFinite rule = NonFinite::SameValue) {
    Deviation result;
    for (int64_t i = 0; i < got.count(); ++i) {
        // Expected as stored: a value beyond the dtype's range is correctly an infinity.
        const double g = got.at_index(i),
                     e = fattn_test::round_to_storage(static_cast<float>(expected.data[static_cast<size_t>(i)]), got.dtype());
        const bool same_nonfinite = rule == NonFinite::AnyKind ? !std::isfinite(g) && !std::isfinite(e)
                                                               : (std::isnan(g) && std::isnan(e)) || (std::isinf(e) && g == e);
        if (!std::isfinite(g) || !std::isfinite(e)) {
            if (!same_nonfinite && result.nonfinite_mismatches++ == 0) result.first_mismatch = i;
            continue;
        }
        result.max_error = std::max(result.max_error, std::fabs(g - e));
        result.max_expected = std::max(result.max_expected, std::fabs(e));
    }
    return result;
}

// The loose, dtype-based tolerance the fuzzer and soak use: a multiple of the storage format's
// rounding, relative to the tensor's largest value, plus the core suite's floor for results that
// cancel (tests/harness.h): four fp32 roundings of the largest sum of absolute terms
// (reference.h). The floor matters where the terms dwarf the result, e.g. a backward handed an lse
// that does not normalize its rows (aliased lse strides give one row another's): its P reaches
// e^10 and dq's terms 1e7 for values of 1e2. Indexing, masking and stride bugs produce errors of
// the order of the values themselves and are far above it.
inline double loose_tolerance(fattn_dtype_t dtype, double max_expected, double largest_terms = 0.0) {
    const double units = dtype == FATTN_DTYPE_F32 ? 4096.0 : 64.0;
    return units * fattn_test::storage_epsilon(dtype) * std::max(1.0, max_expected) +
           4.0 * fattn_test::storage_epsilon(FATTN_DTYPE_F32) * largest_terms;
}

// One attention problem with every operand of a forward and a backward.
struct Problem {
    Dims dims;
    fattn_dtype_t dtype = FATTN_DTYPE_F32;
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    Operand q, k, v, o, lse, dout, dq, dk, dv;
    bool with_lse = true;                                  // forward: pass lse, or NULL
    const fattn_attention_desc_t* desc_arg = nullptr;      // what the library is given; null: &desc

    Problem() = default;
    // Every operand in `layout` (lse contiguous).
    Problem(const Dims& d, fattn_dtype_t storage, const fattn_attention_desc_t& attention,
            fattn_test::Layout layout = fattn_test::Layout::BHND)
        : dims(d), dtype(storage), desc(attention) {
        for (Operand* like_q : {&q, &o, &dout, &dq})
            *like_q = Operand(dtype, dims.q_shape(), fattn_test::layout_strides(dims.q_shape(), layout));
        for (Operand* like_k : {&k, &v, &dk, &dv})
            *like_k = Operand(dtype, dims.kv_shape(), fattn_test::layout_strides(dims.kv_shape(), layout));
        lse = Operand(FATTN_DTYPE_F32, dims.lse_shape(), packed_strides(dims.lse_shape()));
    }

    std::vector<Operand*> forward_outputs() { return {&o, &lse}; }
    std::vector<Operand*> backward_outputs() { return {&dq, &dk, &dv}; }

    // Fresh random q, k, v, dout (normal, `stddev`); every output poisoned.
    void randomize(std::mt19937_64& rng, double stddev = 1.0) {
        for (Operand* input : {&q, &k, &v, &dout}) input->storage.fill_random(rng, stddev);
        for (Operand* output : {&o, &lse, &dq, &dk, &dv}) output->storage.poison();
    }

    fattn_test::ForwardResult<double> reference_forward() const {
        return fattn_test::attention_forward(fattn_test::gather<double>(q.truth()),
                                             fattn_test::gather<double>(k.truth()),
                                             fattn_test::gather<double>(v.truth()), desc, dtype);
    }
    // Gradients at the o and lse currently stored (see store_forward), so they are the ones the
    // library is given.
    fattn_test::Gradients<double> reference_backward() const {
        fattn_test::ForwardResult<double> given;
        given.o = fattn_test::gather<double>(o.truth());
        given.lse = fattn_test::gather<double>(lse.truth());
        return fattn_test::attention_backward(
            fattn_test::gather<double>(q.truth()), fattn_test::gather<double>(k.truth()),
            fattn_test::gather<double>(v.truth()), fattn_test::gather<double>(dout.truth()), given, desc, dtype);
    }
    // Writes a forward's results into o and lse: the backward's inputs.
    void store_forward(const fattn_test::ForwardResult<double>& forward) {
        for (int64_t i = 0; i < o.storage.count(); ++i)
            o.storage.store(o.storage.offset_of_index(i), static_cast<float>(forward.o.data[static_cast<size_t>(i)]));
        for (int64_t i = 0; i < lse.storage.count(); ++i)
            lse.storage.store(lse.storage.offset_of_index(i), static_cast<float>(forward.lse.data[static_cast<size_t>(i)]));
    }

    fattn_status_t forward(fattn_handle_t handle) const {
        return fattn_forward(handle, given_desc(), &q.arg, &k.arg, &v.arg, &o.arg, with_lse ? &lse.arg : nullptr);
    }
    fattn_status_t backward(fattn_handle_t handle) const {
        return fattn_backward(handle, given_desc(), &q.arg, &k.arg, &v.arg, &o.arg, &dout.arg, &lse.arg, &dq.arg,
                              &dk.arg, &dv.arg);
    }

    const fattn_attention_desc_t* given_desc() const { return desc_arg != nullptr ? desc_arg : &desc; }

    std::string describe() const {
        std::ostringstream out;
        out << fattn_test::dtype_name(dtype) << " B=" << dims.batch << " Hq=" << dims.heads_q
            << " Hkv=" << dims.heads_kv << " Nq=" << dims.seqlen_q << " Nk=" << dims.seqlen_k
            << " D=" << dims.head_dim << " causal=" << desc.causal << " scale=" << desc.softmax_scale
            << " window=(" << desc.window_left << "," << desc.window_right << ")";
        return out.str();
    }
};

using Snapshots = std::vector<std::vector<unsigned char>>;

inline Snapshots snapshot(const std::vector<Operand*>& outputs) {
    Snapshots result;
    for (const Operand* output : outputs) result.push_back(output->storage.snapshot());
    return result;
}

// Name of the first output whose bytes differ from its snapshot, or "" when all are intact.
inline std::string first_changed(const std::vector<Operand*>& outputs, const Snapshots& before,
                                 const std::vector<const char*>& names) {
    for (size_t i = 0; i < outputs.size(); ++i)
        if (!outputs[i]->storage.same_bytes(before[i])) return names[i];
    return "";
}

// Compares one output with its expected values, within loose_tolerance for `dtype` (the
// expected values' largest magnitude and sum of absolute terms, `terms`), and its gap bytes with
// the poison snapshot. Returns "" when it passes, else what went wrong.
inline std::string check_output(const char* name, const Operand& got, const Dense<double>& expected,
                                const Dense<double>& terms, fattn_dtype_t dtype,
                                const std::vector<unsigned char>& poisoned) {
    const Deviation dev = deviation(got.storage, expected);
    const double tolerance = loose_tolerance(dtype, dev.max_expected, max_terms(terms));
    std::ostringstream why;
    if (!got.storage.gaps_unchanged(poisoned)) why << name << ": bytes between elements were written; ";
    if (dev.nonfinite_mismatches > 0)
        why << name << ": " << dev.nonfinite_mismatches << " non-finite mismatches, first at index "
            << dev.first_mismatch << " (got " << got.storage.at_index(dev.first_mismatch) << ", expected "
            << expected.data[static_cast<size_t>(dev.first_mismatch)] << "); ";
    if (dev.max_error > tolerance) why << name << ": max error " << dev.max_error << " > tolerance " << tolerance << "; ";
    return why.str();
}

enum class Op { Forward, Backward };

// Runs `op` of `problem` on `handle`, with every operand placed where `backend` reads it (the
// host storage itself, or a device copy), and the outputs copied back to the host storage.
inline fattn_status_t run(fattn_handle_t handle, fattn_backend_t backend, Problem& problem, Op op) {
    fattn_test::Placement placement(backend);
    for (Operand* operand : {&problem.q, &problem.k, &problem.v, &problem.o, &problem.lse, &problem.dout,
                             &problem.dq, &problem.dk, &problem.dv})
        operand->arg = placement.place(operand->storage);
    const fattn_status_t status = op == Op::Forward ? problem.forward(handle) : problem.backward(handle);
    placement.fetch();
    return status;
}

// "" when the outputs of `op` match the float64 reference within the loose tolerance, with no
// byte between elements written (`poisoned`: the outputs' bytes before the call), else what differs.
inline std::string check_against_reference(const Problem& problem, Op op, const Snapshots& poisoned) {
    std::string why;
    auto check = [&](const char* name, const Operand& got, const Dense<double>& expected, const Dense<double>& terms,
                     size_t index) {
        why += check_output(name, got, expected, terms, got.storage.dtype(), poisoned[index]);
    };
    if (op == Op::Forward) {
        const auto expected = problem.reference_forward();
        check("o", problem.o, expected.o, expected.o_terms, 0);
        check("lse", problem.lse, expected.lse, expected.lse_terms, 1);
    } else {
        const auto expected = problem.reference_backward();
        check("dq", problem.dq, expected.dq, expected.dq_terms, 0);
        check("dk", problem.dk, expected.dk, expected.dk_terms, 1);
        check("dv", problem.dv, expected.dv, expected.dv_terms, 2);
    }
    return why;
}

inline std::vector<Operand*> outputs_of(Problem& problem, Op op) {
    return op == Op::Forward ? problem.forward_outputs() : problem.backward_outputs();
}
inline std::vector<const char*> output_names(Op op) {
    return op == Op::Forward ? std::vector<const char*>{"o", "lse"} : std::vector<const char*>{"dq", "dk", "dv"};
}

}  // namespace fattn_hardening
