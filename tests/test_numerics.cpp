// Numerics of fattn_forward / fattn_backward against the float64 reference, over backend x dtype x
// head_dim x mask x layout; each scenario runs on the CPU and on CUDA (scenario.h).
// On CUDA, problems outside the backend's promise (head_dim not a multiple of 8, f32) must be
// refused with FATTN_ERROR_UNSUPPORTED (f32 may instead be correct): see expectation() in harness.h.
#include <doctest/doctest.h>

#include <omp.h>

#include <string>
#include <vector>

#include "harness.h"
#include "scenario.h"

using namespace fattn_test;

namespace {

const fattn_dtype_t kAllDtypes[] = {FATTN_DTYPE_F32, FATTN_DTYPE_F16, FATTN_DTYPE_BF16};

}  // namespace

FATTN_SCENARIO("odd sequence lengths, causal and not", odd_lengths) {
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : kAllDtypes)
        for (int64_t length : {int64_t{1}, int64_t{7}, int64_t{129}, long_length(1000)})
            for (bool causal : {false, true}) {
                Problem problem(dtype, length, length, 64);
                if (causal) problem.causal();
                problems.push_back(problem);
            }
    check_problems(backend, "odd lengths", problems);
}

FATTN_SCENARIO("Nq != Nk, including rows that see no key", unequal_lengths) {
    const std::pair<int64_t, int64_t> lengths[] = {{1, 7}, {7, 1}, {7, 129}, {129, 7}, {37, 100}, {100, 37}, {1, long_length(1000)}};
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : kAllDtypes)
        for (const auto& [nq, nk] : lengths)
            for (bool causal : {false, true}) {
                Problem problem(dtype, nq, nk, 32);
                problem.with_heads(2, 2, 2);
                if (causal) problem.causal();
                problems.push_back(problem);
            }
    // Causal with Nq > Nk leaves the first Nq - Nk rows without keys: the exact-zero checks bite.
    REQUIRE(MaskRule(Problem(FATTN_DTYPE_F32, 129, 7, 32).causal().desc, 129, 7).row_sees_nothing(121));
    check_problems(backend, "unequal lengths", problems);
}

FATTN_SCENARIO("sliding windows: left, right, both, zero-width, with causal", windows) {
    const std::pair<int32_t, int32_t> windows[] = {{5, -1}, {-1, 3}, {4, 2}, {0, -1}, {-1, 0}, {0, 0}, {0, 3}, {40, 40}};
    const std::pair<int64_t, int64_t> lengths[] = {{67, 67}, {50, 80}, {80, 50}};
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : kAllDtypes)
        for (const auto& [nq, nk] : lengths) {
            for (const auto& [left, right] : windows) problems.push_back(Problem(dtype, nq, nk, 16).window(left, right));
            problems.push_back(Problem(dtype, nq, nk, 16).causal().window(6, -1));
        }
    check_problems(backend, "windows", problems);
}

FATTN_SCENARIO("grouped-query and multi-query attention", grouped_query) {
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : kAllDtypes)
        for (int64_t heads_kv : {int64_t{8}, int64_t{2}, int64_t{1}})
            for (bool causal : {false, true}) {
                Problem problem(dtype, 33, 47, 32);
                problem.with_heads(2, 8, heads_kv).with_layout(causal ? Layout::BNHD : Layout::BHND);
                if (causal) problem.causal();
                problems.push_back(problem);
            }
    check_problems(backend, "gqa", problems);
}

FATTN_SCENARIO("layouts: [B,H,N,D], [B,N,H,D] and padded strides", layouts) {
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : kAllDtypes)
        for (Layout layout : {Layout::BHND, Layout::BNHD, Layout::Padded})
            for (bool causal : {false, true}) {
                Problem problem(dtype, 37, 53, 24);
                problem.with_heads(2, 4, 2).with_layout(layout);
                if (causal) problem.causal();
                problems.push_back(problem);
            }
    check_problems(backend, "layouts", problems);
}

FATTN_SCENARIO("every head_dim the backend serves (and refusal of the others)", head_dims) {
    // CPU: any head_dim 1..256. CUDA: multiples of 8 up to 256, covering every tile width
    // (32, 64, 96, 128, 192, 256) and values served by the next larger tile; 12 and 100 must be
    // refused there. 257 is beyond every backend.
    const std::vector<int64_t> dims = backend == FATTN_BACKEND_CUDA
                                          ? std::vector<int64_t>{8, 12, 32, 40, 64, 72, 96, 100, 128, 136, 192, 200, 248, 256, 257}
                                          : std::vector<int64_t>{1, 3, 17, 64, 100, 128, 200, 256, 257};
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : kAllDtypes)
        for (int64_t dim : dims)
            for (bool causal : {false, true}) {
                Problem problem(dtype, 45, 77, dim);
                if (causal) problem.causal().with_layout(Layout::BNHD);
                problems.push_back(problem);
            }
    check_problems(backend, "head dims", problems);
}

