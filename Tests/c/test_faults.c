/*
 * test_faults.c — injected faults, device resets and error counters through the C ABI, as a C
 * user meets them: each fault kind injected with vtrn_device_inject_fault and with VTRN_FAULTS,
 * what the affected caller sees (status and message), that other queues, cores and devices go on
 * with correct data, one-shot against sticky, hangs caught by VTRN_EXEC_TIMEOUT_MS, a lost device
 * beside a working one, and vtrn_device_reset bringing a device back.
 *
 *   make -C Tests/c check          (or: make -C Tests/c build/test_faults && Tests/c/build/test_faults)
 *
 * The program ends with the line "test_faults: N passed, M failed". Set VTRN_TEST_VERBOSE=1 to
 * print each group's name. Every test destroys its runtimes before the next one starts, so each
 * starts with fresh devices (the hardware lives while a runtime has it).
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_framework.h"
#include "vtrn.h"

#define KiB 1024ull
#define TIMEOUT_MS 300
/* The kernel's tile: 128 partitions of 64 fp32. */
#define PARTITIONS 128u
#define ELEMENTS 64u
#define TILE_BYTES (PARTITIONS * ELEMENTS * 4u)

static const char *const variables[] = {
    "VTRN_TOPOLOGY", "VTRN_VISIBLE_CORES", "VTRN_LOG_LEVEL", "VTRN_EXEC_TIMEOUT_MS", "VTRN_TRACE", "VTRN_FAULTS",
};

static double now_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* A runtime of `topology` made with VTRN_EXEC_TIMEOUT_MS=`timeout_ms` and VTRN_FAULTS=`faults`
 * (NULL: none). NULL after a recorded failure. */
static vtrn_runtime_t create_runtime_with_timeout(const char *topology, const char *faults, int timeout_ms) {
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", timeout_ms);
    setenv("VTRN_EXEC_TIMEOUT_MS", timeout, 1);
    if (faults != NULL) setenv("VTRN_FAULTS", faults, 1);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    vtrn_runtime_t runtime = NULL;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    unsetenv("VTRN_EXEC_TIMEOUT_MS");
    unsetenv("VTRN_FAULTS");
    record(status == VTRN_SUCCESS && runtime != NULL, __FILE__, __LINE__, "vtrn_runtime_create(\"%s\", VTRN_FAULTS \"%s\") "
           "returned %s: %s", topology, faults ? faults : "", vtrn_status_string(status), vtrn_last_error());
    if (status != VTRN_SUCCESS) return NULL;
    /* Devices are the process's: start from a clean one (faults numbered from 1) whatever ran before. */
    uint32_t count = 0;
    EXPECT_OK(vtrn_device_count(runtime, &count));
    for (uint32_t index = 0; index < count && faults == NULL; index++) {
        EXPECT_OK(vtrn_device_reset(get_device(runtime, index), VTRN_DEVICE_RESET_CLEAR_COUNTERS));
    }
    return runtime;
}

/* The same with VTRN_EXEC_TIMEOUT_MS=300. */
static vtrn_runtime_t create_runtime(const char *topology, const char *faults) {
    return create_runtime_with_timeout(topology, faults, TIMEOUT_MS);
}

static vtrn_device_error_counters_t counters_of(vtrn_device_t device) {
    vtrn_device_error_counters_t counters = VTRN_DEVICE_ERROR_COUNTERS_INIT;
    EXPECT_OK(vtrn_device_get_error_counters(device, &counters));
    return counters;
}

static vtrn_fault_t fault_of(vtrn_fault_kind_t kind, uint32_t flags, int32_t core, int32_t engine, int32_t queue,
                             uint64_t after) {
    vtrn_fault_t fault = VTRN_FAULT_INIT;
    fault.kind = kind;
    fault.flags = flags;
    fault.core = core;
    fault.engine = engine;
    fault.queue = queue;
    fault.after = after;
    return fault;
}

static vtrn_fault_t hbm_fault(uint64_t address, uint64_t bytes, uint32_t flags) {
    vtrn_fault_t fault = VTRN_FAULT_INIT;
    fault.kind = VTRN_FAULT_HBM_UE;
    fault.flags = flags;
    fault.address = address;
    fault.bytes = bytes;
    return fault;
}

static vtrn_dma_queue_t open_queue(vtrn_device_t device, uint32_t core, uint32_t engine, uint32_t queue) {
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.core = core;
    options.engine = engine;
    options.queue = queue;
    vtrn_dma_queue_t handle = NULL;
    EXPECT_OK(vtrn_dma_queue_create(device, &options, &handle));
    return handle;
}

static vtrn_device_memory_t allocate(vtrn_device_t device, uint64_t bytes) {
    vtrn_device_memory_t memory = NULL;
    EXPECT_OK(vtrn_device_memory_alloc(device, bytes, 0, &memory));
    return memory;
}

static uint64_t address_of(vtrn_device_memory_t memory) {
    vtrn_device_memory_info_t info = VTRN_DEVICE_MEMORY_INFO_INIT;
    EXPECT_OK(vtrn_device_memory_get_info(memory, &info));
    return info.address;
}

/* A host buffer of `bytes` filled with bytes seed, seed+1, ... */
static vtrn_host_buffer_t filled_buffer(vtrn_runtime_t runtime, size_t bytes, unsigned seed, unsigned char **data) {
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_create(runtime, bytes, NULL, &buffer));
    void *mapped = NULL;
    EXPECT_OK(vtrn_host_buffer_map(buffer, &mapped, NULL));
    *data = mapped;
    for (size_t i = 0; i < bytes; i++) (*data)[i] = (unsigned char)(seed + i * 7);
    return buffer;
}

static vtrn_dma_transfer_t transfer(vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t bytes) {
    vtrn_dma_transfer_t result;
    result.dst = dst;
    result.src = src;
    result.bytes = bytes;
    return result;
}

/* Enqueues one transfer, submits, and returns the sequence. */
static uint64_t submit_one(vtrn_dma_queue_t queue, vtrn_dma_transfer_t transfer) {
    uint64_t sequence = 0;
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    return sequence;
}

/* A kernel on `core`: out = in * 2 over a [128, 64] fp32 tile, as DMA (in -> SBUF), DVE (x2),
 * DMA (SBUF -> out), ordered by semaphores 0 and 1. Instruction 1 is the DVE one. */
