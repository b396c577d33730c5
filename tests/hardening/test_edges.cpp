// Numerics at the edges (issue 6), forward and backward against the float64 reference:
//   - large magnitudes: fp16 inputs ~200 with scale 1 (scores far beyond fp16's range, fp32
//     accumulation must carry them), bf16 inputs ~1e17 with a tiny scale;
//   - NaN/Inf in an input reaches exactly the rows that read it: a NaN in q row i makes o row i
//     NaN and nothing else; a NaN in k or v row j makes NaN exactly the rows that see key j
//     (causal rows before it stay finite); gradients follow from the mask (see special_value);
//   - rows that see no key: o exactly 0, lse -inf, dq 0, and dk/dv 0 for keys nobody sees;
//   - Nk = 1, head_dim 1 (CPU), extreme softmax_scale (1e-30, FLT_MIN, 1e4, FLT_MAX).
// Finite results obey the suite's accuracy rule (tests/harness.h compare_output: within 2x the
// error of a naive fp32 implementation, plus an ulp floor). Every case runs on the CPU, and on
// CUDA (f16/bf16, head_dim a multiple of 8) when a GPU is usable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cfloat>
#include <limits>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using namespace fattn_hardening;

#define EDGE_CASE(name, function)                                                  \
    TEST_CASE("cpu: " name) { function(FATTN_BACKEND_CPU); }                       \
    TEST_CASE("cuda: " name) {                                                     \
        if (!fattn_backend_available(FATTN_BACKEND_CUDA)) {                        \
            MESSAGE("CUDA cases skipped: no usable GPU (or a build without CUDA)"); \
            return;                                                                \
        }                                                                          \
        function(FATTN_BACKEND_CUDA);                                              \
    }

std::vector<fattn_dtype_t> dtypes_of(fattn_backend_t backend) {
    if (backend == FATTN_BACKEND_CUDA) return {FATTN_DTYPE_F16, FATTN_DTYPE_BF16};
    return {FATTN_DTYPE_F32, FATTN_DTYPE_F16, FATTN_DTYPE_BF16};
}

fattn_attention_desc_t make_desc(bool causal, float scale = 0.0f) {
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = causal;
    desc.softmax_scale = scale;
    return desc;
}

// Forward then backward on one handle; the backward is given the library's own o and lse.
// Returns the status of the first call that failed, or FATTN_SUCCESS.
fattn_status_t forward_backward(fattn_backend_t backend, Problem& problem) {
    fattn_handle_t handle = nullptr;
    REQUIRE(fattn_create(&handle, backend) == FATTN_SUCCESS);
    fattn_status_t status = run(handle, backend, problem, Op::Forward);
    if (status == FATTN_SUCCESS) status = run(handle, backend, problem, Op::Backward);
    fattn_destroy(handle);
    return status;
}

// The accuracy rule (tests/harness.h compare_output) on a forward, then on a backward that is
// given the reference's o and lse as stored values: the float64 and the naive fp32 backward read
// the same stored o and lse, so all three face the same rounding of lse (which matters once
// scores are large: an fp32 lse of 1e6 is only good to 0.06). Exact zeros where the mask alone
// makes them.
void expect_accurate(fattn_backend_t backend, Problem& p) {
    using namespace fattn_test;
    INFO(p.describe());
    fattn_handle_t handle = nullptr;
    REQUIRE(fattn_create(&handle, backend) == FATTN_SUCCESS);
    const MaskRule mask(p.desc, p.dims.seqlen_q, p.dims.seqlen_k);
    const auto empty_rows = structural_zeros(p.dims.q_shape(), mask, ZeroWhere::EmptyQueryRows);
    const auto unseen_keys = structural_zeros(p.dims.kv_shape(), mask, ZeroWhere::UnseenKeys);

    REQUIRE(run(handle, backend, p, Op::Forward) == FATTN_SUCCESS);
    const auto reference = p.reference_forward();
    const auto naive = attention_forward(gather<float>(p.q.truth()), gather<float>(p.k.truth()),
                                         gather<float>(p.v.truth()), p.desc, p.dtype);
    CHECK(compare_output("o", p.o.storage, reference.o, naive.o, empty_rows) == "");
    CHECK(compare_output("lse", p.lse.storage, reference.lse, naive.lse, std::vector<bool>(p.lse.storage.count(), false)) == "");

    p.store_forward(reference);
    REQUIRE(run(handle, backend, p, Op::Backward) == FATTN_SUCCESS);
    fattn_destroy(handle);
    const auto reference_grad = p.reference_backward();
    ForwardResult<float> stored;
    stored.o = gather<float>(p.o.truth());
    stored.lse = gather<float>(p.lse.truth());
    const auto naive_grad = attention_backward(gather<float>(p.q.truth()), gather<float>(p.k.truth()),
                                               gather<float>(p.v.truth()), gather<float>(p.dout.truth()), stored,
                                               p.desc, p.dtype);
    CHECK(compare_output("dq", p.dq.storage, reference_grad.dq, naive_grad.dq, empty_rows) == "");
    CHECK(compare_output("dk", p.dk.storage, reference_grad.dk, naive_grad.dk, unseen_keys) == "");
    CHECK(compare_output("dv", p.dv.storage, reference_grad.dv, naive_grad.dv, unseen_keys) == "");
}