FATTN_SCENARIO("explicit softmax_scale", explicit_scale) {
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : kAllDtypes)
        for (float scale : {0.03f, 0.3f, 1.7f}) problems.push_back(Problem(dtype, 31, 43, 64).scale(scale).causal());
    check_problems(backend, "scale", problems);
}

FATTN_SCENARIO("a larger problem (B=2, Hq=4, Hkv=2, N=512, D=128, causal)", larger) {
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : {FATTN_DTYPE_F32, FATTN_DTYPE_BF16}) {
        Problem problem(dtype, long_length(512), long_length(512), 128);
        problem.with_heads(2, 4, 2).with_layout(Layout::BNHD).causal();
        problems.push_back(problem);
    }
    check_problems(backend, "larger", problems);
}

FATTN_SCENARIO("long key rows at head_dim 128 (Hopper: late P V wait, value loader, late claims, 160-key tiles)", long_keys) {
    // The Hopper forward at D=128 takes its late-wait kernel only where masks cut at most an eighth
    // of the visible key tiles (fwd_kernel.cuh, run_forward); the short and masked problems of the
    // other scenarios take the early one. 1100 keys: 9 tiles of 128, the last cut by the sequence
    // end. Causal 2000 x 2000: items of 1 to 16 tiles, 8.5 on average, one cut each, so the
    // producer claims each next item two tiles before the current one ends (claim_distance).
    // Items of 32 or more tiles of 160 keys take the 160-key kernel with one Q slot: 200 queries
    // over 5121 keys (33 tiles, the last holding one key), and causal 256 x 6000 (37 and 38 tiles,
    // the last two of each cut by the diagonal). All but the first problem run on CUDA only: the
    // CPU backend tiles them as it tiles 1100 keys, and under the sanitizer run they took over
    // four minutes of CI. Fixed lengths, so that quick runs take those paths too.
    std::vector<Problem> problems;
    for (fattn_dtype_t dtype : {FATTN_DTYPE_F16, FATTN_DTYPE_BF16}) {
        const Layout layout = dtype == FATTN_DTYPE_F16 ? Layout::BHND : Layout::BNHD;
        Problem problem(dtype, 300, 1100, 128);
        problems.push_back(problem.with_heads(2, 2, 1).with_layout(layout));
        if (backend != FATTN_BACKEND_CUDA) continue;
        Problem wide(dtype, 200, 5121, 128);
        problems.push_back(wide.with_heads(2, 2, 1).with_layout(layout));
        Problem wide_causal(dtype, 256, 6000, 128);
        problems.push_back(wide_causal.with_heads(1, 3, 1).with_layout(layout).causal());
    }
    if (backend == FATTN_BACKEND_CUDA) {
        Problem causal(FATTN_DTYPE_BF16, 2000, 2000, 128);
        problems.push_back(causal.with_heads(1, 2, 1).causal());
    }
    check_problems(backend, "long keys", problems);
}

FATTN_SCENARIO("more query tiles than a GPU has multiprocessors (persistent kernels), masked and not", many_tiles) {
    // 3 x 8 heads x ceil(700 / 128) = 144 query tiles of 128 rows: persistent CUDA kernels (one block
    // per multiprocessor, 132 on an H100) walk several each and carry their pipelines across them.
    // head_dim 56 and 120 leave columns of the 64 and 128 tiles empty.
    std::vector<Problem> problems;
    const std::pair<fattn_dtype_t, int64_t> variants[] = {{FATTN_DTYPE_F16, 56}, {FATTN_DTYPE_BF16, 120}};
    for (const auto& [dtype, dim] : variants)
        for (int mask = 0; mask < 3; ++mask) {
            Problem problem(dtype, long_length(700), long_length(389), dim);
            problem.with_heads(3, 8, 2).with_layout(mask == 1 ? Layout::BHND : Layout::BNHD);
            if (mask == 1) problem.causal();
            if (mask == 2) problem.window(100, 30);
            problems.push_back(problem);
        }
    check_problems(backend, "many tiles", problems);
}

