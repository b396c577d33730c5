/*
 * fattn.h: the public C ABI of libfattn, fused exact attention (FlashAttention-2 class)
 * forward and backward on CUDA GPUs and on the CPU.
 *
 * This header is the whole contract: plain C99, opaque handle, explicit status codes,
 * thread-local error text, and structs that only ever grow at their end.
 * ABI stability: names, numeric values and struct layouts below never change within a
 * major version; new functions, enum values and trailing descriptor fields may be added.
 *
 * Minimal use:
 *     fattn_handle_t h;
 *     if (fattn_create(&h, FATTN_BACKEND_AUTO) != FATTN_SUCCESS) puts(fattn_last_error());
 *     fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
 *     desc.causal = 1;
 *     fattn_forward(h, &desc, &q, &k, &v, &o, &lse);
 *     fattn_destroy(h);
 */
#ifndef FATTN_H
#define FATTN_H

#include <stdint.h>

#if defined(_WIN32)
#  if defined(FATTN_BUILDING_LIBRARY)
#    define FATTN_API __declspec(dllexport)
#  else
#    define FATTN_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define FATTN_API __attribute__((visibility("default")))
#else
#  define FATTN_API
#endif

/* In C++ the enums get int as their fixed underlying type, so any int a C caller passes (say
 * backend = 7) is a valid value to inspect and reject; their size and values are C's. */
#ifdef __cplusplus
#define FATTN_ENUM_BASE : int
#else
#define FATTN_ENUM_BASE
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versioning ------------------------------------------------------------------------- */
#define FATTN_VERSION_MAJOR 0
#define FATTN_VERSION_MINOR 1
#define FATTN_VERSION_PATCH 0
#define FATTN_VERSION_NUMBER (FATTN_VERSION_MAJOR * 10000 + FATTN_VERSION_MINOR * 100 + FATTN_VERSION_PATCH)

FATTN_API uint32_t    fattn_version_number(void);  /* == FATTN_VERSION_NUMBER of the built library */
FATTN_API const char* fattn_version_string(void);  /* "0.1.0" */

/* ---- Status codes ----------------------------------------------------------------------- */
typedef enum fattn_status FATTN_ENUM_BASE {
    FATTN_SUCCESS                = 0,
    FATTN_ERROR_INVALID_ARGUMENT = 10, /* NULL where a pointer is required, bad shape/stride/dtype, tensors that disagree */
    FATTN_ERROR_UNSUPPORTED      = 20, /* a valid request this backend or build cannot run (e.g. head_dim 320 on CUDA) */
    FATTN_ERROR_OUT_OF_MEMORY    = 30, /* host or device allocation failed; nothing was written */
    FATTN_ERROR_NO_DEVICE        = 35, /* CUDA backend asked for, but no usable GPU or no CUDA support built in */
    FATTN_ERROR_BACKEND          = 40, /* the CUDA runtime/driver reported an error */
    FATTN_ERROR_INTERNAL         = 90  /* a bug in fattn */
} fattn_status_t;

/* Static text for a status; never NULL, also for unknown codes. */
FATTN_API const char* fattn_status_string(fattn_status_t status);
/* This thread's message of its last failed call; "" if none. Valid until this thread's next fattn call. */
FATTN_API const char* fattn_last_error(void);

/* ---- Backends, dtypes, handle ----------------------------------------------------------- */
typedef enum fattn_backend FATTN_ENUM_BASE {
    FATTN_BACKEND_AUTO = 0,
    FATTN_BACKEND_CPU  = 1,
    FATTN_BACKEND_CUDA = 2
} fattn_backend_t;

typedef enum fattn_dtype FATTN_ENUM_BASE {
    FATTN_DTYPE_F32  = 0,
    FATTN_DTYPE_F16  = 1,
    FATTN_DTYPE_BF16 = 2
} fattn_dtype_t;

typedef struct fattn_handle_s* fattn_handle_t;

/* 1 if the backend is usable on this machine now, else 0. AUTO is always available. */
FATTN_API int            fattn_backend_available(fattn_backend_t backend);
/* AUTO picks CUDA when built with CUDA support and the current device has compute capability >= 8.0, else CPU. */
FATTN_API fattn_status_t fattn_create(fattn_handle_t* handle, fattn_backend_t backend);
/* NULL is accepted and is a no-op. */
FATTN_API fattn_status_t fattn_destroy(fattn_handle_t handle);
FATTN_API fattn_status_t fattn_get_backend(fattn_handle_t handle, fattn_backend_t* backend);
/* CUDA: a cudaStream_t (NULL = default stream); CPU: only NULL. */
FATTN_API fattn_status_t fattn_set_stream(fattn_handle_t handle, void* cuda_stream);

/* ---- Tensors ---------------------------------------------------------------------------- */
typedef struct fattn_tensor {
    void*   data;       /* host memory for the CPU backend, device memory for the CUDA backend */
    int32_t dtype;      /* a fattn_dtype_t value */
    int32_t reserved;   /* must be 0 */
    int64_t shape[4];   /* logical [batch, heads, seqlen, head_dim] */
    int64_t strides[4]; /* in elements, not bytes; any non-negative values, but strides[3] must be 1 */
} fattn_tensor_t;       /* 80 bytes on LP64 */

/* ---- Attention descriptor --------------------------------------------------------------- */
typedef struct fattn_attention_desc {
    uint32_t struct_size;   /* sizeof(fattn_attention_desc_t) as the caller compiled it */
    int32_t  causal;        /* 0 or 1 */
    float    softmax_scale; /* 0.0f selects 1/sqrt(head_dim); negative or non-finite is invalid */
    int32_t  window_left;   /* sliding window: keys at most this far left of the diagonal; -1 = unbounded */
    int32_t  window_right;  /* keys at most this far right of the diagonal; -1 = unbounded */
    int32_t  deterministic; /* 1: backward results are bit-identical from run to run */
} fattn_attention_desc_t;

#define FATTN_ATTENTION_DESC_INIT { sizeof(fattn_attention_desc_t), 0, 0.0f, -1, -1, 0 }

/* ---- Compute ---------------------------------------------------------------------------- */
/* o = softmax(scale * q k^T + mask) v; lse (f32, [B,Hq,Nq,1]) may be NULL. */
FATTN_API fattn_status_t fattn_forward(fattn_handle_t handle, const fattn_attention_desc_t* desc,
                                       const fattn_tensor_t* q, const fattn_tensor_t* k,
                                       const fattn_tensor_t* v,
                                       const fattn_tensor_t* o,    /* written */
                                       const fattn_tensor_t* lse); /* written; may be NULL */

/* Gradients of the forward above; lse is the forward's. dq, dk, dv are written. */
FATTN_API fattn_status_t fattn_backward(fattn_handle_t handle, const fattn_attention_desc_t* desc,
                                        const fattn_tensor_t* q, const fattn_tensor_t* k,
                                        const fattn_tensor_t* v, const fattn_tensor_t* o,
                                        const fattn_tensor_t* dout, const fattn_tensor_t* lse,
                                        const fattn_tensor_t* dq, const fattn_tensor_t* dk,
                                        const fattn_tensor_t* dv);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FATTN_H */