Problem random_problem(const Dims& dims, fattn_dtype_t dtype, const fattn_attention_desc_t& desc, double stddev,
                       uint64_t seed) {
    std::mt19937_64 rng(seed);
    Problem problem(dims, dtype, desc);
    problem.randomize(rng, stddev);
    return problem;
}

// ---- Large magnitudes ---------------------------------------------------------------------

void large_magnitudes(fattn_backend_t backend) {
    const Dims dims{1, 2, 1, 33, 47, 64};
    for (bool causal : {false, true}) {
        // fp16 inputs ~200, scale 1: scores up to ~1e6, far past fp16's 65504.
        Problem half = random_problem(dims, FATTN_DTYPE_F16, make_desc(causal, 1.0f), 200.0, 11);
        expect_accurate(backend, half);
        // fp16 inputs ~100, default scale: scores up to ~5e4, at fp16's limit.
        half = random_problem(dims, FATTN_DTYPE_F16, make_desc(causal), 100.0, 13);
        expect_accurate(backend, half);
        // bf16 inputs ~1e17: q.k ~1e35 is near fp32's limit; a tiny scale brings scores to ~1e5.
        Problem brain = random_problem(dims, FATTN_DTYPE_BF16, make_desc(causal, 1e-30f), 1e17, 12);
        expect_accurate(backend, brain);
    }
}
EDGE_CASE("large magnitudes: scores far beyond fp16 range, and q.k near fp32's limit in bf16", large_magnitudes)

// ---- NaN and Inf --------------------------------------------------------------------------

enum class Poisoned { Query, Key, Value };

// Which rows (b, h, n) of a [B,H,N,*] tensor hold a non-finite value, by flat row index.
std::vector<bool> nonfinite_rows(const HostTensor& tensor) {
    const Shape& shape = tensor.shape();
    std::vector<bool> rows(static_cast<size_t>(shape[0] * shape[1] * shape[2]), false);
    for (int64_t i = 0; i < tensor.count(); ++i)
        if (!std::isfinite(tensor.at_index(i))) rows[static_cast<size_t>(i / shape[3])] = true;
    return rows;
}

// "" when the non-finite rows of `got` are exactly `expected`, else the rows that differ.
std::string row_difference(const HostTensor& got, const std::vector<bool>& expected) {
    const std::vector<bool> actual = nonfinite_rows(got);
    std::string differences;
    for (size_t row = 0; row < actual.size(); ++row)
        if (actual[row] != expected[row])
            differences += "row " + std::to_string(row) + (actual[row] ? " non-finite; " : " finite; ");
    return differences;
}

// Sets the expected value of the marked rows (all columns, or only `column`) to NaN: with
// NonFinite::AnyKind those elements must then be non-finite, and all others finite and accurate.
void expect_nonfinite_rows(Dense<double>& expected, const std::vector<bool>& rows, int64_t column = -1) {
    const auto width = static_cast<size_t>(expected.shape[3]);
    for (size_t i = 0; i < expected.data.size(); ++i)
        if (rows[i / width] && (column < 0 || static_cast<int64_t>(i % width) == column))
            expected.data[i] = std::numeric_limits<double>::quiet_NaN();
}

