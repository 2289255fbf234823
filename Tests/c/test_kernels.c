/*
 * test_kernels.c — programs, kernels and executions through the C ABI, tested the way a C user
 * meets them: written only from include/vtrn.h and its documented behaviour.
 *
 *   make -C Tests/c check          (or: make -C Tests/c build/test_kernels && Tests/c/build/test_kernels)
 *
 * The framework is test_framework.h; the program ends with the line
 * "test_kernels: N passed, M failed". Set VTRN_TEST_VERBOSE=1 to print each group's name.
 *
 * Devices are the process's: runtimes of the same topology share device 0's cores, and a core
 * belongs to the first runtime that loads a kernel (or opens a DMA queue) on it until that runtime
 * is destroyed. So every test waits for its executions and destroys its runtimes before the next
 * one starts.
 *
 * Some tests need an execution that keeps its core busy for a while (a "blocker": thousands of
 * ACTIVATEs over [128, 1024] tiles). Its runtime is made with VTRN_EXEC_TIMEOUT_MS set, so the
 * blocker ends with VTRN_ERROR_TIMEOUT after that long whatever the speed of the build: the tests
 * stay fast in debug builds and still find the core busy in release builds.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_framework.h"
#include "vtrn.h"

/* ============================================================================================
 * Helpers
 * ============================================================================================ */

#define SENTINEL_PROGRAM ((vtrn_program_t)(uintptr_t)0x5e7e1a21u)
#define SENTINEL_KERNEL ((vtrn_kernel_t)(uintptr_t)0x5e7e1a22u)
#define SENTINEL_FENCE ((vtrn_fence_t)(uintptr_t)0x5e7e1a23u)
#define GARBAGE ((void *)(uintptr_t)0x1234)

/* trn1 per partition (the device of every test but the concurrency one). */
#define SBUF_BYTES 196608u
#define PSUM_BYTES 16384u

static const char *const variables[] = {
    "VTRN_TOPOLOGY", "VTRN_VISIBLE_CORES", "VTRN_LOG_LEVEL", "VTRN_EXEC_TIMEOUT_MS", "VTRN_TRACE",
};

/* A runtime of `topology`, with VTRN_EXEC_TIMEOUT_MS set to `timeout_ms` while it is made (NULL:
 * unset, the default of 30 s); NULL after a recorded failure. Under a sanitizer the timeout is
 * test_slowdown() times longer, as the executions that must outlast it are that much slower. */
static vtrn_runtime_t create_runtime_with_timeout(const char *topology, const char *timeout_ms) {
    if (timeout_ms != NULL) {
        char scaled[32];
        snprintf(scaled, sizeof scaled, "%llu", strtoull(timeout_ms, NULL, 10) * test_slowdown());
        setenv("VTRN_EXEC_TIMEOUT_MS", scaled, 1);
    }
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    vtrn_runtime_t runtime = NULL;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    unsetenv("VTRN_EXEC_TIMEOUT_MS");
    record(status == VTRN_SUCCESS && runtime != NULL, __FILE__, __LINE__,
           "vtrn_runtime_create(topology \"%s\") returned %s: %s", topology, vtrn_status_string(status),
           vtrn_last_error());
    return status == VTRN_SUCCESS ? runtime : NULL;
}

static vtrn_runtime_t create_runtime(const char *topology) { return create_runtime_with_timeout(topology, NULL); }

static vtrn_program_t new_program(vtrn_runtime_t runtime) {
    vtrn_program_t program = NULL;
    EXPECT_OK(vtrn_program_create(runtime, &program));
    return program;
}

static uint32_t add_parameter(vtrn_program_t program, const char *name, uint64_t bytes) {
    uint32_t index = UINT32_MAX;
    EXPECT_OK(vtrn_program_add_parameter(program, name, bytes, &index));
    return index;
}

static uint32_t instruction_count(vtrn_program_t program) {
    uint32_t count = UINT32_MAX;
    EXPECT_OK(vtrn_program_instruction_count(program, &count));
    return count;
}

static vtrn_kernel_t load(vtrn_device_t device, uint32_t core, vtrn_program_t program) {
    vtrn_kernel_t kernel = NULL;
    vtrn_status_t status = vtrn_kernel_load(device, core, program, &kernel);
    record(status == VTRN_SUCCESS, __FILE__, __LINE__, "vtrn_kernel_load(core %u) returned %s: %s", core,
           vtrn_status_string(status), vtrn_last_error());
    return status == VTRN_SUCCESS ? kernel : NULL;
}

static vtrn_device_memory_t allocate(vtrn_device_t device, uint64_t bytes) {
    vtrn_device_memory_t memory = NULL;
    EXPECT_OK(vtrn_device_memory_alloc(device, bytes, 0, &memory));
    return memory;
}

/* Copies between the caller's memory and HBM through a registered host buffer. */
static void write_memory(vtrn_runtime_t runtime, vtrn_device_t device, vtrn_device_memory_t memory, const void *data,
                         size_t bytes) {
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_register(runtime, (void *)(uintptr_t)data, bytes, &buffer));
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(memory, 0), vtrn_host_ref(buffer, 0), bytes));
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
}

static void read_memory(vtrn_runtime_t runtime, vtrn_device_t device, vtrn_device_memory_t memory, void *data,
                        size_t bytes) {
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_register(runtime, data, bytes, &buffer));
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(buffer, 0), vtrn_device_ref(memory, 0), bytes));
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
}

/* fp32 tiles of SBUF and PSUM from partition 0. */
static vtrn_access_t sbuf(uint32_t partitions, uint64_t offset, uint32_t elements) {
    return vtrn_sbuf(0, partitions, offset, VTRN_DTYPE_FP32, elements);
}

static vtrn_access_t psum(uint32_t partitions, uint64_t offset, uint32_t elements) {
    return vtrn_psum(0, partitions, offset, VTRN_DTYPE_FP32, elements);
}

/* Semaphore work: wait for `semaphore` >= value; add 1 to `semaphore`; or both. */
static vtrn_sync_t waits(int32_t semaphore, uint32_t value) {
    vtrn_sync_t sync = VTRN_SYNC_NONE;
    sync.wait_semaphore = semaphore;
    sync.wait_value = value;
    return sync;
}

static vtrn_sync_t signals(int32_t semaphore) {
    vtrn_sync_t sync = VTRN_SYNC_NONE;
    sync.signal_semaphore = semaphore;
    sync.signal_op = VTRN_SEMAPHORE_ADD;
    sync.signal_value = 1;
    return sync;
}

static vtrn_sync_t waits_signals(int32_t wait_semaphore, uint32_t value, int32_t signal_semaphore) {
    vtrn_sync_t sync = signals(signal_semaphore);
    sync.wait_semaphore = wait_semaphore;
    sync.wait_value = value;
    return sync;
}

static vtrn_scalar_t immediate(float value) {
    vtrn_scalar_t scalar;
    memset(&scalar, 0, sizeof scalar);
    scalar.value = value;
    return scalar;
}

static vtrn_scalar_t tile_scalar(vtrn_access_t tile) {
    vtrn_scalar_t scalar;
    memset(&scalar, 0, sizeof scalar);
    scalar.is_tile = 1;
    scalar.tile = tile;
    return scalar;
}

static vtrn_binding_t binding(const char *name, vtrn_device_memory_t memory, uint64_t offset) {
    vtrn_binding_t result;
    result.name = name;
    result.memory = memory;
    result.offset = offset;
    return result;
}

/* Executes and waits; fills `info` when not NULL; returns the execution's status. */
static vtrn_status_t run(vtrn_kernel_t kernel, const vtrn_binding_t *bindings, uint32_t count,
                         vtrn_execution_info_t *info) {
    vtrn_fence_t fence = NULL;
    vtrn_status_t status = vtrn_kernel_execute(kernel, bindings, count, &fence);
    if (status != VTRN_SUCCESS) return status;
    status = vtrn_fence_wait(fence, UINT64_MAX);
    if (info != NULL) EXPECT_OK(vtrn_fence_get_info(fence, info));
    EXPECT_OK(vtrn_fence_destroy(fence));
    return status;
}

/* A call that must succeed, recorded with the library's message. */
#define EXPECT_RUN_OK(kernel, bindings, count, info)                                                 \
    do {                                                                                             \
        vtrn_status_t run_status_ = run((kernel), (bindings), (count), (info));                      \
        record(run_status_ == VTRN_SUCCESS, __FILE__, __LINE__, "execution returned %s: %s",         \
               vtrn_status_string(run_status_), vtrn_last_error());                                  \
    } while (0)

/* Loads `program` on core 0 of `device`, which must fail with VTRN_ERROR_INVALID_PROGRAM and a
 * message holding every string that follows; the out-parameter stays untouched. Destroys the
 * program. */
#define EXPECT_REJECTED(device, program, ...) \
    expect_rejected(__FILE__, __LINE__, (device), (program), __VA_ARGS__, (const char *)NULL)

static void expect_rejected(const char *file, int line, vtrn_device_t device, vtrn_program_t program, ...) {
    vtrn_kernel_t kernel = SENTINEL_KERNEL;
    vtrn_status_t status = vtrn_kernel_load(device, 0, program, &kernel);
    const char *message = vtrn_last_error();
    if (status != VTRN_ERROR_INVALID_PROGRAM) {
        record(0, file, line, "vtrn_kernel_load returned %s (%d), expected invalid program; last error: \"%s\"",
               vtrn_status_string(status), (int)status, status == VTRN_SUCCESS ? "" : message);
        if (status == VTRN_SUCCESS) (void)vtrn_kernel_unload(kernel);
    } else {
        va_list needles;
        va_start(needles, program);
        const char *missing = NULL;
        for (const char *needle = va_arg(needles, const char *); needle != NULL; needle = va_arg(needles, const char *)) {
            if (!contains(message, needle)) {
                missing = needle;
                break;
            }
        }
        va_end(needles);
        record(missing == NULL, file, line, "vtrn_kernel_load: vtrn_last_error() is \"%s\", which lacks \"%s\"", message,
               missing ? missing : "");
        record(kernel == SENTINEL_KERNEL, file, line, "vtrn_kernel_load wrote its out-parameter on failure");
    }
    EXPECT_OK(vtrn_program_destroy(program));
}

/* Loads `program` on core 0, which must succeed; unloads the kernel and destroys the program. */
#define EXPECT_ACCEPTED(device, program) expect_accepted(__FILE__, __LINE__, (device), (program))

static void expect_accepted(const char *file, int line, vtrn_device_t device, vtrn_program_t program) {
    vtrn_kernel_t kernel = NULL;
    vtrn_status_t status = vtrn_kernel_load(device, 0, program, &kernel);
    record(status == VTRN_SUCCESS, file, line, "vtrn_kernel_load returned %s: %s", vtrn_status_string(status),
           vtrn_last_error());
    if (status == VTRN_SUCCESS) EXPECT_OK(vtrn_kernel_unload(kernel));
    EXPECT_OK(vtrn_program_destroy(program));
}

/* A kernel on `core` that keeps the core busy far longer than any test waits: its executions end
 * by the runtime's VTRN_EXEC_TIMEOUT_MS. First it writes 1.0 to its parameter "started", so that
 * the host can tell it runs (start_blocker). SBUF bytes 0-4095 and 12288-12291. */
static vtrn_kernel_t load_blocker(vtrn_runtime_t runtime, vtrn_device_t device, uint32_t core) {
    vtrn_program_t program = new_program(runtime);
    uint32_t started = add_parameter(program, "started", 4);
    const vtrn_scalar_t one = immediate(1.0f);
    const vtrn_sync_t memset_done = signals(0), after_memset = waits(0, 2);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 1024), 0.0f, &memset_done));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(1, 12288, 1), 1.0f, &memset_done));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(started, 0, VTRN_DTYPE_FP32, 1, 1, 1), sbuf(1, 12288, 1),
                                    &after_memset));
    vtrn_status_t status = VTRN_SUCCESS;
    for (int i = 0; i < 4096 && status == VTRN_SUCCESS; i++) {
        status = vtrn_program_activate(program, sbuf(128, 0, 1024), VTRN_ACT_EXP, sbuf(128, 0, 1024), &one, NULL, NULL,
                                       i == 0 ? &after_memset : NULL);
    }
    EXPECT_MSG(status == VTRN_SUCCESS, "building the blocker: %s: %s", vtrn_status_string(status), vtrn_last_error());
    vtrn_kernel_t kernel = load(device, core, program);
    EXPECT_OK(vtrn_program_destroy(program));
    return kernel;
}

/* Executes the blocker and returns its fence once it runs (it has left the command queue). */
static vtrn_fence_t start_blocker(vtrn_runtime_t runtime, vtrn_device_t device, vtrn_kernel_t blocker) {
    vtrn_device_memory_t started = NULL;
    EXPECT_OK(vtrn_device_memory_alloc(device, 4, 0, &started));
    const float zero = 0;
    float value = 0;
    write_memory(runtime, device, started, &zero, sizeof zero);
    const vtrn_binding_t bindings[] = { { "started", started, 0 } };
    vtrn_fence_t fence = NULL;
    EXPECT_OK(vtrn_kernel_execute(blocker, bindings, 1, &fence));
    /* Poll the flag with a host buffer over it (unchecked calls: one record for the loop). */
    vtrn_host_buffer_t flag = NULL;
    EXPECT_OK(vtrn_host_buffer_register(runtime, &value, sizeof value, &flag));
    vtrn_status_t status = VTRN_NOT_READY, copied = VTRN_SUCCESS;
    while (value != 1.0f && status == VTRN_NOT_READY && copied == VTRN_SUCCESS) {
        copied = vtrn_memcpy(device, vtrn_host_ref(flag, 0), vtrn_device_ref(started, 0), sizeof value);
        if (copied == VTRN_SUCCESS) copied = vtrn_fence_status(fence, &status);
    }
    EXPECT_MSG(value == 1.0f, "the blocker was not seen running: %s, execution %s", vtrn_status_string(copied),
               vtrn_status_string(status));
    EXPECT_OK(vtrn_host_buffer_destroy(flag));
    return fence;
}

/* A kernel that adds 1 to the fp32 in parameter "counter": DMA in, DVE add, DMA out, ordered by
 * semaphores. Run N times from 0, the counter says how many executions ran. SBUF bytes 8192-8195
 * of partition 0. */
static vtrn_kernel_t load_counter(vtrn_runtime_t runtime, vtrn_device_t device, uint32_t core) {
    vtrn_program_t program = new_program(runtime);
    uint32_t counter = add_parameter(program, "counter", 4);
    const vtrn_access_t value = sbuf(1, 8192, 1);
    const vtrn_access_t in_hbm = vtrn_hbm(counter, 0, VTRN_DTYPE_FP32, 1, 1, 1);
    const vtrn_sync_t loaded = signals(0), added = waits_signals(0, 1, 1), stored = waits(1, 1);
    const vtrn_scalar_t one = immediate(1.0f);
    EXPECT_OK(vtrn_program_dma_copy(program, value, in_hbm, &loaded));
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, value, value, VTRN_ALU_ADD, &one, VTRN_ALU_BYPASS,
                                         NULL, 0, &added));
    EXPECT_OK(vtrn_program_dma_copy(program, in_hbm, value, &stored));
    vtrn_kernel_t kernel = load(device, core, program);
    EXPECT_OK(vtrn_program_destroy(program));
    return kernel;
}

static float read_counter(vtrn_runtime_t runtime, vtrn_device_t device, vtrn_device_memory_t counter) {
    float value = -1;
    read_memory(runtime, device, counter, &value, sizeof value);
    return value;
}

static void reset_counter(vtrn_runtime_t runtime, vtrn_device_t device, vtrn_device_memory_t counter) {
    const float zero = 0;
    write_memory(runtime, device, counter, &zero, sizeof zero);
}

static vtrn_status_t fence_status(vtrn_fence_t fence) {
    vtrn_status_t status = VTRN_STATUS_FORCE32;
    EXPECT_OK(vtrn_fence_status(fence, &status));
    return status;
}

/* ============================================================================================
 * Basics: load, execute, wait, info
 * ============================================================================================ */