static vtrn_kernel_t doubling_kernel(vtrn_runtime_t runtime, vtrn_device_t device, uint32_t core) {
    vtrn_program_t program = NULL;
    EXPECT_OK(vtrn_program_create(runtime, &program));
    uint32_t in = 0, out = 0;
    EXPECT_OK(vtrn_program_add_parameter(program, "in", TILE_BYTES, &in));
    EXPECT_OK(vtrn_program_add_parameter(program, "out", TILE_BYTES, &out));
    vtrn_access_t tile = vtrn_sbuf(0, PARTITIONS, 0, VTRN_DTYPE_FP32, ELEMENTS);
    vtrn_access_t doubled = vtrn_sbuf(0, PARTITIONS, 4096, VTRN_DTYPE_FP32, ELEMENTS);
    vtrn_sync_t loaded = VTRN_SYNC_NONE, computed = VTRN_SYNC_NONE, stored = VTRN_SYNC_NONE;
    loaded.signal_semaphore = 0;
    loaded.signal_value = 1;
    computed.wait_semaphore = 0;
    computed.wait_value = 1;
    computed.signal_semaphore = 1;
    computed.signal_value = 1;
    stored.wait_semaphore = 1;
    stored.wait_value = 1;
    EXPECT_OK(vtrn_program_dma_copy(program, tile, vtrn_hbm(in, 0, VTRN_DTYPE_FP32, PARTITIONS, ELEMENTS, ELEMENTS), &loaded));
    vtrn_scalar_t two = { VTRN_SCALAR_IMMEDIATE, 2.0f, vtrn_sbuf(0, 1, 0, VTRN_DTYPE_FP32, 1) };
    EXPECT_OK(vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, doubled, tile, VTRN_ALU_MULTIPLY, &two, VTRN_ALU_BYPASS,
                                         NULL, 0, &computed));
    EXPECT_OK(vtrn_program_dma_copy(program, vtrn_hbm(out, 0, VTRN_DTYPE_FP32, PARTITIONS, ELEMENTS, ELEMENTS), doubled,
                                    &stored));
    vtrn_kernel_t kernel = NULL;
    EXPECT_OK(vtrn_kernel_load(device, core, program, &kernel));
    EXPECT_OK(vtrn_program_destroy(program));
    return kernel;
}

/* Device memory for the doubling kernel: `in` holding 0, 1, 2, ... and an `out` of zeros. */
struct doubling {
    vtrn_device_memory_t in, out;
    float values[PARTITIONS * ELEMENTS];
};

static void prepare_doubling(vtrn_runtime_t runtime, vtrn_device_t device, struct doubling *data) {
    data->in = allocate(device, TILE_BYTES);
    data->out = allocate(device, TILE_BYTES);
    for (uint32_t i = 0; i < PARTITIONS * ELEMENTS; i++) data->values[i] = (float)i;
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_register(runtime, data->values, TILE_BYTES, &buffer));
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(data->in, 0), vtrn_host_ref(buffer, 0), TILE_BYTES));
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
}

static vtrn_fence_t execute_doubling(vtrn_kernel_t kernel, const struct doubling *data) {
    vtrn_binding_t bindings[2] = { { "in", data->in, 0 }, { "out", data->out, 0 } };
    vtrn_fence_t fence = NULL;
    EXPECT_OK(vtrn_kernel_execute(kernel, bindings, 2, &fence));
    return fence;
}

/* 1 when `out` holds twice `in`. */
static int doubled_correctly(vtrn_runtime_t runtime, vtrn_device_t device, const struct doubling *data) {
    static float result[PARTITIONS * ELEMENTS];
    memset(result, 0, sizeof result);
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_register(runtime, result, TILE_BYTES, &buffer));
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(buffer, 0), vtrn_device_ref(data->out, 0), TILE_BYTES));
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    for (uint32_t i = 0; i < PARTITIONS * ELEMENTS; i++) {
        if (result[i] != 2.0f * data->values[i]) return 0;
    }
    return 1;
}

/* ============================================================================================
 * Arguments
 * ============================================================================================ */

static vtrn_status_t get_error_counters_call(void *device, void *counters) {
    return vtrn_device_get_error_counters((vtrn_device_t)device, (vtrn_device_error_counters_t *)counters);
}

