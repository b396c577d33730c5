// libFuzzer target over the whole C ABI, CPU backend (issue 6). Built with
// -fsanitize=fuzzer,address,undefined in the clang sub-build that tests/hardening/subbuild.sh makes.
//
// Each input decodes to one call: a forward or a backward with random sizes, dtype, descriptor
// (including short struct_size with garbage past it) and per-tensor layouts ([B,H,N,D], [B,N,H,D],
// padded, stride-0 broadcast inputs), then at most one mutation:
//   - a corruption the ABI calls invalid (NULL tensor or data, bad dtype, reserved != 0, extent < 1,
//     negative or non-unit inner stride, 64-bit overflow, self-overlapping or aliasing output,
//     misaligned data, a bad descriptor field, NULL handle): the call must return
//     FATTN_ERROR_INVALID_ARGUMENT with a message naming the argument;
//   - an override of one shape or stride entry with an interesting value (0, 2^31, 2^62, ...): a
//     malformed result must be rejected the same way; a well-formed one may get any documented
//     status, and if it succeeds the result must be right.
// A failed call must leave every output byte as poisoned; no call may change an input byte.
// An unmutated call must succeed and match the float64 reference (loose dtype tolerance), with
// every output element written and no byte between elements touched. Storage is always built from
// the final shapes and strides, so an accepted call never reaches outside it (ASan would report it).
// A few inputs in 16 exercise the other entry points with hostile values instead.
#include <fuzzer/FuzzedDataProvider.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "harness.h"

// c_caller.c: enum arguments passed as a C caller may, any int.
extern "C" fattn_status_t fuzz_create_raw(fattn_handle_t* handle, int32_t backend);
extern "C" int fuzz_backend_available_raw(int32_t backend);
extern "C" const char* fuzz_status_string_raw(int32_t status);

