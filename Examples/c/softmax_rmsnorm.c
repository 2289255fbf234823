/*
 * softmax_rmsnorm.c — row softmax and RMSNorm of a matrix on one NeuronCore, checked on the host.
 *
 *   make -C Examples/c && Examples/c/build/softmax_rmsnorm [ROWS COLUMNS]   (default 300 1000)
 *
 * X [ROWS, COLUMNS] (fp32, in HBM) is processed 128 rows at a time, one row per SBUF partition (the
 * last tile has ROWS % 128 rows). For each tile the kernel computes both
 *
 *   softmax(x)  = exp(x - max(x)) / sum(exp(x - max(x)))               per row
 *   rmsnorm(x)  = x / sqrt(mean(x^2) + eps) * w                        per row, w a weight row
 *
 * with the instructions NKI kernels use for them:
 *   softmax   TENSOR_REDUCE max, negated    -> -max            [P,1]  (DVE)
 *             ACTIVATE exp, bias = -max     -> exp(x - max)    [P,C]  (ACT), and with
 *                                              accumulate_out its row sums [P,1] in the same pass
 *             ACTIVATE reciprocal on sums   -> 1 / sum         [P,1]  (ACT)
 *             TENSOR_SCALAR multiply by the [P,1] tile          [P,C]  (DVE)
 *   rmsnorm   ACTIVATE square, accumulate_out -> sum(x^2)      [P,1]  (ACT)
 *             TENSOR_SCALAR * (1/C), + eps  -> mean(x^2) + eps [P,1]  (DVE, two ALU stages)
 *             ACTIVATE rsqrt                -> 1 / rms         [P,1]  (ACT)
 *             TENSOR_SCALAR multiply by the [P,1] tile          [P,C]  (DVE)
 *             TENSOR_TENSOR multiply by w                       [P,C]  (DVE)
 * The weight row w is loaded once, into all 128 partitions, by one DMA_COPY whose HBM access
 * pattern has a partition stride of 0: every partition reads the same row (a broadcast).
 *
 * The instructions run on three engines (DMA, ACT, DVE), each with its own stream; here each
 * step needs the one before it, so the kernel keeps them in order with one semaphore as a chain:
 * instruction i of the chain waits until the semaphore is at least i, and adds 1 when it ends.
 * (gemm.c shows a kernel whose engines overlap, with a semaphore per hand-off.)
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vtrn.h"

/* Runs a vtrn call; on any status but VTRN_SUCCESS prints where, the status and the library's
 * message, then jumps to `fail` (so resources are released). Copy it into your own code. */
