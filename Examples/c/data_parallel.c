/*
 * data_parallel.c — one data-parallel training step across many Trainium devices, from C:
 * each rank computes the weight gradient of its shard of the batch on its own NeuronCore
 * (G_r = X_r^T · dY_r, a matmul on the tensor engine), then the ranks sum their gradients with an
 * all-reduce, twice: inside the kernel (the CC engine all-reduces the gradient tile, ordered after
 * the matmul by semaphores) and from the host (vtrn_all_reduce of the stored local gradients).
 * Both are checked against the sum computed on the host, and against each other bit for bit.
 *
 *   make -C Examples/c && VTRN_TOPOLOGY=trn1.32xlarge Examples/c/build/data_parallel     16 devices, 1 process
 *   mpirun -np 4 Examples/c/build/data_parallel                    4 processes, 4 devices each
 *                                                                  (as root: --allow-run-as-root; on 2 CPUs: --oversubscribe)
 *
 * Under mpirun (OMPI_COMM_WORLD_SIZE set) process p hosts devices [p*16/P, (p+1)*16/P) of the
 * trn1.32xlarge and the communicator spans the processes (vtrn_comm_create_mpi); the results are
 * the same bits as in one process. Output: the rank count, the estimated device time of the
 * kernel and of the all-reduce (the cost model: matmul, then the ring's steps on NeuronLink), the
 * wall time, and the check.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vtrn.h"

#define CHECK(call)                                                                              \
    do {                                                                                         \
        vtrn_status_t check_status_ = (call);                                                    \
        if (check_status_ != VTRN_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: %s failed: %s (%d): %s\n", __FILE__, __LINE__, #call,        \
                    vtrn_status_string(check_status_), (int)check_status_, vtrn_last_error());   \
            goto fail;                                                                           \
        }                                                                                        \
    } while (0)

enum { BATCH = 128, IN = 128, OUT = 256, MAX_RANKS = 16 }; /* a shard: 128 samples; G is IN x OUT */
enum { SEM_LOADED = 0, SEM_MULTIPLIED = 1, SEM_COPIED = 2, SEM_REDUCED = 3 };

static double now_seconds(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (double)time.tv_sec + (double)time.tv_nsec * 1e-9;
}

static vtrn_sync_t sync_of(int wait_on, int signal) {
    vtrn_sync_t sync = VTRN_SYNC_NONE;
    if (wait_on >= 0) {
        sync.wait_semaphore = wait_on;
        sync.wait_value = 1;
    }
    if (signal >= 0) {
        sync.signal_semaphore = signal;
        sync.signal_value = 1;
    }
    return sync;
}

static vtrn_access_t access_2d(vtrn_memory_space_t space, uint32_t parameter, uint64_t offset, uint32_t rows, uint32_t columns,
                               int64_t row_stride) {
    vtrn_access_t access;
    memset(&access, 0, sizeof access);
    access.space = space;
    access.dtype = VTRN_DTYPE_FP32;
    access.partitions = rows;
    access.offset = offset;
    access.parameter = parameter;
    access.dims = 1;
    access.size[0] = columns;
    access.stride[0] = 1;
    access.partition_stride = space == VTRN_MEMORY_HBM ? row_stride : 0;
    return access;
}

/* Sample values: X and dY of rank r, element i. */
static float x_value(int rank, int i) { return (float)((i * 37 + rank * 101) % 97) / 97.0f - 0.5f; }
static float dy_value(int rank, int i) { return (float)((i * 53 + rank * 29) % 89) / 89.0f - 0.5f; }

