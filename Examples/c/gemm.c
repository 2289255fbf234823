/*
 * gemm.c — C[M,N] = A[M,K] · B[K,N] on one NeuronCore, in fp32 and in bf16, checked on the host.
 *
 *   make -C Examples/c && Examples/c/build/gemm [M K N]          (default 1024 1024 1024)
 *
 * Any sizes work: the edges are partial tiles. After the requested size the program also runs a
 * small odd size (200 x 300 x 700), whose partial tiles are where tiling bugs hide. Each run is
 * verified against a plain triple loop on the host; the program exits non-zero on a mismatch.
 *
 * The kernel is the classic tiled GEMM of the Trainium tensor engine (PE):
 *   - The PE computes dst[M,N] = stationary[K,M]^T · moving[K,N] with the contraction K along the
 *     partitions of both inputs: K <= 128, M <= 128 (the PE array's columns), N <= 512 (one 2 KiB
 *     PSUM bank of fp32). So an output tile is 128 x 512, and K is consumed 128 at a time, the
 *     products accumulating in the PSUM bank: the first matmul of a tile overwrites
 *     (accumulate = 0), the later ones add (accumulate = 1).
 *   - The stationary operand is A transposed: partition k, free index m. DMA_COPY reads it so
 *     straight from the row-major A in HBM, with an access pattern whose partition stride is 1
 *     element (the next k) and whose free stride is K elements (the next row m). No transpose
 *     instruction is needed.
 *   - The moving operand is a [128, 512] tile of B: partition k, free n, row stride N.
 *   - PSUM is written only by the PE, and DMA does not reach it: the Vector engine (DVE) copies a
 *     finished tile to SBUF (TENSOR_COPY), and DMA stores it to C in HBM.
 *   - In bf16, HBM stays fp32 and DMA_COPY converts while it loads (round to nearest even); the PE
 *     widens bf16 to fp32 and accumulates in fp32.
 *
 * The engines run their own instruction streams in parallel, so the kernel orders them with
 * semaphores (all zero when an execution starts; an instruction may wait for one to reach a value
 * before it starts and add to one when it ends). Four counters, each raised by one engine:
 *   LOADED      DMA -> PE   +1 when the A and B tiles of a matmul are in SBUF
 *   MULTIPLIED  PE  -> DMA, DVE   +1 per matmul: its input slots may be reused, and a tile is
 *                                 complete once its last matmul has counted
 *   COPIED      DVE -> DMA, PE    +1 per output tile copied out of PSUM: it may be stored, and
 *                                 its PSUM bank may be overwritten
 *   STORED      DMA -> DVE   +1 per output tile stored to HBM: its SBUF slot may be reused
 * Inputs are double buffered (LOAD_SLOTS), and so are PSUM banks and output slots, so that the DMA
 * loads the next tiles while the PE multiplies and the DVE copies. Because the DMA stream is in
 * order, the store of tile t is issued after the loads of tile t+1 (not before), else the DMA
 * would sit idle until tile t is copied. The virtual device reports a deadlock (instead of hanging,
 * as hardware would) if a change to this scheme leaves an engine waiting for good.
 *
 * Output: per run the wall time of the execution (the host really computes every product, so this
 * is the simulator's speed), the estimated device time from vtrn_fence_get_info (the virtual
 * chip's cost model: what the kernel would take on the device), and GFLOP/s for both. The busy
 * times per engine show where the device time goes: this simple kernel is DMA bound, because it
 * re-reads a B tile for every row of output tiles and its one DMA stream carries all the traffic.
 * Keeping a block of B resident in SBUF across rows of A is the next step for a faster kernel.
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

/* Tile sizes: the PE's limits. */
enum {
    TILE_M = 128, /* rows of an output tile: the stationary operand's free size */
    TILE_K = 128, /* the contraction of one matmul: the partitions of both inputs */
    TILE_N = 512, /* columns of an output tile: one PSUM bank of fp32 */
};