namespace {

using namespace fattn_hardening;

enum Role { kQ, kK, kV, kO, kLse, kDout, kDq, kDk, kDv, kRoleCount };
constexpr const char* kRoleName[kRoleCount] = {"q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv"};

constexpr int64_t kMaxWork = int64_t{1} << 15;      // B*Hq*Nq*Nk*D of a generated problem
constexpr int64_t kMaxElements = int64_t{1} << 20;  // storage of one operand after an override

enum class Expect { Success, Invalid, Documented };

enum class Mutation {
    None,
    NullTensor, NullData, BadDtype, OtherDtype, Reserved, NonPositiveShape, NegativeStride, InnerStride,
    Overflow, SelfOverlap, Alias, GradientAlias, Misaligned,
    DescNull, DescSize, DescCausal, DescScale, DescWindow, DescCausalWindow, DescDeterministic,
    NullHandle,
    ShapeMismatch, Override,
    kCount
};

struct Counters {
    uint64_t succeeded = 0, rejected_as_expected = 0, documented_failures = 0, api_probes = 0;
} counters;

fattn_handle_t cpu_handle = nullptr;

Operand& operand(Problem& problem, int role) {
    Operand* all[kRoleCount] = {&problem.q,    &problem.k,  &problem.v,  &problem.o, &problem.lse,
                                &problem.dout, &problem.dq, &problem.dk, &problem.dv};
    return *all[role];
}

[[noreturn]] void report(const Problem& problem, const char* op, const std::string& what) {
    std::fprintf(stderr, "\nfattn_fuzz: %s %s\n  problem: %s\n  fattn_last_error() (of the last failed call): %s\n", op, what.c_str(),
                 problem.describe().c_str(), fattn_last_error());
    std::abort();
}

bool is_output(int role, bool backward) {
    return backward ? (role == kDq || role == kDk || role == kDv) : (role == kO || role == kLse);
}
bool takes_part(int role, bool backward) { return backward || role <= kLse; }

// The spec of one operand before storage exists: extents and strides may be anything.
struct Spec {
    fattn_dtype_t dtype = FATTN_DTYPE_F32;
    Shape shape{1, 1, 1, 1};
    Strides strides{1, 1, 1, 1};
};

// The element offset one past the last element, as validate.cpp bounds it; -1 when the shape or
// strides are malformed (extent < 1, negative stride, inner stride != 1) or overflow 64 bits.
int64_t reach(const Spec& spec) {
    if (spec.strides[3] != 1) return -1;
    int64_t elements = 1, last = 0;
    for (int i = 0; i < 4; ++i) {
        if (spec.shape[i] < 1 || spec.strides[i] < 0) return -1;
        int64_t step = 0;
        if (__builtin_mul_overflow(elements, spec.shape[i], &elements) ||
            __builtin_mul_overflow(spec.strides[i], spec.shape[i] - 1, &step) ||
            __builtin_add_overflow(last, step, &last))
            return -1;
    }
    int64_t end = 0, bytes = 0;
    if (__builtin_add_overflow(last, int64_t{1}, &end) || __builtin_mul_overflow(end, int64_t{4}, &bytes)) return -1;
    return end;
}

// Logical elements of a spec, or -1 when an extent is < 1 or the product overflows.
int64_t logical_count(const Spec& spec) {
    int64_t count = 1;
    for (int64_t extent : spec.shape)
        if (extent < 1 || __builtin_mul_overflow(count, extent, &count)) return -1;
    return count;
}

// Too big to back with memory or to fill: only a malformed or an absurd (and so inconsistent)
// spec gets here, and then the library must reject it before touching any element.
bool unbacked(const Spec& spec) {
    const int64_t count = logical_count(spec);
    return reach(spec) < 0 || count < 0 || count > kMaxElements;
}

Strides choose_strides(FuzzedDataProvider& in, const Shape& shape, bool may_broadcast) {
    const int64_t heads = shape[1], rows = shape[2], dim = shape[3];
    switch (in.ConsumeIntegralInRange(0, may_broadcast ? 3 : 2)) {
        case 0: return {heads * rows * dim, rows * dim, dim, 1};
        case 1: return {rows * heads * dim, dim, heads * dim, 1};
        case 2: {
            const int64_t row = dim + in.ConsumeIntegralInRange(0, 4);
            const int64_t head = rows * row + in.ConsumeIntegralInRange(0, 4);
            return {heads * head + in.ConsumeIntegralInRange(0, 4), head, row, 1};
        }
        default: {  // an input broadcast over batch, heads or rows: legal for inputs only
            Strides strides{heads * rows * dim, rows * dim, dim, 1};
            strides[in.ConsumeIntegralInRange(0, 2)] = 0;
            return strides;
        }
    }
}

int64_t interesting_extent(FuzzedDataProvider& in) {
    constexpr int64_t kValues[] = {0, 1, 2, 3, 7, 17, int64_t{1} << 31, int64_t{1} << 62,
                                   std::numeric_limits<int64_t>::max(), -1, std::numeric_limits<int64_t>::min()};
    return kValues[in.ConsumeIntegralInRange<size_t>(0, std::size(kValues) - 1)];
}

int64_t interesting_stride(FuzzedDataProvider& in) {
    constexpr int64_t kValues[] = {0, 1, 2, 3, 64, int64_t{1} << 31, int64_t{1} << 62,
                                   std::numeric_limits<int64_t>::max(), -1, std::numeric_limits<int64_t>::min()};
    return kValues[in.ConsumeIntegralInRange<size_t>(0, std::size(kValues) - 1)];
}

// One decoded call and what it must do.
struct Call {
    Problem problem;
    bool backward = false;
    Mutation mutation = Mutation::None;
    Expect expect = Expect::Success;
    std::string expected_name;  // for Expect::Invalid: the argument the message must name
    fattn_attention_desc_t given_desc = FATTN_ATTENTION_DESC_INIT;
    bool null_desc = false, null_handle = false;
    int null_role = -1;  // the tensor passed as NULL, if any