int main(void) {
    int status = 1;
    const char *size_text = getenv("OMPI_COMM_WORLD_SIZE"), *rank_text = getenv("OMPI_COMM_WORLD_RANK");
    int processes = size_text ? atoi(size_text) : 1, process = rank_text ? atoi(rank_text) : 0;
    const char *topology = getenv("VTRN_TOPOLOGY") ? getenv("VTRN_TOPOLOGY") : "trn1.32xlarge";
    vtrn_runtime_t runtime = NULL;
    vtrn_program_t program = NULL;
    vtrn_comm_t comm = NULL;
    vtrn_host_buffer_t staging = NULL;
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    CHECK(vtrn_runtime_create(&options, &runtime));
    uint32_t devices_total = 0;
    CHECK(vtrn_device_count(runtime, &devices_total));
    if (devices_total > MAX_RANKS) devices_total = MAX_RANKS;
    if (processes < 1 || devices_total % (uint32_t)processes != 0) {
        fprintf(stderr, "data_parallel: %u devices do not split over %d processes\n", devices_total, processes);
        goto fail;
    }
    const uint32_t local = devices_total / (uint32_t)processes, first = (uint32_t)process * local;

    /* The communicator: core 0 of each of this process's devices. */
    vtrn_comm_member_t members[MAX_RANKS];
    vtrn_device_t devices[MAX_RANKS];
    for (uint32_t i = 0; i < local; i++) {
        CHECK(vtrn_device_get(runtime, first + i, &devices[i]));
        members[i] = (vtrn_comm_member_t){ devices[i], 0, 0 };
    }
    if (processes > 1) CHECK(vtrn_comm_create_mpi(runtime, members, local, &comm));
    else CHECK(vtrn_comm_create(runtime, members, local, &comm));
    vtrn_comm_info_t info = VTRN_COMM_INFO_INIT;
    CHECK(vtrn_comm_get_info(comm, &info));
    const uint32_t ranks = info.ranks;

    /* The kernel: X^T · dY into PSUM (PE), to SBUF (DVE), all-reduced on the CC engine, stored (DMA). */
    CHECK(vtrn_program_create(runtime, &program));
    uint32_t x = 0, dy = 0, g = 0;
    CHECK(vtrn_program_add_parameter(program, "x", BATCH * IN * 4, &x));
    CHECK(vtrn_program_add_parameter(program, "dy", BATCH * OUT * 4, &dy));
    CHECK(vtrn_program_add_parameter(program, "grad", IN * OUT * 4, &g));
    const vtrn_access_t x_tile = access_2d(VTRN_MEMORY_SBUF, 0, 0, BATCH, IN, 0);
    const vtrn_access_t dy_tile = access_2d(VTRN_MEMORY_SBUF, 0, IN * 4, BATCH, OUT, 0);
    const vtrn_access_t g_sbuf = access_2d(VTRN_MEMORY_SBUF, 0, (IN + OUT) * 4, IN, OUT, 0);
    const vtrn_access_t g_summed = access_2d(VTRN_MEMORY_SBUF, 0, (IN + 2 * OUT) * 4, IN, OUT, 0);
    const vtrn_access_t g_psum = access_2d(VTRN_MEMORY_PSUM, 0, 0, IN, OUT, 0);
    vtrn_sync_t loaded = sync_of(-1, SEM_LOADED), multiplied = sync_of(SEM_LOADED, SEM_MULTIPLIED);
    vtrn_sync_t copied = sync_of(SEM_MULTIPLIED, SEM_COPIED), reduced = sync_of(SEM_COPIED, SEM_REDUCED);
    vtrn_sync_t stored = sync_of(SEM_REDUCED, -1);
    vtrn_sync_t loaded_x = loaded;
    loaded_x.signal_value = 0; /* the second load signals: DMA runs its stream in order */
    loaded_x.signal_semaphore = -1;
    CHECK(vtrn_program_dma_copy(program, x_tile, access_2d(VTRN_MEMORY_HBM, x, 0, BATCH, IN, IN), &loaded_x));
    CHECK(vtrn_program_dma_copy(program, dy_tile, access_2d(VTRN_MEMORY_HBM, dy, 0, BATCH, OUT, OUT), &loaded));
    CHECK(vtrn_program_matmul(program, g_psum, x_tile, dy_tile, 0, &multiplied));
    CHECK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, g_sbuf, g_psum, &copied));
    CHECK(vtrn_program_collective(program, comm, VTRN_COLLECTIVE_ALL_REDUCE, g_summed, g_sbuf, VTRN_ALU_ADD, 0, &reduced));
    CHECK(vtrn_program_dma_copy(program, access_2d(VTRN_MEMORY_HBM, g, 0, IN, OUT, OUT), g_summed, &stored));

    /* Each rank's shard, uploaded; its kernel; the execution. */
    vtrn_kernel_t kernels[MAX_RANKS];
    vtrn_device_memory_t xs[MAX_RANKS], dys[MAX_RANKS], grads[MAX_RANKS], locals[MAX_RANKS];
    vtrn_fence_t fences[MAX_RANKS];
    CHECK(vtrn_host_buffer_create(runtime, (BATCH * OUT + BATCH * IN) * 4, NULL, &staging));
    float *host = NULL;
    size_t host_bytes = 0;
    CHECK(vtrn_host_buffer_map(staging, (void **)&host, &host_bytes));
    for (uint32_t i = 0; i < local; i++) {
        const int rank = (int)(first + i);
        for (int e = 0; e < BATCH * IN; e++) host[e] = x_value(rank, e);
        for (int e = 0; e < BATCH * OUT; e++) host[BATCH * IN + e] = dy_value(rank, e);
        CHECK(vtrn_device_memory_alloc(devices[i], BATCH * IN * 4, 0, &xs[i]));
        CHECK(vtrn_device_memory_alloc(devices[i], BATCH * OUT * 4, 0, &dys[i]));
        CHECK(vtrn_device_memory_alloc(devices[i], IN * OUT * 4, 0, &grads[i]));
        CHECK(vtrn_device_memory_alloc(devices[i], IN * OUT * 4, 0, &locals[i]));
        CHECK(vtrn_memcpy(devices[i], vtrn_device_ref(xs[i], 0), vtrn_host_ref(staging, 0), BATCH * IN * 4));
        CHECK(vtrn_memcpy(devices[i], vtrn_device_ref(dys[i], 0), vtrn_host_ref(staging, BATCH * IN * 4), BATCH * OUT * 4));
        CHECK(vtrn_kernel_load(devices[i], 0, program, &kernels[i]));
    }
    const double started = now_seconds();
    for (uint32_t i = 0; i < local; i++) {
        vtrn_binding_t bindings[3] = { { "x", xs[i], 0 }, { "dy", dys[i], 0 }, { "grad", grads[i], 0 } };
        CHECK(vtrn_kernel_execute(kernels[i], bindings, 3, &fences[i]));
    }
    uint64_t kernel_device_ns = 0, cc_ns = 0;
    for (uint32_t i = 0; i < local; i++) {
        CHECK(vtrn_fence_wait(fences[i], UINT64_MAX));
        vtrn_execution_info_t execution = VTRN_EXECUTION_INFO_INIT;
        CHECK(vtrn_fence_get_info(fences[i], &execution));
        if (execution.device_ns > kernel_device_ns) kernel_device_ns = execution.device_ns;
        if (execution.cc_busy_ns > cc_ns) cc_ns = execution.cc_busy_ns;
        CHECK(vtrn_fence_destroy(fences[i]));
    }
    const double kernel_seconds = now_seconds() - started;

    /* The host-called variant: the local gradients (X^T dY per rank, computed on the host here
     * and uploaded), summed by vtrn_all_reduce in place. */
    static float local_gradient[IN * OUT], result[IN * OUT];
    static double sum[IN * OUT];
    memset(sum, 0, sizeof sum);
    for (uint32_t r = 0; r < ranks; r++) {
        for (int m = 0; m < IN; m++) {
            for (int n = 0; n < OUT; n++) {
                float accumulator = 0;
                for (int b = 0; b < BATCH; b++) accumulator += x_value((int)r, b * IN + m) * dy_value((int)r, b * OUT + n);
                sum[m * OUT + n] += accumulator;
                if (r >= first && r < first + local) local_gradient[m * OUT + n] = accumulator;
            }
        }
        if (r >= first && r < first + local) {
            memcpy(host, local_gradient, sizeof local_gradient);
            CHECK(vtrn_memcpy(devices[r - first], vtrn_device_ref(locals[r - first], 0), vtrn_host_ref(staging, 0), IN * OUT * 4));
        }
    }
    const double host_started = now_seconds();
    for (uint32_t i = 0; i < local; i++) {
        CHECK(vtrn_all_reduce(comm, first + i, vtrn_device_ref(locals[i], 0), vtrn_device_ref(locals[i], 0), IN * OUT,
                              VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fences[i]));
    }
    uint64_t all_reduce_device_ns = 0;
    for (uint32_t i = 0; i < local; i++) {
        CHECK(vtrn_fence_wait(fences[i], UINT64_MAX));
        vtrn_execution_info_t execution = VTRN_EXECUTION_INFO_INIT;
        CHECK(vtrn_fence_get_info(fences[i], &execution));
        if (execution.device_ns > all_reduce_device_ns) all_reduce_device_ns = execution.device_ns;
        CHECK(vtrn_fence_destroy(fences[i]));
    }
    const double host_seconds = now_seconds() - host_started;

    /* Check: every local rank's gradient, both ways, against the host's sum (fp32 sums in another
     * order: a relative tolerance), and the in-kernel one within 1e-4 of the host-called one. */
    double worst = 0;
    int mismatches = 0;
    for (uint32_t i = 0; i < local; i++) {
        vtrn_device_memory_t which[2] = { grads[i], locals[i] };
        for (int w = 0; w < 2; w++) {
            CHECK(vtrn_memcpy(devices[i], vtrn_host_ref(staging, 0), vtrn_device_ref(which[w], 0), IN * OUT * 4));
            memcpy(result, host, sizeof result);
            for (int e = 0; e < IN * OUT; e++) {
                const double error = fabs((double)result[e] - sum[e]) / (1.0 + fabs(sum[e]));
                if (error > worst) worst = error;
                if (error > 1e-4) mismatches++;
            }
        }
    }
    printf("data_parallel: %u ranks (%u in process %d of %d, %s): G = sum_r X_r^T dY_r, %dx%d per rank\n", ranks, local,
           process, processes, topology, IN, OUT);
    printf("  kernel (matmul + in-kernel all-reduce): %.2f ms wall, estimated device time %.1f us (CC engine %.1f us)\n",
           kernel_seconds * 1e3, (double)kernel_device_ns / 1e3, (double)cc_ns / 1e3);
    printf("  host-called vtrn_all_reduce of %d KiB: %.2f ms wall, estimated device time %.1f us\n", IN * OUT * 4 / 1024,
           host_seconds * 1e3, (double)all_reduce_device_ns / 1e3);
    printf("  check against the host's sum: worst relative error %.2e, %d of %u elements off: %s\n", worst, mismatches,
           2 * local * IN * OUT, mismatches == 0 ? "ok" : "FAILED");
    status = mismatches == 0 ? 0 : 1;
fail:
    if (staging) vtrn_host_buffer_destroy(staging);
    if (program) vtrn_program_destroy(program);
    if (runtime) vtrn_runtime_destroy(runtime);
    return status;
}
