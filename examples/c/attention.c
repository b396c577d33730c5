/*
 * attention.c: a complete small C program using libfattn. It runs causal grouped-query attention
 * forward and backward on the CPU backend and checks both against a plain double-precision
 * computation of the same formulas, printing the largest errors.
 *
 * Build against an installed fattn, either way:
 *     cc attention.c $(pkg-config --cflags --libs fattn) -lm -o attention
 *     cmake -S . -B build -DCMAKE_PREFIX_PATH=<fattn prefix> && cmake --build build
 */
#include <fattn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* q, out, dout: [BATCH, HEADS, SEQ, DIM]; k, v: [BATCH, KV_HEADS, SEQ, DIM] (two query heads share
 * each key/value head). Contiguous [B,H,N,D] here; strides also express [B,N,H,D] and padding. */
enum { BATCH = 2, HEADS = 4, KV_HEADS = 2, SEQ = 100, DIM = 64 };
enum { Q_SIZE = BATCH * HEADS * SEQ * DIM, KV_SIZE = BATCH * KV_HEADS * SEQ * DIM };

#define CHECK(call)                                                                        \
    do {                                                                                   \
        fattn_status_t status_ = (call);                                                   \
        if (status_ != FATTN_SUCCESS) {                                                    \
            fprintf(stderr, "%s failed: %s: %s\n", #call, fattn_status_string(status_),   \
                    fattn_last_error());                                                   \
            exit(EXIT_FAILURE);                                                            \
        }                                                                                  \
    } while (0)

static fattn_tensor_t contiguous_tensor(void* data, fattn_dtype_t dtype, int64_t heads, int64_t dim_last) {
    fattn_tensor_t tensor = {data, dtype, 0, {BATCH, heads, SEQ, dim_last},
                             {heads * SEQ * dim_last, SEQ * dim_last, dim_last, 1}};
    return tensor;
}

static void fill_random(float* values, int count, unsigned* seed) {
    for (int i = 0; i < count; ++i) {
        *seed = *seed * 1664525u + 1013904223u;
        values[i] = (float)((*seed >> 8) / 8388608.0 - 1.0); /* uniform in [-1, 1) */
    }
}

static size_t at(int b, int h, int heads, int n, int d) {
    return (((size_t)b * heads + h) * SEQ + n) * DIM + d;
}

static double dot_rows(const float* x, size_t x_row, const float* y, size_t y_row) {
    double sum = 0.0;
    for (int d = 0; d < DIM; ++d) sum += (double)x[x_row + d] * y[y_row + d];
    return sum;
}

static double max_difference(const float* got, const double* expected, int count) {
    double worst = 0.0;
    for (int i = 0; i < count; ++i) worst = fmax(worst, fabs(got[i] - expected[i]));
    return worst;
}

/* The same attention in double, row by row: causal (query i sees keys 0..i), scale 1/sqrt(DIM). */
static void reference(const float* q, const float* k, const float* v, const float* dout, double* out,
                      double* dq, double* dk, double* dv) {
    const double scale = 1.0 / sqrt((double)DIM);
    double p[SEQ];
    for (int i = 0; i < KV_SIZE; ++i) dk[i] = dv[i] = 0.0;
    for (int b = 0; b < BATCH; ++b)
        for (int h = 0; h < HEADS; ++h) {
            const int kv_head = h / (HEADS / KV_HEADS);
            for (int i = 0; i < SEQ; ++i) {
                const size_t row = at(b, h, HEADS, i, 0);
                double row_max = -INFINITY, sum = 0.0, delta = 0.0;
                for (int j = 0; j <= i; ++j) {
                    p[j] = scale * dot_rows(q, row, k, at(b, kv_head, KV_HEADS, j, 0));
                    row_max = fmax(row_max, p[j]);
                }
                for (int j = 0; j <= i; ++j) sum += (p[j] = exp(p[j] - row_max));
                for (int j = 0; j <= i; ++j) p[j] /= sum;
                for (int d = 0; d < DIM; ++d) {
                    double o = 0.0;
                    for (int j = 0; j <= i; ++j) o += p[j] * v[at(b, kv_head, KV_HEADS, j, d)];
                    out[row + d] = o;
                    delta += o * dout[row + d];
                }
                for (int d = 0; d < DIM; ++d) dq[row + d] = 0.0;
                for (int j = 0; j <= i; ++j) {
                    const size_t key = at(b, kv_head, KV_HEADS, j, 0);
                    const double ds = p[j] * (dot_rows(dout, row, v, key) - delta);
                    for (int d = 0; d < DIM; ++d) {
                        dq[row + d] += scale * ds * k[key + d];
                        dk[key + d] += scale * ds * q[row + d];
                        dv[key + d] += p[j] * dout[row + d];
                    }
                }
            }
        }
}