// Writes `special` (NaN or an infinity) into one element of q, k or v, runs forward and backward
// (the backward given the library's own o and lse), and derives from the mask alone which rows
// must become non-finite:
//   o, lse  the readers: the q row itself, or every row that sees the poisoned key (for v, only
//           the element's column of o, and lse stays finite: it does not read v);
//   dq      the readers;  dk  keys seen by a reader (dS_ij is non-finite for them);
//   dv      for q and k the same keys (P_ij is non-finite), for v none (dv reads no v).
// Every other element must be finite and match the float64 reference of the same inputs with the
// special value replaced by 0 (an element a row does not read cannot change it).
void special_value(fattn_backend_t backend, Poisoned where, float special) {
    for (fattn_dtype_t dtype : dtypes_of(backend))
        for (bool causal : {false, true}) {
            const Dims dims{2, 4, 2, 19, 23, 32};
            Problem p = random_problem(dims, dtype, make_desc(causal), 1.0, 21);
            const int64_t batch = 1, kv_head = 1, row = 9, column = 5;  // query heads 2 and 3 read kv head 1
            Operand& target = where == Poisoned::Query ? p.q : where == Poisoned::Key ? p.k : p.v;
            const int64_t head = where == Poisoned::Query ? 2 : kv_head;
            const int64_t element = target.storage.offset(batch, head, row, column);
            target.storage.store(element, special);
            INFO(p.describe() << ", " << special << " in " << (where == Poisoned::Query ? "q" : where == Poisoned::Key ? "k" : "v")
                              << " row " << row);
            REQUIRE(forward_backward(backend, p) == FATTN_SUCCESS);

            const fattn_test::MaskRule mask(p.desc, dims.seqlen_q, dims.seqlen_k);
            auto row_of = [&](int64_t b, int64_t h, int64_t n, int64_t heads, int64_t rows) {
                return static_cast<size_t>((b * heads + h) * rows + n);
            };
            std::vector<bool> readers(static_cast<size_t>(dims.batch * dims.heads_q * dims.seqlen_q), false);
            std::vector<bool> keys_of_readers(static_cast<size_t>(dims.batch * dims.heads_kv * dims.seqlen_k), false);
            for (int64_t h = 0; h < dims.heads_q; ++h)
                for (int64_t i = 0; i < dims.seqlen_q; ++i) {
                    const bool reads = where == Poisoned::Query ? (h == head && i == row) : (h / 2 == kv_head && mask.visible(i, row));
                    if (!reads) continue;
                    readers[row_of(batch, h, i, dims.heads_q, dims.seqlen_q)] = true;
                    for (int64_t j = 0; j < dims.seqlen_k; ++j)
                        if (mask.visible(i, j)) keys_of_readers[row_of(batch, h / 2, j, dims.heads_kv, dims.seqlen_k)] = true;
                }
            if (causal && where != Poisoned::Query) REQUIRE(!mask.visible(0, row));  // some rows must not see it
            const std::vector<bool> none_kv(keys_of_readers.size(), false), none_q(readers.size(), false);

            CHECK(row_difference(p.o.storage, readers) == "");
            CHECK(row_difference(p.lse.storage, where == Poisoned::Value ? none_q : readers) == "");
            CHECK(row_difference(p.dq.storage, readers) == "");
            CHECK(row_difference(p.dk.storage, keys_of_readers) == "");
            CHECK(row_difference(p.dv.storage, where == Poisoned::Value ? none_kv : keys_of_readers) == "");

            target.storage.store(element, 0.0f);
            auto forward = p.reference_forward();
            auto grads = p.reference_backward();
            // A v element reaches only its own column of o; q and k elements reach whole rows.
            expect_nonfinite_rows(forward.o, readers, where == Poisoned::Value ? column : -1);
            expect_nonfinite_rows(grads.dq, readers);
            expect_nonfinite_rows(grads.dk, keys_of_readers);
            expect_nonfinite_rows(grads.dv, where == Poisoned::Value ? none_kv : keys_of_readers);
            struct Output {
                const char* name;
                const Operand* got;
                const Dense<double>* want;
            };
            for (const Output& output : {Output{"o", &p.o, &forward.o}, Output{"dq", &p.dq, &grads.dq},
                                         Output{"dk", &p.dk, &grads.dk}, Output{"dv", &p.dv, &grads.dv}}) {
                const Deviation dev = deviation(output.got->storage, *output.want, NonFinite::AnyKind);
                const std::string name = output.name;
                INFO(name << ": " << dev.nonfinite_mismatches << " non-finite mismatches (first at #" << dev.first_mismatch
                          << "), max finite error " << dev.max_error);
                CHECK(dev.within(loose_tolerance(dtype, dev.max_expected)));
            }
        }
}

