// The numeric test harness: one attention problem (shapes, dtype, layout, mask), run through the
// public ABI on a backend, checked against the float64 reference under the accuracy rule.
//
//   Accuracy rule: for every output tensor, max |fattn - reference| must stay within
//   2 x max |naive - reference| plus a floor for results where the naive one happens to be exact:
//   one storage ulp at the tensor's largest magnitude plus four fp32 roundings of the largest sum
//   of absolute terms (reference.h: a result that cancels to ~0, like dq of a row that sees one
//   key, is exact in the naive order but not in any other). "naive" is the same math with
//   materialized fp32 scores from the storage-rounded inputs, and P, dS and the outputs rounded to
//   the storage dtype (reference.h, Real = float).
//   Structural zeros are exact: a row that sees no key has o = 0, lse = -inf and dq = 0, and a key
//   that no query sees has dk = dv = 0.
//
// Every run uses fresh random inputs (the seed is printed on failure and can be pinned with
// FATTN_TEST_SEED), poisons every output byte with NaN first, and checks that the bytes between
// elements of strided outputs are never written. Checks return text instead of asserting, so
// worker threads can use them; test cases assert on the text.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "device_memory.h"
#include "fattn.h"
#include "reference.h"
#include "tensor.h"

namespace fattn_test {

// ---- Run-wide settings --------------------------------------------------------------------

// One seed per test process: FATTN_TEST_SEED when set, else fresh from the random device.
inline uint64_t suite_seed() {
    static const uint64_t seed = [] {
        if (const char* pinned = std::getenv("FATTN_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(pinned, nullptr, 10));
        std::random_device device;
        return (static_cast<uint64_t>(device()) << 32) ^ device();
    }();
    return seed;
}

// A generator for one labelled use of the suite seed, so each case draws its own stream.
inline std::mt19937_64 random_stream(const std::string& label) {
    return std::mt19937_64(suite_seed() ^ std::hash<std::string>{}(label));
}

// FATTN_TEST_QUICK=1 (the sanitizer run) shrinks the longest sequences so instrumented builds
// finish in minutes; every code path is still reached.
inline bool quick_mode() {
    const char* quick = std::getenv("FATTN_TEST_QUICK");
    return quick != nullptr && quick[0] != '\0' && quick[0] != '0';
}
inline int64_t long_length(int64_t full) { return quick_mode() ? std::min<int64_t>(full, 300) : full; }

inline const char* backend_name(fattn_backend_t backend) {
    return backend == FATTN_BACKEND_CUDA ? "cuda" : backend == FATTN_BACKEND_CPU ? "cpu" : "auto";
}

// ---- Problems -----------------------------------------------------------------------------

struct Problem {
    fattn_dtype_t dtype = FATTN_DTYPE_F32;
    Layout layout = Layout::BHND;
    int64_t batch = 1, heads_q = 1, heads_kv = 1, seqlen_q = 1, seqlen_k = 1, head_dim = 1;
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;

    Problem() = default;
    Problem(fattn_dtype_t d, int64_t nq, int64_t nk, int64_t dim) : dtype(d), seqlen_q(nq), seqlen_k(nk), head_dim(dim) {}

    Problem& with_layout(Layout l) { layout = l; return *this; }
    Problem& with_heads(int64_t b, int64_t hq, int64_t hkv) { batch = b; heads_q = hq; heads_kv = hkv; return *this; }
    Problem& causal() { desc.causal = 1; return *this; }
    Problem& window(int32_t left, int32_t right) { desc.window_left = left; desc.window_right = right; return *this; }
    Problem& scale(float s) { desc.softmax_scale = s; return *this; }
    Problem& deterministic() { desc.deterministic = 1; return *this; }

    Shape q_shape() const { return {batch, heads_q, seqlen_q, head_dim}; }
    Shape kv_shape() const { return {batch, heads_kv, seqlen_k, head_dim}; }

    std::string describe() const {
        std::ostringstream text;
        text << dtype_name(dtype) << ' ' << layout_name(layout) << " B=" << batch << " Hq=" << heads_q
             << " Hkv=" << heads_kv << " Nq=" << seqlen_q << " Nk=" << seqlen_k << " D=" << head_dim
             << " causal=" << desc.causal << " window=(" << desc.window_left << ',' << desc.window_right
             << ") scale=" << desc.softmax_scale << " deterministic=" << desc.deterministic;
        return text.str();
    }
};

// What the ABI promises for this problem on this backend (ABI "Tensors"): the CPU takes every
// dtype and head_dim 1..256; the CUDA backend takes f16/bf16 with head_dim a multiple of 8 up to
// 256 and answers f32 either correctly or with FATTN_ERROR_UNSUPPORTED.
enum class Expect { Correct, Unsupported, CorrectOrUnsupported };

inline Expect expectation(fattn_backend_t backend, const Problem& problem) {
    if (problem.head_dim > 256) return Expect::Unsupported;
    if (backend != FATTN_BACKEND_CUDA) return Expect::Correct;
    if (problem.head_dim % 8 != 0) return Expect::Unsupported;
    return problem.dtype == FATTN_DTYPE_F32 ? Expect::CorrectOrUnsupported : Expect::Correct;
}

// ---- Tensors of one problem, and where they live ------------------------------------------

struct ProblemTensors {
    HostTensor q, k, v, dout;        // inputs: fresh random values
    HostTensor o, lse, dq, dk, dv;   // outputs: poisoned

    ProblemTensors(const Problem& p, std::mt19937_64& rng)
        : q(p.dtype, p.q_shape(), p.layout), k(p.dtype, p.kv_shape(), p.layout), v(p.dtype, p.kv_shape(), p.layout),
          dout(p.dtype, p.q_shape(), p.layout), o(p.dtype, p.q_shape(), p.layout), lse(make_lse(p.q_shape())),
          dq(p.dtype, p.q_shape(), p.layout), dk(p.dtype, p.kv_shape(), p.layout), dv(p.dtype, p.kv_shape(), p.layout) {
        for (HostTensor* input : {&q, &k, &v, &dout}) input->fill_random(rng);
        for (HostTensor* output : {&o, &lse, &dq, &dk, &dv}) output->poison();
    }
};

// Gives a backend its view of host tensors: the host storage itself for the CPU, a device copy for
// CUDA (copied back by fetch() after the stream has finished).
class Placement {
public:
    explicit Placement(fattn_backend_t backend) : backend_(backend) {}

    fattn_tensor_t place(HostTensor& tensor) {
        if (backend_ != FATTN_BACKEND_CUDA) return tensor.view();
        mirrors_.emplace_back(tensor);
        return tensor.view(mirrors_.back().device_data());
    }
    // Copies every placed tensor back to its host storage (CUDA); a no-op on the CPU.
    void fetch() {
        for (DeviceMirror& mirror : mirrors_) mirror.copy_to_host();
    }

private:
    fattn_backend_t backend_;
    std::deque<DeviceMirror> mirrors_;  // a deque never moves its elements
};

// ---- Checks -------------------------------------------------------------------------------

// Which logical elements of an output are zero by the mask alone (see the header comment).
enum class ZeroWhere { EmptyQueryRows, UnseenKeys };

inline std::vector<bool> structural_zeros(const Shape& shape, const MaskRule& mask, ZeroWhere where) {
    std::vector<bool> rows(static_cast<size_t>(shape[2]));
    for (int64_t n = 0; n < shape[2]; ++n) {
        bool empty = true;
        for (int64_t other = 0; other < (where == ZeroWhere::EmptyQueryRows ? mask.seqlen_k : mask.seqlen_q) && empty; ++other)
            empty = where == ZeroWhere::EmptyQueryRows ? !mask.visible(n, other) : !mask.visible(other, n);
        rows[static_cast<size_t>(n)] = empty;
    }
    std::vector<bool> zero(static_cast<size_t>(shape[0] * shape[1] * shape[2] * shape[3]));
    for (size_t i = 0; i < zero.size(); ++i) zero[i] = rows[(i / static_cast<size_t>(shape[3])) % static_cast<size_t>(shape[2])];
    return zero;
}

// The largest finite sum of absolute terms of a reference output (reference.h; 0 for none).
inline double max_terms(const Dense<double>& terms) {
    double largest = 0.0;
    for (double term : terms.data)
        if (std::isfinite(term)) largest = std::max(largest, term);
    return largest;
}

// Applies the accuracy rule to one output; returns "" when it holds, else what went wrong.
// `terms` is the reference's sum of absolute terms of each element, `score_terms` its first-order
// response to the scores' relative rounding (reference.h). The rule: the error is within 2x the
// naive implementation's plus a floor of storage and fp32 rounding. The floor counts the scores'
// rounding once (one fp32 epsilon of score_terms): with a large softmax_scale that error dominates
// fattn's and the naive one alike, and the ratio of two such maxima passes 2 by chance (about 1%
// of inputs at scale 1.7 in f32).
inline std::string compare_output(const char* name, const HostTensor& actual, const Dense<double>& reference,
                                  const Dense<float>& naive, const std::vector<bool>& exact_zero,
                                  const Dense<double>& terms = Dense<double>(),
                                  const Dense<double>& score_terms = Dense<double>()) {
    const double infinity = std::numeric_limits<double>::infinity();
    double max_error = 0, naive_error = 0, max_magnitude = 0;
    int64_t worst = -1;
    std::ostringstream problems;
    int reported = 0;
    auto report = [&](int64_t index, const char* what) {
        if (reported++ < 3)
            problems << name << "[#" << index << "]=" << actual.at_index(index) << ' ' << what << " (reference "
                     << reference.data[static_cast<size_t>(index)] << "); ";
    };
    for (int64_t i = 0; i < actual.count(); ++i) {
        const auto at = static_cast<size_t>(i);
        const double value = actual.at_index(i), expected = reference.data[at];
        if (expected == -infinity) {  // lse of a row with no visible key
            if (value != -infinity) report(i, "should be -inf");
            continue;
        }
        if (exact_zero[at] && value != 0.0) {
            report(i, "should be exactly 0 (masked)");
            continue;
        }
        if (!std::isfinite(value)) {
            report(i, "is not finite (never written?)");
            continue;
        }
        const double error = std::abs(value - expected);
        if (error > max_error) { max_error = error; worst = i; }
        naive_error = std::max(naive_error, std::abs(static_cast<double>(naive.data[at]) - expected));
        max_magnitude = std::max(max_magnitude, std::abs(expected));
    }
    const double floor = 2.0 * storage_epsilon(actual.dtype()) * max_magnitude +
                         4.0 * storage_epsilon(FATTN_DTYPE_F32) * max_terms(terms) +
                         storage_epsilon(FATTN_DTYPE_F32) * max_terms(score_terms);
    const double tolerance = 2.0 * naive_error + floor;
    if (max_error > tolerance)
        problems << name << ": max error " << max_error << " at #" << worst << " (fattn " << actual.at_index(worst)
                 << ", reference " << reference.data[static_cast<size_t>(worst)] << ") exceeds 2 x naive error "
                 << naive_error << " + ulp floor " << floor << "; ";
    return problems.str();
}

inline std::string check_gaps(const char* name, const HostTensor& output, const HostTensor& poisoned_like) {
    return output.gaps_unchanged(poisoned_like.snapshot()) ? "" : std::string(name) + ": bytes between elements were written; ";
}

// A handle owned by one scope.
class Handle {
public:
    explicit Handle(fattn_backend_t backend) : status_(fattn_create(&handle_, backend)) {}
    ~Handle() { fattn_destroy(handle_); }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    fattn_status_t create_status() const { return status_; }
    fattn_handle_t get() const { return handle_; }
    fattn_backend_t backend() const {
        fattn_backend_t backend = FATTN_BACKEND_CPU;
        fattn_get_backend(handle_, &backend);
        return backend;
    }

private:
    fattn_handle_t handle_ = nullptr;
    fattn_status_t status_;
};

enum class Passes { Forward, ForwardWithoutLse, ForwardAndBackward, BackwardOnly };

// The outcome of one run: the first failing status (or success), and the tensors as the backend
// left them (outputs copied back to the host).
struct Run {
    fattn_status_t status = FATTN_SUCCESS;
    std::string message;  // "fattn_forward: <last error>" when status != FATTN_SUCCESS
    ProblemTensors tensors;
};

// Runs `passes` on a copy of `tensors` (so every run starts from the same poisoned outputs).
inline Run execute(const Handle& handle, const Problem& problem, const ProblemTensors& tensors, Passes passes) {
    Run run{FATTN_SUCCESS, "", tensors};
    ProblemTensors& host = run.tensors;
    Placement placement(handle.backend());
    const fattn_tensor_t q = placement.place(host.q), k = placement.place(host.k), v = placement.place(host.v),
                         dout = placement.place(host.dout), o = placement.place(host.o),
                         lse = placement.place(host.lse), dq = placement.place(host.dq), dk = placement.place(host.dk),
                         dv = placement.place(host.dv);
    if (passes != Passes::BackwardOnly) {
        run.status = fattn_forward(handle.get(), &problem.desc, &q, &k, &v, &o,
                                   passes == Passes::ForwardWithoutLse ? nullptr : &lse);
        if (run.status != FATTN_SUCCESS) run.message = std::string("fattn_forward: ") + fattn_last_error();
    }
    if (run.status == FATTN_SUCCESS && (passes == Passes::ForwardAndBackward || passes == Passes::BackwardOnly)) {
        run.status = fattn_backward(handle.get(), &problem.desc, &q, &k, &v, &o, &dout, &lse, &dq, &dk, &dv);
        if (run.status != FATTN_SUCCESS) run.message = std::string("fattn_backward: ") + fattn_last_error();
    }
    placement.fetch();
    return run;
}

inline std::string run_context(const Handle& handle, const Problem& problem) {
    return std::string(backend_name(handle.backend())) + ' ' + problem.describe() + " seed=" +
           std::to_string(suite_seed()) + ": ";
}

// Runs forward then backward of `problem` on fresh inputs and checks every output against the
// reference. Returns "" when all holds (or when the backend rightly refused the request as
// unsupported and wrote nothing), else the failures, with the problem and the seed.
inline std::string run_and_check(const Handle& handle, const Problem& problem, std::mt19937_64& rng) {
    const std::string context = run_context(handle, problem);
    const ProblemTensors inputs(problem, rng);
    const Run run = execute(handle, problem, inputs, Passes::ForwardAndBackward);
    const ProblemTensors& host = run.tensors;

    const Expect expect = expectation(handle.backend(), problem);
    if (run.status == FATTN_ERROR_UNSUPPORTED && expect != Expect::Correct) {
        const bool untouched = host.o.same_bytes(inputs.o.snapshot()) && host.lse.same_bytes(inputs.lse.snapshot()) &&
                               host.dq.same_bytes(inputs.dq.snapshot());
        return untouched ? "" : context + "refused as unsupported but wrote its outputs";
    }
    if (run.status != FATTN_SUCCESS || expect == Expect::Unsupported)
        return context + "status " + fattn_status_string(run.status) + " (" + run.message + ")" +
               (expect == Expect::Unsupported ? ", expected FATTN_ERROR_UNSUPPORTED" : "");

    const auto ref_q = gather<double>(host.q.view()), ref_k = gather<double>(host.k.view()),
               ref_v = gather<double>(host.v.view()), ref_dout = gather<double>(host.dout.view());
    const auto reference = attention_forward(ref_q, ref_k, ref_v, problem.desc, problem.dtype);
    // The backward's exact gradient given what fattn_backward was handed: its o (fattn's stored
    // forward output) enters D_i = dout_i . o_i, so the exact O would charge the forward's rounding
    // to the backward.
    auto backward_inputs = reference;
    backward_inputs.o = gather<double>(host.o.view());
    const auto reference_grad =
        attention_backward(ref_q, ref_k, ref_v, ref_dout, backward_inputs, problem.desc, problem.dtype);
    const auto naive_q = gather<float>(host.q.view()), naive_k = gather<float>(host.k.view()),
               naive_v = gather<float>(host.v.view()), naive_dout = gather<float>(host.dout.view());
    const auto naive = attention_forward(naive_q, naive_k, naive_v, problem.desc, problem.dtype);
    const auto naive_grad = attention_backward(naive_q, naive_k, naive_v, naive_dout, naive, problem.desc, problem.dtype);

    const MaskRule mask(problem.desc, problem.seqlen_q, problem.seqlen_k);
    const auto empty_rows = structural_zeros(problem.q_shape(), mask, ZeroWhere::EmptyQueryRows);
    const auto unseen_keys = structural_zeros(problem.kv_shape(), mask, ZeroWhere::UnseenKeys);
    const std::string failures =
        compare_output("o", host.o, reference.o, naive.o, empty_rows, reference.o_terms, reference.o_score_terms) +
        compare_output("lse", host.lse, reference.lse, naive.lse,
                       std::vector<bool>(static_cast<size_t>(host.lse.count()), false), reference.lse_terms) +
        compare_output("dq", host.dq, reference_grad.dq, naive_grad.dq, empty_rows, reference_grad.dq_terms,
                       reference_grad.dq_score_terms) +
        compare_output("dk", host.dk, reference_grad.dk, naive_grad.dk, unseen_keys, reference_grad.dk_terms,
                       reference_grad.dk_score_terms) +
        compare_output("dv", host.dv, reference_grad.dv, naive_grad.dv, unseen_keys, reference_grad.dv_terms,
                       reference_grad.dv_score_terms) +
        check_gaps("o", host.o, inputs.o) + check_gaps("dq", host.dq, inputs.dq) + check_gaps("dk", host.dk, inputs.dk) +
        check_gaps("dv", host.dv, inputs.dv);
    return failures.empty() ? "" : context + failures;
}

}  // namespace fattn_test
