/*
 * test_stress.c — many threads on shared devices and cores, and teardown under fire.
 *
 *   1. stress      threads create and destroy host buffers and device memory with vtrn_memcpy round
 *                  trips, drive DMA queues of shared cores, execute kernels two threads to a core,
 *                  and load, run and unload kernels; every byte is verified, every submission's
 *                  completion is counted exactly once, and when all is destroyed
 *                  vtrn_get_handle_counts is back to zero.
 *   2. destroy     the same workers, and vtrn_runtime_destroy from another thread while they run
 *                  (several rounds): each call sees success or VTRN_ERROR_INVALID_HANDLE, nothing
 *                  crashes or hangs, and every handle is retired.
 *   3. lifecycle   threads creating and destroying runtimes at once, each using its own.
 *
 * VTRN_STRESS_SECONDS sets the stress phase's length (default 2); a long run:
 *   VTRN_STRESS_SECONDS=300 Tests/c/build/test_stress
 * A watchdog fails the program if anything hangs.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "test_framework.h"

enum { WORKERS = 8, KERNEL_FLOATS = 256, DMA_BYTES = 65536 };

typedef struct {
    vtrn_runtime_t runtime;
    vtrn_device_t device;
    atomic_int stop;
    int teardown; /* phase 2: statuses other than success and invalid handle are failures */
} shared_t;

typedef struct {
    shared_t *shared;
    int id;
    /* What the worker did and saw. */
    uint64_t operations, mismatches, submitted, completed, unexpected, invalid_handles;
    vtrn_status_t first_unexpected;
    char unexpected_message[256];
} worker_t;

static double now_seconds(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (double)time.tv_sec + (double)time.tv_nsec / 1e9;
}

/* Tallies one call's status: true when it succeeded. */
static int note(worker_t *worker, vtrn_status_t status) {
    if (status == VTRN_SUCCESS) return 1;
    if (worker->shared->teardown && status == VTRN_ERROR_INVALID_HANDLE) {
        worker->invalid_handles++;
        return 0;
    }
    if (worker->unexpected++ == 0) {
        worker->first_unexpected = status;
        snprintf(worker->unexpected_message, sizeof worker->unexpected_message, "%s", vtrn_last_error());
    }
    return 0;
}

/* Host buffers and device memory made and destroyed around vtrn_memcpy round trips. */
static void *memory_worker(void *argument) {
    worker_t *worker = argument;
    shared_t *shared = worker->shared;
    while (!atomic_load(&shared->stop)) {
        size_t bytes = 4096 * (size_t)(1 + (worker->operations + (uint64_t)worker->id) % 4) + 64;
        vtrn_host_buffer_t source = NULL, destination = NULL;
        vtrn_device_memory_t memory = NULL;
        unsigned char *from = NULL, *to = NULL;
        if (!note(worker, vtrn_host_buffer_create(shared->runtime, bytes, NULL, &source))) goto done;
        if (!note(worker, vtrn_host_buffer_create(shared->runtime, bytes, NULL, &destination))) goto done;
        if (!note(worker, vtrn_device_memory_alloc(shared->device, bytes, 0, &memory))) goto done;
        if (!note(worker, vtrn_host_buffer_map(source, (void **)&from, NULL))) goto done;
        if (!note(worker, vtrn_host_buffer_map(destination, (void **)&to, NULL))) goto done;
        for (size_t i = 0; i < bytes; i++) from[i] = (unsigned char)(i * 7 + worker->operations + 1);
        memset(to, 0, bytes);
        if (!note(worker, vtrn_memcpy(shared->device, vtrn_device_ref(memory, 0), vtrn_host_ref(source, 0), bytes))) goto done;
        if (!note(worker, vtrn_memcpy(shared->device, vtrn_host_ref(destination, 0), vtrn_device_ref(memory, 0), bytes))) goto done;
        if (!shared->teardown && memcmp(from, to, bytes) != 0) worker->mismatches++;
    done:
        note(worker, vtrn_device_memory_free(memory));
        note(worker, vtrn_host_buffer_destroy(source));
        note(worker, vtrn_host_buffer_destroy(destination));
        worker->operations++;
    }
    return NULL;
}