namespace {

// The one head of `head` into every head of every batch of `to` (same sequence length and
// head_dim): the [B,H,N,D] enumeration repeats a one-head tensor's every count() elements.
void copy_head_everywhere(const HostTensor& head, HostTensor& to) {
    for (int64_t i = 0; i < to.count(); ++i) to.store(to.offset_of_index(i), head.at_index(i % head.count()));
}

// Where `actual` first differs in its bits from the one head of `head`, as text ("" if nowhere).
std::string first_difference(const char* name, const HostTensor& actual, const HostTensor& head) {
    for (int64_t i = 0; i < actual.count(); ++i)
        if (float_bits(actual.at_index(i)) != float_bits(head.at_index(i % head.count())))
            return std::string(name) + " differs at element " + std::to_string(i) + " of its [B,H,N,D] enumeration";
    return "";
}

}  // namespace

FATTN_SCENARIO("heads that are copies of one head: the forward gives each the same bits, over many work items", copied_heads) {
    // The forward computes each (query tile, head) in one block, in one order, so copies of a head
    // must come out bit for bit alike whichever block takes them and after whatever item. The
    // Hopper forward's consumer groups own 64 rows each of a 128- or 192-row work item; where
    // seqlen_q leaves a group none, it passes the item's products (fwd_kernel.cuh, pass_steps) and
    // rejoins the pipeline on its block's next item, which this checks over 160 heads. 300 rows:
    // at D=64 two items of 192 (the second's third group empty) or, causal, three of 128 (the
    // third's second group empty); at D=128 three of 128. 130 queries over 1100 and 5121 keys take
    // D=128's late-wait and 160-key kernels (their second item: 2 rows). Each shape's one head is
    // checked against the reference on fresh inputs first.
    struct Case { int64_t head_dim, seqlen_q, seqlen_k; bool causal; };
    std::vector<Case> cases = {{64, 300, 300, false}, {64, 300, 300, true}, {128, 300, 300, true}};
    if (backend == FATTN_BACKEND_CUDA) {  // long rows: on the CPU, minutes of the sanitizer run for nothing new
        cases.push_back({128, 130, 1100, false});
        cases.push_back({128, 130, 5121, false});
    }
    const Handle handle(backend);
    REQUIRE(handle.create_status() == FATTN_SUCCESS);
    std::mt19937_64 rng = random_stream(std::string("copied heads") + backend_name(backend));
    for (fattn_dtype_t dtype : {FATTN_DTYPE_F16, FATTN_DTYPE_BF16})
        for (const Case& shape : cases) {
            Problem one(dtype, shape.seqlen_q, shape.seqlen_k, shape.head_dim);
            one.with_layout(dtype == FATTN_DTYPE_F16 ? Layout::BHND : Layout::BNHD);
            if (shape.causal) one.causal();
            const std::string failures = run_and_check(handle, one, rng);
            CHECK_MESSAGE(failures.empty(), failures);
            const ProblemTensors one_inputs(one, rng);
            const Run single = execute(handle, one, one_inputs, Passes::Forward);
            REQUIRE_MESSAGE(single.status == FATTN_SUCCESS, single.message);

            Problem many = one;
            if (backend == FATTN_BACKEND_CUDA) many.with_heads(4, 40, 8);  // 320-480 items: several per block
            else many.with_heads(2, 4, 2);
            ProblemTensors inputs(many, rng);
            copy_head_everywhere(one_inputs.q, inputs.q);
            copy_head_everywhere(one_inputs.k, inputs.k);
            copy_head_everywhere(one_inputs.v, inputs.v);
            const Run copies = execute(handle, many, inputs, Passes::Forward);
            REQUIRE_MESSAGE(copies.status == FATTN_SUCCESS, copies.message);
            const std::string differences = first_difference("o", copies.tensors.o, single.tensors.o) +
                                            first_difference("lse", copies.tensors.lse, single.tensors.lse);
            const std::string context = run_context(handle, many);
            CHECK_MESSAGE(differences.empty(), context << differences);
        }
}