static void test_arguments(void) {
    GROUP("fault arguments");
    vtrn_runtime_t runtime = create_runtime("trn1", NULL);
    if (runtime == NULL) return;
    vtrn_device_t device = get_device(runtime, 0);

    EXPECT_ERROR(vtrn_device_inject_fault(device, NULL), VTRN_ERROR_INVALID_ARGUMENT, "fault is NULL");
    EXPECT_ERROR(vtrn_device_inject_fault((vtrn_device_t)(uintptr_t)0x1234, NULL), VTRN_ERROR_INVALID_HANDLE, "0x1234");
    vtrn_fault_t fault = VTRN_FAULT_INIT;
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "fault.kind is 0", "VTRN_FAULT_DMA_ABORT (1)");
    fault.struct_size = 8;
    fault.kind = VTRN_FAULT_DEVICE_LOSS;
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "fault.struct_size is 8", "VTRN_FAULT_INIT");
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0x4, VTRN_FAULT_ANY, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "fault.flags has unknown bits 0x4");
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, VTRN_FAULT_ANY, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 0);
    fault.reserved = 1;
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "fault.reserved is 1");
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, 5, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "core 5 does not exist",
                 "device 0 (Trainium1) has 2 cores (0-1)");
    fault = fault_of(VTRN_FAULT_DMA_HANG, 0, 0, 16, VTRN_FAULT_ANY, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "DMA engine 16 does not exist", "(0-15)");
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, VTRN_FAULT_HOST, 2, VTRN_FAULT_ANY, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "DMA engine 2 does not exist", "the host has 2");
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, VTRN_FAULT_HOST, 0, 3, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "the queue must be any");
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, 0, 0, 16, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "queue 16 does not exist");
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, -3, 0, 0, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "fault.core is -3", "VTRN_FAULT_HOST (-2)");
    fault = fault_of(VTRN_FAULT_ENGINE_HANG, 0, 0, VTRN_ENGINE_PE | VTRN_ENGINE_DVE, VTRN_FAULT_ANY, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "fault.engine is 5", "one VTRN_ENGINE_* bit");
    fault = fault_of(VTRN_FAULT_ENGINE_HANG, 0, VTRN_FAULT_HOST, VTRN_ENGINE_PE, VTRN_FAULT_ANY, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "fault.core is -2", "VTRN_FAULT_ANY (-1)");
    fault = hbm_fault(0, 0, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "the HBM range has 0 bytes");
    fault = hbm_fault(32ull << 30, 1, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "runs past the end of device 0's HBM");
    fault = hbm_fault(0, UINT64_MAX, 0);
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "runs past the end");
    fault = hbm_fault(0, 64, 0);
    fault.after = 3;
    EXPECT_ERROR(vtrn_device_inject_fault(device, &fault), VTRN_ERROR_INVALID_ARGUMENT, "after is 3", "hbm-ue counts nothing");
    EXPECT_ERROR(vtrn_device_reset(device, 0x6), VTRN_ERROR_INVALID_ARGUMENT, "flags has unknown bits 0x6");
    EXPECT_ERROR(vtrn_device_get_error_counters(device, NULL), VTRN_ERROR_INVALID_ARGUMENT, "counters is NULL");
    static const struct info_kind counters_kind = { "vtrn_device_get_error_counters", "VTRN_DEVICE_ERROR_COUNTERS_INIT",
                                                    sizeof(vtrn_device_error_counters_t), get_error_counters_call };
    check_info_struct_sizes(&counters_kind, device);

    /* None of that armed anything; a bigger struct from a newer caller is read up to our size. */
    vtrn_device_error_counters_t counters = counters_of(device);
    EXPECT_EQ_U64(counters.armed_faults, 0);
    EXPECT_EQ_U64(counters.faults_injected, 0);
    struct { vtrn_fault_t fault; unsigned char newer[32]; } bigger;
    memset(&bigger, 0, sizeof bigger);
    bigger.fault = fault_of(VTRN_FAULT_DMA_ABORT, VTRN_FAULT_STICKY, 1, 3, 4, 7);
    bigger.fault.struct_size = sizeof bigger;
    EXPECT_OK(vtrn_device_inject_fault(device, &bigger.fault));
    counters = counters_of(device);
    EXPECT_EQ_U64(counters.armed_faults, 1);
    EXPECT_EQ_U64(counters.faults_injected, 1);
    EXPECT_OK(vtrn_device_reset(device, 0));
    counters = counters_of(device);
    EXPECT_EQ_U64(counters.armed_faults, 0);
    EXPECT_EQ_U64(counters.resets, 1);
    EXPECT_OK(vtrn_device_reset(device, VTRN_DEVICE_RESET_CLEAR_COUNTERS));
    counters = counters_of(device);
    EXPECT(counters.resets == 0 && counters.faults_injected == 0 && counters.lost == 0);

    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_ERROR(vtrn_device_reset(device, 0), VTRN_ERROR_INVALID_HANDLE, "destroyed");
}

/* ============================================================================================
 * DMA aborts
 * ============================================================================================ */

static void test_dma_abort(void) {
    GROUP("DMA abort, one-shot and sticky");
    vtrn_runtime_t runtime = create_runtime("trn1:2", NULL);
    if (runtime == NULL) return;
    vtrn_device_t device = get_device(runtime, 0), other_device = get_device(runtime, 1);
    const size_t bytes = 256 * KiB; /* 4 descriptors */
    unsigned char *source = NULL, *sink = NULL, *other_source = NULL, *other_sink = NULL;
    vtrn_host_buffer_t input = filled_buffer(runtime, bytes, 3, &source);
    vtrn_host_buffer_t output = filled_buffer(runtime, bytes, 0, &sink);
    vtrn_host_buffer_t other_input = filled_buffer(runtime, bytes, 9, &other_source);
    vtrn_host_buffer_t other_output = filled_buffer(runtime, bytes, 0, &other_sink);
    memset(sink, 0, bytes);
    memset(other_sink, 0, bytes);
    vtrn_dma_queue_t faulty = open_queue(device, 0, 1, 2), neighbour = open_queue(device, 0, 1, 3);
    vtrn_dma_queue_t elsewhere = open_queue(other_device, 0, 1, 2);

    /* The 3rd descriptor on queue 2 of DMA engine 1 of core 0 fails, once. */
    vtrn_fault_t fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, 0, 1, 2, 2);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    uint64_t failed = submit_one(faulty, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    uint64_t fine = submit_one(neighbour, transfer(vtrn_host_ref(other_output, 0), vtrn_host_ref(other_input, 0), bytes));
    uint64_t far = submit_one(elsewhere, transfer(vtrn_host_ref(other_output, 0), vtrn_host_ref(other_input, 0), bytes));
    EXPECT_ERROR(vtrn_dma_queue_wait(faulty, failed, UINT64_MAX), VTRN_ERROR_DMA_FAULT,
                 "vtrn_dma_queue_wait: DMA abort on queue 2 of DMA engine 1 of core 0 of device 0: descriptor 2 (ring slot 2) "
                 "failed with a descriptor error (injected fault 1 (dma-abort:core=0:engine=1:queue=2:after=2))",
                 "sequence 1 failed (descriptors 2-3 did not complete); the queue goes on with later submissions");
    /* The same answer when asked again; the two descriptors before it were copied, not the rest. */
    EXPECT_ERROR(vtrn_dma_queue_wait(faulty, failed, 0), VTRN_ERROR_DMA_FAULT, "descriptor 2");
    EXPECT(memcmp(sink, source, 128 * KiB) == 0);
    EXPECT(bytes_are(sink + 128 * KiB, 128 * KiB, 0));
    /* The queue next to it on the same engine, and the other device, were untouched. */
    EXPECT_OK(vtrn_dma_queue_wait(neighbour, fine, UINT64_MAX));
    EXPECT_OK(vtrn_dma_queue_wait(elsewhere, far, UINT64_MAX));
    EXPECT(memcmp(other_sink, other_source, bytes) == 0);
    /* One-shot: the queue goes on. */
    memset(sink, 0, bytes);
    uint64_t again = submit_one(faulty, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    EXPECT_OK(vtrn_dma_queue_wait(faulty, again, UINT64_MAX));
    EXPECT(memcmp(sink, source, bytes) == 0);
    vtrn_dma_queue_info_t info = VTRN_DMA_QUEUE_INFO_INIT;
    EXPECT_OK(vtrn_dma_queue_get_info(faulty, &info));
    EXPECT_EQ_U64(info.completed_sequence, again);
    EXPECT_EQ_U64(info.free_entries, info.ring_entries);
    vtrn_device_error_counters_t counters = counters_of(device);
    EXPECT_EQ_U64(counters.dma_aborts, 1);
    EXPECT_EQ_U64(counters.armed_faults, 0);
    EXPECT_EQ_U64(counters_of(other_device).dma_aborts, 0);

    /* Sticky, on any queue of core 0: every submission fails until a reset. */
    fault = fault_of(VTRN_FAULT_DMA_ABORT, VTRN_FAULT_STICKY, 0, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 0);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    for (int round = 0; round < 3; round++) {
        uint64_t sequence = submit_one(neighbour, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), 64));
        EXPECT_ERROR(vtrn_dma_queue_wait(neighbour, sequence, UINT64_MAX), VTRN_ERROR_DMA_FAULT,
                     "DMA abort on queue 3 of DMA engine 1 of core 0 of device 0", "injected fault 2 (dma-abort:core=0:sticky)");
    }
    /* A one-descriptor transfer on the other device goes on all along. */
    far = submit_one(elsewhere, transfer(vtrn_host_ref(other_output, 0), vtrn_host_ref(other_input, 0), 64));
    EXPECT_OK(vtrn_dma_queue_wait(elsewhere, far, UINT64_MAX));
    EXPECT_EQ_U64(counters_of(device).dma_aborts, 4);
    EXPECT_EQ_U64(counters_of(device).armed_faults, 1);
    EXPECT_OK(vtrn_device_reset(device, 0));
    uint64_t after_reset = submit_one(neighbour, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    EXPECT_OK(vtrn_dma_queue_wait(neighbour, after_reset, UINT64_MAX));
    EXPECT(memcmp(sink, source, bytes) == 0);

    /* On the host engines, vtrn_memcpy sees the abort. */
    fault = fault_of(VTRN_FAULT_DMA_ABORT, 0, VTRN_FAULT_HOST, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 0);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes), VTRN_ERROR_DMA_FAULT,
                 "vtrn_memcpy: DMA abort on host DMA engine", "of device 0 (vtrn_memcpy): descriptor", "injected fault 3");
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * HBM uncorrectable errors
 * ============================================================================================ */