/* One DMA queue of a shared core: batches there and back, each submission waited for once. */
static void *dma_worker(void *argument) {
    worker_t *worker = argument;
    shared_t *shared = worker->shared;
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.core = (uint32_t)(worker->id % 2);
    options.engine = (uint32_t)worker->id;
    vtrn_dma_queue_t queue = NULL;
    vtrn_host_buffer_t source = NULL, destination = NULL;
    vtrn_device_memory_t memory = NULL;
    unsigned char *from = NULL, *to = NULL;
    if (!note(worker, vtrn_dma_queue_create(shared->device, &options, &queue))) goto out;
    if (!note(worker, vtrn_host_buffer_create(shared->runtime, DMA_BYTES, NULL, &source))) goto out;
    if (!note(worker, vtrn_host_buffer_create(shared->runtime, DMA_BYTES, NULL, &destination))) goto out;
    if (!note(worker, vtrn_device_memory_alloc(shared->device, DMA_BYTES, 0, &memory))) goto out;
    if (!note(worker, vtrn_host_buffer_map(source, (void **)&from, NULL))) goto out;
    if (!note(worker, vtrn_host_buffer_map(destination, (void **)&to, NULL))) goto out;
    uint64_t expected_sequence = 0;
    while (!atomic_load(&shared->stop)) {
        for (int i = 0; i < DMA_BYTES; i += 64) from[i] = (unsigned char)(worker->operations + (uint64_t)i);
        vtrn_dma_transfer_t transfers[2] = {
            {vtrn_device_ref(memory, 0), vtrn_host_ref(source, 0), DMA_BYTES},
            {vtrn_host_ref(destination, 0), vtrn_device_ref(memory, 0), DMA_BYTES},
        };
        if (!note(worker, vtrn_dma_queue_enqueue(queue, transfers, 2))) continue;
        uint64_t sequence = 0;
        if (!note(worker, vtrn_dma_queue_submit(queue, &sequence))) continue;
        worker->submitted++;
        /* Each submission of new work is the next sequence: none lost, none counted twice. */
        if (sequence != ++expected_sequence) worker->mismatches++;
        if (!note(worker, vtrn_dma_queue_wait(queue, sequence, UINT64_MAX))) continue;
        worker->completed++;
        if (!shared->teardown && memcmp(from, to, DMA_BYTES) != 0) worker->mismatches++;
        worker->operations++;
    }
    if (!shared->teardown) {
        vtrn_dma_queue_info_t info = VTRN_DMA_QUEUE_INFO_INIT;
        if (note(worker, vtrn_dma_queue_get_info(queue, &info))) {
            /* Two 64 KiB transfers are two descriptors per submission. */
            if (info.completed_sequence != worker->completed || info.descriptors_completed != 2 * worker->completed)
                worker->mismatches++;
        }
    }
out:
    note(worker, vtrn_device_memory_free(memory));
    note(worker, vtrn_host_buffer_destroy(source));
    note(worker, vtrn_host_buffer_destroy(destination));
    note(worker, vtrn_dma_queue_destroy(queue));
    return NULL;
}

/* A kernel that doubles 256 floats: DMA in, ACT, DMA out, ordered by semaphores. `slot` keeps the
 * SBUF of two kernels on one core apart (executions on a core run one at a time anyway). */