/* SBUF and PSUM start as NaN bytes (0xff): a fresh device's core, read where nothing wrote. */
static void test_initial_contents(void) {
    GROUP("SBUF and PSUM start as 0xff bytes");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program = new_program(runtime);
    uint32_t out = add_parameter(program, "out", 2 * 128 * 64 * 4);
    /* The last 256 bytes of SBUF and of PSUM, in all 128 partitions. */
    const vtrn_sync_t copied = signals(0), after_copy = waits(0, 1);
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(out, 0, VTRN_DTYPE_FP32, 128, 64, 64),
                                    sbuf(128, SBUF_BYTES - 256, 64), NULL));
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, sbuf(128, SBUF_BYTES - 512, 64),
                                       psum(128, PSUM_BYTES - 256, 64), &copied));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(out, 128 * 64 * 4, VTRN_DTYPE_FP32, 128, 64, 64),
                                    sbuf(128, SBUF_BYTES - 512, 64), &after_copy));
    vtrn_kernel_t kernel = load(device, 1, program);
    vtrn_device_memory_t memory = allocate(device, 2 * 128 * 64 * 4);
    const vtrn_binding_t bindings[] = { binding("out", memory, 0) };
    EXPECT_RUN_OK(kernel, bindings, 1, NULL);
    static unsigned char bytes[2 * 128 * 64 * 4];
    read_memory(runtime, device, memory, bytes, sizeof bytes);
    EXPECT_MSG(bytes_are(bytes, sizeof bytes / 2, 0xff), "SBUF that nothing wrote is not all 0xff bytes");
    EXPECT_MSG(bytes_are(bytes + sizeof bytes / 2, sizeof bytes / 2, 0xff),
               "PSUM that nothing wrote is not all 0xff bytes (TENSOR_COPY fp32 -> fp32 is bit exact)");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static vtrn_status_t call_execution_info(void *context, void *info) {
    return vtrn_fence_get_info((vtrn_fence_t)context, (vtrn_execution_info_t *)info);
}

static void test_basics(void) {
    GROUP("load, execute, wait, info");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);

    /* out = exp(x * 2) row by row, through SBUF: DMA -> ACT -> DMA, ordered by semaphores. */
    vtrn_program_t program = new_program(runtime);
    EXPECT_EQ_U64(instruction_count(program), 0);
    EXPECT_EQ_U64(add_parameter(program, "x", 8 * 100 * 4), 0);
    EXPECT_EQ_U64(add_parameter(program, "out", 8 * 100 * 4), 1);
    const vtrn_sync_t loaded = signals(3), computed = waits_signals(3, 1, 4), stored = waits(4, 1);
    const vtrn_scalar_t two = immediate(2.0f);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(8, 0, 100), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 8, 100, 100), &loaded));
    EXPECT_OK(vtrn_program_activate(program, sbuf(8, 512, 100), VTRN_ACT_EXP, sbuf(8, 0, 100), &two, NULL, NULL,
                                    &computed));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(1, 0, VTRN_DTYPE_FP32, 8, 100, 100), sbuf(8, 512, 100), &stored));
    EXPECT_EQ_U64(instruction_count(program), 3);
    vtrn_kernel_t kernel = load(device, 0, program);
    EXPECT(kernel != NULL);
    /* The kernel does not need its program any more. */
    EXPECT_OK(vtrn_program_destroy(program));

    vtrn_device_memory_t x = allocate(device, 8 * 100 * 4), out = allocate(device, 8 * 100 * 4);
    float input[800], output[800];
    for (int i = 0; i < 800; i++) input[i] = (float)(i % 17) * 0.125f - 1.0f;
    write_memory(runtime, device, x, input, sizeof input);
    const vtrn_binding_t bindings[] = { binding("out", out, 0), binding("x", x, 0) }; /* any order */
    vtrn_fence_t fence = SENTINEL_FENCE;
    EXPECT_OK(vtrn_kernel_execute(kernel, bindings, 2, &fence));
    EXPECT(fence != SENTINEL_FENCE && fence != NULL);
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    EXPECT_EQ_U64(fence_status(fence), VTRN_SUCCESS);
    /* Waiting again, or polling, gives the same. */
    EXPECT_OK(vtrn_fence_wait(fence, 0));
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    read_memory(runtime, device, out, output, sizeof output);
    int wrong = 0;
    for (int i = 0; i < 800; i++) {
        float expected = expf(input[i] * 2.0f);
        if (!(fabsf(output[i] - expected) <= 1e-6f * expected)) wrong++;
    }
    EXPECT_MSG(wrong == 0, "%d of 800 results differ from exp(2x)", wrong);

    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_OK(vtrn_fence_get_info(fence, &info));
    EXPECT_EQ_U64(info.struct_size, sizeof info);
    EXPECT_EQ_U64(info.status, VTRN_SUCCESS);
    EXPECT(info.wall_ns > 0);
    EXPECT(info.device_ns > 0);
    /* device_cycles is device_ns in cycles of trn1's 2.8 GHz PE clock. */
    EXPECT_MSG(fabs((double)info.device_cycles - (double)info.device_ns * 2.8) <= 3.0,
               "device_cycles %" PRIu64 " is not device_ns %" PRIu64 " x 2.8", info.device_cycles, info.device_ns);
    EXPECT_EQ_U64(info.instructions[0], 0); /* PE */
    EXPECT_EQ_U64(info.instructions[1], 1); /* ACT */
    EXPECT_EQ_U64(info.instructions[2], 0); /* DVE */
    EXPECT_EQ_U64(info.instructions[3], 0); /* POOL */
    EXPECT_EQ_U64(info.instructions[4], 2); /* DMA */
    EXPECT(info.engine_busy_ns[1] > 0 && info.engine_busy_ns[4] > 0);
    EXPECT(info.engine_busy_ns[0] == 0 && info.engine_busy_ns[2] == 0 && info.engine_busy_ns[3] == 0);
    /* The three steps are chained, so the device time is at least their sum. */
    EXPECT_MSG(info.device_ns + 2 >= info.engine_busy_ns[1] + info.engine_busy_ns[4],
               "device_ns %" PRIu64 " < busy ACT %" PRIu64 " + DMA %" PRIu64, info.device_ns, info.engine_busy_ns[1],
               info.engine_busy_ns[4]);
    /* The info struct's sizes: too small rejected (naming VTRN_EXECUTION_INFO_INIT), bigger accepted. */
    const struct info_kind kind = { "vtrn_execution_info_t", "VTRN_EXECUTION_INFO_INIT", sizeof(vtrn_execution_info_t),
                                    call_execution_info };
    check_grown_info_struct_sizes(&kind, offsetof(vtrn_execution_info_t, cc_instructions), (void *)fence);
    EXPECT_OK(vtrn_fence_destroy(fence));

    /* The same kernel runs any number of times, with other bindings each time: here in place. */
    const vtrn_binding_t in_place[] = { binding("x", x, 0), binding("out", x, 0) };
    EXPECT_RUN_OK(kernel, in_place, 2, NULL);
    EXPECT_RUN_OK(kernel, in_place, 2, NULL);
    read_memory(runtime, device, x, output, sizeof output);
    EXPECT_MSG(fabsf(output[5] - expf(expf(input[5] * 2) * 2)) <= 1e-5f * output[5], "exp(2 exp(2x)) is %g", output[5]);

    /* A binding may start inside a block (the rest of the block must hold the parameter). */
    vtrn_device_memory_t big = allocate(device, 3 * 8 * 100 * 4);
    write_memory(runtime, device, big, input, sizeof input);
    const vtrn_binding_t offsets[] = { binding("x", big, 0), binding("out", big, 2 * 8 * 100 * 4) };
    EXPECT_RUN_OK(kernel, offsets, 2, NULL);
    float block[3 * 800];
    read_memory(runtime, device, big, block, sizeof block);
    EXPECT_MSG(fabsf(block[1600 + 7] - expf(input[7] * 2)) <= 1e-6f * block[1600 + 7], "offset binding: %g",
               block[1600 + 7]);

    /* An empty program loads and runs: nothing to do, no time. */
    vtrn_program_t empty = new_program(runtime);
    vtrn_kernel_t empty_kernel = load(device, 0, empty);
    EXPECT_OK(vtrn_program_destroy(empty));
    vtrn_execution_info_t empty_info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_RUN_OK(empty_kernel, NULL, 0, &empty_info);
    EXPECT_EQ_U64(empty_info.device_ns, 0);
    EXPECT_EQ_U64(empty_info.instructions[0] + empty_info.instructions[1] + empty_info.instructions[2] +
                      empty_info.instructions[3] + empty_info.instructions[4],
                  0);

    /* destroy(NULL) and unload(NULL) are no-ops. */
    EXPECT_OK(vtrn_program_destroy(NULL));
    EXPECT_OK(vtrn_kernel_unload(NULL));
    EXPECT_OK(vtrn_fence_destroy(NULL));
    EXPECT_OK(vtrn_kernel_unload(kernel));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* Each execution's semaphores start at 0: were the previous run's left over, ACT (whose wait would
 * then be met at once) would copy the tile before the DMA loads this run's input. */
static void test_semaphores_reset(void) {
    GROUP("semaphores start at 0 in each execution");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program = new_program(runtime);
    uint32_t in = add_parameter(program, "in", 128 * 4), out = add_parameter(program, "out", 128 * 4);
    const vtrn_sync_t loaded = signals(7), copied = waits_signals(7, 1, 8), stored = waits(8, 1);
    const vtrn_scalar_t one = immediate(1.0f);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(128, 0, 1), vtrn_hbm(in, 0, VTRN_DTYPE_FP32, 128, 1, 1), &loaded));
    EXPECT_OK(vtrn_program_activate(program, sbuf(128, 64, 1), VTRN_ACT_COPY, sbuf(128, 0, 1), &one, NULL, NULL,
                                    &copied));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(out, 0, VTRN_DTYPE_FP32, 128, 1, 1), sbuf(128, 64, 1), &stored));
    vtrn_kernel_t kernel = load(device, 0, program);
    EXPECT_OK(vtrn_program_destroy(program));
    vtrn_device_memory_t in_memory = allocate(device, 512), out_memory = allocate(device, 512);
    const vtrn_binding_t bindings[] = { binding("in", in_memory, 0), binding("out", out_memory, 0) };
    for (int run_index = 1; run_index <= 3; run_index++) {
        float values[128], results[128];
        for (int i = 0; i < 128; i++) values[i] = (float)(run_index * 1000 + i);
        write_memory(runtime, device, in_memory, values, sizeof values);
        EXPECT_RUN_OK(kernel, bindings, 2, NULL);
        read_memory(runtime, device, out_memory, results, sizeof results);
        EXPECT_MSG(memcmp(values, results, sizeof values) == 0, "run %d: out[0] is %g, expected %g", run_index,
                   results[0], values[0]);
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* MATMUL accumulates in PSUM: the first overwrites, the next adds; exact for small integers. */
static void test_matmul_accumulates(void) {
    GROUP("MATMUL: accumulate, transposed load");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    enum { M = 3, K = 4, N = 5 };
    vtrn_program_t program = new_program(runtime);
    uint32_t a = add_parameter(program, "a", M * K * 4), b = add_parameter(program, "b", K * N * 4);
    uint32_t c = add_parameter(program, "c", M * N * 4);
    /* A^T by the access pattern: partition k steps 1 element, the free index m steps K. */
    vtrn_access_t a_transposed = vtrn_hbm(a, 0, VTRN_DTYPE_FP32, K, 1, M);
    a_transposed.stride[0] = K;
    const vtrn_sync_t a_loaded = signals(0), b_loaded = signals(0);
    const vtrn_sync_t first = waits_signals(0, 2, 1), second = signals(1), copied = waits_signals(1, 2, 2);
    const vtrn_sync_t stored = waits(2, 1);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(K, 0, M), a_transposed, &a_loaded));
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(K, 64, N), vtrn_hbm(b, 0, VTRN_DTYPE_FP32, K, N, N), &b_loaded));
    /* C = A·B, then C += A·B: 2 A·B. */
    EXPECT_OK(vtrn_program_matmul(program, psum(M, 2048, N), sbuf(K, 0, M), sbuf(K, 64, N), 0, &first));
    EXPECT_OK(vtrn_program_matmul(program, psum(M, 2048, N), sbuf(K, 0, M), sbuf(K, 64, N), 1, &second));
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, sbuf(M, 128, N), psum(M, 2048, N), &copied));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(c, 0, VTRN_DTYPE_FP32, M, N, N), sbuf(M, 128, N), &stored));
    vtrn_kernel_t kernel = load(device, 0, program);
    EXPECT_OK(vtrn_program_destroy(program));

    float a_values[M * K], b_values[K * N], c_values[M * N];
    for (int i = 0; i < M * K; i++) a_values[i] = (float)(i % 5) - 2;
    for (int i = 0; i < K * N; i++) b_values[i] = (float)(i % 7) - 3;
    vtrn_device_memory_t a_memory = allocate(device, sizeof a_values), b_memory = allocate(device, sizeof b_values);
    vtrn_device_memory_t c_memory = allocate(device, sizeof c_values);
    write_memory(runtime, device, a_memory, a_values, sizeof a_values);
    write_memory(runtime, device, b_memory, b_values, sizeof b_values);
    const vtrn_binding_t bindings[] = { binding("a", a_memory, 0), binding("b", b_memory, 0), binding("c", c_memory, 0) };
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_RUN_OK(kernel, bindings, 3, &info);
    read_memory(runtime, device, c_memory, c_values, sizeof c_values);
    int wrong = 0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float expected = 0;
            for (int k = 0; k < K; k++) expected += a_values[i * K + k] * b_values[k * N + j];
            if (c_values[i * N + j] != 2 * expected) wrong++;
        }
    }
    EXPECT_MSG(wrong == 0, "%d of %d elements of 2 A·B are wrong", wrong, M * N);
    EXPECT_EQ_U64(info.instructions[0], 2);
    EXPECT_EQ_U64(info.instructions[2], 1);
    EXPECT_EQ_U64(info.instructions[4], 3);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static vtrn_program_t validation_program(vtrn_runtime_t runtime);

/* A program whose instructions run one after another whatever their engines: each waits for
 * semaphore 200 to count the instructions before it and adds 1 (SerialProgram in the Python suite). */
typedef struct serial_program {
    vtrn_program_t program;
    uint32_t count;
} serial_program_t;

static vtrn_sync_t in_turn(serial_program_t *serial) { return waits_signals(200, serial->count++, 200); }

static vtrn_access_t int_tile(uint32_t partitions, uint64_t offset, vtrn_dtype_t dtype, uint32_t elements) {
    return vtrn_sbuf(0, partitions, offset, dtype, elements);
}