/* How many of each buffer the kernel rotates through. Two of each is enough to overlap the
 * engines; PSUM_SLOTS may go up to 8 (the banks of PSUM). */
enum { LOAD_SLOTS = 2, PSUM_SLOTS = 2, OUT_SLOTS = 2 };

/* The semaphores (see the top of the file). */
enum { SEM_LOADED = 0, SEM_MULTIPLIED = 1, SEM_COPIED = 2, SEM_STORED = 3 };

#define PSUM_BANK_BYTES 2048u

static double now_seconds(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (double)time.tv_sec + (double)time.tv_nsec * 1e-9;
}

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static uint32_t tiles_of(uint32_t size, uint32_t tile) { return (size + tile - 1) / tile; }

static const char *dtype_name(vtrn_dtype_t dtype) { return dtype == VTRN_DTYPE_BF16 ? "bf16" : "fp32"; }

/* Semaphore work of one instruction: wait until semaphore `wait_on` >= `wait_value` (no wait when
 * wait_value <= 0: semaphores start at 0), and add 1 to `signal` when done (none when < 0). */
static vtrn_sync_t sync_of(int wait_on, int64_t wait_value, int signal) {
    vtrn_sync_t sync = VTRN_SYNC_NONE;
    if (wait_value > 0) {
        sync.wait_semaphore = wait_on;
        sync.wait_value = (uint32_t)wait_value;
    }
    if (signal >= 0) {
        sync.signal_semaphore = signal;
        sync.signal_op = VTRN_SEMAPHORE_ADD;
        sync.signal_value = 1;
    }
    return sync;
}

/* One output tile: rows m0 .. m0+rows-1, columns n0 .. n0+columns-1 of C. */
struct output_tile {
    uint32_t m0, rows, n0, columns;
};

/* Where the kernel keeps its tiles in SBUF, in bytes from the start of each partition:
 * LOAD_SLOTS A^T slots [k, m] and LOAD_SLOTS B slots [k, n] of the SBUF dtype, then OUT_SLOTS
 * fp32 output slots [m, n]. */
struct sbuf_layout {
    uint64_t a_slots, a_slot_bytes, b_slots, b_slot_bytes, out_slots, out_slot_bytes;
};

static struct sbuf_layout layout_for(vtrn_dtype_t dtype) {
    const uint64_t element = dtype == VTRN_DTYPE_BF16 ? 2 : 4;
    struct sbuf_layout layout;
    layout.a_slots = 0;
    layout.a_slot_bytes = TILE_M * element;
    layout.b_slots = layout.a_slots + LOAD_SLOTS * layout.a_slot_bytes;
    layout.b_slot_bytes = TILE_N * element;
    layout.out_slots = layout.b_slots + LOAD_SLOTS * layout.b_slot_bytes;
    layout.out_slot_bytes = TILE_N * sizeof(float);
    return layout;
}

/* The SBUF output slot of output tile number `index`, as fp32 [rows, columns]. */
static vtrn_access_t output_slot(const struct sbuf_layout *layout, int64_t index, struct output_tile tile) {
    return vtrn_sbuf(0, tile.rows, layout->out_slots + (uint64_t)(index % OUT_SLOTS) * layout->out_slot_bytes,
                     VTRN_DTYPE_FP32, tile.columns);
}

/* DMA: stores output tile number `index` from its SBUF slot to C (parameter `c`, row stride N)
 * once the DVE has copied it there (COPIED > index); then STORED += 1. */
static vtrn_status_t store_tile(vtrn_program_t program, uint32_t c, uint32_t N, const struct sbuf_layout *layout,
                                int64_t index, struct output_tile tile) {
    const vtrn_access_t destination = vtrn_hbm(c, ((uint64_t)tile.m0 * N + tile.n0) * sizeof(float), VTRN_DTYPE_FP32,
                                               tile.rows, N, tile.columns);
    const vtrn_sync_t copied = sync_of(SEM_COPIED, index + 1, SEM_STORED);
    return vtrn_program_dma_copy(program, destination, output_slot(layout, index, tile), &copied);
}