    void expect_invalid(const std::string& name) {
        expect = Expect::Invalid;
        expected_name = name;
    }
};

Dims choose_dims(FuzzedDataProvider& in) {
    constexpr int64_t kHeadDims[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 24, 31, 32, 33, 48, 64, 65, 80, 96, 100,
                                     128, 160, 192, 200, 255, 256};
    Dims dims;
    dims.batch = in.ConsumeIntegralInRange(1, 2);
    dims.heads_kv = in.ConsumeIntegralInRange(1, 3);
    int64_t group = in.ConsumeIntegralInRange(1, 3);
    dims.seqlen_q = in.ConsumeIntegralInRange(1, 20);
    dims.seqlen_k = in.ConsumeIntegralInRange(1, 20);
    dims.head_dim = kHeadDims[in.ConsumeIntegralInRange<size_t>(0, std::size(kHeadDims) - 1)];
    for (dims.heads_q = dims.heads_kv * group; dims.work() > kMaxWork; dims.heads_q = dims.heads_kv * group) {
        if (dims.seqlen_q > 1 && dims.seqlen_q >= dims.seqlen_k) dims.seqlen_q = (dims.seqlen_q + 1) / 2;
        else if (dims.seqlen_k > 1) dims.seqlen_k = (dims.seqlen_k + 1) / 2;
        else if (group > 1) --group;
        else dims.heads_kv = 1, dims.batch = 1;
    }
    return dims;
}

// The descriptor the library is given, and (in call.problem.desc) the one it must act on: the
// defaults overlaid with the first struct_size bytes.
void choose_desc(FuzzedDataProvider& in, Call& call) {
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    const int64_t keys = call.problem.dims.seqlen_k;
    desc.causal = in.ConsumeBool();
    switch (in.ConsumeIntegralInRange(0, 3)) {
        case 0: desc.softmax_scale = 0.0f; break;
        case 1: desc.softmax_scale = -0.0f; break;  // not negative: selects the default too
        case 2: desc.softmax_scale = 1e-3f; break;
        default: desc.softmax_scale = 0.05f + 1.45f * in.ConsumeProbability<float>(); break;
    }
    desc.window_left = in.ConsumeBool() ? -1 : static_cast<int32_t>(in.ConsumeIntegralInRange<int64_t>(0, keys + 1));
    desc.window_right = in.ConsumeBool() ? -1 : static_cast<int32_t>(in.ConsumeIntegralInRange<int64_t>(0, keys + 1));
    if (desc.causal) desc.window_right = std::min(desc.window_right, 0);
    desc.deterministic = in.ConsumeBool();
    constexpr uint32_t kSizes[] = {sizeof(fattn_attention_desc_t), 12, 16, 20};
    desc.struct_size = kSizes[in.ConsumeIntegralInRange<size_t>(0, std::size(kSizes) - 1)];

    call.given_desc = desc;
    fattn_attention_desc_t effective = FATTN_ATTENTION_DESC_INIT;
    std::memcpy(&effective, &desc, desc.struct_size);
    effective.struct_size = sizeof effective;
    call.problem.desc = effective;
    // Past struct_size the caller's struct has no fields: garbage there must be ignored.
    if (desc.struct_size <= offsetof(fattn_attention_desc_t, window_left)) call.given_desc.window_left = -77;
    if (desc.struct_size <= offsetof(fattn_attention_desc_t, window_right)) call.given_desc.window_right = -78;
    if (desc.struct_size <= offsetof(fattn_attention_desc_t, deterministic)) call.given_desc.deterministic = 79;
}

// Picks a role that takes part in the call, restricted to outputs or inputs when asked.
int choose_role(FuzzedDataProvider& in, bool backward, int only_outputs /* -1 any, 0 inputs, 1 outputs */) {
    int candidates[kRoleCount], count = 0;
    for (int role = 0; role < kRoleCount; ++role)
        if (takes_part(role, backward) && (only_outputs < 0 || is_output(role, backward) == (only_outputs == 1)))
            candidates[count++] = role;
    return candidates[in.ConsumeIntegralInRange(0, count - 1)];
}

// Layout-level mutations change a spec before storage exists; returns false to skip this input.
bool apply_spec_mutation(FuzzedDataProvider& in, Call& call, Spec (&specs)[kRoleCount], int& mutated_role) {
    if (call.mutation == Mutation::ShapeMismatch) {
        mutated_role = choose_role(in, call.backward, -1);
        Spec& spec = specs[mutated_role];
        const int dim = in.ConsumeIntegralInRange(0, mutated_role == kLse ? 2 : 3);
        spec.shape[dim] += in.ConsumeIntegralInRange(1, 3);
        spec.strides = fattn_test::layout_strides(spec.shape, fattn_test::Layout::BHND);
        // Every shape check names both tensors it compares, so the message names this one.
        call.expect_invalid(kRoleName[mutated_role]);
    } else if (call.mutation == Mutation::Override) {
        mutated_role = choose_role(in, call.backward, -1);
        Spec& spec = specs[mutated_role];
        const int dim = in.ConsumeIntegralInRange(0, 3);
        if (in.ConsumeBool()) spec.shape[dim] = interesting_extent(in);
        else spec.strides[dim] = interesting_stride(in);
        // Every extent of a tensor must equal one of another's, so a single extent beyond
        // kMaxElements can never be consistent: such a call must be rejected like a malformed one.
        if (unbacked(spec)) call.expect_invalid(kRoleName[mutated_role]);
        else if (reach(spec) > kMaxElements) return false;  // well-formed, but its strides span too much memory
        else call.expect = Expect::Documented;
    }
    return true;
}

// Descriptor-level mutations, on `arg` after storage exists. Returns false when the chosen one
// cannot apply to this problem (then the call stays unmutated).
bool apply_arg_mutation(FuzzedDataProvider& in, Call& call) {
    Problem& p = call.problem;
    const bool bwd = call.backward;
    auto pick = [&](int only_outputs) {
        int role = choose_role(in, bwd, only_outputs);
        if (role == kLse && !bwd) p.with_lse = true;
        return role;
    };
    switch (call.mutation) {
        case Mutation::NullTensor: {
            int role = pick(-1);
            if (role == kLse && !bwd) return false;  // lse may be NULL in the forward
            call.expect_invalid(kRoleName[role]);
            call.null_role = role;
            return true;
        }
        case Mutation::NullData: { int role = pick(-1); operand(p, role).arg.data = nullptr; call.expect_invalid(kRoleName[role]); return true; }
        case Mutation::BadDtype: {
            constexpr int32_t kValues[] = {-1, 3, 4, 255, std::numeric_limits<int32_t>::min()};
            int role = pick(-1);
            operand(p, role).arg.dtype = kValues[in.ConsumeIntegralInRange<size_t>(0, std::size(kValues) - 1)];
            call.expect_invalid(kRoleName[role]);
            return true;
        }
        case Mutation::OtherDtype: {
            int role = pick(-1);
            fattn_tensor_t& arg = operand(p, role).arg;
            arg.dtype = (arg.dtype + in.ConsumeIntegralInRange(1, 2)) % 3;
            call.expect_invalid(kRoleName[role]);
            return true;
        }
        case Mutation::Reserved: { int role = pick(-1); operand(p, role).arg.reserved = in.ConsumeIntegralInRange(1, 1 << 30); call.expect_invalid(kRoleName[role]); return true; }
        case Mutation::NonPositiveShape: {
            int role = pick(-1);
            operand(p, role).arg.shape[in.ConsumeIntegralInRange(0, 3)] = in.ConsumeBool() ? 0 : -in.ConsumeIntegralInRange<int64_t>(1, std::numeric_limits<int64_t>::max());
            call.expect_invalid(kRoleName[role]);
            return true;
        }
        case Mutation::NegativeStride: {
            int role = pick(-1);
            operand(p, role).arg.strides[in.ConsumeIntegralInRange(0, 2)] = -in.ConsumeIntegralInRange<int64_t>(1, 1 << 20);
            call.expect_invalid(kRoleName[role]);
            return true;
        }
        case Mutation::InnerStride: { int role = pick(-1); operand(p, role).arg.strides[3] = in.ConsumeBool() ? 0 : 2; call.expect_invalid(kRoleName[role]); return true; }
        case Mutation::Overflow: {
            int role = pick(-1);
            fattn_tensor_t& arg = operand(p, role).arg;
            const int dim = in.ConsumeIntegralInRange(0, 2);
            arg.shape[dim] = int64_t{1} << 62;
            arg.strides[dim] = std::max<int64_t>(arg.strides[dim], 2);
            call.expect_invalid(kRoleName[role]);
            return true;
        }
        case Mutation::SelfOverlap: {
            int role = pick(1);
            fattn_tensor_t& arg = operand(p, role).arg;
            for (int dim = 0; dim < 3; ++dim)
                if (arg.shape[dim] > 1) {
                    arg.strides[dim] = 0;
                    call.expect_invalid(kRoleName[role]);
                    return true;
                }
            return false;
        }
        case Mutation::Alias: {
            int out = pick(1), in_role = pick(0);
            if (!bwd && out == kLse && in.ConsumeBool()) in_role = kO;  // lse must not overlap o either
            if (out == in_role) return false;
            // The output starts at the input's first byte, or one of its elements later while that
            // is still inside the input (starting exactly at its end would be legal).
            fattn_tensor_t& arg = operand(p, out).arg;
            const fattn_tensor_t& source = operand(p, in_role).arg;
            const int64_t step = fattn_test::dtype_bytes(static_cast<fattn_dtype_t>(arg.dtype));
            const int64_t source_bytes = fattn_test::dtype_bytes(static_cast<fattn_dtype_t>(source.dtype)) *
                                         reach(Spec{FATTN_DTYPE_F32, {source.shape[0], source.shape[1], source.shape[2], source.shape[3]},
                                                    {source.strides[0], source.strides[1], source.strides[2], source.strides[3]}});
            arg.data = static_cast<unsigned char*>(source.data) + (step < source_bytes && in.ConsumeBool() ? step : 0);
            call.expect_invalid(kRoleName[out]);
            return true;
        }
        case Mutation::GradientAlias: {
            if (!bwd) return false;
            const int pair = in.ConsumeIntegralInRange(0, 2);
            const int from = pair == 0 ? kDk : kDv, to = pair == 1 ? kDq : (pair == 0 ? kDq : kDk);
            operand(p, from).arg.data = operand(p, to).arg.data;
            call.expect_invalid(kRoleName[from]);
            return true;
        }
        case Mutation::Misaligned: {
            int role = pick(-1);
            fattn_tensor_t& arg = operand(p, role).arg;
            arg.data = static_cast<unsigned char*>(arg.data) + (arg.dtype == FATTN_DTYPE_F32 ? in.ConsumeIntegralInRange(1, 3) : 1);
            call.expect_invalid(kRoleName[role]);
            return true;
        }
        case Mutation::DescNull: call.null_desc = true; call.expect_invalid("desc"); return true;
        case Mutation::DescSize: call.given_desc.struct_size = in.ConsumeIntegralInRange(0u, 11u); call.expect_invalid("desc.struct_size"); return true;
        default: break;
    }
    // Field mutations need the field to be read: the full struct size.
    fattn_attention_desc_t& desc = call.given_desc;
    desc = p.desc;
    switch (call.mutation) {
        case Mutation::DescCausal: desc.causal = in.ConsumeBool() ? 2 : -1; call.expect_invalid("desc.causal"); return true;
        case Mutation::DescScale: {
            constexpr float kValues[] = {-1.0f, -1e-30f, std::numeric_limits<float>::quiet_NaN(),
                                         std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
            desc.softmax_scale = kValues[in.ConsumeIntegralInRange<size_t>(0, std::size(kValues) - 1)];
            call.expect_invalid("desc.softmax_scale");
            return true;
        }
        case Mutation::DescWindow: {
            int32_t& window = in.ConsumeBool() ? desc.window_left : desc.window_right;
            window = -in.ConsumeIntegralInRange(2, std::numeric_limits<int32_t>::max());
            call.expect_invalid(&window == &desc.window_left ? "desc.window_left" : "desc.window_right");
            if (&window == &desc.window_right) desc.causal = 0;
            return true;
        }
        case Mutation::DescCausalWindow: desc.causal = 1; desc.window_right = in.ConsumeIntegralInRange(1, 1000); call.expect_invalid("desc.window_right"); return true;
        case Mutation::DescDeterministic: desc.deterministic = in.ConsumeBool() ? 2 : -1; call.expect_invalid("desc.deterministic"); return true;
        case Mutation::NullHandle: call.null_handle = true; call.expect_invalid("handle"); return true;
        default: return false;
    }
}

// Shapes the reference can be run on; a success on anything else is itself a bug.
bool inputs_consistent(const Problem& p) {
    const Shape q = p.q.storage.shape(), k = p.k.storage.shape();
    return k[0] == q[0] && k[3] == q[3] && q[1] % k[1] == 0 && p.v.storage.shape() == k;
}
bool consistent(const Problem& p, bool backward) {
    const Shape q = p.q.storage.shape(), k = p.k.storage.shape();
    if (!inputs_consistent(p) || p.o.storage.shape() != q || p.lse.storage.shape() != Shape{q[0], q[1], q[2], 1})
        return false;
    return !backward || (p.dout.storage.shape() == q && p.dq.storage.shape() == q && p.dk.storage.shape() == k &&
                         p.dv.storage.shape() == k);
}

// True when `message` mentions `name` as an argument: "q.shape[3]=...", "dk is NULL", not the
// letter q inside another word.
bool names(const std::string& message, const std::string& name) {
    for (size_t at = message.find(name); at != std::string::npos; at = message.find(name, at + 1)) {
        const bool starts_word = at == 0 || !(std::isalnum(static_cast<unsigned char>(message[at - 1])) || message[at - 1] == '_');
        const size_t end = at + name.size();
        if (starts_word && (end == message.size() || std::strchr(".= [", message[end]) != nullptr)) return true;
    }
    return false;
}

// Decodes `in` into a call; false when the input cannot be backed by memory.
bool decode(FuzzedDataProvider& in, Call& call) {
    call.backward = in.ConsumeBool();
    const fattn_dtype_t dtype = static_cast<fattn_dtype_t>(in.ConsumeIntegralInRange(0, 2));
    Problem& p = call.problem;
    p.dtype = dtype;
    p.dims = choose_dims(in);
    choose_desc(in, call);
    p.with_lse = call.backward || in.ConsumeBool();
    call.mutation = in.ConsumeBool() ? Mutation::None
                                     : static_cast<Mutation>(in.ConsumeIntegralInRange<int>(1, static_cast<int>(Mutation::kCount) - 1));

    Spec specs[kRoleCount];
    for (int role = 0; role < kRoleCount; ++role) {
        Spec& spec = specs[role];
        spec.dtype = role == kLse ? FATTN_DTYPE_F32 : dtype;
        spec.shape = role == kLse ? p.dims.lse_shape()
                     : (role == kK || role == kV || role == kDk || role == kDv) ? p.dims.kv_shape()
                                                                              : p.dims.q_shape();
        // Broadcast only where the call reads the tensor and any value is legal (not o, not lse).
        const bool may_broadcast = !is_output(role, call.backward) && role != kO && role != kLse;
        spec.strides = choose_strides(in, spec.shape, may_broadcast);
    }
    const Spec unmutated[kRoleCount] = {specs[0], specs[1], specs[2], specs[3], specs[4],
                                        specs[5], specs[6], specs[7], specs[8]};
    int mutated_role = -1;
    if (!apply_spec_mutation(in, call, specs, mutated_role)) return false;
    if (mutated_role == kLse) p.with_lse = true;
    for (int role = 0; role < kRoleCount; ++role) {
        // A spec that must be rejected before any access is backed by the unmutated layout.
        const Spec& backing = unbacked(specs[role]) ? unmutated[role] : specs[role];
        Operand& op = operand(p, role);
        op = Operand(backing.dtype, backing.shape, backing.strides);
        for (int i = 0; i < 4; ++i) op.arg.shape[i] = specs[role].shape[i], op.arg.strides[i] = specs[role].strides[i];
    }

    std::mt19937_64 rng(in.ConsumeIntegral<uint64_t>());
    p.randomize(rng, in.ConsumeBool() ? 1.0 : 0.5);
    if (call.backward) {
        // The backward's o and lse are the forward's, when the shapes let the reference run.
        if (consistent(p, false) && p.q.storage.shape() == p.dims.q_shape())
            p.store_forward(p.reference_forward());
        else
            p.lse.storage.fill_random(rng);
    }
    if (call.mutation != Mutation::None && call.mutation != Mutation::ShapeMismatch && call.mutation != Mutation::Override &&
        !apply_arg_mutation(in, call))
        call.mutation = Mutation::None;
    return true;
}

fattn_status_t invoke(const Call& call) {
    const Problem& p = call.problem;
    auto arg = [&](int role) { return role == call.null_role ? nullptr : &operand(const_cast<Problem&>(p), role).arg; };
    const fattn_handle_t handle = call.null_handle ? nullptr : cpu_handle;
    const fattn_attention_desc_t* desc = call.null_desc ? nullptr : &call.given_desc;
    if (call.backward)
        return fattn_backward(handle, desc, arg(kQ), arg(kK), arg(kV), arg(kO), arg(kDout), arg(kLse), arg(kDq),
                              arg(kDk), arg(kDv));
    return fattn_forward(handle, desc, arg(kQ), arg(kK), arg(kV), arg(kO), p.with_lse ? arg(kLse) : nullptr);
}


// `poisoned`: every operand's bytes before the call (outputs were all poison).
void check_success(Call& call, const char* op, const Snapshots& poisoned) {
    Problem& p = call.problem;
    if (!consistent(p, call.backward)) report(p, op, "accepted tensors whose shapes disagree");
    std::string why;
    auto check = [&](int role, const Dense<double>& expected, const Dense<double>& terms, fattn_dtype_t dtype) {
        why += check_output(kRoleName[role], operand(p, role), expected, terms, dtype,
                            poisoned[static_cast<size_t>(role)]);
    };
    if (call.backward) {
        const fattn_test::Gradients<double> expected = p.reference_backward();
        check(kDq, expected.dq, expected.dq_terms, p.dtype);
        check(kDk, expected.dk, expected.dk_terms, p.dtype);
        check(kDv, expected.dv, expected.dv_terms, p.dtype);
    } else {
        const fattn_test::ForwardResult<double> expected = p.reference_forward();
        check(kO, expected.o, expected.o_terms, p.dtype);
        if (p.with_lse) check(kLse, expected.lse, expected.lse_terms, FATTN_DTYPE_F32);
        else if (!p.lse.storage.same_bytes(poisoned[kLse])) why += "lse written although NULL was passed; ";
    }
    if (!why.empty()) report(p, op, "succeeded with wrong results: " + why);
}

void run_call(Call& call) {
    Problem& p = call.problem;
    const char* op = call.backward ? "fattn_backward" : "fattn_forward";
    std::vector<Operand*> all;
    for (int role = 0; role < kRoleCount; ++role) all.push_back(&operand(p, role));
    const Snapshots before = snapshot(all);

    const fattn_status_t status = invoke(call);

    for (int role = 0; role < kRoleCount; ++role) {
        const bool may_change = status == FATTN_SUCCESS && is_output(role, call.backward);
        if (!may_change && !operand(p, role).storage.same_bytes(before[static_cast<size_t>(role)]))
            report(p, op, std::string("returned ") + status_name(status) + " but changed the bytes of " + kRoleName[role]);
    }
    const std::string message = fattn_last_error();
    switch (call.expect) {
        case Expect::Success:
            if (status != FATTN_SUCCESS) report(p, op, std::string("failed on a valid call: ") + status_name(status));
            break;
        case Expect::Invalid:
            if (status != FATTN_ERROR_INVALID_ARGUMENT)
                report(p, op, std::string("returned ") + status_name(status) + " for an invalid call (mutation " +
                                  std::to_string(static_cast<int>(call.mutation)) + ", expected to name '" +
                                  call.expected_name + "')");
            if (message.rfind(std::string(op) + ": ", 0) != 0 || !names(message, call.expected_name))
                report(p, op, "message does not name '" + call.expected_name + "'");
            ++counters.rejected_as_expected;
            return;
        case Expect::Documented:
            if (status != FATTN_SUCCESS && status != FATTN_ERROR_INVALID_ARGUMENT && status != FATTN_ERROR_UNSUPPORTED &&
                status != FATTN_ERROR_OUT_OF_MEMORY)
                report(p, op, std::string("returned ") + status_name(status));
            if (status != FATTN_SUCCESS) {
                if (message.empty()) report(p, op, "failed without a message");
                ++counters.documented_failures;
                return;
            }
            break;
    }
    check_success(call, op, before);
    ++counters.succeeded;
}

// The other entry points, with hostile arguments.
void probe_api(FuzzedDataProvider& in) {
    ++counters.api_probes;
    const int32_t backend = in.ConsumeIntegral<int32_t>();
    fattn_handle_t handle = nullptr;
    const fattn_status_t created = fuzz_create_raw(&handle, backend);
    const bool known = backend >= FATTN_BACKEND_AUTO && backend <= FATTN_BACKEND_CUDA;
    const bool expect_ok = backend == FATTN_BACKEND_AUTO || backend == FATTN_BACKEND_CPU ||
                           (backend == FATTN_BACKEND_CUDA && fattn_backend_available(FATTN_BACKEND_CUDA));
    const fattn_status_t expected = expect_ok ? FATTN_SUCCESS : known ? FATTN_ERROR_NO_DEVICE : FATTN_ERROR_INVALID_ARGUMENT;
    if (created != expected || (created != FATTN_SUCCESS) != (handle == nullptr)) {
        std::fprintf(stderr, "fattn_create(backend=%d) returned %s\n", backend, status_name(created));
        std::abort();
    }
    fattn_backend_t kind = FATTN_BACKEND_AUTO;
    void* stream = reinterpret_cast<void*>(static_cast<uintptr_t>(in.ConsumeIntegralInRange<uint32_t>(1, 1u << 30)));
    const bool ok = fattn_create(nullptr, FATTN_BACKEND_CPU) == FATTN_ERROR_INVALID_ARGUMENT &&
                    fattn_get_backend(nullptr, &kind) == FATTN_ERROR_INVALID_ARGUMENT &&
                    fattn_get_backend(cpu_handle, nullptr) == FATTN_ERROR_INVALID_ARGUMENT &&
                    fattn_get_backend(cpu_handle, &kind) == FATTN_SUCCESS && kind == FATTN_BACKEND_CPU &&
                    fattn_set_stream(cpu_handle, stream) == FATTN_ERROR_INVALID_ARGUMENT &&
                    fattn_set_stream(nullptr, nullptr) == FATTN_ERROR_INVALID_ARGUMENT &&
                    fattn_set_stream(cpu_handle, nullptr) == FATTN_SUCCESS &&
                    fuzz_status_string_raw(in.ConsumeIntegral<int32_t>()) != nullptr &&
                    fuzz_backend_available_raw(backend) == (expect_ok ? 1 : 0) &&
                    fattn_destroy(nullptr) == FATTN_SUCCESS && fattn_destroy(handle) == FATTN_SUCCESS;
    if (!ok) {
        std::fprintf(stderr, "an API probe got an unexpected status: %s\n", fattn_last_error());
        std::abort();
    }
}

void print_counters() {
    std::fprintf(stderr,
                 "fattn_fuzz: %llu calls succeeded and matched the reference, %llu invalid calls rejected as "
                 "expected, %llu overridden calls failed cleanly, %llu API probes\n",
                 static_cast<unsigned long long>(counters.succeeded),
                 static_cast<unsigned long long>(counters.rejected_as_expected),
                 static_cast<unsigned long long>(counters.documented_failures),
                 static_cast<unsigned long long>(counters.api_probes));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (fattn_create(&cpu_handle, FATTN_BACKEND_CPU) != FATTN_SUCCESS) {
        std::fprintf(stderr, "fattn_create failed: %s\n", fattn_last_error());
        std::abort();
    }
    std::atexit(print_counters);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzedDataProvider in(data, size);
    if (in.ConsumeIntegralInRange(0, 15) == 0) {
        probe_api(in);
        return 0;
    }
    Call call;
    if (!decode(in, call)) return -1;  // -1: not added to the corpus
    run_call(call);
    return 0;
}