/* Bitvec ops act on 32-bit patterns, exactly; vtrn_scalar_int32 gives exact immediates. */
static void test_bitvec_ops(void) {
    GROUP("bitvec ops: exact on 32 bits, int32 immediates and tiles, narrow results wrap");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    enum { P = 4, F = 8 };
    serial_program_t serial = { new_program(runtime), 0 };
    uint32_t in = add_parameter(serial.program, "in", P * F * 4);
    uint32_t out32 = add_parameter(serial.program, "out32", P * 5 * F * 4), out8 = add_parameter(serial.program, "out8", P * F);
    uint32_t truth = add_parameter(serial.program, "truth", P * F * 4), halves = add_parameter(serial.program, "halves", P * 2 * 4);
    const vtrn_access_t x = int_tile(P, 0, VTRN_DTYPE_INT32, F);
    const vtrn_scalar_t mask = vtrn_scalar_int32(0x7fffffff), four = vtrn_scalar_int32(4), three = vtrn_scalar_int32(3);
    const vtrn_scalar_t column = tile_scalar(int_tile(P, 0, VTRN_DTYPE_INT32, 1)); /* x[p][0] */
    vtrn_sync_t sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, x, vtrn_hbm(in, 0, VTRN_DTYPE_INT32, P, F, F), &sync));
    sync = in_turn(&serial); /* y1 = x & 0x7fffffff */
    EXPECT_OK(vtrn_program_tensor_scalar(serial.program, VTRN_ENGINE_DVE, int_tile(P, 64, VTRN_DTYPE_INT32, F), x,
                                         VTRN_ALU_BITWISE_AND, &mask, VTRN_ALU_BYPASS, NULL, 0, &sync));
    sync = in_turn(&serial); /* y2 = x >> 4, logical */
    EXPECT_OK(vtrn_program_tensor_scalar(serial.program, VTRN_ENGINE_DVE, int_tile(P, 96, VTRN_DTYPE_INT32, F), x,
                                         VTRN_ALU_SHIFT_RIGHT, &four, VTRN_ALU_BYPASS, NULL, 0, &sync));
    sync = in_turn(&serial); /* y3 = 3 << (x ^ x[p][0]) */
    EXPECT_OK(vtrn_program_tensor_scalar(serial.program, VTRN_ENGINE_DVE, int_tile(P, 128, VTRN_DTYPE_INT32, F), x,
                                         VTRN_ALU_BITWISE_XOR, &column, VTRN_ALU_SHIFT_LEFT, &three, 2, &sync));
    sync = in_turn(&serial); /* y4 = x | y1 */
    EXPECT_OK(vtrn_program_tensor_tensor(serial.program, int_tile(P, 160, VTRN_DTYPE_INT32, F), x,
                                         int_tile(P, 64, VTRN_DTYPE_INT32, F), VTRN_ALU_BITWISE_OR, &sync));
    sync = in_turn(&serial); /* y5 = ~x */
    EXPECT_OK(vtrn_program_tensor_scalar(serial.program, VTRN_ENGINE_DVE, int_tile(P, 192, VTRN_DTYPE_INT32, F), x,
                                         VTRN_ALU_INVERT, &three, VTRN_ALU_BYPASS, NULL, 0, &sync));
    sync = in_turn(&serial); /* x << 3 into int8: the low 8 bits */
    EXPECT_OK(vtrn_program_tensor_scalar(serial.program, VTRN_ENGINE_DVE, int_tile(P, 256, VTRN_DTYPE_INT8, F), x,
                                         VTRN_ALU_SHIFT_LEFT, &three, VTRN_ALU_BYPASS, NULL, 0, &sync));
    sync = in_turn(&serial); /* logical_and(x, x >> 4): arithmetic, 1.0 where both are nonzero */
    EXPECT_OK(vtrn_program_tensor_tensor(serial.program, sbuf(P, 512, F), x, int_tile(P, 96, VTRN_DTYPE_INT32, F),
                                         VTRN_ALU_LOGICAL_AND, &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, vtrn_hbm(out32, 0, VTRN_DTYPE_INT32, P, 5 * F, 5 * F),
                                    int_tile(P, 64, VTRN_DTYPE_INT32, 5 * F), &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, vtrn_hbm(out8, 0, VTRN_DTYPE_INT8, P, F, F),
                                    int_tile(P, 256, VTRN_DTYPE_INT8, F), &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, vtrn_hbm(truth, 0, VTRN_DTYPE_FP32, P, F, F), sbuf(P, 512, F), &sync));
    sync = in_turn(&serial); /* xor of each half of x's row, exactly */
    EXPECT_OK(vtrn_program_tensor_reduce(serial.program, int_tile(P, 640, VTRN_DTYPE_INT32, 2), x, VTRN_ALU_BITWISE_XOR, 0,
                                         &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, vtrn_hbm(halves, 0, VTRN_DTYPE_INT32, P, 2, 2),
                                    int_tile(P, 640, VTRN_DTYPE_INT32, 2), &sync));
    vtrn_kernel_t kernel = load(device, 0, serial.program);
    EXPECT_OK(vtrn_program_destroy(serial.program));

    int32_t values[P * F], results[P * 5 * F];
    int8_t narrow[P * F];
    float truths[P * F];
    int32_t xors[P * 2];
    uint32_t state = 12345;
    for (int i = 0; i < P * F; i++) {
        state = state * 1103515245u + 12345u;
        values[i] = (int32_t)(state ^ (state << 13));
    }
    values[0] = INT32_MAX;
    values[1] = 0x12345679;
    values[2] = -1;
    values[3] = INT32_MIN;
    values[4] = 0;
    values[5] = 15; /* x >> 4 is 0 */
    vtrn_device_memory_t in_memory = allocate(device, sizeof values), out32_memory = allocate(device, sizeof results);
    vtrn_device_memory_t out8_memory = allocate(device, sizeof narrow), truth_memory = allocate(device, sizeof truths);
    vtrn_device_memory_t halves_memory = allocate(device, sizeof xors);
    write_memory(runtime, device, in_memory, values, sizeof values);
    const vtrn_binding_t bindings[] = { binding("in", in_memory, 0), binding("out32", out32_memory, 0),
                                        binding("out8", out8_memory, 0), binding("truth", truth_memory, 0),
                                        binding("halves", halves_memory, 0) };
    EXPECT_RUN_OK(kernel, bindings, 5, NULL);
    read_memory(runtime, device, halves_memory, xors, sizeof xors);
    for (int p = 0; p < P; p++) {
        for (int half = 0; half < 2; half++) {
            uint32_t expected = 0;
            for (int f = 0; f < F / 2; f++) expected ^= (uint32_t)values[p * F + half * F / 2 + f];
            EXPECT_EQ_U64((uint32_t)xors[p * 2 + half], expected);
        }
    }
    read_memory(runtime, device, out32_memory, results, sizeof results);
    read_memory(runtime, device, out8_memory, narrow, sizeof narrow);
    read_memory(runtime, device, truth_memory, truths, sizeof truths);
    int wrong = 0;
    for (int p = 0; p < P; p++) {
        for (int f = 0; f < F; f++) {
            uint32_t v = (uint32_t)values[p * F + f], first = (uint32_t)values[p * F];
            uint32_t expected[5] = { v & 0x7fffffffu, v >> 4, 3u << ((v ^ first) & 31), v | (v & 0x7fffffffu), ~v };
            for (int k = 0; k < 5; k++) {
                if ((uint32_t)results[p * 5 * F + k * F + f] != expected[k]) wrong++;
            }
            if ((uint8_t)narrow[p * F + f] != (uint8_t)(v << 3)) wrong++;
            if (truths[p * F + f] != (v != 0 && (v >> 4) != 0 ? 1.0f : 0.0f)) wrong++;
        }
    }
    EXPECT_MSG(wrong == 0, "%d of %d bitvec and logical results differ from C's uint32_t arithmetic", wrong, P * F * 7);
    EXPECT(truths[4] == 0.0f && truths[5] == 0.0f && truths[6] == 1.0f);
    EXPECT_EQ_U64((uint32_t)results[0], 0x7fffffffu);
    EXPECT_EQ_U64((uint32_t)results[F + 2], 0x0fffffffu); /* -1 >> 4, logical */
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* Reference activation functions in double, in forms that do not cancel. */
static double sigmoid_reference(double x) { return 1 / (1 + exp(-x)); }
static double softplus_reference(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }

static double activation_reference(vtrn_activation_t fn, double x) {
    const double pi = 3.14159265358979323846;
    switch (fn) {
    case VTRN_ACT_GELU: return 0.5 * x * erfc(-x / sqrt(2));
    case VTRN_ACT_GELU_TANH: return x / (1 + exp(-2 * sqrt(2 / pi) * (x + 0.044715 * x * x * x)));
    case VTRN_ACT_ABS: return fabs(x);
    case VTRN_ACT_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case VTRN_ACT_ERF: return erf(x);
    case VTRN_ACT_ERF_DX: return 2 / sqrt(pi) * exp(-x * x);
    case VTRN_ACT_SIN: return sin(x);
    case VTRN_ACT_ARCTAN: return atan(x);
    case VTRN_ACT_SOFTPLUS: return softplus_reference(x);
    case VTRN_ACT_MISH: return x * tanh(softplus_reference(x));
    case VTRN_ACT_GELU_DX: return 0.5 * erfc(-x / sqrt(2)) + x * exp(-x * x / 2) / sqrt(2 * pi);
    case VTRN_ACT_SILU_DX: return sigmoid_reference(x) * (1 + x * (1 - sigmoid_reference(x)));
    case VTRN_ACT_GELU_APPRX_SIGMOID: return x * sigmoid_reference(1.702 * x);
    case VTRN_ACT_GELU_APPRX_SIGMOID_DX: {
        double s = sigmoid_reference(1.702 * x);
        return s + 1.702 * x * s * (1 - s);
    }
    default: return NAN;
    }
}

/* NKI's activation functions, against double references; GELU keeps its relative accuracy for
 * strongly negative inputs, where 1 + erf(x / sqrt 2) cancels in fp32. */
static void test_activation_functions(void) {
    GROUP("ACTIVATE: NKI's functions, accurate for negative GELU inputs");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    const vtrn_activation_t functions[] = {
        VTRN_ACT_GELU, VTRN_ACT_GELU_TANH, VTRN_ACT_ABS, VTRN_ACT_SIGN, VTRN_ACT_ERF, VTRN_ACT_ERF_DX, VTRN_ACT_SIN,
        VTRN_ACT_ARCTAN, VTRN_ACT_SOFTPLUS, VTRN_ACT_MISH, VTRN_ACT_GELU_DX, VTRN_ACT_SILU_DX,
        VTRN_ACT_GELU_APPRX_SIGMOID, VTRN_ACT_GELU_APPRX_SIGMOID_DX,
    };
    enum { COUNT = sizeof functions / sizeof functions[0], F = 16 };
    const float inputs[F] = { -10, -7.5f, -5, -3, -1.5f, -0.75f, -0.25f, 0, 0.125f, 0.5f, 1, 1.75f, 2.5f, 3, 5, 9 };
    serial_program_t serial = { new_program(runtime), 0 };
    uint32_t in = add_parameter(serial.program, "in", F * 4), out = add_parameter(serial.program, "out", COUNT * F * 4);
    vtrn_sync_t sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, sbuf(1, 0, F), vtrn_hbm(in, 0, VTRN_DTYPE_FP32, 1, F, F), &sync));
    const vtrn_scalar_t one = immediate(1.0f);
    for (int k = 0; k < COUNT; k++) {
        sync = in_turn(&serial);
        EXPECT_OK(vtrn_program_activate(serial.program, sbuf(1, 64 + (uint64_t)k * F * 4, F), functions[k], sbuf(1, 0, F), &one,
                                        NULL, NULL, &sync));
    }
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, vtrn_hbm(out, 0, VTRN_DTYPE_FP32, 1, COUNT * F, COUNT * F),
                                    sbuf(1, 64, COUNT * F), &sync));
    vtrn_kernel_t kernel = load(device, 0, serial.program);
    EXPECT_OK(vtrn_program_destroy(serial.program));
    vtrn_device_memory_t in_memory = allocate(device, sizeof inputs), out_memory = allocate(device, COUNT * F * 4);
    write_memory(runtime, device, in_memory, inputs, sizeof inputs);
    const vtrn_binding_t bindings[] = { binding("in", in_memory, 0), binding("out", out_memory, 0) };
    EXPECT_RUN_OK(kernel, bindings, 2, NULL);
    float results[COUNT * F];
    read_memory(runtime, device, out_memory, results, sizeof results);
    for (int k = 0; k < COUNT; k++) {
        for (int f = 0; f < F; f++) {
            double expected = activation_reference(functions[k], inputs[f]), got = results[k * F + f];
            /* Within a few fp32 roundings of the value (plus fp32's subnormal step, 1.4e-45), or of 1e-7
             * where derivatives cross zero. */
            const int derivative = functions[k] == VTRN_ACT_GELU_DX || functions[k] == VTRN_ACT_SILU_DX ||
                                   functions[k] == VTRN_ACT_GELU_APPRX_SIGMOID_DX;
            EXPECT_MSG(fabs(got - expected) <= 4e-7 * fabs(expected) + 1.5e-45 + (derivative ? 1e-7 : 0),
                       "function %d of %f: %.9g, expected %.9g", (int)functions[k], (double)inputs[f], got, expected);
        }
    }
    /* GELU(-10) is about -7.6e-23: not 0, as 1 + erf would make it. */
    EXPECT_MSG(results[0] < -7.6e-23f && results[0] > -7.7e-23f, "gelu(-10) = %g", (double)results[0]);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* TRANSPOSE on DVE: bit exact, SBUF to PSUM and back, as the PE's. */
static void test_transpose_on_dve(void) {
    GROUP("TRANSPOSE on DVE: bit exact, SBUF and PSUM");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    enum { P = 7, F = 32 };
    serial_program_t serial = { new_program(runtime), 0 };
    uint32_t in = add_parameter(serial.program, "in", P * F * 2), out = add_parameter(serial.program, "out", 2 * P * F * 2);
    const vtrn_access_t x = vtrn_sbuf(0, P, 0, VTRN_DTYPE_BF16, F);
    vtrn_sync_t sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, x, vtrn_hbm(in, 0, VTRN_DTYPE_BF16, P, F, F), &sync));
    sync = in_turn(&serial); /* x^T into PSUM, then back into SBUF beside x */
    EXPECT_OK(vtrn_program_transpose_on(serial.program, VTRN_ENGINE_DVE, vtrn_psum(0, F, 0, VTRN_DTYPE_BF16, P), x, &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_transpose_on(serial.program, VTRN_ENGINE_DVE, vtrn_sbuf(0, P, 64, VTRN_DTYPE_BF16, F),
                                        vtrn_psum(0, F, 0, VTRN_DTYPE_BF16, P), &sync));
    sync = in_turn(&serial); /* and x^T through SBUF: partitions 0-31 from byte 128 */
    EXPECT_OK(vtrn_program_transpose_on(serial.program, VTRN_ENGINE_DVE, vtrn_sbuf(0, F, 128, VTRN_DTYPE_BF16, P), x, &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, vtrn_hbm(out, 0, VTRN_DTYPE_BF16, P, F, F),
                                    vtrn_sbuf(0, P, 64, VTRN_DTYPE_BF16, F), &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, vtrn_hbm(out, P * F * 2, VTRN_DTYPE_BF16, F, P, P),
                                    vtrn_sbuf(0, F, 128, VTRN_DTYPE_BF16, P), &sync));
    vtrn_kernel_t kernel = load(device, 0, serial.program);
    EXPECT_OK(vtrn_program_destroy(serial.program));
    uint16_t values[P * F], results[2 * P * F];
    for (int i = 0; i < P * F; i++) values[i] = (uint16_t)(i * 2654435761u >> 7); /* NaN patterns included */
    vtrn_device_memory_t in_memory = allocate(device, sizeof values), out_memory = allocate(device, sizeof results);
    write_memory(runtime, device, in_memory, values, sizeof values);
    const vtrn_binding_t bindings[] = { binding("in", in_memory, 0), binding("out", out_memory, 0) };
    EXPECT_RUN_OK(kernel, bindings, 2, NULL);
    read_memory(runtime, device, out_memory, results, sizeof results);
    int wrong = 0;
    for (int p = 0; p < P; p++) {
        for (int f = 0; f < F; f++) {
            if (results[p * F + f] != values[p * F + f]) wrong++;           /* (x^T)^T */
            if (results[P * F + f * P + p] != values[p * F + f]) wrong++;   /* x^T */
        }
    }
    EXPECT_MSG(wrong == 0, "%d of %d transposed bf16 bit patterns differ", wrong, 2 * P * F);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* DMA_COPY between HBM tensors of more than 128 rows, and accumulating (dst_rmw_op add). */
static void test_dma_copy_extensions(void) {
    GROUP("DMA_COPY: HBM rows beyond 128, dst_rmw_op add");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    enum { R = 300, C = 3 };
    serial_program_t serial = { new_program(runtime), 0 };
    uint32_t rows = add_parameter(serial.program, "rows", R * C * 4), acc = add_parameter(serial.program, "acc", R * C * 4);
    uint32_t columns = add_parameter(serial.program, "columns", C * R * 4);
    /* columns = rows^T, written through a transposed view of 300 rows: row r steps 1 element, its
     * elements step R. */
    vtrn_access_t transposed = vtrn_hbm(columns, 0, VTRN_DTYPE_FP32, R, 1, C);
    transposed.stride[0] = R;
    vtrn_sync_t sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, transposed, vtrn_hbm(rows, 0, VTRN_DTYPE_FP32, R, C, C), &sync));
    vtrn_dma_copy_options_t add = VTRN_DMA_COPY_OPTIONS_INIT;
    EXPECT_EQ_U64(add.dst_rmw_op, VTRN_ALU_BYPASS);
    add.dst_rmw_op = VTRN_ALU_ADD;
    for (int i = 0; i < 2; i++) { /* acc += rows, twice */
        sync = in_turn(&serial);
        EXPECT_OK(vtrn_program_dma_copy_ex(serial.program, vtrn_hbm(acc, 0, VTRN_DTYPE_FP32, R, C, C),
                                           vtrn_hbm(rows, 0, VTRN_DTYPE_FP32, R, C, C), &add, &sync));
    }
    vtrn_kernel_t kernel = load(device, 0, serial.program);
    EXPECT_OK(vtrn_program_destroy(serial.program));
    static float row_values[R * C], acc_values[R * C], results[R * C], column_values[C * R];
    for (int i = 0; i < R * C; i++) {
        row_values[i] = (float)(i % 97) * 0.25f - 7;
        acc_values[i] = (float)(i % 13) - 6;
    }
    vtrn_device_memory_t rows_memory = allocate(device, sizeof row_values), acc_memory = allocate(device, sizeof acc_values);
    vtrn_device_memory_t columns_memory = allocate(device, sizeof column_values);
    write_memory(runtime, device, rows_memory, row_values, sizeof row_values);
    write_memory(runtime, device, acc_memory, acc_values, sizeof acc_values);
    const vtrn_binding_t bindings[] = { binding("rows", rows_memory, 0), binding("acc", acc_memory, 0),
                                        binding("columns", columns_memory, 0) };
    EXPECT_RUN_OK(kernel, bindings, 3, NULL);
    read_memory(runtime, device, acc_memory, results, sizeof results);
    read_memory(runtime, device, columns_memory, column_values, sizeof column_values);
    int wrong = 0;
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < C; c++) {
            if (results[r * C + c] != (acc_values[r * C + c] + row_values[r * C + c]) + row_values[r * C + c]) wrong++;
            if (column_values[c * R + r] != row_values[r * C + c]) wrong++;
        }
    }
    EXPECT_MSG(wrong == 0, "%d of %d accumulated or transposed elements are wrong", wrong, 2 * R * C);

    /* Only add accumulates; the options struct and the op are checked. */
    vtrn_program_t program = validation_program(runtime);
    vtrn_dma_copy_options_t multiply = VTRN_DMA_COPY_OPTIONS_INIT;
    multiply.dst_rmw_op = VTRN_ALU_MULTIPLY;
    EXPECT_OK(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), &multiply, NULL));
    EXPECT_REJECTED(device, program, "(DMA_COPY on DMA): dst_rmw_op: ",
                    "multiply is not supported; DMA_COPY accumulates with add only");
    program = validation_program(runtime);
    vtrn_dma_copy_options_t small = VTRN_DMA_COPY_OPTIONS_INIT;
    small.struct_size = 8;
    EXPECT_ERROR(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), &small, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.struct_size is 8, smaller than 32", "VTRN_DMA_COPY_OPTIONS_INIT");
    vtrn_dma_copy_options_t unknown = VTRN_DMA_COPY_OPTIONS_INIT;
    unknown.dst_rmw_op = (vtrn_alu_op_t)0;
    EXPECT_ERROR(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), &unknown, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.dst_rmw_op is 0");
    EXPECT_EQ_U64(instruction_count(program), 0);
    EXPECT_OK(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), NULL, NULL)); /* NULL: a plain copy */
    EXPECT_ACCEPTED(device, program);
    program = validation_program(runtime);
    uint32_t huge = add_parameter(program, "huge", ((uint64_t)1 << 24) * 8);
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(huge, 0, VTRN_DTYPE_FP32, (1u << 24) + 1, 1, 1),
                                    vtrn_hbm(huge, 0, VTRN_DTYPE_FP32, (1u << 24) + 1, 1, 1), NULL));
    EXPECT_REJECTED(device, program, "(DMA_COPY on DMA): dst: ", "16777217 rows; an HBM access has 1 to 16777216");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* Indirect DMA_COPY: gather and scatter(-add) HBM rows by an index tile; out-of-bounds indices. */