/* Builds the kernel into `program`: parameters "a" [M,K], "b" [K,N] and "c" [M,N], row-major
 * fp32 in HBM; tiles of `dtype` in SBUF. Returns the status of the first call that failed. */
static vtrn_status_t build_gemm(vtrn_program_t program, uint32_t M, uint32_t K, uint32_t N, vtrn_dtype_t dtype) {
    vtrn_status_t status = VTRN_SUCCESS;
#define TRY(call)                                             \
    do {                                                      \
        if ((status = (call)) != VTRN_SUCCESS) return status; \
    } while (0)

    uint32_t a = 0, b = 0, c = 0;
    TRY(vtrn_program_add_parameter(program, "a", (uint64_t)M * K * sizeof(float), &a));
    TRY(vtrn_program_add_parameter(program, "b", (uint64_t)K * N * sizeof(float), &b));
    TRY(vtrn_program_add_parameter(program, "c", (uint64_t)M * N * sizeof(float), &c));
    const struct sbuf_layout layout = layout_for(dtype);

    const uint32_t m_tiles = tiles_of(M, TILE_M), n_tiles = tiles_of(N, TILE_N), k_tiles = tiles_of(K, TILE_K);
    int64_t step = 0; /* matmuls emitted so far, over all tiles */
    int64_t tile = 0; /* output tiles emitted so far */
    struct output_tile previous = { 0, 0, 0, 0 };

    for (uint32_t mi = 0; mi < m_tiles; mi++) {
        for (uint32_t ni = 0; ni < n_tiles; ni++, tile++) {
            const struct output_tile out = { mi * TILE_M, min_u32(TILE_M, M - mi * TILE_M), ni * TILE_N,
                                             min_u32(TILE_N, N - ni * TILE_N) };
            /* The tile accumulates in PSUM bank tile % PSUM_SLOTS. */
            const uint64_t bank = (uint64_t)(tile % PSUM_SLOTS) * PSUM_BANK_BYTES;
            const vtrn_access_t accumulator = vtrn_psum(0, out.rows, bank, VTRN_DTYPE_FP32, out.columns);

            for (uint32_t ki = 0; ki < k_tiles; ki++, step++) {
                const uint32_t k0 = ki * TILE_K, depth = min_u32(TILE_K, K - k0);
                const uint64_t slot = (uint64_t)(step % LOAD_SLOTS);
                const vtrn_access_t a_tile = vtrn_sbuf(0, depth, layout.a_slots + slot * layout.a_slot_bytes, dtype,
                                                       out.rows);
                const vtrn_access_t b_tile = vtrn_sbuf(0, depth, layout.b_slots + slot * layout.b_slot_bytes, dtype,
                                                       out.columns);

                /* DMA: A^T[k0.., m0..] — partition k steps 1 element through A, the free index m
                 * steps K elements (a row of A). Waits until the matmul that last read this slot
                 * (LOAD_SLOTS matmuls ago) is done. */
                vtrn_access_t a_source = vtrn_hbm(a, ((uint64_t)out.m0 * K + k0) * sizeof(float), VTRN_DTYPE_FP32,
                                                  depth, 1, out.rows);
                a_source.stride[0] = K;
                const vtrn_sync_t slot_free = sync_of(SEM_MULTIPLIED, step + 1 - LOAD_SLOTS, -1);
                TRY(vtrn_program_dma_copy(program, a_tile, a_source, &slot_free));

                /* DMA: B[k0.., n0..], rows of N elements; then LOADED += 1. The DMA stream runs in
                 * order, so this signal also says the A^T tile above has landed. */
                const vtrn_access_t b_source = vtrn_hbm(b, ((uint64_t)k0 * N + out.n0) * sizeof(float),
                                                        VTRN_DTYPE_FP32, depth, N, out.columns);
                const vtrn_sync_t loaded = sync_of(-1, 0, SEM_LOADED);
                TRY(vtrn_program_dma_copy(program, b_tile, b_source, &loaded));

                /* PE: before the first matmul of a tile overwrites its PSUM bank, the DVE must have
                 * copied out the tile that used the bank PSUM_SLOTS tiles ago. */
                if (ki == 0 && tile >= PSUM_SLOTS) {
                    TRY(vtrn_program_sem_wait(program, VTRN_ENGINE_PE, SEM_COPIED, (uint32_t)(tile + 1 - PSUM_SLOTS)));
                }
                /* PE: accumulator (+)= A^T tile ^T · B tile, once both tiles are loaded. */
                const vtrn_sync_t multiplied = sync_of(SEM_LOADED, step + 1, SEM_MULTIPLIED);
                TRY(vtrn_program_matmul(program, accumulator, a_tile, b_tile, ki > 0, &multiplied));
            }

            /* DMA: store the previous tile now, behind this tile's loads (see the top of the file). */
            if (tile > 0) TRY(store_tile(program, c, N, &layout, tile - 1, previous));

            /* DVE: once the tile's last matmul is done, copy it PSUM -> SBUF, into an output slot
             * whose previous tile (OUT_SLOTS tiles ago) has been stored. */
            if (tile >= OUT_SLOTS) {
                TRY(vtrn_program_sem_wait(program, VTRN_ENGINE_DVE, SEM_STORED, (uint32_t)(tile + 1 - OUT_SLOTS)));
            }
            const vtrn_sync_t finished = sync_of(SEM_MULTIPLIED, step, SEM_COPIED);
            TRY(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, output_slot(&layout, tile, out), accumulator,
                                         &finished));
            previous = out;
        }
    }

    /* DMA: store the last tile. */
    TRY(store_tile(program, c, N, &layout, tile - 1, previous));
    return status;