static void test_hbm_uncorrectable(void) {
    GROUP("uncorrectable HBM errors");
    vtrn_runtime_t runtime = create_runtime("trn1", NULL);
    if (runtime == NULL) return;
    vtrn_device_t device = get_device(runtime, 0);
    const size_t bytes = 64 * KiB;
    unsigned char *data = NULL, *sink = NULL;
    vtrn_host_buffer_t input = filled_buffer(runtime, bytes, 11, &data);
    vtrn_host_buffer_t output = filled_buffer(runtime, bytes, 0, &sink);
    vtrn_device_memory_t bad = allocate(device, bytes), good = allocate(device, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(bad, 0), vtrn_host_ref(input, 0), bytes));
    uint64_t base = address_of(bad);

    /* Sticky over 256 bytes in the middle of `bad`: every read that reaches them fails. */
    vtrn_fault_t fault = hbm_fault(base + 4096, 256, VTRN_FAULT_STICKY);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    char expected[160];
    snprintf(expected, sizeof expected, "read HBM bytes [0x%llx, 0x%llx)", (unsigned long long)base,
             (unsigned long long)(base + bytes));
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_host_ref(output, 0), vtrn_device_ref(bad, 0), bytes), VTRN_ERROR_HARDWARE,
                 "vtrn_memcpy: uncorrectable HBM error on device 0: host DMA engine", expected, "injected fault 1 (hbm-ue:address=0x");
    /* Writes succeed, reads that miss the range too, and other memory is untouched. */
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(bad, 0), vtrn_host_ref(input, 0), bytes));
    memset(sink, 0, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(output, 0), vtrn_device_ref(bad, 8192), bytes - 8192));
    EXPECT(memcmp(sink, data + 8192, bytes - 8192) == 0);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(good, 0), vtrn_host_ref(input, 0), bytes));
    memset(sink, 0, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(output, 0), vtrn_device_ref(good, 0), bytes));
    EXPECT(memcmp(sink, data, bytes) == 0);

    /* A DMA queue reading it, HBM to HBM. */
    vtrn_dma_queue_t queue = open_queue(device, 1, 4, 5);
    uint64_t sequence = submit_one(queue, transfer(vtrn_device_ref(good, 0), vtrn_device_ref(bad, 0), bytes));
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX), VTRN_ERROR_HARDWARE,
                 "uncorrectable HBM error on device 0: queue 5 of DMA engine 4 of core 1 of device 0 read HBM bytes",
                 "at descriptor 0 (ring slot 0)", "sticky)");

    /* A kernel's DMA_COPY reading it: its fence fails, naming the instruction, core and parameter. */
    struct doubling doubling;
    prepare_doubling(runtime, device, &doubling);
    vtrn_kernel_t kernel = doubling_kernel(runtime, device, 0);
    vtrn_fence_t fence = execute_doubling(kernel, &doubling);
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    EXPECT_OK(vtrn_fence_destroy(fence));
    EXPECT(doubled_correctly(runtime, device, &doubling));
    fault = hbm_fault(address_of(doubling.in) + TILE_BYTES - 4, 4, 0); /* one-shot: the last element */
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    fence = execute_doubling(kernel, &doubling);
    EXPECT_ERROR(vtrn_fence_wait(fence, UINT64_MAX), VTRN_ERROR_HARDWARE,
                 "uncorrectable HBM error on device 0: instruction 0 (DMA_COPY on DMA) of the execution on core 0 read src "
                 "(parameter \"in\") at HBM bytes", "injected fault 2", "the execution stopped there");
    vtrn_status_t status = VTRN_SUCCESS;
    EXPECT_OK(vtrn_fence_status(fence, &status));
    EXPECT_EQ_U64(status, VTRN_ERROR_HARDWARE);
    EXPECT_OK(vtrn_fence_destroy(fence));
    /* One-shot: the next execution reads it fine. */
    fence = execute_doubling(kernel, &doubling);
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    EXPECT_OK(vtrn_fence_destroy(fence));
    EXPECT(doubled_correctly(runtime, device, &doubling));
    vtrn_device_error_counters_t counters = counters_of(device);
    EXPECT_EQ_U64(counters.hbm_uncorrectable_errors, 3);
    EXPECT_EQ_U64(counters.armed_faults, 1);

    /* A reset clears the sticky error; memory and its contents stay. */
    EXPECT_OK(vtrn_device_reset(device, 0));
    memset(sink, 0, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(output, 0), vtrn_device_ref(bad, 0), bytes));
    EXPECT(memcmp(sink, data, bytes) == 0);
    sequence = submit_one(queue, transfer(vtrn_device_ref(good, 0), vtrn_device_ref(bad, 0), bytes));
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Hangs
 * ============================================================================================ */