FATTN_SCENARIO("forward with lse = NULL writes the same o", forward_without_lse) {
    const Handle handle(backend);
    REQUIRE(handle.create_status() == FATTN_SUCCESS);
    std::mt19937_64 rng = random_stream("no lse");
    for (fattn_dtype_t dtype : {FATTN_DTYPE_F16, FATTN_DTYPE_BF16, FATTN_DTYPE_F32}) {
        const Problem problem = Problem(dtype, 70, 90, 64).causal();
        INFO(run_context(handle, problem));
        const ProblemTensors tensors(problem, rng);
        const Run with_lse = execute(handle, problem, tensors, Passes::Forward);
        if (with_lse.status == FATTN_ERROR_UNSUPPORTED && expectation(backend, problem) != Expect::Correct) continue;
        REQUIRE_MESSAGE(with_lse.status == FATTN_SUCCESS, with_lse.message);
        const Run without_lse = execute(handle, problem, tensors, Passes::ForwardWithoutLse);
        REQUIRE_MESSAGE(without_lse.status == FATTN_SUCCESS, without_lse.message);
        CHECK(without_lse.tensors.o.same_bytes(with_lse.tensors.o.snapshot()));
        CHECK(without_lse.tensors.lse.same_bytes(tensors.lse.snapshot()));  // its buffer was never passed
    }
}

namespace {

// Runs `passes` several times (on the CPU with 1, 2 and 3 OpenMP threads) and checks that every
// output is bit-identical to the first run.
void check_bit_identical(fattn_backend_t backend, const Problem& problem, Passes passes) {
    const Handle handle(backend);
    REQUIRE(handle.create_status() == FATTN_SUCCESS);
    std::mt19937_64 rng = random_stream("determinism");
    INFO(run_context(handle, problem));
    const ProblemTensors tensors(problem, rng);
    const int threads_before = omp_get_max_threads();
    std::vector<Run> runs;
    for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        runs.push_back(execute(handle, problem, tensors, passes));
    }
    omp_set_num_threads(threads_before);
    if (runs[0].status == FATTN_ERROR_UNSUPPORTED && expectation(backend, problem) != Expect::Correct) return;
    for (const Run& run : runs) REQUIRE_MESSAGE(run.status == FATTN_SUCCESS, run.message);
    for (size_t i = 1; i < runs.size(); ++i) {
        CHECK(runs[i].tensors.o.same_bytes(runs[0].tensors.o.snapshot()));
        CHECK(runs[i].tensors.lse.same_bytes(runs[0].tensors.lse.snapshot()));
        if (passes != Passes::ForwardAndBackward) continue;
        CHECK(runs[i].tensors.dq.same_bytes(runs[0].tensors.dq.snapshot()));
        CHECK(runs[i].tensors.dk.same_bytes(runs[0].tensors.dk.snapshot()));
        CHECK(runs[i].tensors.dv.same_bytes(runs[0].tensors.dv.snapshot()));
    }
}

}  // namespace

FATTN_SCENARIO("the forward is bit-identical from run to run", forward_determinism) {
    for (fattn_dtype_t dtype : kAllDtypes) {
        Problem problem(dtype, 300, 300, 64);
        problem.with_heads(1, 4, 2).causal();
        check_bit_identical(backend, problem, Passes::Forward);
    }
}

FATTN_SCENARIO("the backward with deterministic = 1 is bit-identical from run to run", backward_determinism) {
    for (fattn_dtype_t dtype : kAllDtypes) {
        Problem problem(dtype, 300, 260, 64);
        problem.with_heads(1, 4, 2).deterministic();
        check_bit_identical(backend, problem, Passes::ForwardAndBackward);
    }
}