#undef TRY
}

/* Uniform values in [-1, 1), from a seed: the same matrices every run. */
static void fill_random(float *values, size_t count, uint64_t seed) {
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < count; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        values[i] = (float)((double)(state >> 11) * 0x1.0p-52 - 1.0);
    }
}

/* The host reference, in double: reference = A·B, and bound = |A|·|B|, the scale that rounding
 * errors are relative to (an element of C may be near 0 while its products are not). */
static void host_gemm(uint32_t M, uint32_t K, uint32_t N, const float *a, const float *b, double *reference,
                      double *bound) {
    memset(reference, 0, (size_t)M * N * sizeof(double));
    memset(bound, 0, (size_t)M * N * sizeof(double));
    for (uint32_t i = 0; i < M; i++) {
        double *row = reference + (size_t)i * N, *row_bound = bound + (size_t)i * N;
        for (uint32_t k = 0; k < K; k++) {
            const double aik = a[(size_t)i * K + k];
            const float *b_row = b + (size_t)k * N;
            for (uint32_t j = 0; j < N; j++) {
                row[j] += aik * b_row[j];
                row_bound[j] += fabs(aik * b_row[j]);
            }
        }
    }
}

/* The largest |C - reference| / (|A|·|B|) a correct kernel may show: fp32 accumulation of K
 * products (K · 2^-24, the classic worst case), plus for bf16 the rounding of both inputs to 8
 * significant bits (2 · 2^-8). A missing or doubled tile is off by far more. */
static double tolerance(vtrn_dtype_t dtype, uint32_t K) {
    double accumulation = (K + 2) * 0x1.0p-24;
    return dtype == VTRN_DTYPE_BF16 ? accumulation + 2 * 0x1.0p-8 + 0x1.0p-16 : accumulation;
}