static vtrn_status_t build_doubler(vtrn_runtime_t runtime, int slot, vtrn_program_t *out) {
    vtrn_program_t program = NULL;
    uint32_t parameter = 0;
    vtrn_status_t status = vtrn_program_create(runtime, &program);
    if (status) return status;
    uint64_t in = (uint64_t)slot * 4096, result = in + 1024;
    vtrn_sync_t loaded = {-1, 0, 0, VTRN_SEMAPHORE_SET, 1};
    vtrn_sync_t doubled = {0, 1, 1, VTRN_SEMAPHORE_SET, 1};
    vtrn_sync_t stored = {1, 1, -1, VTRN_SEMAPHORE_ADD, 0};
    vtrn_scalar_t two = {VTRN_SCALAR_IMMEDIATE, 2.0f, vtrn_sbuf(0, 1, 0, VTRN_DTYPE_FP32, 1)};
    if (!status) status = vtrn_program_add_parameter(program, "x", KERNEL_FLOATS * 4, &parameter);
    if (!status) status = vtrn_program_dma_copy(program, vtrn_sbuf(0, 16, in, VTRN_DTYPE_FP32, 16),
                                                vtrn_hbm(parameter, 0, VTRN_DTYPE_FP32, 16, 16, 16), &loaded);
    if (!status) status = vtrn_program_activate(program, vtrn_sbuf(0, 16, result, VTRN_DTYPE_FP32, 16), VTRN_ACT_COPY,
                                                vtrn_sbuf(0, 16, in, VTRN_DTYPE_FP32, 16), &two, NULL, NULL, &doubled);
    if (!status) status = vtrn_program_dma_copy(program, vtrn_hbm(parameter, 0, VTRN_DTYPE_FP32, 16, 16, 16),
                                                vtrn_sbuf(0, 16, result, VTRN_DTYPE_FP32, 16), &stored);
    if (status) {
        vtrn_program_destroy(program);
        return status;
    }
    *out = program;
    return VTRN_SUCCESS;
}

/* Executions of one kernel, on a core another worker's kernel shares; or, with `reload`, a kernel
 * loaded, run once and unloaded each time. */
static void kernel_loop(worker_t *worker, int reload) {
    shared_t *shared = worker->shared;
    uint32_t core = (uint32_t)(worker->id % 2);
    vtrn_program_t program = NULL;
    vtrn_kernel_t kernel = NULL;
    vtrn_device_memory_t memory = NULL;
    vtrn_host_buffer_t host = NULL;
    float *values = NULL;
    if (!note(worker, build_doubler(shared->runtime, worker->id, &program))) goto out;
    if (!reload && !note(worker, vtrn_kernel_load(shared->device, core, program, &kernel))) goto out;
    if (!note(worker, vtrn_device_memory_alloc(shared->device, KERNEL_FLOATS * 4, 0, &memory))) goto out;
    if (!note(worker, vtrn_host_buffer_create(shared->runtime, KERNEL_FLOATS * 4, NULL, &host))) goto out;
    if (!note(worker, vtrn_host_buffer_map(host, (void **)&values, NULL))) goto out;
    while (!atomic_load(&shared->stop)) {
        if (reload && !note(worker, vtrn_kernel_load(shared->device, core, program, &kernel))) continue;
        float offset = (float)(worker->operations % 1000);
        for (int i = 0; i < KERNEL_FLOATS; i++) values[i] = (float)i + offset;
        vtrn_binding_t binding = {"x", memory, 0};
        vtrn_fence_t fence = NULL;
        if (note(worker, vtrn_memcpy(shared->device, vtrn_device_ref(memory, 0), vtrn_host_ref(host, 0), KERNEL_FLOATS * 4))
            && note(worker, vtrn_kernel_execute(kernel, &binding, 1, &fence))) {
            worker->submitted++;
            if (note(worker, vtrn_fence_wait(fence, UINT64_MAX))) {
                worker->completed++;
                if (note(worker, vtrn_memcpy(shared->device, vtrn_host_ref(host, 0), vtrn_device_ref(memory, 0), KERNEL_FLOATS * 4))
                    && !shared->teardown) {
                    for (int i = 0; i < KERNEL_FLOATS; i++) {
                        if (values[i] != 2.0f * ((float)i + offset)) {
                            worker->mismatches++;
                            break;
                        }
                    }
                }
            }
            note(worker, vtrn_fence_destroy(fence));
        }
        if (reload) {
            note(worker, vtrn_kernel_unload(kernel));
            kernel = NULL;
        }
        worker->operations++;
    }
out:
    note(worker, vtrn_kernel_unload(kernel));
    note(worker, vtrn_program_destroy(program));
    note(worker, vtrn_device_memory_free(memory));
    note(worker, vtrn_host_buffer_destroy(host));
}

static void *kernel_worker(void *argument) {
    kernel_loop(argument, 0);
    return NULL;
}

static void *reload_worker(void *argument) {
    kernel_loop(argument, 1);
    return NULL;
}