/* Waits (up to 10 s) until the device's hang counter reaches `hangs`: a hang has begun. */
static void wait_for_hangs(vtrn_device_t device, uint64_t hangs) {
    double deadline = now_seconds() + 10;
    vtrn_device_error_counters_t counters = VTRN_DEVICE_ERROR_COUNTERS_INIT;
    while (vtrn_device_get_error_counters(device, &counters) == VTRN_SUCCESS && counters.hangs < hangs &&
           now_seconds() < deadline) {
        usleep(1000);
    }
    EXPECT_MSG(counters.hangs >= hangs, "no hang began: the hang counter is %llu", (unsigned long long)counters.hangs);
}

struct reset_later {
    vtrn_device_t device;
    uint64_t hangs; /* reset once this many hangs have begun */
    vtrn_status_t status;
};

static void *reset_after_hang(void *argument) {
    struct reset_later *later = argument;
    wait_for_hangs(later->device, later->hangs);
    later->status = vtrn_device_reset(later->device, 0);
    return NULL;
}

static void test_engine_hang(void) {
    GROUP("engine hangs: caught by the execution timeout, or ended by a reset");
    vtrn_runtime_t runtime = create_runtime("trn1", NULL);
    if (runtime == NULL) return;
    vtrn_device_t device = get_device(runtime, 0);
    struct doubling hung_data, other_data;
    prepare_doubling(runtime, device, &hung_data);
    prepare_doubling(runtime, device, &other_data);
    vtrn_kernel_t hung_kernel = doubling_kernel(runtime, device, 0), other_kernel = doubling_kernel(runtime, device, 1);

    /* One-shot: DVE of core 0 hangs at its first instruction. */
    vtrn_fault_t fault = fault_of(VTRN_FAULT_ENGINE_HANG, 0, 0, VTRN_ENGINE_DVE, VTRN_FAULT_ANY, 0);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    double start = now_seconds();
    vtrn_fence_t hung = execute_doubling(hung_kernel, &hung_data);
    wait_for_hangs(device, 1);
    /* Core 1 works while core 0 hangs. */
    vtrn_fence_t other = execute_doubling(other_kernel, &other_data);
    EXPECT_OK(vtrn_fence_wait(other, UINT64_MAX));
    /* Core 0's execution still hangs when core 1's is done. */
    vtrn_status_t status = VTRN_SUCCESS;
    EXPECT_OK(vtrn_fence_status(hung, &status));
    EXPECT_EQ_U64(status, VTRN_NOT_READY);
    EXPECT(doubled_correctly(runtime, device, &other_data));
    EXPECT_ERROR(vtrn_fence_wait(hung, UINT64_MAX), VTRN_ERROR_TIMEOUT,
                 "vtrn_fence_wait: instruction 1 (TENSOR_SCALAR on DVE) never finished: DVE of core 0 of device 0 hung "
                 "(injected fault 1 (engine-hang:core=0:engine=dve)); the execution timeout of 300 ms (VTRN_EXEC_TIMEOUT_MS) ended it");
    double elapsed = now_seconds() - start;
    EXPECT_MSG(elapsed >= 0.29 && elapsed < 10, "the hang ended after %.3f s", elapsed);
    EXPECT_OK(vtrn_fence_destroy(hung));
    EXPECT_OK(vtrn_fence_destroy(other));
    /* One-shot: the core goes on. */
    hung = execute_doubling(hung_kernel, &hung_data);
    EXPECT_OK(vtrn_fence_wait(hung, UINT64_MAX));
    EXPECT_OK(vtrn_fence_destroy(hung));
    EXPECT(doubled_correctly(runtime, device, &hung_data));
    vtrn_device_error_counters_t counters = counters_of(device);
    EXPECT_EQ_U64(counters.hangs, 1);
    EXPECT_EQ_U64(counters.execution_timeouts, 1);

    /* Sticky, any engine of core 0 after 1 instruction: a reset ends the hang at once, and the
     * executions queued behind it fail with VTRN_ERROR_RESET without running. */
    fault = fault_of(VTRN_FAULT_ENGINE_HANG, VTRN_FAULT_STICKY, 0, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 1);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    vtrn_fence_t first = execute_doubling(hung_kernel, &hung_data);
    vtrn_fence_t queued = execute_doubling(hung_kernel, &hung_data);
    struct reset_later later = { device, 2, VTRN_ERROR_INTERNAL };
    pthread_t thread;
    pthread_create(&thread, NULL, reset_after_hang, &later);
    EXPECT_ERROR(vtrn_fence_wait(first, UINT64_MAX), VTRN_ERROR_RESET,
                 "instruction 1 (TENSOR_SCALAR on DVE) never finished: DVE of core 0 of device 0 hung (injected fault 2 "
                 "(engine-hang:core=0:after=1:sticky)) until device 0 was reset (vtrn_device_reset)");
    EXPECT_ERROR(vtrn_fence_wait(queued, UINT64_MAX), VTRN_ERROR_RESET,
                 "device 0 was reset (vtrn_device_reset) while the execution was queued on core 0; it did not run");
    pthread_join(thread, NULL);
    EXPECT_EQ_U64(later.status, VTRN_SUCCESS);
    EXPECT_OK(vtrn_fence_destroy(first));
    EXPECT_OK(vtrn_fence_destroy(queued));
    /* After the reset the sticky fault is gone and the core works. */
    vtrn_fence_t fence = execute_doubling(hung_kernel, &hung_data);
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    EXPECT_OK(vtrn_fence_destroy(fence));
    EXPECT(doubled_correctly(runtime, device, &hung_data));
    counters = counters_of(device);
    EXPECT_EQ_U64(counters.hangs, 2);
    EXPECT_EQ_U64(counters.resets, 1);
    EXPECT_EQ_U64(counters.execution_timeouts, 1);

    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* With no execution timeout (VTRN_EXEC_TIMEOUT_MS=0) a hang lasts until a reset; destroying the
     * runtime ends it too, instead of waiting forever. */
    runtime = create_runtime_with_timeout("trn1", "engine-hang:core=0:engine=dma:after=1", 0);
    if (runtime == NULL) return;
    device = get_device(runtime, 0);
    prepare_doubling(runtime, device, &hung_data);
    hung_kernel = doubling_kernel(runtime, device, 0);
    fence = execute_doubling(hung_kernel, &hung_data);
    wait_for_hangs(device, 1);
    EXPECT_ERROR(vtrn_fence_wait(fence, 100 * 1000 * 1000), VTRN_ERROR_TIMEOUT, "did not finish within 100000000 ns of waiting");
    start = now_seconds();
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_MSG(now_seconds() - start < 5, "vtrn_runtime_destroy took %.3f s with a hung execution", now_seconds() - start);
}