/* The worst error of c, relative to |A|·|B|; prints the first element past `limit`. */
static double check_result(const float *c, const double *reference, const double *bound, uint32_t M, uint32_t N,
                           double limit, int *ok) {
    double worst = 0;
    *ok = 1;
    for (size_t i = 0; i < (size_t)M * N; i++) {
        double error = fabs((double)c[i] - reference[i]);
        double relative = bound[i] > 0 ? error / bound[i] : error;
        if (!(relative <= limit)) { /* also catches NaN: SBUF and PSUM start as NaN */
            if (*ok) {
                fprintf(stderr, "  mismatch: C[%zu][%zu] is %.9g, expected %.9g (error %.3g of |A|·|B|, limit %.3g)\n",
                        i / N, i % N, (double)c[i], reference[i], relative, limit);
            }
            *ok = 0;
            worst = isnan(relative) ? relative : (relative > worst ? relative : worst);
        } else if (relative > worst) {
            worst = relative;
        }
    }
    return worst;
}

/* Everything one size needs on the host and in HBM. */
struct problem {
    uint32_t M, K, N;
    vtrn_host_buffer_t a_host, b_host, c_host; /* vtrn host buffers, on the device's NUMA node */
    vtrn_device_memory_t a_hbm, b_hbm, c_hbm;
    float *a, *b, *c;                          /* the host buffers' memory */
    double *reference, *bound;
};

/* Builds, loads and runs the kernel for one dtype on core 0; verifies and prints the result.
 * Returns 1 when the result is right, 0 when it is wrong, -1 when a call failed. */
static int run_gemm(vtrn_runtime_t runtime, vtrn_device_t device, const struct problem *problem, vtrn_dtype_t dtype) {
    const uint32_t M = problem->M, K = problem->K, N = problem->N;
    vtrn_program_t program = NULL;
    vtrn_kernel_t kernel = NULL;
    vtrn_fence_t fence = NULL;
    int result = -1;

    /* 1. Build the program, and load it on core 0: it is validated there, once. A program may be
     *    destroyed as soon as it is loaded. */
    double start = now_seconds();
    CHECK(vtrn_program_create(runtime, &program));
    CHECK(build_gemm(program, M, K, N, dtype));
    uint32_t instruction_count = 0;
    CHECK(vtrn_program_instruction_count(program, &instruction_count));
    CHECK(vtrn_kernel_load(device, 0, program, &kernel));
    CHECK(vtrn_program_destroy(program));
    program = NULL;
    double build_seconds = now_seconds() - start;

    /* 2. Execute with each parameter bound to its HBM block, and wait. C is cleared first, so
     *    that a tile the kernel forgets cannot pass for right. */
    memset(problem->c, 0, (size_t)M * N * sizeof(float));
    CHECK(vtrn_memcpy(device, vtrn_device_ref(problem->c_hbm, 0), vtrn_host_ref(problem->c_host, 0),
                      (uint64_t)M * N * sizeof(float)));
    const vtrn_binding_t bindings[] = {
        { "a", problem->a_hbm, 0 },
        { "b", problem->b_hbm, 0 },
        { "c", problem->c_hbm, 0 },
    };
    start = now_seconds();
    CHECK(vtrn_kernel_execute(kernel, bindings, 3, &fence));
    CHECK(vtrn_fence_wait(fence, UINT64_MAX));
    double wall_seconds = now_seconds() - start;
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    CHECK(vtrn_fence_get_info(fence, &info));

    /* 3. Read C back and compare. */
    CHECK(vtrn_memcpy(device, vtrn_host_ref(problem->c_host, 0), vtrn_device_ref(problem->c_hbm, 0),
                      (uint64_t)M * N * sizeof(float)));
    const double limit = tolerance(dtype, K);
    int ok = 0;
    const double worst = check_result(problem->c, problem->reference, problem->bound, M, N, limit, &ok);

    const double flops = 2.0 * M * N * K;
    const double device_seconds = (double)info.device_ns * 1e-9;
    printf("  %s: %u instructions (built and loaded in %.1f ms)\n", dtype_name(dtype), instruction_count,
           build_seconds * 1e3);
    printf("    wall time   %9.3f ms  %9.2f GFLOP/s  (the simulator on this host)\n", wall_seconds * 1e3,
           flops / wall_seconds * 1e-9);
    printf("    device time %9.3f ms  %9.2f GFLOP/s  (estimated: PE busy %.3f ms, DVE %.3f ms, DMA %.3f ms)\n",
           device_seconds * 1e3, device_seconds > 0 ? flops / device_seconds * 1e-9 : 0.0,
           (double)info.engine_busy_ns[0] * 1e-6, (double)info.engine_busy_ns[2] * 1e-6,
           (double)info.engine_busy_ns[4] * 1e-6);
    printf("    max error   %.3g of |A|·|B| (tolerance %.3g): %s\n", worst, limit, ok ? "ok" : "MISMATCH");
    result = ok;

fail:
    (void)vtrn_fence_destroy(fence);
    (void)vtrn_kernel_unload(kernel);
    (void)vtrn_program_destroy(program);
    return result;
}