/* Workers 0-1 memory, 2-3 DMA queues (cores 0 and 1), 4-6 kernels (two on core 0), 7 reloads on core 1. */
static void *(*const roles[WORKERS])(void *) = {
    memory_worker, memory_worker, dma_worker, dma_worker, kernel_worker, kernel_worker, kernel_worker, reload_worker,
};

static void start(shared_t *shared, worker_t *workers, pthread_t *threads) {
    atomic_store(&shared->stop, 0);
    for (int i = 0; i < WORKERS; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].shared = shared;
        workers[i].id = i;
        pthread_create(&threads[i], NULL, roles[i], &workers[i]);
    }
}

static void join(shared_t *shared, pthread_t *threads) {
    atomic_store(&shared->stop, 1);
    for (int i = 0; i < WORKERS; i++) pthread_join(threads[i], NULL);
}

static vtrn_handle_counts_t handle_counts(void) {
    vtrn_handle_counts_t counts = VTRN_HANDLE_COUNTS_INIT;
    EXPECT_OK(vtrn_get_handle_counts(&counts));
    return counts;
}

static void open_runtime(shared_t *shared) {
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1";
    EXPECT_OK(vtrn_runtime_create(&options, &shared->runtime));
    EXPECT_OK(vtrn_device_get(shared->runtime, 0, &shared->device));
}

static void stress(double seconds) {
    shared_t shared = {0};
    worker_t workers[WORKERS];
    pthread_t threads[WORKERS];
    open_runtime(&shared);
    double began = now_seconds();
    start(&shared, workers, threads);
    while (now_seconds() - began < seconds) usleep(10000);
    join(&shared, threads);
    uint64_t operations = 0, submitted = 0, completed = 0;
    for (int i = 0; i < WORKERS; i++) {
        worker_t *worker = &workers[i];
        EXPECT_MSG(worker->unexpected == 0, "stress worker %d: %" PRIu64 " calls failed; the first with %s: %s", i,
                   worker->unexpected, vtrn_status_string(worker->first_unexpected), worker->unexpected_message);
        EXPECT_MSG(worker->mismatches == 0, "stress worker %d: %" PRIu64 " of %" PRIu64 " round trips came back wrong", i,
                   worker->mismatches, worker->operations);
        EXPECT_MSG(worker->operations > 0, "stress worker %d did nothing in %.1f s", i, seconds);
        EXPECT_MSG(worker->submitted == worker->completed, "stress worker %d: %" PRIu64 " submitted, %" PRIu64 " completed",
                   i, worker->submitted, worker->completed);
        operations += worker->operations;
        submitted += worker->submitted;
        completed += worker->completed;
    }
    vtrn_handle_counts_t counts = handle_counts();
    EXPECT_EQ_U64(counts.total, 2); /* the runtime and its device */
    EXPECT_OK(vtrn_runtime_destroy(shared.runtime));
    counts = handle_counts();
    EXPECT_EQ_U64(counts.total, 0);
    printf("stress: %" PRIu64 " operations by %d threads in %.1f s; %" PRIu64 " submissions, %" PRIu64
           " completions; live handles at the end: %" PRIu64 "\n",
           operations, WORKERS, now_seconds() - began, submitted, completed, counts.total);
}

static void destroy_under_fire(int rounds) {
    uint64_t invalid = 0, operations = 0;
    for (int round = 0; round < rounds; round++) {
        shared_t shared = {0};
        shared.teardown = 1;
        worker_t workers[WORKERS];
        pthread_t threads[WORKERS];
        open_runtime(&shared);
        start(&shared, workers, threads);
        usleep(100000 + 40000 * (useconds_t)round);
        EXPECT_OK(vtrn_runtime_destroy(shared.runtime));
        usleep(50000); /* the workers go on, meeting destroyed handles */
        join(&shared, threads);
        for (int i = 0; i < WORKERS; i++) {
            EXPECT_MSG(workers[i].unexpected == 0, "round %d worker %d: %" PRIu64 " calls failed other than with an invalid "
                       "handle; the first with %s: %s", round, i, workers[i].unexpected,
                       vtrn_status_string(workers[i].first_unexpected), workers[i].unexpected_message);
            invalid += workers[i].invalid_handles;
            operations += workers[i].operations;
        }
        vtrn_handle_counts_t counts = handle_counts();
        EXPECT_MSG(counts.total == 0, "round %d: %" PRIu64 " handles live after the runtime's destruction", round, counts.total);
    }
    vtrn_handle_counts_t counts = handle_counts();
    printf("destroy: %d rounds of vtrn_runtime_destroy under %d threads: %" PRIu64 " operations, %" PRIu64
           " calls answered VTRN_ERROR_INVALID_HANDLE, %" PRIu64 " bytes of orphaned host buffers kept reserved\n",
           rounds, WORKERS, operations, invalid, counts.orphaned_host_bytes);
}