#define CHECK(call)                                                                              \
    do {                                                                                         \
        vtrn_status_t check_status_ = (call);                                                    \
        if (check_status_ != VTRN_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: %s failed: %s (%d): %s\n", __FILE__, __LINE__, #call,        \
                    vtrn_status_string(check_status_), (int)check_status_, vtrn_last_error());   \
            goto fail;                                                                           \
        }                                                                                        \
    } while (0)

#define PARTITIONS 128u
#define EPSILON 1e-6f

static double now_seconds(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (double)time.tv_sec + (double)time.tv_nsec * 1e-9;
}

/* The chain: every instruction of the kernel waits for the one before it. */
struct chain {
    int semaphore;
    uint32_t length; /* instructions chained so far */
};

/* The sync of the chain's next instruction: wait for all before it, then count itself. */
static const vtrn_sync_t *next_in_chain(struct chain *chain, vtrn_sync_t *sync) {
    vtrn_sync_t next = VTRN_SYNC_NONE;
    if (chain->length > 0) {
        next.wait_semaphore = chain->semaphore;
        next.wait_value = chain->length;
    }
    next.signal_semaphore = chain->semaphore;
    next.signal_op = VTRN_SEMAPHORE_ADD;
    next.signal_value = 1;
    chain->length++;
    *sync = next;
    return sync;
}

/* A scalar operand: an immediate, or a [P,1] tile (one value per partition). */
static vtrn_scalar_t immediate(float value) {
    vtrn_scalar_t scalar;
    memset(&scalar, 0, sizeof scalar);
    scalar.is_tile = 0;
    scalar.value = value;
    return scalar;
}

static vtrn_scalar_t per_partition(vtrn_access_t tile) {
    vtrn_scalar_t scalar;
    memset(&scalar, 0, sizeof scalar);
    scalar.is_tile = 1;
    scalar.tile = tile;
    return scalar;
}

/* Builds the kernel: parameters "x" [rows, columns], "w" [columns], "softmax" and "rmsnorm"
 * [rows, columns], all fp32. Returns the status of the first call that failed. */
static vtrn_status_t build_kernel(vtrn_program_t program, uint32_t rows, uint32_t columns) {
    vtrn_status_t status = VTRN_SUCCESS;
#define TRY(call)                                             \
    do {                                                      \
        if ((status = (call)) != VTRN_SUCCESS) return status; \
    } while (0)
    const uint64_t row_bytes = (uint64_t)columns * sizeof(float);
    uint32_t x = 0, w = 0, softmax = 0, rmsnorm = 0;
    TRY(vtrn_program_add_parameter(program, "x", rows * row_bytes, &x));
    TRY(vtrn_program_add_parameter(program, "w", row_bytes, &w));
    TRY(vtrn_program_add_parameter(program, "softmax", rows * row_bytes, &softmax));
    TRY(vtrn_program_add_parameter(program, "rmsnorm", rows * row_bytes, &rmsnorm));

    /* SBUF, per partition: four [P, columns] tiles, then the [P,1] columns. */
    const uint64_t weights_at = 0, x_at = row_bytes, work_at = 2 * row_bytes, y_at = 3 * row_bytes;
    const uint64_t columns_at = 4 * row_bytes;
    const uint64_t negative_max_at = columns_at, sums_at = columns_at + 4, inverse_sums_at = columns_at + 8;
    const uint64_t squares_at = columns_at + 12, mean_square_at = columns_at + 16, inverse_rms_at = columns_at + 20;

    struct chain chain = { 0, 0 };
    vtrn_sync_t sync;
    const vtrn_scalar_t one = immediate(1.0f);

    /* w into every partition: partition stride 0 reads the same row 128 times. */
    TRY(vtrn_program_dma_copy(program, vtrn_sbuf(0, PARTITIONS, weights_at, VTRN_DTYPE_FP32, columns),
                              vtrn_hbm(w, 0, VTRN_DTYPE_FP32, PARTITIONS, 0, columns), next_in_chain(&chain, &sync)));

    for (uint32_t first_row = 0; first_row < rows; first_row += PARTITIONS) {
        const uint32_t p = rows - first_row < PARTITIONS ? rows - first_row : PARTITIONS;
        const uint64_t hbm_offset = first_row * row_bytes;
        /* The tiles of this row block: [p, columns] and [p, 1]. */
        const vtrn_access_t weights = vtrn_sbuf(0, p, weights_at, VTRN_DTYPE_FP32, columns);
        const vtrn_access_t x_tile = vtrn_sbuf(0, p, x_at, VTRN_DTYPE_FP32, columns);
        const vtrn_access_t work = vtrn_sbuf(0, p, work_at, VTRN_DTYPE_FP32, columns);
        const vtrn_access_t y = vtrn_sbuf(0, p, y_at, VTRN_DTYPE_FP32, columns);
        const vtrn_access_t negative_max = vtrn_sbuf(0, p, negative_max_at, VTRN_DTYPE_FP32, 1);
        const vtrn_access_t sums = vtrn_sbuf(0, p, sums_at, VTRN_DTYPE_FP32, 1);
        const vtrn_access_t inverse_sums = vtrn_sbuf(0, p, inverse_sums_at, VTRN_DTYPE_FP32, 1);
        const vtrn_access_t squares = vtrn_sbuf(0, p, squares_at, VTRN_DTYPE_FP32, 1);
        const vtrn_access_t mean_square = vtrn_sbuf(0, p, mean_square_at, VTRN_DTYPE_FP32, 1);
        const vtrn_access_t inverse_rms = vtrn_sbuf(0, p, inverse_rms_at, VTRN_DTYPE_FP32, 1);

        /* Load the rows: row r of the block into partition r. */
        TRY(vtrn_program_dma_copy(program, x_tile, vtrn_hbm(x, hbm_offset, VTRN_DTYPE_FP32, p, columns, columns),
                                  next_in_chain(&chain, &sync)));

        /* Softmax. -max(x) per row. */
        TRY(vtrn_program_tensor_reduce(program, negative_max, x_tile, VTRN_ALU_MAX, 1, next_in_chain(&chain, &sync)));
        /* work = exp(x * 1 + (-max)); sums = the row sums of work, in the same pass. */
        TRY(vtrn_program_activate(program, work, VTRN_ACT_EXP, x_tile, &one, &negative_max, &sums,
                                  next_in_chain(&chain, &sync)));
        /* 1 / sums. */
        TRY(vtrn_program_activate(program, inverse_sums, VTRN_ACT_RECIPROCAL, sums, &one, NULL, NULL,
                                  next_in_chain(&chain, &sync)));
        /* y = work * (1 / sums), each row by its own value. */
        const vtrn_scalar_t by_inverse_sums = per_partition(inverse_sums);
        TRY(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, y, work, VTRN_ALU_MULTIPLY, &by_inverse_sums,
                                       VTRN_ALU_BYPASS, NULL, 0, next_in_chain(&chain, &sync)));
        TRY(vtrn_program_dma_copy(program, vtrn_hbm(softmax, hbm_offset, VTRN_DTYPE_FP32, p, columns, columns), y,
                                  next_in_chain(&chain, &sync)));

        /* RMSNorm. squares = sum(x^2) per row (work receives x^2 itself, unused). */
        TRY(vtrn_program_activate(program, work, VTRN_ACT_SQUARE, x_tile, &one, NULL, &squares,
                                  next_in_chain(&chain, &sync)));
        /* mean_square = squares * (1 / columns) + eps: two ALU stages in one instruction. */
        const vtrn_scalar_t by_count = immediate(1.0f / (float)columns), plus_epsilon = immediate(EPSILON);
        TRY(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, mean_square, squares, VTRN_ALU_MULTIPLY, &by_count,
                                       VTRN_ALU_ADD, &plus_epsilon, 0, next_in_chain(&chain, &sync)));
        /* 1 / sqrt(mean_square). */
        TRY(vtrn_program_activate(program, inverse_rms, VTRN_ACT_RSQRT, mean_square, &one, NULL, NULL,
                                  next_in_chain(&chain, &sync)));
        /* work = x * (1 / rms), each row by its own value; y = work * w. */
        const vtrn_scalar_t by_inverse_rms = per_partition(inverse_rms);
        TRY(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, work, x_tile, VTRN_ALU_MULTIPLY, &by_inverse_rms,
                                       VTRN_ALU_BYPASS, NULL, 0, next_in_chain(&chain, &sync)));
        TRY(vtrn_program_tensor_tensor(program, y, work, weights, VTRN_ALU_MULTIPLY, next_in_chain(&chain, &sync)));
        TRY(vtrn_program_dma_copy(program, vtrn_hbm(rmsnorm, hbm_offset, VTRN_DTYPE_FP32, p, columns, columns), y,
                                  next_in_chain(&chain, &sync)));
    }
    return status;