/* Allocates the host buffers and HBM of one size, fills A and B, uploads them and computes the
 * reference. Returns 0 when a call failed. */
static int prepare(vtrn_runtime_t runtime, vtrn_device_t device, struct problem *problem) {
    const size_t a_bytes = (size_t)problem->M * problem->K * sizeof(float);
    const size_t b_bytes = (size_t)problem->K * problem->N * sizeof(float);
    const size_t c_bytes = (size_t)problem->M * problem->N * sizeof(float);
    CHECK(vtrn_host_buffer_create(runtime, a_bytes, NULL, &problem->a_host));
    CHECK(vtrn_host_buffer_create(runtime, b_bytes, NULL, &problem->b_host));
    CHECK(vtrn_host_buffer_create(runtime, c_bytes, NULL, &problem->c_host));
    CHECK(vtrn_host_buffer_map(problem->a_host, (void **)&problem->a, NULL));
    CHECK(vtrn_host_buffer_map(problem->b_host, (void **)&problem->b, NULL));
    CHECK(vtrn_host_buffer_map(problem->c_host, (void **)&problem->c, NULL));
    CHECK(vtrn_device_memory_alloc(device, a_bytes, 0, &problem->a_hbm));
    CHECK(vtrn_device_memory_alloc(device, b_bytes, 0, &problem->b_hbm));
    CHECK(vtrn_device_memory_alloc(device, c_bytes, 0, &problem->c_hbm));

    fill_random(problem->a, (size_t)problem->M * problem->K, 1);
    fill_random(problem->b, (size_t)problem->K * problem->N, 2);
    CHECK(vtrn_memcpy(device, vtrn_device_ref(problem->a_hbm, 0), vtrn_host_ref(problem->a_host, 0), a_bytes));
    CHECK(vtrn_memcpy(device, vtrn_device_ref(problem->b_hbm, 0), vtrn_host_ref(problem->b_host, 0), b_bytes));

    problem->reference = malloc((size_t)problem->M * problem->N * sizeof(double));
    problem->bound = malloc((size_t)problem->M * problem->N * sizeof(double));
    if (problem->reference == NULL || problem->bound == NULL) {
        fprintf(stderr, "out of host memory for the reference\n");
        return 0;
    }
    host_gemm(problem->M, problem->K, problem->N, problem->a, problem->b, problem->reference, problem->bound);
    return 1;

fail:
    return 0;
}

static void release(struct problem *problem) {
    (void)vtrn_device_memory_free(problem->a_hbm);
    (void)vtrn_device_memory_free(problem->b_hbm);
    (void)vtrn_device_memory_free(problem->c_hbm);
    (void)vtrn_host_buffer_destroy(problem->a_host);
    (void)vtrn_host_buffer_destroy(problem->b_host);
    (void)vtrn_host_buffer_destroy(problem->c_host);
    free(problem->reference);
    free(problem->bound);
}