static void test_dma_hang(void) {
    GROUP("DMA hangs: caught by the execution timeout, even in a wait forever");
    vtrn_runtime_t runtime = create_runtime("trn1", NULL);
    if (runtime == NULL) return;
    vtrn_device_t device = get_device(runtime, 0);
    const size_t bytes = 128 * KiB;
    unsigned char *source = NULL, *sink = NULL, *other_sink = NULL;
    vtrn_host_buffer_t input = filled_buffer(runtime, bytes, 5, &source);
    vtrn_host_buffer_t output = filled_buffer(runtime, bytes, 0, &sink);
    vtrn_host_buffer_t other_output = filled_buffer(runtime, bytes, 0, &other_sink);
    vtrn_dma_queue_t stuck = open_queue(device, 0, 2, 0), free_queue = open_queue(device, 0, 2, 1);

    vtrn_fault_t fault = fault_of(VTRN_FAULT_DMA_HANG, 0, 0, 2, 0, 1);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    double start = now_seconds();
    uint64_t sequence = submit_one(stuck, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    wait_for_hangs(device, 1);
    EXPECT_ERROR(vtrn_dma_queue_wait(stuck, sequence, 0), VTRN_NOT_READY,
                 "the queue hung at descriptor 1 (injected fault 1 (dma-hang:core=0:engine=2:queue=0:after=1))",
                 "which fails it once it has hung for 300 ms");
    /* The other queue of the same engine goes on. */
    uint64_t other = submit_one(free_queue, transfer(vtrn_host_ref(other_output, 0), vtrn_host_ref(input, 0), bytes));
    EXPECT_OK(vtrn_dma_queue_wait(free_queue, other, UINT64_MAX));
    EXPECT(memcmp(other_sink, source, bytes) == 0);
    EXPECT_ERROR(vtrn_dma_queue_wait(stuck, sequence, UINT64_MAX), VTRN_ERROR_TIMEOUT,
                 "vtrn_dma_queue_wait: queue 0 of DMA engine 2 of core 0 of device 0 hung at descriptor 1 (ring slot 1) "
                 "(injected fault 1", "the execution timeout of 300 ms (VTRN_EXEC_TIMEOUT_MS) ended the wait for it; sequence 1 "
                 "failed (descriptor 1 did not complete)");
    double elapsed = now_seconds() - start;
    EXPECT_MSG(elapsed >= 0.29 && elapsed < 10, "the hang ended after %.3f s", elapsed);
    EXPECT(memcmp(sink, source, 64 * KiB) == 0); /* the first descriptor completed */
    /* One-shot: the queue goes on. */
    sequence = submit_one(stuck, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    EXPECT_OK(vtrn_dma_queue_wait(stuck, sequence, UINT64_MAX));
    EXPECT(memcmp(sink, source, bytes) == 0);
    EXPECT_EQ_U64(counters_of(device).hangs, 1);

    /* A reset ends a DMA hang before its timeout; the sequence fails with VTRN_ERROR_RESET. */
    fault = fault_of(VTRN_FAULT_DMA_HANG, VTRN_FAULT_STICKY, VTRN_FAULT_ANY, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 0);
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    sequence = submit_one(stuck, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    /* Enqueued, not submitted: not in flight, so it stays for the next submit. */
    vtrn_dma_transfer_t pending = transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes);
    EXPECT_OK(vtrn_dma_queue_enqueue(stuck, &pending, 1));
    struct reset_later later = { device, 2, VTRN_ERROR_INTERNAL };
    pthread_t thread;
    pthread_create(&thread, NULL, reset_after_hang, &later);
    EXPECT_ERROR(vtrn_dma_queue_wait(stuck, sequence, UINT64_MAX), VTRN_ERROR_RESET,
                 "device 0 was reset (vtrn_device_reset) while the work was in flight on queue 0 of DMA engine 2 of core 0 of "
                 "device 0; sequence 3 failed (descriptors 4-5 did not complete); the queue is clean and usable again");
    pthread_join(thread, NULL);
    EXPECT_EQ_U64(later.status, VTRN_SUCCESS);
    vtrn_dma_queue_info_t info = VTRN_DMA_QUEUE_INFO_INIT;
    EXPECT_OK(vtrn_dma_queue_get_info(stuck, &info));
    EXPECT_EQ_U64(info.free_entries, info.ring_entries - 2); /* the pending transfer's 2 descriptors */
    EXPECT_EQ_U64(info.completed_sequence, 3);
    memset(sink, 0, bytes);
    sequence = submit_one(stuck, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    EXPECT_EQ_U64(sequence, 4); /* the pending transfer and this one */
    EXPECT_OK(vtrn_dma_queue_wait(stuck, sequence, UINT64_MAX));
    EXPECT(memcmp(sink, source, bytes) == 0);

    /* Destroying a hung queue does not wait for the hang. */
    EXPECT_OK(vtrn_device_inject_fault(device, &fault));
    submit_one(stuck, transfer(vtrn_host_ref(output, 0), vtrn_host_ref(input, 0), bytes));
    start = now_seconds();
    EXPECT_OK(vtrn_dma_queue_destroy(stuck));
    EXPECT_MSG(now_seconds() - start < 0.2, "destroying a hung queue took %.3f s", now_seconds() - start);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Device loss
 * ============================================================================================ */

static void test_device_loss(void) {
    GROUP("device loss: every call on it fails, the other device works, a reset brings it back");
    vtrn_runtime_t runtime = create_runtime("trn1:2", NULL);
    if (runtime == NULL) return;
    vtrn_device_t lost = get_device(runtime, 1), alive = get_device(runtime, 0);
    const size_t bytes = 64 * KiB;
    unsigned char *source = NULL, *sink = NULL;
    vtrn_host_buffer_t input = filled_buffer(runtime, bytes, 21, &source);
    vtrn_host_buffer_t output = filled_buffer(runtime, bytes, 0, &sink);
    vtrn_device_memory_t memory = allocate(lost, bytes);
    EXPECT_OK(vtrn_memcpy(lost, vtrn_device_ref(memory, 0), vtrn_host_ref(input, 0), bytes));
    vtrn_dma_queue_t queue = open_queue(lost, 0, 0, 0);
    struct doubling lost_data, alive_data;
    prepare_doubling(runtime, lost, &lost_data);
    prepare_doubling(runtime, alive, &alive_data);
    vtrn_kernel_t lost_kernel = doubling_kernel(runtime, lost, 0), alive_kernel = doubling_kernel(runtime, alive, 0);
    vtrn_fence_t done = execute_doubling(lost_kernel, &lost_data);
    EXPECT_OK(vtrn_fence_wait(done, UINT64_MAX));

    /* In flight when the device goes: a hung execution and a hung DMA sequence. */
    vtrn_fault_t fault = fault_of(VTRN_FAULT_ENGINE_HANG, 0, 0, VTRN_ENGINE_DVE, VTRN_FAULT_ANY, 0);
    EXPECT_OK(vtrn_device_inject_fault(lost, &fault));
    fault = fault_of(VTRN_FAULT_DMA_HANG, 0, 0, 0, 0, 0);
    EXPECT_OK(vtrn_device_inject_fault(lost, &fault));
    vtrn_fence_t running = execute_doubling(lost_kernel, &lost_data);
    vtrn_fence_t queued = execute_doubling(lost_kernel, &lost_data);
    uint64_t sequence = submit_one(queue, transfer(vtrn_host_ref(output, 0), vtrn_device_ref(memory, 0), bytes));
    wait_for_hangs(lost, 2);
    fault = fault_of(VTRN_FAULT_DEVICE_LOSS, 0, VTRN_FAULT_ANY, VTRN_FAULT_ANY, VTRN_FAULT_ANY, 0);
    EXPECT_OK(vtrn_device_inject_fault(lost, &fault));
    EXPECT_ERROR(vtrn_fence_wait(running, UINT64_MAX), VTRN_ERROR_DEVICE_LOST,
                 "DVE of core 0 of device 1 hung (injected fault 1", "until device 1 was lost (lost by injected fault 3 (device-loss))");
    EXPECT_ERROR(vtrn_fence_wait(queued, UINT64_MAX), VTRN_ERROR_DEVICE_LOST,
                 "device 1 is lost (lost by injected fault 3 (device-loss)): the execution queued on core 0 of device 1 did not run");
    /* A fence that finished before the loss keeps its status. */
    EXPECT_OK(vtrn_fence_wait(done, 0));

    /* Every call that needs the device says it is lost. */
    const char *why = "device 1 is lost (lost by injected fault 3 (device-loss)); vtrn_device_reset brings it back";
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX), VTRN_ERROR_DEVICE_LOST, "vtrn_dma_queue_wait: ", why);
    vtrn_device_memory_t more = NULL;
    EXPECT_ERROR(vtrn_device_memory_alloc(lost, 64, 0, &more), VTRN_ERROR_DEVICE_LOST, why);
    EXPECT(more == NULL);
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    vtrn_dma_queue_t another = NULL;
    options.queue = 1;
    EXPECT_ERROR(vtrn_dma_queue_create(lost, &options, &another), VTRN_ERROR_DEVICE_LOST, why);
    vtrn_dma_transfer_t copy = transfer(vtrn_host_ref(output, 0), vtrn_device_ref(memory, 0), bytes);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &copy, 1), VTRN_ERROR_DEVICE_LOST, why);
    EXPECT_ERROR(vtrn_dma_queue_submit(queue, NULL), VTRN_ERROR_DEVICE_LOST, why);
    EXPECT_ERROR(vtrn_memcpy(lost, vtrn_host_ref(output, 0), vtrn_device_ref(memory, 0), bytes), VTRN_ERROR_DEVICE_LOST, why);
    vtrn_binding_t bindings[2] = { { "in", lost_data.in, 0 }, { "out", lost_data.out, 0 } };
    vtrn_fence_t refused = NULL;
    EXPECT_ERROR(vtrn_kernel_execute(lost_kernel, bindings, 2, &refused), VTRN_ERROR_DEVICE_LOST, why);
    vtrn_program_t program = NULL;
    EXPECT_OK(vtrn_program_create(runtime, &program));
    vtrn_kernel_t kernel = NULL;
    EXPECT_ERROR(vtrn_kernel_load(lost, 1, program, &kernel), VTRN_ERROR_DEVICE_LOST, why);
    EXPECT_ERROR(vtrn_device_inject_fault(lost, &fault), VTRN_ERROR_DEVICE_LOST, why);
    /* Describing works. */
    vtrn_device_info_t info = get_device_info(lost);
    EXPECT_EQ_U64(info.index, 1);
    vtrn_dma_queue_info_t queue_info = VTRN_DMA_QUEUE_INFO_INIT;
    EXPECT_OK(vtrn_dma_queue_get_info(queue, &queue_info));
    vtrn_device_error_counters_t counters = counters_of(lost);
    EXPECT(counters.lost == 1 && counters.device_losses == 1 && counters.hangs == 2 && counters.faults_injected == 3);

    /* The other device works, its data right. */
    vtrn_fence_t fence = execute_doubling(alive_kernel, &alive_data);
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    EXPECT_OK(vtrn_fence_destroy(fence));
    EXPECT(doubled_correctly(runtime, alive, &alive_data));
    EXPECT_EQ_U64(counters_of(alive).lost, 0);

    /* A reset brings it back, memory contents kept, no process restart. */
    EXPECT_OK(vtrn_device_reset(lost, 0));
    EXPECT_EQ_U64(counters_of(lost).lost, 0);
    memset(sink, 0, bytes);
    EXPECT_OK(vtrn_memcpy(lost, vtrn_host_ref(output, 0), vtrn_device_ref(memory, 0), bytes));
    EXPECT(memcmp(sink, source, bytes) == 0);
    sequence = submit_one(queue, copy);
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));
    fence = execute_doubling(lost_kernel, &lost_data);
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));
    EXPECT_OK(vtrn_fence_destroy(fence));
    EXPECT(doubled_correctly(runtime, lost, &lost_data));
    EXPECT_OK(vtrn_kernel_load(lost, 1, program, &kernel));
    /* Releasing works on a lost device too. */
    EXPECT_OK(vtrn_device_inject_fault(lost, &fault));
    EXPECT_OK(vtrn_kernel_unload(kernel));
    EXPECT_OK(vtrn_program_destroy(program));
    EXPECT_OK(vtrn_dma_queue_destroy(queue));
    EXPECT_OK(vtrn_device_memory_free(memory));
    EXPECT_OK(vtrn_fence_destroy(running));
    EXPECT_OK(vtrn_fence_destroy(queued));
    EXPECT_OK(vtrn_fence_destroy(done));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * VTRN_FAULTS
 * ============================================================================================ */