void nan_in_query(fattn_backend_t backend) { special_value(backend, Poisoned::Query, std::numeric_limits<float>::quiet_NaN()); }
void nan_in_key(fattn_backend_t backend) { special_value(backend, Poisoned::Key, std::numeric_limits<float>::quiet_NaN()); }
void nan_in_value(fattn_backend_t backend) { special_value(backend, Poisoned::Value, std::numeric_limits<float>::quiet_NaN()); }
void inf_in_query(fattn_backend_t backend) { special_value(backend, Poisoned::Query, std::numeric_limits<float>::infinity()); }
void inf_in_value(fattn_backend_t backend) { special_value(backend, Poisoned::Value, -std::numeric_limits<float>::infinity()); }
EDGE_CASE("a NaN in q row i makes exactly o row i and dq row i NaN", nan_in_query)
EDGE_CASE("a NaN in k row j makes NaN exactly the rows that see key j", nan_in_key)
EDGE_CASE("a NaN in v row j makes NaN exactly the o rows that see key j, lse stays finite", nan_in_value)
EDGE_CASE("an Inf in q row i is non-finite exactly in row i", inf_in_query)
EDGE_CASE("an Inf in v row j is non-finite exactly in the o rows that see key j", inf_in_value)

// ---- Masked rows, tiny extents ------------------------------------------------------------

void masked_rows(fattn_backend_t backend) {
    for (fattn_dtype_t dtype : dtypes_of(backend)) {
        // Causal with Nq > Nk: rows 0..Nq-Nk-1 see no key. A window leaves keys nobody sees.
        Problem causal = random_problem({1, 2, 1, 40, 9, 64}, dtype, make_desc(true), 1.0, 31);
        expect_accurate(backend, causal);
        fattn_attention_desc_t window = make_desc(false);
        window.window_left = 2;
        window.window_right = 0;  // each row sees up to three keys; early rows none
        Problem diagonal = random_problem({2, 2, 2, 30, 12, 16}, dtype, window, 1.0, 32);
        expect_accurate(backend, diagonal);
        // Every lse of an empty row is exactly -inf (compare_output checks it), o is exactly 0.
    }
}
EDGE_CASE("rows that see no key: o exactly 0, lse -inf, zero gradients", masked_rows)

void one_key(fattn_backend_t backend) {
    for (fattn_dtype_t dtype : dtypes_of(backend))
        for (bool causal : {false, true}) {
            Problem p = random_problem({2, 3, 1, 7, 1, backend == FATTN_BACKEND_CUDA ? 64 : 5}, dtype, make_desc(causal), 1.0, 41);
            expect_accurate(backend, p);
        }
}
EDGE_CASE("Nk = 1, with and without causal (then only the last row sees the key)", one_key)

TEST_CASE("cpu: head_dim 1, every dtype, GQA, causal and not") {
    for (fattn_dtype_t dtype : dtypes_of(FATTN_BACKEND_CPU))
        for (bool causal : {false, true}) {
            Problem p = random_problem({2, 4, 2, 33, 29, 1}, dtype, make_desc(causal), 1.0, 51);
            expect_accurate(FATTN_BACKEND_CPU, p);
        }
}

// ---- Extreme softmax scales ---------------------------------------------------------------

void extreme_scales(fattn_backend_t backend) {
    const Dims dims{1, 2, 2, 21, 26, 32};
    for (fattn_dtype_t dtype : dtypes_of(backend))
        for (float scale : {1e-30f, FLT_MIN, 1e4f}) {
            Problem p = random_problem(dims, dtype, make_desc(true, scale), 1.0, 61);
            expect_accurate(backend, p);
        }
}
EDGE_CASE("extreme but finite softmax_scale: 1e-30, FLT_MIN, 1e4", extreme_scales)

// FLT_MAX makes fp32 scores overflow to +-inf, where no fp32 implementation can follow the float64
// answer; the promise is a clean call: success, every element written, and every row either
// correct or NaN as a whole (never a plausible-looking wrong number).
void largest_scale(fattn_backend_t backend) {
    for (fattn_dtype_t dtype : dtypes_of(backend)) {
        Problem p = random_problem({1, 1, 1, 17, 17, 16}, dtype, make_desc(false, FLT_MAX), 1.0, 71);
        INFO(p.describe());
        const Snapshots poisoned = snapshot(p.forward_outputs());
        REQUIRE(forward_backward(backend, p) == FATTN_SUCCESS);
        const auto expected = p.reference_forward();
        const std::vector<bool> nan_rows = nonfinite_rows(p.o.storage);
        for (int64_t i = 0; i < p.o.storage.count(); ++i) {
            const bool row_nan = nan_rows[static_cast<size_t>(i / 16)];
            const double got = p.o.storage.at_index(i), want = expected.o.data[static_cast<size_t>(i)];
            CHECK((row_nan ? std::isnan(got) : std::fabs(got - want) <= loose_tolerance(dtype, 1.0)));
        }
        CHECK(p.o.storage.gaps_unchanged(poisoned[0]));
    }
}
EDGE_CASE("softmax_scale FLT_MAX: success, and each row correct or NaN as a whole", largest_scale)

}  // namespace