typedef struct {
    int iterations;
    uint64_t failures;
    char message[256];
} lifecycle_t;

static void *lifecycle_worker(void *argument) {
    lifecycle_t *lifecycle = argument;
    for (int i = 0; i < lifecycle->iterations; i++) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = i % 2 ? "trn1" : "trn2,trn1";
        vtrn_runtime_t runtime = NULL;
        vtrn_device_t device = NULL;
        vtrn_host_buffer_t buffer = NULL;
        vtrn_device_memory_t memory = NULL;
        vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
        if (!status) status = vtrn_device_get(runtime, 0, &device);
        if (!status) status = vtrn_host_buffer_create(runtime, 8192, NULL, &buffer);
        if (!status) status = vtrn_device_memory_alloc(device, 8192, 0, &memory);
        if (!status) status = vtrn_memcpy(device, vtrn_device_ref(memory, 0), vtrn_host_ref(buffer, 0), 8192);
        if (status && lifecycle->failures++ == 0)
            snprintf(lifecycle->message, sizeof lifecycle->message, "%s: %s", vtrn_status_string(status), vtrn_last_error());
        /* Half the runtimes are destroyed with their objects still alive. */
        if (i % 2 == 0) {
            vtrn_device_memory_free(memory);
            vtrn_host_buffer_destroy(buffer);
        }
        if (runtime && vtrn_runtime_destroy(runtime) && lifecycle->failures++ == 0)
            snprintf(lifecycle->message, sizeof lifecycle->message, "destroy: %s", vtrn_last_error());
    }
    return NULL;
}

static void concurrent_lifecycles(int threads_count, int iterations) {
    pthread_t threads[16];
    lifecycle_t lifecycles[16];
    double began = now_seconds();
    for (int i = 0; i < threads_count; i++) {
        lifecycles[i] = (lifecycle_t){.iterations = iterations};
        pthread_create(&threads[i], NULL, lifecycle_worker, &lifecycles[i]);
    }
    for (int i = 0; i < threads_count; i++) {
        pthread_join(threads[i], NULL);
        EXPECT_MSG(lifecycles[i].failures == 0, "lifecycle thread %d: %" PRIu64 " failures; the first: %s", i,
                   lifecycles[i].failures, lifecycles[i].message);
    }
    EXPECT_EQ_U64(handle_counts().total, 0);
    printf("lifecycle: %d threads x %d runtimes created, used and destroyed in %.2f s\n", threads_count, iterations,
           now_seconds() - began);
}

static void watchdog(int signal) {
    (void)signal;
    static const char message[] = "FAIL test_stress: the watchdog fired: something hangs\n";
    ssize_t written = write(1, message, sizeof message - 1);
    (void)written;
    _exit(3);
}

int main(void) {
    const char *text = getenv("VTRN_STRESS_SECONDS");
    double seconds = text ? atof(text) : 2.0;
    if (seconds <= 0) seconds = 2.0;
    signal(SIGALRM, watchdog);
    alarm((unsigned)(seconds * 2) + 120);
    GROUP("stress: shared devices and cores");
    stress(seconds);
    GROUP("destroy: vtrn_runtime_destroy under fire");
    destroy_under_fire(seconds > 10 ? 50 : 5);
    GROUP("lifecycle: concurrent runtimes");
    concurrent_lifecycles(8, seconds > 10 ? 200 : 20);
    return finish("test_stress");
}