#undef TRY
}

/* Uniform values in [low, high), from a seed. */
static void fill_random(float *values, size_t count, uint64_t seed, double low, double high) {
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < count; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        values[i] = (float)(low + (high - low) * (double)(state >> 11) * 0x1.0p-53);
    }
}

/* The host reference, in double. */
static void host_reference(const float *x, const float *w, uint32_t rows, uint32_t columns, double *softmax,
                           double *rmsnorm) {
    for (uint32_t r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * columns;
        double max = row[0], sum = 0, squares = 0;
        for (uint32_t c = 1; c < columns; c++) max = row[c] > max ? row[c] : max;
        for (uint32_t c = 0; c < columns; c++) {
            sum += exp(row[c] - max);
            squares += (double)row[c] * row[c];
        }
        double inverse_rms = 1 / sqrt(squares / columns + EPSILON);
        for (uint32_t c = 0; c < columns; c++) {
            softmax[(size_t)r * columns + c] = exp(row[c] - max) / sum;
            rmsnorm[(size_t)r * columns + c] = row[c] * inverse_rms * w[c];
        }
    }
}

/* The largest relative error (|actual - expected| / |expected|, with |expected| at least `floor`);
 * prints the first element past `limit`. */
static double compare(const char *what, const float *actual, const double *expected, uint32_t rows, uint32_t columns,
                      double floor, double limit, int *ok) {
    double worst = 0;
    for (size_t i = 0; i < (size_t)rows * columns; i++) {
        double scale = fabs(expected[i]) > floor ? fabs(expected[i]) : floor;
        double error = fabs((double)actual[i] - expected[i]) / scale;
        if (!(error <= limit)) { /* NaN too: SBUF starts as NaN */
            if (*ok) {
                fprintf(stderr, "  %s[%zu][%zu] is %.9g, expected %.9g (relative error %.3g, limit %.3g)\n", what,
                        i / columns, i % columns, (double)actual[i], expected[i], error, limit);
            }
            *ok = 0;
        }
        if (error > worst || isnan(error)) worst = error;
    }
    return worst;
}