static int parse_size(const char *text, uint32_t *size) {
    char *end = NULL;
    unsigned long value = strtoul(text, &end, 10);
    if (end == text || *end != '\0' || value == 0 || value > 65536) return 0;
    *size = (uint32_t)value;
    return 1;
}

int main(int argc, char **argv) {
    uint32_t sizes[2][3] = { { 1024, 1024, 1024 }, { 200, 300, 700 } };
    if (argc != 1 && argc != 4) {
        fprintf(stderr, "usage: %s [M K N]   (default 1024 1024 1024)\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (!parse_size(argv[i], &sizes[0][i - 1])) {
            fprintf(stderr, "%s: \"%s\" is not a size from 1 to 65536\n", argv[0], argv[i]);
            return 2;
        }
    }
    uint32_t version = vtrn_version();
    if (VTRN_VERSION_GET_MAJOR(version) != VTRN_VERSION_MAJOR) {
        fprintf(stderr, "libvtrn is version %u.%u.%u but this program was built with vtrn.h %d.%d.%d\n",
                VTRN_VERSION_GET_MAJOR(version), VTRN_VERSION_GET_MINOR(version), VTRN_VERSION_GET_PATCH(version),
                VTRN_VERSION_MAJOR, VTRN_VERSION_MINOR, VTRN_VERSION_PATCH);
        return 1;
    }

    int failures = 0;
    vtrn_runtime_t runtime = NULL;
    CHECK(vtrn_runtime_create(NULL, &runtime)); /* VTRN_TOPOLOGY, else one trn1 */
    vtrn_device_t device = NULL;
    CHECK(vtrn_device_get(runtime, 0, &device));
    vtrn_device_info_t device_info = VTRN_DEVICE_INFO_INIT;
    CHECK(vtrn_device_get_info(device, &device_info));

    /* A core's first execution sets up its SBUF and PSUM (tens of MiB of host memory). Run an
     * empty kernel once, so that the timings below are the GEMM's alone. */
    vtrn_program_t empty = NULL;
    vtrn_kernel_t warm_up = NULL;
    vtrn_fence_t fence = NULL;
    CHECK(vtrn_program_create(runtime, &empty));
    CHECK(vtrn_kernel_load(device, 0, empty, &warm_up));
    CHECK(vtrn_kernel_execute(warm_up, NULL, 0, &fence));
    CHECK(vtrn_fence_wait(fence, UINT64_MAX));
    CHECK(vtrn_fence_destroy(fence));
    CHECK(vtrn_kernel_unload(warm_up));
    CHECK(vtrn_program_destroy(empty));

    for (int s = 0; s < 2; s++) {
        struct problem problem;
        memset(&problem, 0, sizeof problem);
        problem.M = sizes[s][0];
        problem.K = sizes[s][1];
        problem.N = sizes[s][2];
        printf("C[%u,%u] = A[%u,%u] · B[%u,%u] on core 0 of %s: %u x %u output tiles of %u x %u, K in %u steps of %u\n",
               problem.M, problem.N, problem.M, problem.K, problem.K, problem.N, device_info.name,
               tiles_of(problem.M, TILE_M), tiles_of(problem.N, TILE_N), TILE_M, TILE_N, tiles_of(problem.K, TILE_K),
               TILE_K);
        if (!prepare(runtime, device, &problem)) {
            release(&problem);
            goto fail;
        }
        const vtrn_dtype_t dtypes[] = { VTRN_DTYPE_FP32, VTRN_DTYPE_BF16 };
        for (int d = 0; d < 2; d++) {
            int result = run_gemm(runtime, device, &problem, dtypes[d]);
            if (result < 0) {
                release(&problem);
                goto fail;
            }
            if (result == 0) failures++;
        }
        release(&problem);
    }

    CHECK(vtrn_runtime_destroy(runtime));
    printf(failures == 0 ? "all results verified\n" : "verification FAILED\n");
    return failures == 0 ? 0 : 1;

fail:
    (void)vtrn_runtime_destroy(runtime); /* releases everything the runtime owns */
    return 1;
}
