#include "validate.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <initializer_list>

#include "error.h"

namespace fattn {
namespace {

constexpr fattn_status_t kInvalid = FATTN_ERROR_INVALID_ARGUMENT;

struct ByteRange {
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;  // exclusive
    bool overlaps(const ByteRange& other) const { return begin < other.end && other.begin < end; }
};

// A tensor that passed the checks that need no other tensor.
struct CheckedTensor {
    const fattn_tensor_t* tensor = nullptr;
    const char* name = "";
    ByteRange bytes;

    int64_t shape(int i) const { return tensor->shape[i]; }
    DType dtype() const { return static_cast<DType>(tensor->dtype); }
    TensorView view() const {
        return TensorView{tensor->data, tensor->strides[0], tensor->strides[1], tensor->strides[2]};
    }
};

// Bytes of one element of a storage dtype.
int64_t dtype_size(DType dtype) { return dtype == DType::F32 ? 4 : 2; }

bool is_dtype(int32_t value) {
    return value == FATTN_DTYPE_F32 || value == FATTN_DTYPE_F16 || value == FATTN_DTYPE_BF16;
}

CheckedTensor check_tensor(const fattn_tensor_t* tensor, const char* name) {
    if (tensor == nullptr) fail(kInvalid, name, " is NULL");
    if (!is_dtype(tensor->dtype))
        fail(kInvalid, name, ".dtype=", tensor->dtype, " is not a fattn_dtype_t value");
    if (tensor->reserved != 0) fail(kInvalid, name, ".reserved=", tensor->reserved, " must be 0");
    if (tensor->data == nullptr) fail(kInvalid, name, ".data is NULL");
    for (int i = 0; i < 4; ++i) {
        if (tensor->shape[i] < 1)
            fail(kInvalid, name, ".shape[", i, "]=", tensor->shape[i], " must be >= 1");
    }
    for (int i = 0; i < 4; ++i) {
        if (tensor->strides[i] < 0)
            fail(kInvalid, name, ".strides[", i, "]=", tensor->strides[i], " must be >= 0");
    }
    if (tensor->strides[3] != 1)
        fail(kInvalid, name, ".strides[3]=", tensor->strides[3], " must be 1 (head_dim contiguous)");

    // Every element offset and byte offset must fit in int64, and the buffer in the address space.
    int64_t elements = 1;
    int64_t last_offset = 0;
    for (int i = 0; i < 4; ++i) {
        int64_t reach = 0;
        if (__builtin_mul_overflow(elements, tensor->shape[i], &elements) ||
            __builtin_mul_overflow(tensor->strides[i], tensor->shape[i] - 1, &reach) ||
            __builtin_add_overflow(last_offset, reach, &last_offset))
            fail(kInvalid, name, " is too large: its shape and strides overflow 64-bit element offsets");
    }
    const int64_t element_size = dtype_size(static_cast<DType>(tensor->dtype));
    int64_t span_elements = 0;
    int64_t span_bytes = 0;
    const auto begin = reinterpret_cast<std::uintptr_t>(tensor->data);
    std::uintptr_t end = 0;
    if (__builtin_add_overflow(last_offset, int64_t{1}, &span_elements) ||
        __builtin_mul_overflow(span_elements, element_size, &span_bytes) ||
        __builtin_add_overflow(begin, static_cast<std::uintptr_t>(span_bytes), &end))
        fail(kInvalid, name, " is too large: its byte extent overflows the address space");
    if (begin % static_cast<std::uintptr_t>(element_size) != 0)
        fail(kInvalid, name, ".data=", tensor->data, " is not aligned to its ", element_size, "-byte element");
    return CheckedTensor{tensor, name, ByteRange{begin, end}};
}

// An output must give every logical element its own memory, or threads would race on it.
// Sufficient test: with dimensions ordered by stride, each stride must step past the whole
// span of the dimensions inside it.
void check_no_self_overlap(const CheckedTensor& out) {
    int order[4] = {0, 1, 2, 3};
    const int64_t* strides = out.tensor->strides;
    std::sort(order, order + 4, [&](int a, int b) { return strides[a] < strides[b]; });
    int64_t inner_span = 0;  // largest offset reachable by the dimensions handled so far
    for (int dim : order) {
        const int64_t extent = out.shape(dim);
        if (extent == 1) continue;
        if (strides[dim] <= inner_span)
            fail(kInvalid, out.name, ".strides[", dim, "]=", strides[dim],
                 " makes distinct elements share memory; an output needs one location per element");
        inner_span += strides[dim] * (extent - 1);
    }
}

void check_disjoint(const CheckedTensor& out, const CheckedTensor& in) {
    if (out.bytes.overlaps(in.bytes))
        fail(kInvalid, out.name, " overlaps the memory of input ", in.name, "; outputs must not overlap inputs");
}

void check_same_dtype(const CheckedTensor& tensor, const CheckedTensor& q) {
    if (tensor.tensor->dtype != q.tensor->dtype)
        fail(kInvalid, tensor.name, ".dtype=", tensor.tensor->dtype, " differs from ", q.name,
             ".dtype=", q.tensor->dtype);
}

void check_same_shape(const CheckedTensor& tensor, const CheckedTensor& like) {
    for (int i = 0; i < 4; ++i) {
        if (tensor.shape(i) != like.shape(i))
            fail(kInvalid, tensor.name, ".shape[", i, "]=", tensor.shape(i), " differs from ", like.name,
                 ".shape[", i, "]=", like.shape(i));
    }
}

// `tensor` must have q's dtype and the shape of `like` (q for o/dout/dq, k for dk/dv).
void check_matches(const CheckedTensor& tensor, const CheckedTensor& like, const CheckedTensor& q) {
    check_same_dtype(tensor, q);
    check_same_shape(tensor, like);
}

// An output needs its own memory: one location per element, none shared with any input.
void check_output(const CheckedTensor& out, std::initializer_list<const CheckedTensor*> inputs) {
    check_no_self_overlap(out);
    for (const CheckedTensor* input : inputs) check_disjoint(out, *input);
}

void check_lse(const CheckedTensor& lse, const CheckedTensor& q) {
    if (lse.dtype() != DType::F32)
        fail(kInvalid, "lse.dtype=", lse.tensor->dtype, " must be FATTN_DTYPE_F32 (", FATTN_DTYPE_F32, ")");
    for (int i = 0; i < 3; ++i) {
        if (lse.shape(i) != q.shape(i))
            fail(kInvalid, "lse.shape[", i, "]=", lse.shape(i), " differs from q.shape[", i, "]=", q.shape(i));
    }
    if (lse.shape(3) != 1) fail(kInvalid, "lse.shape[3]=", lse.shape(3), " must be 1");
}

fattn_attention_desc_t read_desc(const fattn_attention_desc_t* desc) {
    if (desc == nullptr) fail(kInvalid, "desc is NULL");
    constexpr std::size_t kRequired = offsetof(fattn_attention_desc_t, softmax_scale) + sizeof(float);
    if (desc->struct_size < kRequired)
        fail(kInvalid, "desc.struct_size=", desc->struct_size, " is smaller than the ", kRequired,
             " bytes of its first three fields");
    fattn_attention_desc_t resolved = FATTN_ATTENTION_DESC_INIT;
    // Only the caller's struct_size bytes exist; later fields keep their defaults.
    std::memcpy(&resolved, desc, std::min<std::size_t>(desc->struct_size, sizeof resolved));
    if (resolved.causal != 0 && resolved.causal != 1)
        fail(kInvalid, "desc.causal=", resolved.causal, " must be 0 or 1");
    if (!std::isfinite(resolved.softmax_scale) || resolved.softmax_scale < 0.0f)
        fail(kInvalid, "desc.softmax_scale=", resolved.softmax_scale, " must be finite and >= 0");
    if (resolved.window_left < -1)
        fail(kInvalid, "desc.window_left=", resolved.window_left, " must be >= -1");
    if (resolved.window_right < -1)
        fail(kInvalid, "desc.window_right=", resolved.window_right, " must be >= -1");
    if (resolved.causal == 1 && resolved.window_right > 0)
        fail(kInvalid, "desc.window_right=", resolved.window_right,
             " contradicts desc.causal=1 (causal means window_right=0)");
    if (resolved.deterministic != 0 && resolved.deterministic != 1)
        fail(kInvalid, "desc.deterministic=", resolved.deterministic, " must be 0 or 1");
    return resolved;
}

// What forward and backward both take, each checked on its own, in the order of the arguments.
struct SharedArguments {
    fattn_attention_desc_t desc;
    CheckedTensor q, k, v, o;
};

SharedArguments check_shared(const fattn_attention_desc_t* desc, const fattn_tensor_t* q, const fattn_tensor_t* k,
                             const fattn_tensor_t* v, const fattn_tensor_t* o) {
    const fattn_attention_desc_t resolved = read_desc(desc);
    return SharedArguments{resolved, check_tensor(q, "q"), check_tensor(k, "k"), check_tensor(v, "v"),
                           check_tensor(o, "o")};
}

// Shapes of q, k, v agree; fills the sizes, scale and mask of `params`.
void fill_problem(AttnParams& params, const SharedArguments& shared) {
    const fattn_attention_desc_t& desc = shared.desc;
    const CheckedTensor &q = shared.q, &k = shared.k, &v = shared.v;
    check_same_dtype(k, q);
    check_same_dtype(v, q);
    if (k.shape(0) != q.shape(0))
        fail(kInvalid, "k.shape[0]=", k.shape(0), " differs from q.shape[0]=", q.shape(0));
    if (k.shape(3) != q.shape(3))
        fail(kInvalid, "k.shape[3]=", k.shape(3), " differs from q.shape[3]=", q.shape(3));
    if (q.shape(1) % k.shape(1) != 0)
        fail(kInvalid, "q.shape[1]=", q.shape(1), " is not a multiple of k.shape[1]=", k.shape(1),
             " (query heads must divide evenly among key/value heads)");
    check_same_shape(v, k);

    params.dtype = q.dtype();
    params.batch = q.shape(0);
    params.heads_q = q.shape(1);
    params.seqlen_q = q.shape(2);
    params.head_dim = q.shape(3);
    params.heads_kv = k.shape(1);
    params.seqlen_k = k.shape(2);
    params.heads_per_kv = params.heads_q / params.heads_kv;

    params.scale = desc.softmax_scale > 0.0f
                       ? desc.softmax_scale
                       : static_cast<float>(1.0 / std::sqrt(static_cast<double>(params.head_dim)));
    params.scale_log2 = static_cast<float>(static_cast<double>(params.scale) * 1.4426950408889634);

    params.mask.seqlen_q = params.seqlen_q;
    params.mask.seqlen_k = params.seqlen_k;
    params.mask.diag_offset = params.seqlen_k - params.seqlen_q;
    params.mask.window_left = desc.window_left;
    params.mask.window_right = desc.causal ? 0 : desc.window_right;
    params.deterministic = desc.deterministic == 1;

    params.q = q.view();
    params.k = k.view();
    params.v = v.view();
}

}  // namespace

AttnParams build_forward_params(const fattn_attention_desc_t* desc, const fattn_tensor_t* q_tensor,
                                const fattn_tensor_t* k_tensor, const fattn_tensor_t* v_tensor,
                                const fattn_tensor_t* o_tensor, const fattn_tensor_t* lse_tensor) {
    const SharedArguments shared = check_shared(desc, q_tensor, k_tensor, v_tensor, o_tensor);
    const CheckedTensor &q = shared.q, &k = shared.k, &v = shared.v, &o = shared.o;

    AttnParams params;
    fill_problem(params, shared);
    check_matches(o, q, q);
    check_output(o, {&q, &k, &v});
    params.o = o.view();

    if (lse_tensor != nullptr) {
        const CheckedTensor lse = check_tensor(lse_tensor, "lse");
        check_lse(lse, q);
        check_output(lse, {&q, &k, &v, &o});
        params.lse = lse.view();
    }
    return params;
}

AttnBwdParams build_backward_params(const fattn_attention_desc_t* desc, const fattn_tensor_t* q_tensor,
                                    const fattn_tensor_t* k_tensor, const fattn_tensor_t* v_tensor,
                                    const fattn_tensor_t* o_tensor, const fattn_tensor_t* dout_tensor,
                                    const fattn_tensor_t* lse_tensor, const fattn_tensor_t* dq_tensor,
                                    const fattn_tensor_t* dk_tensor, const fattn_tensor_t* dv_tensor) {
    const SharedArguments shared = check_shared(desc, q_tensor, k_tensor, v_tensor, o_tensor);
    const CheckedTensor &q = shared.q, &k = shared.k, &v = shared.v, &o = shared.o;
    const CheckedTensor dout = check_tensor(dout_tensor, "dout");
    const CheckedTensor lse = check_tensor(lse_tensor, "lse");
    const CheckedTensor dq = check_tensor(dq_tensor, "dq");
    const CheckedTensor dk = check_tensor(dk_tensor, "dk");
    const CheckedTensor dv = check_tensor(dv_tensor, "dv");

    AttnBwdParams params;
    fill_problem(params, shared);
    for (const CheckedTensor* like_q : {&o, &dout, &dq}) check_matches(*like_q, q, q);
    for (const CheckedTensor* like_k : {&dk, &dv}) check_matches(*like_k, k, q);
    check_lse(lse, q);
    for (const CheckedTensor* output : {&dq, &dk, &dv}) check_output(*output, {&q, &k, &v, &o, &dout, &lse});
    // Gradients may interleave in one packed buffer (dqkv), so only an outright alias is refused.
    if (dk.tensor->data == dq.tensor->data || dv.tensor->data == dq.tensor->data)
        fail(kInvalid, dk.tensor->data == dq.tensor->data ? "dk" : "dv", ".data is the same memory as dq.data");
    if (dv.tensor->data == dk.tensor->data) fail(kInvalid, "dv.data is the same memory as dk.data");
    params.o = o.view();
    params.lse = lse.view();
    params.dout = dout.view();
    params.dq = dq.view();
    params.dk = dk.view();
    params.dv = dv.view();
    return params;
}

}  // namespace fattn