int main(int argc, char **argv) {
    uint32_t rows = 300, columns = 1000;
    if (argc == 3) {
        char *end_rows = NULL, *end_columns = NULL;
        unsigned long r = strtoul(argv[1], &end_rows, 10), c = strtoul(argv[2], &end_columns, 10);
        /* Four [128, columns] fp32 tiles must fit in a partition of SBUF (192 KiB on trn1). */
        if (*end_rows != '\0' || *end_columns != '\0' || r == 0 || r > 1000000 || c == 0 || c > 12000) {
            fprintf(stderr, "%s: ROWS must be 1 to 1000000 and COLUMNS 1 to 12000\n", argv[0]);
            return 2;
        }
        rows = (uint32_t)r;
        columns = (uint32_t)c;
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [ROWS COLUMNS]   (default 300 1000)\n", argv[0]);
        return 2;
    }
    if (VTRN_VERSION_GET_MAJOR(vtrn_version()) != VTRN_VERSION_MAJOR) {
        fprintf(stderr, "libvtrn's major version is not this header's (%d)\n", VTRN_VERSION_MAJOR);
        return 1;
    }

    const size_t elements = (size_t)rows * columns, matrix_bytes = elements * sizeof(float);
    const size_t row_bytes = (size_t)columns * sizeof(float);
    int ok = 1;
    vtrn_runtime_t runtime = NULL;
    double *softmax_expected = malloc(elements * sizeof(double));
    double *rmsnorm_expected = malloc(elements * sizeof(double));
    if (softmax_expected == NULL || rmsnorm_expected == NULL) {
        fprintf(stderr, "out of host memory\n");
        goto fail;
    }

    /* 1. A runtime, device 0, host buffers and HBM for the four parameters. */
    CHECK(vtrn_runtime_create(NULL, &runtime));
    vtrn_device_t device = NULL;
    CHECK(vtrn_device_get(runtime, 0, &device));
    vtrn_host_buffer_t x_host = NULL, w_host = NULL, out_host = NULL;
    CHECK(vtrn_host_buffer_create(runtime, matrix_bytes, NULL, &x_host));
    CHECK(vtrn_host_buffer_create(runtime, row_bytes, NULL, &w_host));
    CHECK(vtrn_host_buffer_create(runtime, matrix_bytes, NULL, &out_host));
    float *x = NULL, *w = NULL, *out = NULL;
    CHECK(vtrn_host_buffer_map(x_host, (void **)&x, NULL));
    CHECK(vtrn_host_buffer_map(w_host, (void **)&w, NULL));
    CHECK(vtrn_host_buffer_map(out_host, (void **)&out, NULL));
    vtrn_device_memory_t x_hbm = NULL, w_hbm = NULL, softmax_hbm = NULL, rmsnorm_hbm = NULL;
    CHECK(vtrn_device_memory_alloc(device, matrix_bytes, 0, &x_hbm));
    CHECK(vtrn_device_memory_alloc(device, row_bytes, 0, &w_hbm));
    CHECK(vtrn_device_memory_alloc(device, matrix_bytes, 0, &softmax_hbm));
    CHECK(vtrn_device_memory_alloc(device, matrix_bytes, 0, &rmsnorm_hbm));

    /* 2. Inputs: x in [-4, 4) (exp spans e^-8 .. e^8), w in [0.5, 1.5). */
    fill_random(x, elements, 1, -4.0, 4.0);
    fill_random(w, columns, 2, 0.5, 1.5);
    CHECK(vtrn_memcpy(device, vtrn_device_ref(x_hbm, 0), vtrn_host_ref(x_host, 0), matrix_bytes));
    CHECK(vtrn_memcpy(device, vtrn_device_ref(w_hbm, 0), vtrn_host_ref(w_host, 0), row_bytes));
    host_reference(x, w, rows, columns, softmax_expected, rmsnorm_expected);

    /* 3. Build and load the kernel on core 0, then run it once. */
    vtrn_program_t program = NULL;
    CHECK(vtrn_program_create(runtime, &program));
    CHECK(build_kernel(program, rows, columns));
    uint32_t instruction_count = 0;
    CHECK(vtrn_program_instruction_count(program, &instruction_count));
    vtrn_kernel_t kernel = NULL;
    CHECK(vtrn_kernel_load(device, 0, program, &kernel));
    CHECK(vtrn_program_destroy(program));

    const vtrn_binding_t bindings[] = {
        { "x", x_hbm, 0 }, { "w", w_hbm, 0 }, { "softmax", softmax_hbm, 0 }, { "rmsnorm", rmsnorm_hbm, 0 },
    };
    double start = now_seconds();
    vtrn_fence_t fence = NULL;
    CHECK(vtrn_kernel_execute(kernel, bindings, sizeof bindings / sizeof bindings[0], &fence));
    CHECK(vtrn_fence_wait(fence, UINT64_MAX));
    double wall_seconds = now_seconds() - start;
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    CHECK(vtrn_fence_get_info(fence, &info));
    printf("softmax and RMSNorm of %u x %u (fp32) in %u row tiles: %u instructions, wall %.3f ms, device %.3f ms "
           "(estimated)\n", rows, columns, (rows + PARTITIONS - 1) / PARTITIONS, instruction_count, wall_seconds * 1e3,
           (double)info.device_ns * 1e-6);
    printf("  instructions per engine: PE %" PRIu64 ", ACT %" PRIu64 ", DVE %" PRIu64 ", POOL %" PRIu64 ", DMA %" PRIu64
           "\n", info.instructions[0], info.instructions[1], info.instructions[2], info.instructions[3],
           info.instructions[4]);

    /* 4. Check both results. fp32 exp, sums of COLUMNS terms and rsqrt: a few ulps, and a sum's
     *    rounding grows with COLUMNS. Softmax values below 1e-30 are compared absolutely. */
    const double limit = 1e-6 + columns * 0x1.0p-24;
    CHECK(vtrn_memcpy(device, vtrn_host_ref(out_host, 0), vtrn_device_ref(softmax_hbm, 0), matrix_bytes));
    double softmax_error = compare("softmax", out, softmax_expected, rows, columns, 1e-30, limit, &ok);
    double row_sum = 0;
    for (uint32_t c = 0; c < columns; c++) row_sum += out[c];
    CHECK(vtrn_memcpy(device, vtrn_host_ref(out_host, 0), vtrn_device_ref(rmsnorm_hbm, 0), matrix_bytes));
    double rmsnorm_error = compare("rmsnorm", out, rmsnorm_expected, rows, columns, 1e-30, limit, &ok);
    printf("  softmax: max relative error %.3g (limit %.3g), row 0 sums to %.7f\n", softmax_error, limit, row_sum);
    printf("  rmsnorm: max relative error %.3g (limit %.3g)\n", rmsnorm_error, limit);

    /* 5. Destroying the runtime releases the kernel, fence, memory and buffers. */
    CHECK(vtrn_runtime_destroy(runtime));
    free(softmax_expected);
    free(rmsnorm_expected);
    printf(ok ? "both results verified\n" : "verification FAILED\n");
    return ok ? 0 : 1;

fail:
    (void)vtrn_runtime_destroy(runtime);
    free(softmax_expected);
    free(rmsnorm_expected);
    return 1;
}