int main(void) {
    static float q[Q_SIZE], k[KV_SIZE], v[KV_SIZE], out[Q_SIZE], dout[Q_SIZE], lse[BATCH * HEADS * SEQ];
    static float dq[Q_SIZE], dk[KV_SIZE], dv[KV_SIZE];
    static double want_out[Q_SIZE], want_dq[Q_SIZE], want_dk[KV_SIZE], want_dv[KV_SIZE];
    unsigned seed = 2024u;
    fill_random(q, Q_SIZE, &seed);
    fill_random(k, KV_SIZE, &seed);
    fill_random(v, KV_SIZE, &seed);
    fill_random(dout, Q_SIZE, &seed);

    fattn_tensor_t tq = contiguous_tensor(q, FATTN_DTYPE_F32, HEADS, DIM);
    fattn_tensor_t tk = contiguous_tensor(k, FATTN_DTYPE_F32, KV_HEADS, DIM);
    fattn_tensor_t tv = contiguous_tensor(v, FATTN_DTYPE_F32, KV_HEADS, DIM);
    fattn_tensor_t to = contiguous_tensor(out, FATTN_DTYPE_F32, HEADS, DIM);
    fattn_tensor_t tdout = contiguous_tensor(dout, FATTN_DTYPE_F32, HEADS, DIM);
    fattn_tensor_t tlse = contiguous_tensor(lse, FATTN_DTYPE_F32, HEADS, 1); /* always f32 [B,H,N,1] */
    fattn_tensor_t tdq = contiguous_tensor(dq, FATTN_DTYPE_F32, HEADS, DIM);
    fattn_tensor_t tdk = contiguous_tensor(dk, FATTN_DTYPE_F32, KV_HEADS, DIM);
    fattn_tensor_t tdv = contiguous_tensor(dv, FATTN_DTYPE_F32, KV_HEADS, DIM);

    fattn_handle_t handle;
    CHECK(fattn_create(&handle, FATTN_BACKEND_CPU));
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = 1;
    CHECK(fattn_forward(handle, &desc, &tq, &tk, &tv, &to, &tlse));
    CHECK(fattn_backward(handle, &desc, &tq, &tk, &tv, &to, &tdout, &tlse, &tdq, &tdk, &tdv));

    /* A bad call returns a status and a message naming the argument; nothing is written. */
    tk.shape[3] = DIM / 2;
    fattn_status_t status = fattn_forward(handle, &desc, &tq, &tk, &tv, &to, &tlse);
    printf("bad head_dim: %s: %s\n", fattn_status_string(status), fattn_last_error());
    CHECK(fattn_destroy(handle));

    reference(q, k, v, dout, want_out, want_dq, want_dk, want_dv);
    const double errors[4] = {max_difference(out, want_out, Q_SIZE), max_difference(dq, want_dq, Q_SIZE),
                              max_difference(dk, want_dk, KV_SIZE), max_difference(dv, want_dv, KV_SIZE)};
    const char* names[4] = {"out", "dq", "dk", "dv"};
    /* float32 storage: errors of a few float32 ulps of values of order 1 are expected. */
    const double tolerance = 1e-5;
    int failures = status == FATTN_ERROR_INVALID_ARGUMENT ? 0 : 1;
    printf("fattn %s, causal GQA attention B=%d Hq=%d Hkv=%d N=%d D=%d, float32 on the CPU\n",
           fattn_version_string(), BATCH, HEADS, KV_HEADS, SEQ, DIM);
    for (int i = 0; i < 4; ++i) {
        printf("  %-4s max |fattn - double reference| = %.2e\n", names[i], errors[i]);
        failures += !(errors[i] <= tolerance);
    }
    puts(failures ? "FAILED" : "OK");
    return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