static void expect_bad_faults(int line, const char *text, const char *part) {
    setenv("VTRN_FAULTS", text, 1);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1:2";
    vtrn_runtime_t runtime = NULL;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    unsetenv("VTRN_FAULTS");
    const char *message = vtrn_last_error();
    char quoted[256];
    snprintf(quoted, sizeof quoted, "VTRN_FAULTS=\"%s\": ", text);
    record(status == VTRN_ERROR_INVALID_ARGUMENT && contains(message, quoted) && contains(message, part) &&
           contains(message, "accepted: faults separated by commas"),
           __FILE__, line, "VTRN_FAULTS=\"%s\": %s, \"%s\" (expected to name \"%s\")", text, vtrn_status_string(status), message, part);
    if (status == VTRN_SUCCESS) vtrn_runtime_destroy(runtime);
}

static void test_environment(void) {
    GROUP("VTRN_FAULTS");
    expect_bad_faults(__LINE__, "hang", "fault 1 (\"hang\") has kind \"hang\", which is not dma-abort");
    expect_bad_faults(__LINE__, " ", "no fault is listed");
    expect_bad_faults(__LINE__, "device-loss,,dma-abort", "fault 2 is empty");
    expect_bad_faults(__LINE__, "dma-abort:core=9", "fault 1 (\"dma-abort:core=9\"): core 9 does not exist: device 0");
    expect_bad_faults(__LINE__, "dma-abort:core=x", "core=\"x\", which is not a number or any or host");
    expect_bad_faults(__LINE__, "dma-abort:colour=red", "option \"colour\", which dma-abort does not take");
    expect_bad_faults(__LINE__, "dma-abort:after=ten", "after=\"ten\", which is not a number");
    expect_bad_faults(__LINE__, "hbm-ue:address=0x10", "needs both address=A and bytes=N");
    expect_bad_faults(__LINE__, "hbm-ue:address=0x10:bytes=16:core=0", "option \"core\", which hbm-ue does not take");
    expect_bad_faults(__LINE__, "device-loss:device=2", "names device 2, which does not exist: the topology \"trn1:2\" has 2 devices");
    expect_bad_faults(__LINE__, "engine-hang:engine=tpu", "engine=\"tpu\", which is not pe, act, dve, pool, dma or any");
    expect_bad_faults(__LINE__, "dma-hang:core=host:queue=1", "the queue must be any");
    expect_bad_faults(__LINE__, "dma-abort:sticky:once", "says sticky or once twice");
    expect_bad_faults(__LINE__, "dma-abort:core=0:core=1", "gives core twice");
    expect_bad_faults(__LINE__, "dma-abort:fast", "has \"fast\" where an option KEY=VALUE, sticky or once belongs");

    /* A good list arms its faults at vtrn_runtime_create, on the devices it names. */
    vtrn_runtime_t runtime = create_runtime(
        "trn1:2", "dma-abort:core=0:engine=0:queue=0:sticky, hbm-ue:device=1:address=0x0:bytes=4096,device-loss:device=1");
    if (runtime == NULL) return;
    vtrn_device_t device = get_device(runtime, 0), lost = get_device(runtime, 1);
    vtrn_device_error_counters_t counters = counters_of(device);
    EXPECT(counters.armed_faults == 1 && counters.faults_injected == 1 && counters.lost == 0);
    counters = counters_of(lost);
    EXPECT(counters.armed_faults == 1 && counters.faults_injected == 2 && counters.lost == 1);
    unsigned char *data = NULL;
    vtrn_host_buffer_t buffer = filled_buffer(runtime, 4096, 1, &data);
    vtrn_dma_queue_t queue = open_queue(device, 0, 0, 0), spared = open_queue(device, 0, 0, 1);
    uint64_t sequence = submit_one(queue, transfer(vtrn_host_ref(buffer, 0), vtrn_host_ref(buffer, 2048), 2048));
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX), VTRN_ERROR_DMA_FAULT,
                 "injected fault 1 (dma-abort:core=0:engine=0:queue=0:sticky)");
    sequence = submit_one(spared, transfer(vtrn_host_ref(buffer, 0), vtrn_host_ref(buffer, 2048), 2048));
    EXPECT_OK(vtrn_dma_queue_wait(spared, sequence, UINT64_MAX));
    vtrn_device_memory_t memory = NULL;
    EXPECT_ERROR(vtrn_device_memory_alloc(lost, 64, 0, &memory), VTRN_ERROR_DEVICE_LOST,
                 "device 1 is lost (lost by injected fault 2 (device-loss))");
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* The other kinds from VTRN_FAULTS: an HBM error at the first block a fresh device hands out,
     * and a DMA hang ended by the execution timeout. */
    runtime = create_runtime("trn1", "hbm-ue:address=0x0:bytes=64:sticky,dma-hang:core=1:engine=9:queue=9");
    if (runtime == NULL) return;
    device = get_device(runtime, 0);
    EXPECT_EQ_U64(counters_of(device).armed_faults, 2);
    memory = allocate(device, 4096);
    EXPECT_EQ_U64(address_of(memory), 0);
    buffer = filled_buffer(runtime, 4096, 1, &data);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(memory, 0), vtrn_host_ref(buffer, 0), 4096));
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_host_ref(buffer, 0), vtrn_device_ref(memory, 0), 4096), VTRN_ERROR_HARDWARE,
                 "read HBM bytes [0x0, 0x1000)", "injected fault 1 (hbm-ue:address=0x0:bytes=64:sticky)");
    queue = open_queue(device, 1, 9, 9);
    sequence = submit_one(queue, transfer(vtrn_host_ref(buffer, 0), vtrn_host_ref(buffer, 2048), 2048));
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX), VTRN_ERROR_TIMEOUT,
                 "queue 9 of DMA engine 9 of core 1 of device 0 hung at descriptor 0",
                 "injected fault 2 (dma-hang:core=1:engine=9:queue=9)");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

int main(void) {
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL;
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) unsetenv(variables[i]);

    test_arguments();
    test_dma_abort();
    test_hbm_uncorrectable();
    test_engine_hang();
    test_dma_hang();
    test_device_loss();
    test_environment();

    return finish("test_faults");
}