static void test_dma_copy_indirect(void) {
    GROUP("DMA_COPY: gather, scatter, scatter-add, oob_mode");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    enum { N = 300, E = 4, P = 6 };
    serial_program_t serial = { new_program(runtime), 0 };
    uint32_t table = add_parameter(serial.program, "table", N * E * 4), rows = add_parameter(serial.program, "rows", P * 4);
    uint32_t acc = add_parameter(serial.program, "acc", N * E * 4);
    const vtrn_access_t index = vtrn_sbuf(0, P, 0, VTRN_DTYPE_INT32, 1), gathered = sbuf(P, 64, E);
    vtrn_sync_t sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, index, vtrn_hbm(rows, 0, VTRN_DTYPE_INT32, P, 1, 1), &sync));
    sync = in_turn(&serial); /* gathered[p] = table[rows[p]], rows out of range skipped */
    vtrn_dma_copy_options_t gather = VTRN_DMA_COPY_OPTIONS_INIT;
    EXPECT(gather.indirect == VTRN_DMA_INDIRECT_NONE && gather.index == NULL && gather.oob_mode == VTRN_DMA_OOB_ERROR);
    gather.indirect = VTRN_DMA_INDIRECT_SRC;
    gather.index = &index;
    gather.oob_mode = VTRN_DMA_OOB_SKIP;
    EXPECT_OK(vtrn_program_memset(serial.program, VTRN_ENGINE_DVE, gathered, -1.0f, &sync));
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy_ex(serial.program, gathered, vtrn_hbm(table, 0, VTRN_DTYPE_FP32, N, E, E), &gather, &sync));
    sync = in_turn(&serial); /* acc[rows[p]] += gathered[p], repeated rows added twice */
    vtrn_dma_copy_options_t scatter = gather;
    scatter.indirect = VTRN_DMA_INDIRECT_DST;
    scatter.dst_rmw_op = VTRN_ALU_ADD;
    EXPECT_OK(vtrn_program_dma_copy_ex(serial.program, vtrn_hbm(acc, 0, VTRN_DTYPE_FP32, N, E, E), gathered, &scatter, &sync));
    vtrn_kernel_t kernel = load(device, 0, serial.program);
    EXPECT_OK(vtrn_program_destroy(serial.program));
    static float table_values[N * E], acc_values[N * E];
    for (int i = 0; i < N * E; i++) table_values[i] = (float)i;
    memset(acc_values, 0, sizeof acc_values);
    const int32_t row_values[P] = { 299, 0, 300, 17, -5, 17 };
    vtrn_device_memory_t table_memory = allocate(device, sizeof table_values), rows_memory = allocate(device, sizeof row_values);
    vtrn_device_memory_t acc_memory = allocate(device, sizeof acc_values);
    write_memory(runtime, device, table_memory, table_values, sizeof table_values);
    write_memory(runtime, device, rows_memory, row_values, sizeof row_values);
    write_memory(runtime, device, acc_memory, acc_values, sizeof acc_values);
    const vtrn_binding_t bindings[] = { binding("table", table_memory, 0), binding("rows", rows_memory, 0),
                                        binding("acc", acc_memory, 0) };
    EXPECT_RUN_OK(kernel, bindings, 3, NULL);
    read_memory(runtime, device, acc_memory, acc_values, sizeof acc_values);
    int wrong = 0;
    for (int r = 0; r < N; r++) {
        for (int e = 0; e < E; e++) {
            float expected = r == 299 || r == 0 ? (float)(r * E + e) : r == 17 ? 2.0f * (float)(r * E + e) : 0.0f;
            if (acc_values[r * E + e] != expected) wrong++;
        }
    }
    EXPECT_MSG(wrong == 0, "%d of %d elements of the scatter-added table are wrong", wrong, N * E);

    /* The same gather with oob_mode error fails the execution at index[2] = 300. */
    serial.program = new_program(runtime);
    serial.count = 0;
    add_parameter(serial.program, "table", N * E * 4);
    add_parameter(serial.program, "rows", P * 4);
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy(serial.program, index, vtrn_hbm(rows, 0, VTRN_DTYPE_INT32, P, 1, 1), &sync));
    gather.oob_mode = VTRN_DMA_OOB_ERROR;
    sync = in_turn(&serial);
    EXPECT_OK(vtrn_program_dma_copy_ex(serial.program, gathered, vtrn_hbm(table, 0, VTRN_DTYPE_FP32, N, E, E), &gather, &sync));
    vtrn_kernel_t strict = load(device, 0, serial.program);
    EXPECT_OK(vtrn_program_destroy(serial.program));
    EXPECT_EQ_U64(run(strict, bindings, 2, NULL), VTRN_ERROR_OUT_OF_BOUNDS);
    EXPECT_CONTAINS(vtrn_last_error(), "instruction 1 (DMA_COPY on DMA): index[2] is 300, outside the 300 rows of src");

    /* What the builder and the load refuse. */
    vtrn_program_t program = validation_program(runtime);
    vtrn_dma_copy_options_t bad = VTRN_DMA_COPY_OPTIONS_INIT;
    bad.indirect = VTRN_DMA_INDIRECT_DST;
    EXPECT_ERROR(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), &bad, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.index is NULL; an indirect copy needs its index tile");
    bad.indirect = VTRN_DMA_INDIRECT_NONE;
    bad.index = &index;
    EXPECT_ERROR(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), &bad, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.index is set but options.indirect is VTRN_DMA_INDIRECT_NONE");
    bad.indirect = (vtrn_dma_indirect_t)7;
    EXPECT_ERROR(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), &bad, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.indirect is 7");
    bad.indirect = VTRN_DMA_INDIRECT_SRC;
    bad.oob_mode = (vtrn_dma_oob_mode_t)2;
    EXPECT_ERROR(vtrn_program_dma_copy_ex(program, sbuf(8, 0, 8), sbuf(8, 64, 8), &bad, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.oob_mode is 2");
    bad.oob_mode = VTRN_DMA_OOB_SKIP;
    EXPECT_OK(vtrn_program_dma_copy_ex(program, sbuf(P, 256, E), sbuf(8, 64, E), &bad, NULL));
    EXPECT_REJECTED(device, program, "(DMA_COPY on DMA): src: ", "is in SBUF; an indirect DMA_COPY indexes the rows of an HBM tensor");
    program = validation_program(runtime);
    const vtrn_access_t wide_index = vtrn_sbuf(0, P, 0, VTRN_DTYPE_INT32, 2);
    bad.index = &wide_index;
    EXPECT_OK(vtrn_program_dma_copy_ex(program, sbuf(P, 256, E), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 8, E, E), &bad, NULL));
    EXPECT_REJECTED(device, program, "(DMA_COPY on DMA): index: ", "is 6 x 2; it must be [6, 1]");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* Every engine's instructions are counted, SEM_SIGNAL and SEM_WAIT included. */
static void test_info_per_engine(void) {
    GROUP("execution info: instructions and busy time per engine");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program = new_program(runtime);
    const int32_t steps[1] = { 1 };
    const vtrn_scalar_t one = immediate(1.0f);
    const vtrn_sync_t after_pool = waits(0, 1);
    /* POOL: IOTA, SEM_SIGNAL (2). DVE: SEM_WAIT, TENSOR_COPY, MEMSET (3). ACT: ACTIVATE x2 (2).
     * PE: TRANSPOSE (1). DMA: none (0). */
    EXPECT_OK(vtrn_program_iota(program, sbuf(32, 0, 32), steps, 0, 32, NULL));
    EXPECT_OK(vtrn_program_sem_signal(program, VTRN_ENGINE_POOL, 0, VTRN_SEMAPHORE_ADD, 1));
    EXPECT_OK(vtrn_program_sem_wait(program, VTRN_ENGINE_DVE, 0, 1));
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, sbuf(32, 256, 32), sbuf(32, 0, 32), NULL));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(32, 512, 32), 3.0f, NULL));
    EXPECT_OK(vtrn_program_activate(program, sbuf(32, 768, 32), VTRN_ACT_RELU, sbuf(32, 0, 32), &one, NULL, NULL,
                                    &after_pool));
    EXPECT_OK(vtrn_program_activate(program, sbuf(32, 1024, 32), VTRN_ACT_SQUARE, sbuf(32, 0, 32), &one, NULL, NULL,
                                    NULL));
    EXPECT_OK(vtrn_program_transpose(program, psum(32, 0, 32), sbuf(32, 0, 32), &after_pool));
    vtrn_kernel_t kernel = load(device, 0, program);
    EXPECT_OK(vtrn_program_destroy(program));
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_RUN_OK(kernel, NULL, 0, &info);
    const uint64_t expected[5] = { 1, 2, 3, 2, 0 };
    const char *const engines[5] = { "PE", "ACT", "DVE", "POOL", "DMA" };
    uint64_t latest = 0;
    for (int e = 0; e < 5; e++) {
        EXPECT_MSG(info.instructions[e] == expected[e], "%s ran %" PRIu64 " instructions, expected %" PRIu64,
                   engines[e], info.instructions[e], expected[e]);
        EXPECT_MSG((info.engine_busy_ns[e] > 0) == (expected[e] > 0), "%s busy %" PRIu64 " ns", engines[e],
                   info.engine_busy_ns[e]);
        if (info.engine_busy_ns[e] > latest) latest = info.engine_busy_ns[e];
    }
    EXPECT(info.device_ns >= latest);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Validation at load
 * ============================================================================================ */

/* A program with one parameter, "in" (4096 bytes, index 0), for the validation tests. */
static vtrn_program_t validation_program(vtrn_runtime_t runtime) {
    vtrn_program_t program = new_program(runtime);
    add_parameter(program, "in", 4096);
    return program;
}

