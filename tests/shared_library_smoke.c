/* Links libfattn.so from plain C99: the public header compiles as C, the shared library loads,
 * its version matches the header, and a small CPU forward runs and returns convex combinations of
 * the value rows (each output element lies between the smallest and largest value in its column). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fattn.h"

enum { HEADS = 2, ROWS = 5, DIM = 4, ELEMENTS = HEADS * ROWS * DIM };

static int fail(const char* what) {
    fprintf(stderr, "fattn_shared_smoke: %s (%s)\n", what, fattn_last_error());
    return 1;
}

static fattn_tensor_t tensor_of(float* data, int64_t last_dim) {
    fattn_tensor_t tensor;
    memset(&tensor, 0, sizeof tensor);
    tensor.data = data;
    tensor.dtype = FATTN_DTYPE_F32;
    tensor.shape[0] = 1, tensor.shape[1] = HEADS, tensor.shape[2] = ROWS, tensor.shape[3] = last_dim;
    tensor.strides[0] = HEADS * ROWS * last_dim, tensor.strides[1] = ROWS * last_dim;
    tensor.strides[2] = last_dim, tensor.strides[3] = 1;
    return tensor;
}

int main(void) {
    float q[ELEMENTS], k[ELEMENTS], v[ELEMENTS], o[ELEMENTS], lse[HEADS * ROWS];
    int i;
    for (i = 0; i < ELEMENTS; ++i) {
        q[i] = sinf(0.7f * (float)i + 0.1f);
        k[i] = cosf(1.3f * (float)i);
        v[i] = sinf(2.1f * (float)i + 0.5f);
        o[i] = NAN;
    }
    if (fattn_version_number() != FATTN_VERSION_NUMBER) return fail("version number differs from the header");

    fattn_handle_t handle = NULL;
    if (fattn_create(&handle, FATTN_BACKEND_CPU) != FATTN_SUCCESS) return fail("fattn_create");
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = 1;
    const fattn_tensor_t tq = tensor_of(q, DIM), tk = tensor_of(k, DIM), tv = tensor_of(v, DIM), to = tensor_of(o, DIM),
                         tlse = tensor_of(lse, 1);
    if (fattn_forward(handle, &desc, &tq, &tk, &tv, &to, &tlse) != FATTN_SUCCESS) return fail("fattn_forward");
    fattn_destroy(handle);

    for (i = 0; i < ELEMENTS; ++i) {
        const int head = i / (ROWS * DIM), column = i % DIM;
        float low = INFINITY, high = -INFINITY;
        int row;
        for (row = 0; row < ROWS; ++row) {
            const float value = v[(head * ROWS + row) * DIM + column];
            low = value < low ? value : low;
            high = value > high ? value : high;
        }
        if (!(o[i] >= low - 1e-6f && o[i] <= high + 1e-6f)) return fail("output outside the span of the values");
    }
    printf("fattn %s: shared library loaded, CPU forward ran\n", fattn_version_string());
    return 0;
}