// The reference's gradients, and fattn's f32 gradients, against central finite differences of the
// float64 reference forward, for the loss L = sum(dout * o).
TEST_CASE("cpu: gradients agree with finite differences of the float64 forward") {
    const Handle handle(FATTN_BACKEND_CPU);
    REQUIRE(handle.create_status() == FATTN_SUCCESS);
    std::mt19937_64 rng = random_stream("finite differences");
    std::vector<Problem> problems = {Problem(FATTN_DTYPE_F32, 3, 4, 5), Problem(FATTN_DTYPE_F32, 4, 3, 5).causal(),
                                     Problem(FATTN_DTYPE_F32, 5, 5, 3).window(1, 1)};
    problems[0].with_heads(1, 2, 1);
    for (const Problem& problem : problems) {
        INFO(run_context(handle, problem));
        const ProblemTensors tensors(problem, rng);
        const Run run = execute(handle, problem, tensors, Passes::ForwardAndBackward);
        REQUIRE_MESSAGE(run.status == FATTN_SUCCESS, run.message);

        Dense<double> q = gather<double>(run.tensors.q.view()), k = gather<double>(run.tensors.k.view()),
                      v = gather<double>(run.tensors.v.view());
        const Dense<double> dout = gather<double>(run.tensors.dout.view());
        const auto forward = attention_forward(q, k, v, problem.desc, problem.dtype);
        const auto analytic = attention_backward(q, k, v, dout, forward, problem.desc, problem.dtype);
        auto loss = [&] {
            const Dense<double> o = attention_forward(q, k, v, problem.desc, problem.dtype).o;
            double sum = 0;
            for (size_t i = 0; i < o.data.size(); ++i) sum += o.data[i] * dout.data[i];
            return sum;
        };
        struct Input {
            const char* name;
            Dense<double>& values;
            const Dense<double>& reference_grad;
            const HostTensor& fattn_grad;
        };
        for (const Input& input : {Input{"q", q, analytic.dq, run.tensors.dq}, Input{"k", k, analytic.dk, run.tensors.dk},
                                   Input{"v", v, analytic.dv, run.tensors.dv}}) {
            for (size_t i = 0; i < input.values.data.size(); ++i) {
                const double step = 1e-5, saved = input.values.data[i];
                input.values.data[i] = saved + step;
                const double above = loss();
                input.values.data[i] = saved - step;
                const double below = loss();
                input.values.data[i] = saved;
                const double numeric = (above - below) / (2 * step);
                INFO("d" << std::string(input.name) << "[#" << i << "]: finite difference " << numeric << ", reference "
                         << input.reference_grad.data[i] << ", fattn " << input.fattn_grad.at_index(static_cast<int64_t>(i)));
                CHECK(std::abs(input.reference_grad.data[i] - numeric) <= 1e-7 * (1 + std::abs(numeric)));
                CHECK(std::abs(input.fattn_grad.at_index(static_cast<int64_t>(i)) - numeric) <= 1e-5 * (1 + std::abs(numeric)));
            }
        }
    }
}

// CUDA-only promises that have no CPU counterpart.
TEST_CASE("cuda: pageable host memory is FATTN_ERROR_INVALID_ARGUMENT, with nothing written") {
    if (cuda_unavailable()) return;
    const Handle handle(FATTN_BACKEND_CUDA);
    REQUIRE(handle.create_status() == FATTN_SUCCESS);
    std::mt19937_64 rng = random_stream("pageable");
    ProblemTensors host(Problem(FATTN_DTYPE_F16, 16, 16, 64), rng);
    const ProblemTensors before = host;
    const fattn_tensor_t q = host.q.view(), k = host.k.view(), v = host.v.view(), o = host.o.view(),
                         lse = host.lse.view(), dout = host.dout.view(), dq = host.dq.view(), dk = host.dk.view(),
                         dv = host.dv.view();
    const fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    CHECK(fattn_forward(handle.get(), &desc, &q, &k, &v, &o, &lse) == FATTN_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(fattn_last_error()).find("pageable") != std::string::npos);
    CHECK(fattn_backward(handle.get(), &desc, &q, &k, &v, &o, &dout, &lse, &dq, &dk, &dv) == FATTN_ERROR_INVALID_ARGUMENT);
    CHECK(host.o.same_bytes(before.o.snapshot()));
    CHECK(host.lse.same_bytes(before.lse.snapshot()));
    CHECK(host.dq.same_bytes(before.dq.snapshot()));
    CHECK(host.dk.same_bytes(before.dk.snapshot()));
    CHECK(host.dv.same_bytes(before.dv.snapshot()));
}

TEST_CASE("cuda: head_dim 12 is FATTN_ERROR_UNSUPPORTED for the forward and the backward") {
    if (cuda_unavailable()) return;
    const Handle handle(FATTN_BACKEND_CUDA);
    REQUIRE(handle.create_status() == FATTN_SUCCESS);
    std::mt19937_64 rng = random_stream("head dim 12");
    const Problem problem(FATTN_DTYPE_BF16, 20, 20, 12);
    const ProblemTensors tensors(problem, rng);
    const Run forward = execute(handle, problem, tensors, Passes::Forward);
    CHECK(forward.status == FATTN_ERROR_UNSUPPORTED);
    CHECK(forward.message.find("12") != std::string::npos);
    CHECK(forward.tensors.o.same_bytes(tensors.o.snapshot()));
    // The backward on its own (o and lse still poisoned): it must refuse before reading or writing.
    const Run backward = execute(handle, problem, tensors, Passes::BackwardOnly);
    CHECK(backward.status == FATTN_ERROR_UNSUPPORTED);
    CHECK(backward.message.find("12") != std::string::npos);
    CHECK(backward.tensors.dq.same_bytes(tensors.dq.snapshot()));
    CHECK(backward.tensors.dk.same_bytes(tensors.dk.snapshot()));
}