static void test_validation_engines_and_partitions(void) {
    GROUP("validation: engines, partitions, quadrants");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    const vtrn_scalar_t one = immediate(1.0f);
    vtrn_program_t program;

    /* The wrong engine for the op; the index is the instruction's in the program. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), 0.0f, NULL));
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_PE, sbuf(128, 64, 8), sbuf(128, 0, 8), NULL));
    EXPECT_REJECTED(device, program, "instruction 1 (TENSOR_COPY on PE): ", "runs on", "DVE", "ACT", "POOL", "not PE");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_ACT, sbuf(128, 0, 8), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "instruction 0 (MEMSET on ACT): ", "not ACT");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DMA, sbuf(128, 0, 8), sbuf(128, 0, 8), VTRN_ALU_ADD, &one,
                                         VTRN_ALU_BYPASS, NULL, 0, NULL));
    EXPECT_REJECTED(device, program, "instruction 0 (TENSOR_SCALAR on DMA): ", "not DMA");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DMA, sbuf(128, 64, 8), sbuf(128, 0, 8), NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_COPY on DMA)", "not DMA");
    /* TENSOR_SCALAR and TENSOR_COPY run on DVE, ACT and POOL; MEMSET on DVE and POOL. */
    program = validation_program(runtime);
    const vtrn_engine_flags_t three[] = { VTRN_ENGINE_DVE, VTRN_ENGINE_ACT, VTRN_ENGINE_POOL };
    for (int e = 0; e < 3; e++) {
        EXPECT_OK(vtrn_program_tensor_scalar(program, three[e], sbuf(128, 0, 8), sbuf(128, 0, 8), VTRN_ALU_ADD, &one,
                                             VTRN_ALU_BYPASS, NULL, 0, NULL));
        EXPECT_OK(vtrn_program_tensor_copy(program, three[e], sbuf(128, 64, 8), sbuf(128, 0, 8), NULL));
    }
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_POOL, sbuf(128, 0, 8), 0.0f, NULL));
    EXPECT_ACCEPTED(device, program);

    /* Compute engines start at partition 0, 32, 64 or 96 and stay in the quadrant group. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(16, 16, 0, VTRN_DTYPE_FP32, 8), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "instruction 0 (MEMSET on DVE): dst: ", "starts at partition 16",
                    "compute engines start at partition 0, 32, 64 or 96");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_ACT, sbuf(64, 0, 8), vtrn_sbuf(32, 64, 0, VTRN_DTYPE_FP32, 8),
                                       NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_COPY on ACT): src: ", "covers 64 partitions from partition 32",
                    "from 32 an access covers at most 32");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_POOL, vtrn_sbuf(96, 32, 0, VTRN_DTYPE_FP32, 8), 0.0f, NULL));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_POOL, vtrn_sbuf(64, 64, 0, VTRN_DTYPE_FP32, 8), 0.0f, NULL));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_POOL, vtrn_sbuf(96, 33, 0, VTRN_DTYPE_FP32, 8), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "instruction 2 (MEMSET on POOL): dst: ", "partitions 96..<129 run past partition 127");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(32, 32, 0, VTRN_DTYPE_FP32, 8), 0.0f, NULL));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(64, 64, 0, VTRN_DTYPE_FP32, 8), 0.0f, NULL));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(96, 32, 0, VTRN_DTYPE_FP32, 8), 0.0f, NULL));
    /* DMA is no compute engine: any start partition. */
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_sbuf(5, 7, 0, VTRN_DTYPE_FP32, 8), vtrn_sbuf(100, 7, 64,
                                    VTRN_DTYPE_FP32, 8), NULL));
    EXPECT_ACCEPTED(device, program);

    /* 1 to 128 partitions, inside the 128. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(0, 0, 8), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "instruction 0 (MEMSET on DVE): dst: ", "0 partitions", "1 to 128");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), sbuf(129, 64, 8), NULL));
    EXPECT_REJECTED(device, program, "src: ", "129 partitions", "1 to 128");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_sbuf(100, 64, 0, VTRN_DTYPE_FP32, 8), sbuf(64, 64, 8), NULL));
    EXPECT_REJECTED(device, program, "(DMA_COPY on DMA): dst: ", "partitions 100..<164 run past partition 127");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_validation_access_patterns(void) {
    GROUP("validation: dims, offsets, bounds");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program;

    /* dims 0 and 5: the builder refuses them (no context needed), nothing is appended. */
    program = validation_program(runtime);
    vtrn_access_t no_dims = sbuf(128, 0, 8);
    no_dims.dims = 0;
    vtrn_access_t five_dims = sbuf(128, 0, 8);
    five_dims.dims = 5;
    EXPECT_ERROR(vtrn_program_memset(program, VTRN_ENGINE_DVE, no_dims, 0.0f, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "dst.dims is 0", "1 to 4");
    EXPECT_ERROR(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), five_dims, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "src.dims is 5", "1 to 4");
    EXPECT_EQ_U64(instruction_count(program), 0);
    /* A free dimension of size 0 is found at load. */
    vtrn_access_t empty_dimension = sbuf(128, 0, 8);
    empty_dimension.dims = 2;
    empty_dimension.size[1] = 0;
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, empty_dimension, 0.0f, NULL));
    EXPECT_REJECTED(device, program, "instruction 0 (MEMSET on DVE): dst: ", "a free dimension has size 0");
    /* Four dimensions with strides, and a broadcast (stride 0) read, are fine. */
    program = validation_program(runtime);
    vtrn_access_t four = sbuf(128, 0, 2);
    four.dims = 4;
    four.size[1] = 3, four.size[2] = 4, four.size[3] = 5;
    four.stride[0] = 1, four.stride[1] = 2, four.stride[2] = 6, four.stride[3] = 24;
    vtrn_access_t broadcast = four;
    broadcast.offset = 1024;
    broadcast.stride[0] = 0, broadcast.stride[1] = 0, broadcast.stride[2] = 0, broadcast.stride[3] = 0;
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, four, broadcast, NULL));
    EXPECT_ACCEPTED(device, program);

    /* The most negative stride is refused with a message, not a trap (../shared/repro/repro_stride.c). */
    program = validation_program(runtime);
    vtrn_access_t most_negative = sbuf(1, 0, 16);
    most_negative.stride[0] = INT64_MIN;
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, most_negative, 0.0f, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "a stride is larger than 4294967296 elements (strides [-9223372036854775808]");

    /* Byte offsets are multiples of the element size. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 2, 8), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "byte offset 2 is not a multiple of fp32's size (4)");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(0, 128, 3, VTRN_DTYPE_BF16, 8), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "byte offset 3 is not a multiple of bf16's size (2)");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(0, 128, 3, VTRN_DTYPE_UINT8, 8), 0.0f, NULL));
    EXPECT_ACCEPTED(device, program);

    /* SBUF and PSUM bounds, per partition, strides (negative ones too) included. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, SBUF_BYTES - 8, 4), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "bytes 196600..<196616 of each partition run outside SBUF",
                    "(196608 bytes per partition)");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, SBUF_BYTES - 32, 8), 0.0f, NULL));
    EXPECT_ACCEPTED(device, program);
    program = validation_program(runtime);
    vtrn_access_t backwards = sbuf(128, 0, 2);
    backwards.stride[0] = -1;
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, backwards, 0.0f, NULL));
    EXPECT_REJECTED(device, program, "bytes -4..<4", "outside SBUF");
    program = validation_program(runtime);
    vtrn_access_t strided = sbuf(128, 0, 4);
    strided.stride[0] = 20000; /* the 4th element at byte 240000 */
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, strided, 0.0f, NULL));
    EXPECT_REJECTED(device, program, "outside SBUF");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, sbuf(128, 0, 2), psum(128, PSUM_BYTES - 4, 2), NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_COPY on DVE): src: ", "run outside PSUM", "(16384 bytes per partition)");

    /* HBM: only DMA reaches it, through a parameter that exists, inside the parameter's bytes. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, sbuf(8, 0, 8), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 8, 8, 8),
                                       NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_COPY on DVE): src: ", "is in HBM; only DMA_COPY and collectives reach HBM");
    program = validation_program(runtime);
    const vtrn_scalar_t one = immediate(1.0f);
    EXPECT_OK(vtrn_program_activate(program, vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 8, 8, 8), VTRN_ACT_COPY, sbuf(8, 0, 8),
                                    &one, NULL, NULL, NULL));
    EXPECT_REJECTED(device, program, "(ACTIVATE on ACT): dst: ", "only DMA_COPY and collectives reach HBM");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(8, 0, 8), vtrn_hbm(3, 0, VTRN_DTYPE_FP32, 8, 8, 8), NULL));
    EXPECT_REJECTED(device, program, "instruction 0 (DMA_COPY on DMA): src: ", "parameter 3 does not exist",
                    "the program has 1");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(2, 0, 513), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 2, 512, 513), NULL));
    EXPECT_REJECTED(device, program, "src: ", "bytes 0..<4100 run outside parameter \"in\" (4096 bytes)");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(0, 8, VTRN_DTYPE_FP32, 4, -1, 8), sbuf(4, 0, 8), NULL));
    EXPECT_REJECTED(device, program, "dst: ", "run outside parameter \"in\"");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(2, 0, 512), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 2, 512, 512), NULL));
    /* Partition stride 0: every partition reads the same bytes. */
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(128, 0, 1024), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 128, 0, 1024), NULL));
    EXPECT_ACCEPTED(device, program);
    /* DMA_COPY moves equal element counts. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(8, 0, 8), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 8, 8, 7), NULL));
    EXPECT_REJECTED(device, program, "src: ", "has 56 elements but dst has 64");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_validation_psum_and_pe(void) {
    GROUP("validation: PSUM, MATMUL, TRANSPOSE");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    const vtrn_scalar_t one = immediate(1.0f);
    vtrn_program_t program;

    /* PE writes PSUM, DVE and ACT read and write it; POOL (GpSimd) and DMA do not reach it. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_POOL, psum(128, 0, 8), 0.0f, NULL));
    EXPECT_REJECTED(device, program, "(MEMSET on POOL): dst: ", "is in PSUM, which POOL (GpSimd) cannot access; DVE and ACT can");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_POOL, sbuf(128, 64, 8), psum(128, 0, 8), NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_COPY on POOL): src: ", "POOL (GpSimd) cannot access");
    program = validation_program(runtime);
    const int32_t step[1] = { 1 };
    EXPECT_OK(vtrn_program_iota(program, vtrn_psum(0, 128, 0, VTRN_DTYPE_INT32, 8), step, 0, 1, NULL));
    EXPECT_REJECTED(device, program, "(IOTA on POOL): dst: ", "POOL (GpSimd) cannot access");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(128, 0, 8), psum(128, 0, 8), NULL));
    EXPECT_REJECTED(device, program, "(DMA_COPY on DMA): src: ", "is in PSUM, which DMA does not reach",
                    "with TENSOR_COPY on DVE or ACT");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_dma_copy(program, psum(128, 0, 8), sbuf(128, 0, 8), NULL));
    EXPECT_REJECTED(device, program, "(DMA_COPY on DMA): dst: ", "is in PSUM, which DMA does not reach");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_activate(program, sbuf(128, 0, 8), VTRN_ACT_EXP, psum(128, 0, 8), &one, NULL, NULL, NULL));
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_ACT, sbuf(128, 64, 8), psum(128, 0, 8), NULL));
    EXPECT_OK(vtrn_program_tensor_tensor(program, sbuf(128, 128, 8), psum(128, 0, 8), sbuf(128, 0, 8), VTRN_ALU_ADD,
                                         NULL));
    EXPECT_OK(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, psum(128, 0, 8), sbuf(128, 0, 8), NULL));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, psum(128, 64, 8), 0.0f, NULL));
    EXPECT_OK(vtrn_program_activate(program, psum(128, 128, 8), VTRN_ACT_EXP, psum(128, 0, 8), &one, NULL, NULL, NULL));
    EXPECT_OK(vtrn_program_tensor_reduce(program, psum(128, 192, 1), psum(128, 0, 8), VTRN_ALU_MAX, 0, NULL));
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_ACT, psum(128, 256, 8), sbuf(128, 0, 8), VTRN_ALU_MULTIPLY,
                                         &one, VTRN_ALU_BYPASS, NULL, 0, NULL));
    EXPECT_ACCEPTED(device, program);

    /* MATMUL: an fp32 input needs an fp32 partner; other dtypes mix. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), sbuf(128, 0, 128), vtrn_sbuf(0, 128, 1024, VTRN_DTYPE_BF16, 512),
                                  0, NULL));
    EXPECT_REJECTED(device, program, "(MATMUL on PE): moving: ",
                    "is bf16 but stationary is fp32; an fp32 input of MATMUL needs an fp32 partner");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), vtrn_sbuf(0, 128, 0, VTRN_DTYPE_FP8_E5M2, 128),
                                  sbuf(128, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "moving: ", "is fp32 but stationary is fp8_e5m2");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), vtrn_sbuf(0, 128, 0, VTRN_DTYPE_FP8_E4M3, 128),
                                  vtrn_sbuf(0, 128, 1024, VTRN_DTYPE_FP16, 512), 0, NULL));
    EXPECT_ACCEPTED(device, program);

    /* MATMUL's limits: K (partitions) <= 128, M <= 128, N <= 512, K equal in both inputs. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), sbuf(129, 0, 128), sbuf(129, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "(MATMUL on PE): stationary: ", "129 partitions"); /* K's limit is 128 partitions */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 64), sbuf(128, 0, 129), sbuf(128, 1024, 64), 0, NULL));
    EXPECT_REJECTED(device, program, "(MATMUL on PE): stationary: ", "M is 129, more than 128");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), sbuf(128, 0, 128), sbuf(128, 1024, 513), 0, NULL));
    EXPECT_REJECTED(device, program, "(MATMUL on PE): moving: ", "N is 513, more than 512");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), sbuf(128, 0, 128), sbuf(64, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "moving: ", "has 64 partitions but stationary has 128");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 1024, 512), sbuf(128, 0, 128), sbuf(128, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "bytes 1024..<3072 cross a PSUM bank boundary");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, sbuf(128, 8192, 512), sbuf(128, 0, 128), sbuf(128, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "MATMUL accumulates fp32 in PSUM");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, vtrn_psum(0, 128, 0, VTRN_DTYPE_BF16, 512), sbuf(128, 0, 128),
                                  sbuf(128, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "is bf16 in PSUM", "MATMUL accumulates fp32 in PSUM");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), psum(128, 4096, 128), sbuf(128, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "stationary: ", "the PE reads its inputs from SBUF");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), vtrn_sbuf(0, 128, 0, VTRN_DTYPE_INT32, 128),
                                  sbuf(128, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "stationary: ", "is int32", "floating-point");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(64, 0, 512), sbuf(128, 0, 128), sbuf(128, 1024, 512), 0, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "is 64 x 512", "128 x 512");
    /* At the limits, in bf16 and with the last bank: fine. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 7 * 2048, 512), vtrn_sbuf(0, 128, 0, VTRN_DTYPE_BF16, 128),
                                  vtrn_sbuf(0, 128, 1024, VTRN_DTYPE_BF16, 512), 0, NULL));
    EXPECT_ACCEPTED(device, program);

    /* TRANSPOSE on DVE: at most 32 x 32, SBUF or PSUM either side; on PE or DVE only. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_transpose_on(program, VTRN_ENGINE_DVE, sbuf(32, 0, 33), sbuf(33, 4096, 32), NULL));
    EXPECT_REJECTED(device, program, "(TRANSPOSE on DVE): src: ", "is 33 x 32; TRANSPOSE on DVE takes at most 32 x 32");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_transpose_on(program, VTRN_ENGINE_POOL, sbuf(8, 0, 8), sbuf(8, 4096, 8), NULL));
    EXPECT_REJECTED(device, program, "(TRANSPOSE on POOL): ", "runs on PE or DVE, not POOL");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_transpose_on(program, VTRN_ENGINE_DVE, psum(32, 0, 32), sbuf(32, 4096, 32), NULL));
    EXPECT_OK(vtrn_program_transpose_on(program, VTRN_ENGINE_DVE, sbuf(32, 0, 32), psum(32, 0, 32), NULL));
    EXPECT_OK(vtrn_program_transpose_on(program, VTRN_ENGINE_PE, psum(128, 4096, 128), sbuf(128, 8192, 128), NULL));
    EXPECT_ACCEPTED(device, program);

    /* TRANSPOSE: bit exact, so the dtypes match; at most 128 x 128. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_transpose(program, psum(64, 0, 32), vtrn_sbuf(0, 32, 0, VTRN_DTYPE_BF16, 64), NULL));
    EXPECT_REJECTED(device, program, "(TRANSPOSE on PE): dst: ", "is fp32 but src is bf16", "TRANSPOSE is bit exact");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_transpose(program, psum(128, 0, 32), sbuf(32, 0, 129), NULL));
    EXPECT_REJECTED(device, program, "src: ", "at most 128 x 128");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_transpose(program, psum(64, 0, 32), sbuf(32, 0, 64), NULL));
    EXPECT_ACCEPTED(device, program);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_validation_operations(void) {
    GROUP("validation: TENSOR_TENSOR, TENSOR_SCALAR, reductions, semaphores");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    const vtrn_scalar_t one = immediate(1.0f);
    vtrn_program_t program;

    /* TENSOR_TENSOR: not both inputs in PSUM; a binary op; integer dtypes for bitwise ops. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_tensor(program, sbuf(128, 0, 8), psum(128, 0, 8), psum(128, 64, 8), VTRN_ALU_ADD,
                                         NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_TENSOR on DVE): b: ", "reads at most one input from PSUM");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_tensor(program, sbuf(128, 0, 8), sbuf(128, 64, 8), sbuf(128, 128, 8),
                                         VTRN_ALU_BITWISE_AND, NULL));
    EXPECT_REJECTED(device, program, "is fp32; bitwise_and takes integer dtypes only");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), sbuf(128, 0, 8),
                                         VTRN_ALU_SHIFT_LEFT, &one, VTRN_ALU_BYPASS, NULL, 0, NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_SCALAR on DVE)", "shift_left takes integer dtypes only");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_tensor(program, vtrn_sbuf(0, 128, 0, VTRN_DTYPE_INT32, 8),
                                         vtrn_sbuf(0, 128, 64, VTRN_DTYPE_INT32, 8),
                                         vtrn_sbuf(0, 128, 128, VTRN_DTYPE_INT32, 8), VTRN_ALU_BITWISE_XOR, NULL));
    EXPECT_ACCEPTED(device, program);
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_tensor(program, sbuf(128, 0, 8), sbuf(128, 64, 8), sbuf(128, 128, 8), VTRN_ALU_ABS,
                                         NULL));
    EXPECT_REJECTED(device, program, "op: ", "abs takes one operand");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_tensor(program, sbuf(128, 0, 8), sbuf(128, 64, 8), sbuf(128, 128, 8),
                                         VTRN_ALU_LOGICAL_NOT, NULL));
    EXPECT_REJECTED(device, program, "op: ", "logical_not takes one operand; TENSOR_TENSOR needs a binary op");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, vtrn_sbuf(0, 128, 0, VTRN_DTYPE_INT32, 8),
                                         sbuf(128, 64, 8), VTRN_ALU_INVERT, &one, VTRN_ALU_BYPASS, NULL, 0, NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_SCALAR on DVE): src: ", "is fp32; invert takes integer dtypes only");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_tensor(program, sbuf(128, 0, 8), sbuf(128, 64, 8), sbuf(128, 128, 9), VTRN_ALU_ADD,
                                         NULL));
    EXPECT_REJECTED(device, program, "b: ", "is 128 x 9 but dst is 128 x 8", "shapes must agree");

    /* TENSOR_SCALAR: bitvec ops on DVE only, both stages bitvec or both arithmetic. */
    const vtrn_access_t ints = vtrn_sbuf(0, 128, 0, VTRN_DTYPE_INT32, 8);
    const vtrn_scalar_t bits = vtrn_scalar_int32(0x0f0f0f0f);
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, ints, ints, VTRN_ALU_BITWISE_AND, &bits, VTRN_ALU_ADD,
                                         &one, 0, NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_SCALAR on DVE): op1: ",
                    "add is an arithmetic op but op0 bitwise_and is a bitvec op; the two stages of TENSOR_SCALAR are both "
                    "bitvec or both arithmetic");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_ACT, ints, ints, VTRN_ALU_BITWISE_OR, &bits,
                                         VTRN_ALU_BYPASS, NULL, 0, NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_SCALAR on ACT): op0: ",
                    "bitwise_or is a bitvec op; TENSOR_SCALAR runs bitvec ops on DVE only");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, ints, ints, VTRN_ALU_SHIFT_LEFT, &bits,
                                         VTRN_ALU_BITWISE_XOR, &one, 3, NULL));
    EXPECT_ACCEPTED(device, program);

    /* TENSOR_SCALAR: x1 unless op1 is bypass; reverse bits 0-1; [P,1] tiles. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), sbuf(128, 0, 8), VTRN_ALU_ADD, &one,
                                         VTRN_ALU_MULTIPLY, NULL, 0, NULL));
    EXPECT_REJECTED(device, program, "x1: ", "is missing");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), sbuf(128, 0, 8), VTRN_ALU_ADD, &one,
                                         VTRN_ALU_BYPASS, NULL, 4, NULL));
    EXPECT_REJECTED(device, program, "reverse: ", "0x4");
    program = validation_program(runtime);
    const vtrn_scalar_t wide = tile_scalar(sbuf(128, 1024, 2));
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_ACT, sbuf(128, 0, 8), sbuf(128, 0, 8), VTRN_ALU_ADD,
                                         &wide, VTRN_ALU_BYPASS, NULL, 0, NULL));
    EXPECT_REJECTED(device, program, "x0: ", "is 128 x 2; it must be [128, 1]");
    program = validation_program(runtime);
    const vtrn_scalar_t column = tile_scalar(sbuf(128, 1024, 1));
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_POOL, sbuf(128, 0, 8), sbuf(128, 0, 8), VTRN_ALU_ADD,
                                         &column, VTRN_ALU_MULTIPLY, &one, 3, NULL));
    EXPECT_ACCEPTED(device, program);

    /* TENSOR_REDUCE and ACTIVATE's [P,1] operands. */
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_reduce(program, sbuf(128, 1024, 1), sbuf(128, 0, 8), VTRN_ALU_SUBTRACT, 0, NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_REDUCE on DVE): op: ", "subtract does not reduce");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_reduce(program, sbuf(64, 1024, 1), sbuf(128, 0, 8), VTRN_ALU_MAX, 1, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "has 64 partitions but src has 128");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_reduce(program, sbuf(128, 1024, 3), sbuf(128, 0, 8), VTRN_ALU_ADD, 0, NULL));
    EXPECT_REJECTED(device, program, "dst: ", "has 3 elements per partition, which does not divide src's 8");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_reduce(program, ints, ints, VTRN_ALU_BITWISE_AND, 1, NULL));
    EXPECT_REJECTED(device, program, "(TENSOR_REDUCE on DVE): negate: ", "applies to arithmetic reductions");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_tensor_reduce(program, sbuf(128, 1024, 4), sbuf(128, 0, 8), VTRN_ALU_LOGICAL_XOR, 1, NULL));
    EXPECT_OK(vtrn_program_tensor_reduce(program, vtrn_sbuf(0, 128, 1024, VTRN_DTYPE_UINT8, 2), ints,
                                         VTRN_ALU_BITWISE_OR, 0, NULL));
    EXPECT_ACCEPTED(device, program);
    program = validation_program(runtime);
    const vtrn_access_t bad_bias = sbuf(128, 1024, 3);
    EXPECT_OK(vtrn_program_activate(program, sbuf(128, 0, 8), VTRN_ACT_EXP, sbuf(128, 0, 8), &one, &bad_bias, NULL,
                                    NULL));
    EXPECT_REJECTED(device, program, "(ACTIVATE on ACT): bias: ", "it must be [128, 1]");
    program = validation_program(runtime);
    const vtrn_access_t bad_sums = sbuf(32, 1024, 1);
    EXPECT_OK(vtrn_program_activate(program, sbuf(128, 0, 8), VTRN_ACT_EXP, sbuf(128, 0, 8), &one, NULL, &bad_sums,
                                    NULL));
    EXPECT_REJECTED(device, program, "accumulate_out: ", "it must be [128, 1]");
    program = validation_program(runtime);
    const int32_t steps[1] = { 1 };
    EXPECT_OK(vtrn_program_affine_select(program, sbuf(128, 0, 8), steps, 0, -1, VTRN_ALU_ADD, sbuf(128, 64, 8), 0.0f,
                                         NULL));
    EXPECT_REJECTED(device, program, "(AFFINE_SELECT on POOL): cmp: ", "add is not a comparison");

    /* Semaphores 0-255, in sync and in SEM_SIGNAL / SEM_WAIT. */
    program = validation_program(runtime);
    const vtrn_sync_t wait_256 = waits(256, 1);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), 0.0f, &wait_256));
    EXPECT_REJECTED(device, program, "instruction 0 (MEMSET on DVE): sync: ", "semaphore 256 does not exist",
                    "a core has 256 (0-255)");
    program = validation_program(runtime);
    const vtrn_sync_t signal_1000 = signals(1000);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), 0.0f, &signal_1000));
    EXPECT_REJECTED(device, program, "sync: ", "semaphore 1000 does not exist");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_sem_signal(program, VTRN_ENGINE_ACT, 256, VTRN_SEMAPHORE_SET, 1));
    EXPECT_REJECTED(device, program, "instruction 0 (SEM_SIGNAL on ACT): semaphore: ", "256 does not exist");
    program = validation_program(runtime);
    EXPECT_OK(vtrn_program_sem_wait(program, VTRN_ENGINE_DMA, 4096, 1));
    EXPECT_REJECTED(device, program, "(SEM_WAIT on DMA): semaphore: ", "4096 does not exist");
    program = validation_program(runtime);
    const vtrn_sync_t last = waits_signals(255, 0, 255);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), 0.0f, &last));
    EXPECT_OK(vtrn_program_sem_signal(program, VTRN_ENGINE_PE, 255, VTRN_SEMAPHORE_ADD, 1));
    EXPECT_OK(vtrn_program_sem_wait(program, VTRN_ENGINE_POOL, 255, 1));
    EXPECT_ACCEPTED(device, program);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* What builders refuse on the spot: unknown enum values and NULL pointers (nothing appended). */
static void test_builder_arguments(void) {
    GROUP("builders: unknown enum values, NULL pointers");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_program_t program = validation_program(runtime);
    const vtrn_scalar_t one = immediate(1.0f);
    const vtrn_access_t tile = sbuf(128, 0, 8);
    const int32_t steps[1] = { 1 };

    vtrn_access_t bad_space = tile;
    bad_space.space = (vtrn_memory_space_t)0;
    EXPECT_ERROR(vtrn_program_memset(program, VTRN_ENGINE_DVE, bad_space, 0.0f, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "dst.space is 0", "VTRN_MEMORY_SBUF");
    bad_space.space = (vtrn_memory_space_t)4;
    EXPECT_ERROR(vtrn_program_dma_copy(program, tile, bad_space, NULL), VTRN_ERROR_INVALID_ARGUMENT, "src.space is 4");
    vtrn_access_t bad_dtype = tile;
    bad_dtype.dtype = (vtrn_dtype_t)9;
    EXPECT_ERROR(vtrn_program_tensor_copy(program, VTRN_ENGINE_DVE, bad_dtype, tile, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "dst.dtype is 9", "VTRN_DTYPE_FP32");
    bad_dtype.dtype = (vtrn_dtype_t)0;
    EXPECT_ERROR(vtrn_program_matmul(program, psum(128, 0, 8), bad_dtype, tile, 0, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "stationary.dtype is 0");
    const vtrn_scalar_t bad_tile = tile_scalar(bad_dtype);
    EXPECT_ERROR(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, tile, tile, VTRN_ALU_ADD, &bad_tile,
                                            VTRN_ALU_BYPASS, NULL, 0, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "x0.tile.dtype is 0");
    vtrn_scalar_t bad_kind = immediate(1.0f);
    bad_kind.is_tile = 3;
    EXPECT_ERROR(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, tile, tile, VTRN_ALU_ADD, &bad_kind,
                                            VTRN_ALU_BYPASS, NULL, 0, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "x0.is_tile is 3", "VTRN_SCALAR_INT32 (2)");
    EXPECT_ERROR(vtrn_program_tensor_tensor(program, tile, tile, tile, (vtrn_alu_op_t)0, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "op is 0", "VTRN_ALU_ADD");
    EXPECT_ERROR(vtrn_program_tensor_reduce(program, sbuf(128, 64, 1), tile, (vtrn_alu_op_t)(VTRN_ALU_INVERT + 1), 0, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "op is 28", "VTRN_ALU_ADD (1) to VTRN_ALU_INVERT (27)");
    EXPECT_ERROR(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, tile, tile, VTRN_ALU_ADD, &one, (vtrn_alu_op_t)99,
                                            &one, 0, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "op1 is 99");
    EXPECT_ERROR(vtrn_program_affine_select(program, tile, steps, 0, 1, (vtrn_alu_op_t)1000, tile, 0.0f, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "cmp is 1000");
    EXPECT_ERROR(vtrn_program_activate(program, tile, (vtrn_activation_t)0, tile, &one, NULL, NULL, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "fn is 0", "VTRN_ACT_COPY");
    EXPECT_ERROR(vtrn_program_activate(program, tile, (vtrn_activation_t)(VTRN_ACT_GELU_APPRX_SIGMOID_DX + 1), tile, &one,
                                       NULL, NULL, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "fn is 26", "VTRN_ACT_COPY (1) to VTRN_ACT_GELU_APPRX_SIGMOID_DX (25)");
    EXPECT_ERROR(vtrn_program_sem_signal(program, VTRN_ENGINE_DVE, 0, (vtrn_semaphore_op_t)3, 1),
                 VTRN_ERROR_INVALID_ARGUMENT, "op is 3", "VTRN_SEMAPHORE_ADD");
    vtrn_sync_t bad_sync = signals(0);
    bad_sync.signal_op = (vtrn_semaphore_op_t)0;
    EXPECT_ERROR(vtrn_program_memset(program, VTRN_ENGINE_DVE, tile, 0.0f, &bad_sync), VTRN_ERROR_INVALID_ARGUMENT,
                 "sync.signal_op is 0");
    /* The engine: exactly one of the five flags. */
    EXPECT_ERROR(vtrn_program_memset(program, (vtrn_engine_flags_t)0, tile, 0.0f, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "engine is 0x0", "VTRN_ENGINE_DVE");
    EXPECT_ERROR(vtrn_program_tensor_copy(program, (vtrn_engine_flags_t)(VTRN_ENGINE_DVE | VTRN_ENGINE_POOL), tile, tile,
                                          NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "engine is 0xc");
    EXPECT_ERROR(vtrn_program_sem_wait(program, (vtrn_engine_flags_t)64, 0, 1), VTRN_ERROR_INVALID_ARGUMENT,
                 "engine is 0x40");
    EXPECT_ERROR(vtrn_program_transpose_on(program, (vtrn_engine_flags_t)(VTRN_ENGINE_PE | VTRN_ENGINE_DVE), tile, tile,
                                           NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "vtrn_program_transpose_on: engine is 0x5");
    EXPECT_ERROR(vtrn_program_transpose_on(program, VTRN_ENGINE_DVE, bad_space, tile, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "dst.space is 4");

    /* NULL pointers. */
    EXPECT_ERROR(vtrn_program_activate(program, tile, VTRN_ACT_EXP, tile, NULL, NULL, NULL, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "scale is NULL");
    EXPECT_ERROR(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, tile, tile, VTRN_ALU_ADD, NULL, VTRN_ALU_BYPASS,
                                            NULL, 0, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "x0 is NULL");
    EXPECT_ERROR(vtrn_program_iota(program, tile, NULL, 0, 1, NULL), VTRN_ERROR_INVALID_ARGUMENT, "steps is NULL");
    EXPECT_ERROR(vtrn_program_affine_select(program, tile, NULL, 0, 1, VTRN_ALU_GREATER, tile, 0.0f, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "steps is NULL");
    EXPECT_ERROR(vtrn_program_add_parameter(program, NULL, 4, NULL), VTRN_ERROR_INVALID_ARGUMENT, "name is NULL");
    EXPECT_ERROR(vtrn_program_instruction_count(program, NULL), VTRN_ERROR_INVALID_ARGUMENT, "count is NULL");
    EXPECT_ERROR(vtrn_program_create(runtime, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out is NULL");
    EXPECT_ERROR(vtrn_program_memset(NULL, VTRN_ENGINE_DVE, tile, 0.0f, NULL), VTRN_ERROR_INVALID_HANDLE, "vtrn_program_t");
    EXPECT_ERROR(vtrn_program_matmul(NULL, psum(128, 0, 8), tile, tile, 0, NULL), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_program_t");
    vtrn_program_t out = SENTINEL_PROGRAM;
    EXPECT_ERROR(vtrn_program_create(NULL, &out), VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t");
    EXPECT(out == SENTINEL_PROGRAM);
    EXPECT_EQ_U64(instruction_count(program), 0);

    /* Parameters: names of 1-63 bytes, unique; at least one byte. The optional index may be NULL. */
    EXPECT_OK(vtrn_program_add_parameter(program, "second", 4, NULL));
    uint32_t index = 77;
    EXPECT_ERROR(vtrn_program_add_parameter(program, "in", 8, &index), VTRN_ERROR_INVALID_ARGUMENT, "\"in\"", "already");
    EXPECT_ERROR(vtrn_program_add_parameter(program, "", 8, &index), VTRN_ERROR_INVALID_ARGUMENT, "1 to 63 bytes");
    char long_name[65];
    memset(long_name, 'p', 64);
    long_name[64] = '\0';
    EXPECT_ERROR(vtrn_program_add_parameter(program, long_name, 8, &index), VTRN_ERROR_INVALID_ARGUMENT, "1 to 63 bytes");
    long_name[63] = '\0';
    EXPECT_OK(vtrn_program_add_parameter(program, long_name, 8, &index));
    EXPECT_EQ_U64(index, 2);
    EXPECT_ERROR(vtrn_program_add_parameter(program, "empty", 0, &index), VTRN_ERROR_INVALID_ARGUMENT, "0 bytes");
    EXPECT_EQ_U64(index, 2);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* vtrn_kernel_load's own errors: cores, NULL out, programs of another runtime, claimed cores. */
static void test_load_errors(void) {
    GROUP("vtrn_kernel_load: cores and runtimes");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program = validation_program(runtime);
    vtrn_kernel_t kernel = SENTINEL_KERNEL;
    EXPECT_ERROR(vtrn_kernel_load(device, 2, program, &kernel), VTRN_ERROR_INVALID_ARGUMENT, "device 0 has 2 cores",
                 "core 2 requested");
    EXPECT_ERROR(vtrn_kernel_load(device, 0, program, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out is NULL");
    EXPECT_ERROR(vtrn_kernel_load(NULL, 0, program, &kernel), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t");
    EXPECT_ERROR(vtrn_kernel_load(device, 0, NULL, &kernel), VTRN_ERROR_INVALID_HANDLE, "vtrn_program_t");
    EXPECT_ERROR(vtrn_kernel_load(device, 0, (vtrn_program_t)(void *)device, &kernel), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_t, not a vtrn_program_t");
    EXPECT(kernel == SENTINEL_KERNEL);

    /* A core hidden by visible_cores. */
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1";
    options.visible_cores = "1";
    vtrn_runtime_t partial = NULL;
    EXPECT_OK(vtrn_runtime_create(&options, &partial));
    vtrn_program_t partial_program = validation_program(partial);
    EXPECT_ERROR(vtrn_kernel_load(get_device(partial, 0), 0, partial_program, &kernel), VTRN_ERROR_INVALID_ARGUMENT,
                 "core 0", "not visible");

    /* A program of another runtime. */
    EXPECT_ERROR(vtrn_kernel_load(get_device(partial, 0), 1, program, &kernel), VTRN_ERROR_INVALID_ARGUMENT,
                 "belongs to runtime");

    /* The first kernel on a core claims it for its runtime until that runtime is destroyed. */
    vtrn_kernel_t first = load(device, 0, program);
    EXPECT(first != NULL);
    vtrn_runtime_t other = create_runtime("trn1");
    vtrn_program_t other_program = validation_program(other);
    EXPECT_ERROR(vtrn_kernel_load(get_device(other, 0), 0, other_program, &kernel), VTRN_ERROR_BUSY, "core 0",
                 "claimed by runtime");
    EXPECT(kernel == SENTINEL_KERNEL);
    /* The same runtime loads as many kernels on its core as it likes. */
    vtrn_kernel_t second = load(device, 0, program);
    EXPECT(second != NULL && second != first);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    vtrn_kernel_t after = load(get_device(other, 0), 0, other_program);
    EXPECT(after != NULL);
    EXPECT_OK(vtrn_runtime_destroy(other));
    EXPECT_OK(vtrn_runtime_destroy(partial));
}

/* ============================================================================================
 * Execution failures
 * ============================================================================================ */

static void test_deadlock(void) {
    GROUP("deadlock");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    /* ACT waits for semaphore 3, which nothing raises; DVE and POOL wait for each other. PE has
     * finished its work by then. */
    vtrn_program_t program = new_program(runtime);
    const vtrn_sync_t wait_3 = waits(3, 1), wait_5 = waits_signals(5, 1, 6), wait_6 = waits_signals(6, 1, 5);
    const vtrn_scalar_t one = immediate(1.0f);
    EXPECT_OK(vtrn_program_sem_signal(program, VTRN_ENGINE_PE, 4, VTRN_SEMAPHORE_ADD, 1));
    EXPECT_OK(vtrn_program_activate(program, sbuf(128, 0, 8), VTRN_ACT_COPY, sbuf(128, 64, 8), &one, NULL, NULL,
                                    &wait_3));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 128, 8), 1.0f, &wait_5));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_POOL, sbuf(128, 256, 8), 1.0f, &wait_6));
    vtrn_kernel_t kernel = load(device, 0, program);
    EXPECT_OK(vtrn_program_destroy(program));
    vtrn_fence_t fence = NULL;
    EXPECT_OK(vtrn_kernel_execute(kernel, NULL, 0, &fence));
    EXPECT_ERROR(vtrn_fence_wait(fence, UINT64_MAX), VTRN_ERROR_DEADLOCK,
                 "every unfinished engine waits on a semaphore that nothing pending can raise",
                 "ACT at instruction 1 (ACTIVATE) waits for semaphore 3 >= 1, which is 0",
                 "DVE at instruction 2 (MEMSET) waits for semaphore 5 >= 1, which is 0",
                 "POOL at instruction 3 (MEMSET) waits for semaphore 6 >= 1, which is 0");
    EXPECT_EQ_U64(fence_status(fence), VTRN_ERROR_DEADLOCK);
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_OK(vtrn_fence_get_info(fence, &info));
    EXPECT_EQ_U64(info.status, VTRN_ERROR_DEADLOCK);
    EXPECT_EQ_U64(info.instructions[0], 1);
    /* Waiting again gives the same failure. */
    EXPECT_ERROR(vtrn_fence_wait(fence, 0), VTRN_ERROR_DEADLOCK, "semaphore 3");

    /* A semaphore waited for with a value above what its signals reach deadlocks too; SET counts. */
    program = new_program(runtime);
    const vtrn_sync_t set_2 = { -1, 0, 9, VTRN_SEMAPHORE_SET, 2 }, wait_3_on_9 = waits(9, 3);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), 0.0f, &set_2));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_POOL, sbuf(128, 64, 8), 0.0f, &wait_3_on_9));
    vtrn_kernel_t short_kernel = load(device, 0, program);
    EXPECT_OK(vtrn_program_destroy(program));
    EXPECT_ERROR(run(short_kernel, NULL, 0, NULL), VTRN_ERROR_DEADLOCK, "semaphore 9 >= 3, which is 2");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* An instruction that reaches past its parameter's binding fails that execution only. */
static void test_run_time_out_of_bounds(void) {
    GROUP("run time: out of bounds through a small binding");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program = new_program(runtime);
    uint32_t in = add_parameter(program, "in", 4096), out = add_parameter(program, "out", 4096);
    const vtrn_sync_t loaded = signals(0), after_load = waits(0, 1);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(8, 0, 128), vtrn_hbm(in, 0, VTRN_DTYPE_FP32, 8, 128, 128), &loaded));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(out, 0, VTRN_DTYPE_FP32, 8, 128, 128), sbuf(8, 0, 128),
                                    &after_load));
    vtrn_kernel_t kernel = load(device, 0, program);
    EXPECT_OK(vtrn_program_destroy(program));
    vtrn_device_memory_t small = allocate(device, 2048), in_memory = allocate(device, 4096);
    vtrn_device_memory_t out_memory = allocate(device, 4096);
    float values[1024], results[1024];
    for (int i = 0; i < 1024; i++) values[i] = (float)i;
    write_memory(runtime, device, in_memory, values, sizeof values);

    /* The binding leaves 2048 of the 4096 bytes: execute accepts it, the execution fails. */
    const vtrn_binding_t too_small[] = { binding("in", small, 0), binding("out", out_memory, 0) };
    vtrn_fence_t fence = NULL;
    EXPECT_OK(vtrn_kernel_execute(kernel, too_small, 2, &fence));
    EXPECT_ERROR(vtrn_fence_wait(fence, UINT64_MAX), VTRN_ERROR_OUT_OF_BOUNDS,
                 "instruction 0 (DMA_COPY on DMA): src reaches byte 4096 of parameter \"in\"",
                 "its binding leaves 2048 bytes");
    EXPECT_EQ_U64(fence_status(fence), VTRN_ERROR_OUT_OF_BOUNDS);
    EXPECT_OK(vtrn_fence_destroy(fence));
    /* So does a binding whose offset leaves too little of a big enough block. */
    const vtrn_binding_t offset_too_far[] = { binding("in", in_memory, 0), binding("out", out_memory, 1024) };
    EXPECT_ERROR(run(kernel, offset_too_far, 2, NULL), VTRN_ERROR_OUT_OF_BOUNDS,
                 "instruction 1 (DMA_COPY on DMA): dst reaches byte 4096 of parameter \"out\"",
                 "its binding leaves 3072 bytes");
    /* The next execution, bound right, succeeds. */
    const vtrn_binding_t right[] = { binding("in", in_memory, 0), binding("out", out_memory, 0) };
    EXPECT_RUN_OK(kernel, right, 2, NULL);
    read_memory(runtime, device, out_memory, results, sizeof results);
    EXPECT(memcmp(values, results, sizeof values) == 0);
    /* An offset past the block's end fails the call itself. */
    const vtrn_binding_t outside[] = { binding("in", in_memory, 4097), binding("out", out_memory, 0) };
    vtrn_fence_t untouched = SENTINEL_FENCE;
    EXPECT_ERROR(vtrn_kernel_execute(kernel, outside, 2, &untouched), VTRN_ERROR_OUT_OF_BOUNDS, "\"in\"",
                 "offset 4097", "4096-byte block");
    EXPECT(untouched == SENTINEL_FENCE);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_execute_errors(void) {
    GROUP("vtrn_kernel_execute: bindings");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program = new_program(runtime);
    add_parameter(program, "in", 512);
    add_parameter(program, "out", 512);
    const vtrn_sync_t loaded = signals(0), after_load = waits(0, 1);
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(1, 0, 128), vtrn_hbm(0, 0, VTRN_DTYPE_FP32, 1, 128, 128), &loaded));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(1, 0, VTRN_DTYPE_FP32, 1, 128, 128), sbuf(1, 0, 128),
                                    &after_load));
    vtrn_kernel_t kernel = load(device, 0, program);
    EXPECT_OK(vtrn_program_destroy(program));
    vtrn_device_memory_t a = allocate(device, 512), b = allocate(device, 512), freed = allocate(device, 512);
    EXPECT_OK(vtrn_device_memory_free(freed));
    vtrn_fence_t fence = SENTINEL_FENCE;

    const vtrn_binding_t unknown[] = { binding("in", a, 0), binding("outt", b, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, unknown, 2, &fence), VTRN_ERROR_NOT_FOUND, "no parameter \"outt\"",
                 "its parameters are \"in\", \"out\"");
    const vtrn_binding_t unbound[] = { binding("in", a, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, unbound, 1, &fence), VTRN_ERROR_INVALID_ARGUMENT,
                 "parameter \"out\" is not bound");
    EXPECT_ERROR(vtrn_kernel_execute(kernel, NULL, 0, &fence), VTRN_ERROR_INVALID_ARGUMENT, "\"in\" is not bound");
    const vtrn_binding_t twice[] = { binding("in", a, 0), binding("out", b, 0), binding("in", b, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, twice, 3, &fence), VTRN_ERROR_INVALID_ARGUMENT,
                 "parameter \"in\" is bound twice");
    const vtrn_binding_t freed_memory[] = { binding("in", a, 0), binding("out", freed, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, freed_memory, 2, &fence), VTRN_ERROR_INVALID_HANDLE, "bindings[1].memory",
                 "vtrn_device_memory_t", "stale");
    const vtrn_binding_t garbage[] = { binding("in", (vtrn_device_memory_t)GARBAGE, 0), binding("out", b, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, garbage, 2, &fence), VTRN_ERROR_INVALID_HANDLE, "bindings[0].memory",
                 "not a vtrn handle");
    const vtrn_binding_t no_name[] = { binding(NULL, a, 0), binding("out", b, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, no_name, 2, &fence), VTRN_ERROR_INVALID_ARGUMENT, "bindings[0].name is NULL");
    EXPECT_ERROR(vtrn_kernel_execute(kernel, NULL, 2, &fence), VTRN_ERROR_INVALID_ARGUMENT, "bindings is NULL",
                 "count is 2");
    const vtrn_binding_t right[] = { binding("in", a, 0), binding("out", b, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, right, 2, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out is NULL");
    EXPECT_ERROR(vtrn_kernel_execute(NULL, right, 2, &fence), VTRN_ERROR_INVALID_HANDLE, "vtrn_kernel_t");
    EXPECT_ERROR(vtrn_kernel_execute((vtrn_kernel_t)(void *)a, right, 2, &fence), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_memory_t, not a vtrn_kernel_t");

    /* Memory of another runtime, even on the same (shared) device. */
    vtrn_runtime_t other = create_runtime("trn1");
    vtrn_device_memory_t foreign = allocate(get_device(other, 0), 512);
    const vtrn_binding_t other_runtime[] = { binding("in", a, 0), binding("out", foreign, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(kernel, other_runtime, 2, &fence), VTRN_ERROR_INVALID_ARGUMENT,
                 "parameter \"out\" is bound to memory of device 0 of runtime");
    /* Memory of another device of the same runtime. */
    vtrn_runtime_t two = create_runtime("trn1:2");
    vtrn_program_t two_program = new_program(two);
    add_parameter(two_program, "in", 512);
    vtrn_kernel_t two_kernel = load(get_device(two, 0), 1, two_program);
    vtrn_device_memory_t on_device_1 = allocate(get_device(two, 1), 512);
    const vtrn_binding_t other_device[] = { binding("in", on_device_1, 0) };
    EXPECT_ERROR(vtrn_kernel_execute(two_kernel, other_device, 1, &fence), VTRN_ERROR_INVALID_ARGUMENT,
                 "bound to memory of device 1");
    EXPECT(fence == SENTINEL_FENCE);
    EXPECT_OK(vtrn_runtime_destroy(two));
    EXPECT_OK(vtrn_runtime_destroy(other));

    /* After all that, the kernel runs as before. */
    EXPECT_RUN_OK(kernel, right, 2, NULL);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_timeout(void) {
    GROUP("VTRN_EXEC_TIMEOUT_MS");
    vtrn_runtime_t runtime = create_runtime_with_timeout("trn1", "50");
    vtrn_runtime_info_t runtime_info = VTRN_RUNTIME_INFO_INIT;
    EXPECT_OK(vtrn_runtime_get_info(runtime, &runtime_info));
    EXPECT_EQ_U64(runtime_info.exec_timeout_ns, 50000000ull * test_slowdown());
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_kernel_t blocker = load_blocker(runtime, device, 0);
    vtrn_fence_t fence = start_blocker(runtime, device, blocker);
    EXPECT_ERROR(vtrn_fence_wait(fence, UINT64_MAX), VTRN_ERROR_TIMEOUT, "(ACTIVATE on ACT)",
                 "still running when the execution reached its timeout");
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_OK(vtrn_fence_get_info(fence, &info));
    EXPECT_EQ_U64(info.status, VTRN_ERROR_TIMEOUT);
    EXPECT_MSG(info.wall_ns >= 50000000ull * test_slowdown(), "timed out after %" PRIu64 " ns", info.wall_ns);
    EXPECT_MSG(info.instructions[1] > 0 && info.instructions[1] < 4096, "ACT ran %" PRIu64 " instructions",
               info.instructions[1]);
    EXPECT_EQ_U64(fence_status(fence), VTRN_ERROR_TIMEOUT);
    /* The core goes on with the next execution. */
    vtrn_kernel_t counter_kernel = load_counter(runtime, device, 0);
    vtrn_device_memory_t counter = allocate(device, 4);
    reset_counter(runtime, device, counter);
    const vtrn_binding_t bindings[] = { binding("counter", counter, 0) };
    EXPECT_RUN_OK(counter_kernel, bindings, 1, NULL);
    EXPECT(read_counter(runtime, device, counter) == 1.0f);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Fences and the command queue
 * ============================================================================================ */

static void test_fence_poll(void) {
    GROUP("fences: poll, wait with a timeout");
    vtrn_runtime_t runtime = create_runtime_with_timeout("trn1", "300");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_kernel_t blocker = load_blocker(runtime, device, 0);
    vtrn_kernel_t counter_kernel = load_counter(runtime, device, 0);
    vtrn_device_memory_t counter = allocate(device, 4);
    reset_counter(runtime, device, counter);
    const vtrn_binding_t bindings[] = { binding("counter", counter, 0) };

    vtrn_fence_t blocked = start_blocker(runtime, device, blocker), queued = NULL;
    EXPECT_OK(vtrn_kernel_execute(counter_kernel, bindings, 1, &queued));
    /* Queued behind the blocker: not ready, whichever way one asks. */
    EXPECT_ERROR(vtrn_fence_wait(queued, 0), VTRN_NOT_READY, "not finished");
    EXPECT_EQ_U64(fence_status(queued), VTRN_NOT_READY);
    EXPECT_EQ_U64(fence_status(blocked), VTRN_NOT_READY);
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_OK(vtrn_fence_get_info(queued, &info));
    EXPECT_EQ_U64(info.status, VTRN_NOT_READY);
    EXPECT_EQ_U64(info.device_ns, 0);
    /* A wait that times out says so, and the execution goes on. */
    EXPECT_ERROR(vtrn_fence_wait(queued, 1000000), VTRN_ERROR_TIMEOUT, "did not finish within 1000000 ns",
                 "it goes on");
    /* Destroying a fence does not cancel its execution. */
    EXPECT_OK(vtrn_fence_destroy(queued));
    EXPECT_ERROR(vtrn_fence_wait(blocked, UINT64_MAX), VTRN_ERROR_TIMEOUT, "reached its timeout");
    /* Polling until done: NOT_READY, then SUCCESS. */
    EXPECT_OK(vtrn_kernel_execute(counter_kernel, bindings, 1, &queued));
    vtrn_status_t status;
    while ((status = vtrn_fence_wait(queued, 0)) == VTRN_NOT_READY) {
    }
    EXPECT_MSG(status == VTRN_SUCCESS, "polling ended with %s: %s", vtrn_status_string(status), vtrn_last_error());
    EXPECT(read_counter(runtime, device, counter) == 2.0f);
    EXPECT_OK(vtrn_fence_get_info(queued, &info));
    EXPECT_EQ_U64(info.status, VTRN_SUCCESS);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* The core's command queue holds 1024 executions; a call beyond that fails and queues nothing. */
static void test_queue_full(void) {
    GROUP("command queue: 1024 executions, then QUEUE_FULL");
    vtrn_runtime_t runtime = create_runtime_with_timeout("trn1", "300");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_kernel_t blocker = load_blocker(runtime, device, 0);
    vtrn_kernel_t counter_kernel = load_counter(runtime, device, 0);
    vtrn_device_memory_t counter = allocate(device, 4);
    reset_counter(runtime, device, counter);
    const vtrn_binding_t bindings[] = { binding("counter", counter, 0) };

    vtrn_fence_t blocked = start_blocker(runtime, device, blocker);
    enum { attempts = 2000 };
    static vtrn_fence_t fences[attempts];
    int queued = 0;
    vtrn_status_t status = VTRN_SUCCESS;
    vtrn_fence_t untouched = SENTINEL_FENCE;
    for (int i = 0; i < attempts; i++) {
        status = vtrn_kernel_execute(counter_kernel, bindings, 1, &fences[queued]);
        if (status != VTRN_SUCCESS) break;
        queued++;
    }
    const char *message = vtrn_last_error();
    int blocker_running = fence_status(blocked) == VTRN_NOT_READY;
    EXPECT_MSG(status == VTRN_ERROR_QUEUE_FULL, "after %d executions: %s: %s", queued, vtrn_status_string(status),
               message);
    EXPECT_CONTAINS(message, "1024 executions queued");
    EXPECT_CONTAINS(message, "core 0 of device 0");
    /* While the blocker runs, exactly 1024 fit (the running one does not count); had it ended
     * early, more would have. */
    if (blocker_running) {
        EXPECT_EQ_U64(queued, 1024);
    } else {
        printf("# note: the blocker ended before the queue filled (a slow host?); %d executions were queued\n", queued);
        EXPECT_MSG(queued >= 1024, "only %d executions were queued", queued);
    }
    /* A full queue leaves the out-parameter alone. */
    if (status == VTRN_ERROR_QUEUE_FULL && blocker_running) {
        EXPECT_STATUS(vtrn_kernel_execute(counter_kernel, bindings, 1, &untouched), VTRN_ERROR_QUEUE_FULL);
        EXPECT(untouched == SENTINEL_FENCE);
    }
    EXPECT_STATUS(vtrn_fence_wait(blocked, UINT64_MAX), VTRN_ERROR_TIMEOUT);
    int failed = 0;
    for (int i = 0; i < queued; i++) {
        if (vtrn_fence_wait(fences[i], UINT64_MAX) != VTRN_SUCCESS) failed++;
        EXPECT_OK(vtrn_fence_destroy(fences[i]));
    }
    EXPECT_MSG(failed == 0, "%d of %d queued executions failed", failed, queued);
    /* The counter counts the executions that ran: the failed calls queued nothing. */
    float ran = read_counter(runtime, device, counter);
    EXPECT_MSG(ran == (float)queued, "%g executions ran; %d were queued", (double)ran, queued);
    /* The queue takes executions again. */
    EXPECT_RUN_OK(counter_kernel, bindings, 1, NULL);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* Unloading a kernel lets its queued executions finish; it takes no new ones. */
static void test_unload_with_queued_executions(void) {
    GROUP("unload with executions queued");
    vtrn_runtime_t runtime = create_runtime_with_timeout("trn1", "100");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_kernel_t blocker = load_blocker(runtime, device, 0);
    vtrn_kernel_t counter_kernel = load_counter(runtime, device, 0);
    vtrn_device_memory_t counter = allocate(device, 4);
    reset_counter(runtime, device, counter);
    const vtrn_binding_t bindings[] = { binding("counter", counter, 0) };
    vtrn_fence_t blocked = start_blocker(runtime, device, blocker), fences[5] = { NULL, NULL, NULL, NULL, NULL };
    for (int i = 0; i < 5; i++) EXPECT_OK(vtrn_kernel_execute(counter_kernel, bindings, 1, &fences[i]));
    EXPECT_EQ_U64(fence_status(fences[4]), VTRN_NOT_READY);
    EXPECT_OK(vtrn_kernel_unload(counter_kernel));
    EXPECT_OK(vtrn_kernel_unload(blocker)); /* while it runs */
    vtrn_fence_t fence = SENTINEL_FENCE;
    EXPECT_ERROR(vtrn_kernel_execute(counter_kernel, bindings, 1, &fence), VTRN_ERROR_INVALID_HANDLE, "vtrn_kernel_t",
                 "stale", "unloaded");
    EXPECT(fence == SENTINEL_FENCE);
    EXPECT_ERROR(vtrn_kernel_unload(counter_kernel), VTRN_ERROR_INVALID_HANDLE, "unloaded");
    EXPECT_STATUS(vtrn_fence_wait(blocked, UINT64_MAX), VTRN_ERROR_TIMEOUT);
    for (int i = 0; i < 5; i++) EXPECT_OK(vtrn_fence_wait(fences[i], UINT64_MAX));
    EXPECT(read_counter(runtime, device, counter) == 5.0f);
    /* Their fences still report. */
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_OK(vtrn_fence_get_info(fences[4], &info));
    EXPECT_EQ_U64(info.instructions[4], 2);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Determinism and concurrency
 * ============================================================================================ */

static void test_determinism(void) {
    GROUP("determinism: same results, same timeline");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    /* Four engines overlapping through semaphores: load, matmul, exp with row sums, store. */
    vtrn_program_t program = new_program(runtime);
    uint32_t a = add_parameter(program, "a", 128 * 128 * 4), b = add_parameter(program, "b", 128 * 512 * 4);
    uint32_t out = add_parameter(program, "out", 128 * 512 * 4), sums = add_parameter(program, "sums", 128 * 4);
    const vtrn_sync_t a_loaded = signals(0), b_loaded = signals(0), multiplied = waits_signals(0, 2, 1);
    const vtrn_sync_t activated = waits_signals(1, 1, 2), stored = waits(2, 1), sums_stored = waits(2, 1);
    const vtrn_scalar_t scale = immediate(1.0f / 64);
    const vtrn_access_t row_sums = sbuf(128, 16384, 1);
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_sbuf(0, 128, 0, VTRN_DTYPE_FP16, 128),
                                    vtrn_hbm(a, 0, VTRN_DTYPE_FP32, 128, 128, 128), &a_loaded));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_sbuf(0, 128, 1024, VTRN_DTYPE_BF16, 512),
                                    vtrn_hbm(b, 0, VTRN_DTYPE_FP32, 128, 512, 512), &b_loaded));
    EXPECT_OK(vtrn_program_matmul(program, psum(128, 0, 512), vtrn_sbuf(0, 128, 0, VTRN_DTYPE_FP16, 128),
                                  vtrn_sbuf(0, 128, 1024, VTRN_DTYPE_BF16, 512), 0, &multiplied));
    EXPECT_OK(vtrn_program_activate(program, sbuf(128, 4096, 512), VTRN_ACT_EXP, psum(128, 0, 512), &scale, NULL,
                                    &row_sums, &activated));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(out, 0, VTRN_DTYPE_FP32, 128, 512, 512), sbuf(128, 4096, 512),
                                    &stored));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(sums, 0, VTRN_DTYPE_FP32, 128, 1, 1), row_sums, &sums_stored));
    vtrn_kernel_t kernel = load(device, 0, program);
    vtrn_kernel_t reloaded = load(device, 1, program);
    EXPECT_OK(vtrn_program_destroy(program));

    static float a_values[128 * 128], b_values[128 * 512];
    for (int i = 0; i < 128 * 128; i++) a_values[i] = sinf((float)i);
    for (int i = 0; i < 128 * 512; i++) b_values[i] = cosf((float)i * 0.7f);
    vtrn_device_memory_t a_memory = allocate(device, sizeof a_values), b_memory = allocate(device, sizeof b_values);
    vtrn_device_memory_t out_memory = allocate(device, 128 * 512 * 4 + 128 * 4);
    write_memory(runtime, device, a_memory, a_values, sizeof a_values);
    write_memory(runtime, device, b_memory, b_values, sizeof b_values);
    const vtrn_binding_t bindings[] = { binding("a", a_memory, 0), binding("b", b_memory, 0),
                                        binding("out", out_memory, 0), binding("sums", out_memory, 128 * 512 * 4) };
    static unsigned char first[128 * 512 * 4 + 128 * 4], again[sizeof first];
    vtrn_execution_info_t first_info = VTRN_EXECUTION_INFO_INIT;
    EXPECT_RUN_OK(kernel, bindings, 4, &first_info);
    read_memory(runtime, device, out_memory, first, sizeof first);
    EXPECT(first_info.device_ns > 0);
    for (int round = 0; round < 4; round++) {
        vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
        memset(again, 0, sizeof again);
        EXPECT_OK(vtrn_device_memory_free(out_memory)); /* fresh memory each time */
        out_memory = allocate(device, sizeof again);
        const vtrn_binding_t fresh[] = { bindings[0], bindings[1], binding("out", out_memory, 0),
                                         binding("sums", out_memory, 128 * 512 * 4) };
        EXPECT_RUN_OK(round % 2 == 0 ? kernel : reloaded, fresh, 4, &info);
        read_memory(runtime, device, out_memory, again, sizeof again);
        EXPECT_MSG(memcmp(first, again, sizeof first) == 0, "round %d: results differ", round);
        EXPECT_EQ_U64(info.device_ns, first_info.device_ns);
        EXPECT_EQ_U64(info.device_cycles, first_info.device_cycles);
        for (int e = 0; e < 5; e++) {
            EXPECT_EQ_U64(info.instructions[e], first_info.instructions[e]);
            EXPECT_EQ_U64(info.engine_busy_ns[e], first_info.engine_busy_ns[e]);
        }
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

struct core_worker {
    vtrn_runtime_t runtime;
    vtrn_device_t device;
    uint32_t core;
    int runs;
    int wrong;
};

/* On its own core: out = in * (core + 1), `runs` times with new inputs, each checked. */
static void *run_on_core(void *argument) {
    struct core_worker *worker = argument;
    const uint32_t elements = 128 * 256;
    vtrn_program_t program = new_program(worker->runtime);
    uint32_t in = add_parameter(program, "in", elements * 4), out = add_parameter(program, "out", elements * 4);
    const vtrn_sync_t loaded = signals(0), scaled = waits_signals(0, 1, 1), stored = waits(1, 1);
    const vtrn_scalar_t factor = immediate((float)(worker->core + 1));
    EXPECT_OK(vtrn_program_dma_copy(program, sbuf(128, 0, 256), vtrn_hbm(in, 0, VTRN_DTYPE_FP32, 128, 256, 256),
                                    &loaded));
    EXPECT_OK(vtrn_program_activate(program, sbuf(128, 1024, 256), VTRN_ACT_COPY, sbuf(128, 0, 256), &factor, NULL, NULL,
                                    &scaled));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(out, 0, VTRN_DTYPE_FP32, 128, 256, 256), sbuf(128, 1024, 256),
                                    &stored));
    vtrn_kernel_t kernel = load(worker->device, worker->core, program);
    EXPECT_OK(vtrn_program_destroy(program));
    vtrn_device_memory_t in_memory = allocate(worker->device, elements * 4);
    vtrn_device_memory_t out_memory = allocate(worker->device, elements * 4);
    float *values = malloc(elements * sizeof(float)), *results = malloc(elements * sizeof(float));
    const vtrn_binding_t bindings[] = { binding("in", in_memory, 0), binding("out", out_memory, 0) };
    for (int r = 0; r < worker->runs && kernel != NULL; r++) {
        for (uint32_t i = 0; i < elements; i++) values[i] = (float)(r * 7 + (int)(i % 1000));
        write_memory(worker->runtime, worker->device, in_memory, values, elements * sizeof(float));
        EXPECT_RUN_OK(kernel, bindings, 2, NULL);
        read_memory(worker->runtime, worker->device, out_memory, results, elements * sizeof(float));
        for (uint32_t i = 0; i < elements; i++) {
            if (results[i] != values[i] * (float)(worker->core + 1)) {
                worker->wrong++;
                break;
            }
        }
    }
    free(values);
    free(results);
    return NULL;
}

static void test_concurrent_cores(void) {
    GROUP("concurrency: 4 cores of a trn2 from 4 threads");
    vtrn_runtime_t runtime = create_runtime("trn2");
    vtrn_device_t device = get_device(runtime, 0);
    struct core_worker workers[4];
    pthread_t threads[4];
    for (uint32_t i = 0; i < 4; i++) {
        workers[i] = (struct core_worker){ runtime, device, i * 2 + 1, 20, 0 }; /* cores 1, 3, 5, 7 */
        EXPECT(pthread_create(&threads[i], NULL, run_on_core, &workers[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        EXPECT_MSG(workers[i].wrong == 0, "core %u: %d of %d runs gave wrong results", workers[i].core,
                   workers[i].wrong, workers[i].runs);
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Handles
 * ============================================================================================ */

static void test_handles(void) {
    GROUP("handles of programs, kernels and fences");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_program_t program = validation_program(runtime);
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), 1.0f, NULL));
    vtrn_kernel_t kernel = load(device, 0, program);
    vtrn_device_memory_t memory = allocate(device, 4096);
    const vtrn_binding_t bindings[] = { binding("in", memory, 0) };
    vtrn_fence_t fence = NULL;
    EXPECT_OK(vtrn_kernel_execute(kernel, bindings, 1, &fence));
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
    vtrn_status_t status = VTRN_SUCCESS;
    uint32_t count = 0;

    /* Garbage, and handles of another kind. */
    EXPECT_ERROR(vtrn_program_instruction_count((vtrn_program_t)GARBAGE, &count), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    EXPECT_ERROR(vtrn_program_destroy((vtrn_program_t)(void *)kernel), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_kernel_t, not a vtrn_program_t");
    EXPECT_ERROR(vtrn_kernel_unload((vtrn_kernel_t)(void *)fence), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_fence_t, not a vtrn_kernel_t");
    EXPECT_ERROR(vtrn_fence_wait((vtrn_fence_t)(void *)program, 0), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_program_t, not a vtrn_fence_t");
    EXPECT_ERROR(vtrn_fence_status((vtrn_fence_t)GARBAGE, &status), VTRN_ERROR_INVALID_HANDLE, "not a vtrn handle");
    EXPECT_ERROR(vtrn_fence_get_info((vtrn_fence_t)(void *)runtime, &info), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_runtime_t, not a vtrn_fence_t");
    EXPECT_ERROR(vtrn_fence_destroy((vtrn_fence_t)(void *)memory), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_memory_t, not a vtrn_fence_t");
    EXPECT_ERROR(vtrn_fence_status(fence, NULL), VTRN_ERROR_INVALID_ARGUMENT, "status is NULL");
    EXPECT_ERROR(vtrn_fence_get_info(fence, NULL), VTRN_ERROR_INVALID_ARGUMENT, "info is NULL");

    /* A destroyed program: builders and loads fail; kernels loaded from it go on. */
    EXPECT_OK(vtrn_program_destroy(program));
    EXPECT_ERROR(vtrn_program_memset(program, VTRN_ENGINE_DVE, sbuf(128, 0, 8), 1.0f, NULL), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_program_t", "stale", "destroyed");
    EXPECT_ERROR(vtrn_program_add_parameter(program, "x", 4, NULL), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_program_instruction_count(program, &count), VTRN_ERROR_INVALID_HANDLE, "stale");
    vtrn_kernel_t untouched = SENTINEL_KERNEL;
    EXPECT_ERROR(vtrn_kernel_load(device, 0, program, &untouched), VTRN_ERROR_INVALID_HANDLE, "vtrn_program_t", "stale");
    EXPECT(untouched == SENTINEL_KERNEL);
    EXPECT_ERROR(vtrn_program_destroy(program), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_RUN_OK(kernel, bindings, 1, NULL);

    /* A destroyed fence. */
    EXPECT_OK(vtrn_fence_destroy(fence));
    EXPECT_ERROR(vtrn_fence_wait(fence, 0), VTRN_ERROR_INVALID_HANDLE, "vtrn_fence_t", "stale", "destroyed");
    EXPECT_ERROR(vtrn_fence_status(fence, &status), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_fence_get_info(fence, &info), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_fence_destroy(fence), VTRN_ERROR_INVALID_HANDLE, "stale");

    /* An unloaded kernel. */
    vtrn_kernel_t other_kernel = load(device, 0, (program = validation_program(runtime)));
    EXPECT_OK(vtrn_kernel_unload(kernel));
    vtrn_fence_t no_fence = SENTINEL_FENCE;
    EXPECT_ERROR(vtrn_kernel_execute(kernel, bindings, 1, &no_fence), VTRN_ERROR_INVALID_HANDLE, "vtrn_kernel_t",
                 "stale", "unloaded");
    EXPECT(no_fence == SENTINEL_FENCE);

    /* Everything of a destroyed runtime is stale, and stays so when a new runtime makes more. */
    EXPECT_OK(vtrn_kernel_execute(other_kernel, bindings, 1, &fence));
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_ERROR(vtrn_program_instruction_count(program, &count), VTRN_ERROR_INVALID_HANDLE, "vtrn_program_t", "stale");
    EXPECT_ERROR(vtrn_kernel_execute(other_kernel, bindings, 1, &no_fence), VTRN_ERROR_INVALID_HANDLE, "vtrn_kernel_t",
                 "stale");
    EXPECT_ERROR(vtrn_kernel_unload(other_kernel), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_fence_wait(fence, 0), VTRN_ERROR_INVALID_HANDLE, "vtrn_fence_t", "stale");
    EXPECT_ERROR(vtrn_fence_get_info(fence, &info), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_fence_destroy(fence), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_program_create(runtime, &program), VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t", "stale");

    vtrn_runtime_t next = create_runtime("trn1");
    vtrn_program_t next_program = validation_program(next);
    vtrn_kernel_t next_kernel = load(get_device(next, 0), 0, next_program);
    EXPECT(next_program != program && next_kernel != other_kernel);
    EXPECT_STATUS(vtrn_program_instruction_count(program, &count), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_STATUS(vtrn_kernel_unload(other_kernel), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_OK(vtrn_runtime_destroy(next));
}

int main(void) {
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL;
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) unsetenv(variables[i]);

    test_initial_contents();
    test_basics();
    test_semaphores_reset();
    test_matmul_accumulates();
    test_bitvec_ops();
    test_activation_functions();
    test_transpose_on_dve();
    test_dma_copy_extensions();
    test_dma_copy_indirect();
    test_info_per_engine();
    test_validation_engines_and_partitions();
    test_validation_access_patterns();
    test_validation_psum_and_pe();
    test_validation_operations();
    test_builder_arguments();
    test_load_errors();
    test_deadlock();
    test_run_time_out_of_bounds();
    test_execute_errors();
    test_timeout();
    test_fence_poll();
    test_queue_full();
    test_unload_with_queued_executions();
    test_determinism();
    test_concurrent_cores();
    test_handles();

    return finish("test_kernels");
}
