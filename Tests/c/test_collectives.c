/*
 * test_collectives.c — communicators and collectives through the C ABI, as a C user meets them:
 * every host-called collective on 4 devices against a reference computed in the documented ring
 * order (bit for bit), two ranks on one device's two cores, an all-reduce inside kernels on the
 * CC engine ordered by semaphores, and the errors: bad arguments at the call, ranks that ask for
 * different things, a rank that never joins (named at the timeout), a device lost mid-collective,
 * destroyed communicators and runtimes.
 *
 *   make -C Tests/c check          (or: make -C Tests/c build/test_collectives && Tests/c/build/test_collectives)
 *
 * The program ends with the line "test_collectives: N passed, M failed".
 */
#define _GNU_SOURCE

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_framework.h"
#include "vtrn.h"

#define RANKS 4

static vtrn_runtime_t create_runtime(const char *topology, int timeout_ms) {
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", timeout_ms);
    setenv("VTRN_EXEC_TIMEOUT_MS", timeout, 1);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    vtrn_runtime_t runtime = NULL;
    EXPECT_OK(vtrn_runtime_create(&options, &runtime));
    unsetenv("VTRN_EXEC_TIMEOUT_MS");
    return runtime;
}

static vtrn_device_memory_t allocate(vtrn_device_t device, uint64_t bytes) {
    vtrn_device_memory_t memory = NULL;
    EXPECT_OK(vtrn_device_memory_alloc(device, bytes, 0, &memory));
    return memory;
}

static void wait_all(vtrn_fence_t *fences, int count) {
    for (int i = 0; i < count; i++) {
        EXPECT_OK(vtrn_fence_wait(fences[i], UINT64_MAX));
        EXPECT_OK(vtrn_fence_destroy(fences[i]));
    }
}

/* The first `count % parts` chunks are one element longer. */
static void chunk(int index, int count, int parts, int *start, int *length) {
    int base = count / parts, extra = count % parts;
    *start = index * base + (index < extra ? index : extra);
    *length = base + (index < extra ? 1 : 0);
}

static vtrn_comm_t make_comm(vtrn_runtime_t runtime, vtrn_device_t *devices, const uint32_t *cores, int count) {
    vtrn_comm_member_t members[16];
    for (int i = 0; i < count; i++) {
        members[i].device = devices[i];
        members[i].core = cores[i];
        members[i].reserved = 0;
    }
    vtrn_comm_t comm = NULL;
    EXPECT_OK(vtrn_comm_create(runtime, members, (uint32_t)count, &comm));
    return comm;
}

static void test_every_collective(void) {
    GROUP("every collective on 4 devices, one rank each");
    vtrn_runtime_t runtime = create_runtime("trn1:4", 30000);
    if (runtime == NULL) return;
    vtrn_device_t devices[RANKS];
    const uint32_t cores[RANKS] = { 0, 0, 0, 0 };
    for (int r = 0; r < RANKS; r++) devices[r] = get_device(runtime, (uint32_t)r);
    vtrn_comm_t comm = make_comm(runtime, devices, cores, RANKS);

    vtrn_comm_info_t info = VTRN_COMM_INFO_INIT;
    EXPECT_OK(vtrn_comm_get_info(comm, &info));
    EXPECT_EQ_U64(info.ranks, RANKS);
    uint32_t rank = 99;
    EXPECT_OK(vtrn_comm_rank(comm, devices[2], 0, &rank));
    EXPECT_EQ_U64(rank, 2);
    EXPECT_ERROR(vtrn_comm_rank(comm, devices[2], 1, &rank), VTRN_ERROR_NOT_FOUND, "core 1 of device 2 is not a member");

    /* fp32 all-reduce of 1001 elements: the ring's order, bit for bit. */
    enum { N = 1001 };
    static float inputs[RANKS][N], expected[N], result[N];
    for (int r = 0; r < RANKS; r++) {
        for (int i = 0; i < N; i++) inputs[r][i] = (float)((i * 7919 + r * 104729) % 1000) / 7.0f - 60.0f + (float)r * 1e-3f;
    }
    for (int c = 0; c < RANKS; c++) {
        int start, length;
        chunk(c, N, RANKS, &start, &length);
        for (int i = start; i < start + length; i++) {
            float acc = inputs[(c + 1) % RANKS][i];
            for (int k = 2; k <= RANKS; k++) acc = acc + inputs[(c + k) % RANKS][i];
            expected[i] = acc;
        }
    }
    vtrn_device_memory_t src[RANKS], dst[RANKS];
    vtrn_fence_t fences[2 * RANKS];
    for (int r = 0; r < RANKS; r++) {
        src[r] = device_upload(runtime, devices[r], inputs[r], sizeof inputs[r]);
        dst[r] = allocate(devices[r], RANKS * sizeof inputs[r]);
    }
    for (int r = 0; r < RANKS; r++) {
        EXPECT_OK(vtrn_all_reduce(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), vtrn_device_ref(src[r], 0), N,
                                  VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fences[r]));
    }
    vtrn_execution_info_t execution = VTRN_EXECUTION_INFO_INIT;
    EXPECT_OK(vtrn_fence_wait(fences[0], UINT64_MAX));
    EXPECT_OK(vtrn_fence_get_info(fences[0], &execution));
    EXPECT_EQ_U64(execution.cc_instructions, 1);
    EXPECT_MSG(execution.cc_busy_ns > 0 && execution.device_ns >= execution.cc_busy_ns, "cc_busy_ns %llu, device_ns %llu",
               (unsigned long long)execution.cc_busy_ns, (unsigned long long)execution.device_ns);
    wait_all(fences, RANKS);
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], dst[r], result, sizeof result);
        EXPECT_MSG(memcmp(result, expected, sizeof result) == 0, "rank %d: all-reduce differs from the ring order", r);
    }

    /* int32 all-gather, reduce-scatter (max), all-to-all, broadcast, send/receive. */
    enum { C = 5 };
    int32_t ints[RANKS][C * RANKS], out[C * RANKS];
    for (int r = 0; r < RANKS; r++) {
        for (int i = 0; i < C * RANKS; i++) ints[r][i] = (r + 1) * 1000 + i * ((i % 3) - 1);
        EXPECT_OK(vtrn_memcpy(devices[r], vtrn_device_ref(src[r], 0), vtrn_device_ref(device_upload(runtime, devices[r], ints[r], sizeof ints[r]), 0),
                              sizeof ints[r]));
    }
    for (int r = 0; r < RANKS; r++) {
        EXPECT_OK(vtrn_all_gather(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), vtrn_device_ref(src[r], 0), C, VTRN_DTYPE_INT32,
                                  &fences[r]));
    }
    wait_all(fences, RANKS);
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], dst[r], out, sizeof out);
        int ok = 1;
        for (int j = 0; j < RANKS; j++) ok &= memcmp(out + j * C, ints[j], C * sizeof(int32_t)) == 0;
        EXPECT_MSG(ok, "rank %d: all-gather", r);
    }
    for (int r = 0; r < RANKS; r++) {
        EXPECT_OK(vtrn_reduce_scatter(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), vtrn_device_ref(src[r], 0), C, VTRN_DTYPE_INT32,
                                      VTRN_ALU_MAX, &fences[r]));
    }
    wait_all(fences, RANKS);
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], dst[r], out, C * sizeof(int32_t));
        int ok = 1;
        for (int i = 0; i < C; i++) {
            int32_t best = ints[0][r * C + i];
            for (int j = 1; j < RANKS; j++) best = ints[j][r * C + i] > best ? ints[j][r * C + i] : best;
            ok &= out[i] == best;
        }
        EXPECT_MSG(ok, "rank %d: reduce-scatter max", r);
    }
    for (int r = 0; r < RANKS; r++) {
        EXPECT_OK(vtrn_all_to_all(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), vtrn_device_ref(src[r], 0), C, VTRN_DTYPE_INT32,
                                  &fences[r]));
    }
    wait_all(fences, RANKS);
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], dst[r], out, sizeof out);
        int ok = 1;
        for (int j = 0; j < RANKS; j++) ok &= memcmp(out + j * C, ints[j] + r * C, C * sizeof(int32_t)) == 0;
        EXPECT_MSG(ok, "rank %d: all-to-all", r);
    }
    for (int r = 0; r < RANKS; r++) {
        vtrn_memory_ref_t none = { 0 };
        EXPECT_OK(vtrn_broadcast(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), r == 3 ? vtrn_device_ref(src[r], 0) : none, C * RANKS,
                                 VTRN_DTYPE_INT32, 3, &fences[r]));
    }
    wait_all(fences, RANKS);
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], dst[r], out, sizeof out);
        EXPECT_MSG(memcmp(out, ints[3], sizeof out) == 0, "rank %d: broadcast from 3", r);
    }
    /* A ring of sends, even ranks sending first (a send waits for its receive). */
    int count = 0;
    for (int r = 0; r < RANKS; r++) {
        uint32_t next = (uint32_t)((r + 1) % RANKS), previous = (uint32_t)((r + RANKS - 1) % RANKS);
        if (r % 2 == 0) {
            EXPECT_OK(vtrn_send(comm, (uint32_t)r, vtrn_device_ref(src[r], 0), C, VTRN_DTYPE_INT32, next, &fences[count++]));
            EXPECT_OK(vtrn_recv(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), C, VTRN_DTYPE_INT32, previous, &fences[count++]));
        } else {
            EXPECT_OK(vtrn_recv(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), C, VTRN_DTYPE_INT32, previous, &fences[count++]));
            EXPECT_OK(vtrn_send(comm, (uint32_t)r, vtrn_device_ref(src[r], 0), C, VTRN_DTYPE_INT32, next, &fences[count++]));
        }
    }
    wait_all(fences, count);
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], dst[r], out, C * sizeof(int32_t));
        EXPECT_MSG(memcmp(out, ints[(r + RANKS - 1) % RANKS], C * sizeof(int32_t)) == 0, "rank %d: receive", r);
    }
    /* A permute: a ring to the next rank. */
    const int32_t ring[RANKS] = { 1, 2, 3, 0 };
    for (int r = 0; r < RANKS; r++) {
        EXPECT_OK(vtrn_collective_permute(comm, (uint32_t)r, vtrn_device_ref(dst[r], 0), vtrn_device_ref(src[r], 0), C,
                                          VTRN_DTYPE_INT32, ring, &fences[r]));
    }
    wait_all(fences, RANKS);
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], dst[r], out, C * sizeof(int32_t));
        EXPECT_MSG(memcmp(out, ints[(r + RANKS - 1) % RANKS], C * sizeof(int32_t)) == 0, "rank %d: permute", r);
    }
    const int32_t doubled[RANKS] = { 1, 1, -1, -1 };
    vtrn_fence_t refused = NULL;
    EXPECT_ERROR(vtrn_collective_permute(comm, 0, vtrn_device_ref(dst[0], 0), vtrn_device_ref(src[0], 0), C, VTRN_DTYPE_INT32,
                                         doubled, &refused), VTRN_ERROR_INVALID_ARGUMENT, "ranks 0 and 1 both send to rank 1");
    EXPECT_ERROR(vtrn_collective_permute(comm, 0, vtrn_device_ref(dst[0], 0), vtrn_device_ref(src[0], 0), C, VTRN_DTYPE_INT32,
                                         NULL, &refused), VTRN_ERROR_INVALID_ARGUMENT, "targets is NULL");
    info = (vtrn_comm_info_t)VTRN_COMM_INFO_INIT;
    EXPECT_OK(vtrn_comm_get_info(comm, &info));
    EXPECT_EQ_U64(info.collectives_completed, 6);

    /* The generic entry point, bf16 sum on two cores of one device and one of another. */
    vtrn_device_t three[3] = { devices[0], devices[0], devices[1] };
    const uint32_t three_cores[3] = { 1, 0, 1 };
    vtrn_comm_t small = make_comm(runtime, three, three_cores, 3);
    uint16_t halves[3][4], sum[4];
    vtrn_device_memory_t hsrc[3];
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < 4; i++) halves[r][i] = (uint16_t)(0x3f80 + r * 0x80 + i); /* 1.0, 2.0, 4.0 plus small mantissas */
        hsrc[r] = device_upload(runtime, three[r], halves[r], sizeof halves[r]);
    }
    for (int r = 0; r < 3; r++) {
        EXPECT_OK(vtrn_comm_collective(small, (uint32_t)r, VTRN_COLLECTIVE_ALL_REDUCE, vtrn_device_ref(hsrc[r], 0),
                                       vtrn_device_ref(hsrc[r], 0), 4, VTRN_DTYPE_BF16, VTRN_ALU_ADD, 0, &fences[r]));
    }
    wait_all(fences, 3);
    device_download(runtime, three[1], hsrc[1], sum, sizeof sum);
    EXPECT_EQ_U64(sum[0], 0x40e0); /* 1 + 2 + 4 = 7 */
    EXPECT_OK(vtrn_comm_destroy(small));

    vtrn_handle_counts_t counts = VTRN_HANDLE_COUNTS_INIT;
    EXPECT_OK(vtrn_get_handle_counts(&counts));
    EXPECT_EQ_U64(counts.comms, 1);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_ERROR(vtrn_comm_get_info(comm, &info), VTRN_ERROR_INVALID_HANDLE, "vtrn_comm_t", "was destroyed");
    counts = (vtrn_handle_counts_t)VTRN_HANDLE_COUNTS_INIT;
    EXPECT_OK(vtrn_get_handle_counts(&counts));
    EXPECT_EQ_U64(counts.comms, 0);
    EXPECT_EQ_U64(counts.total, 0);
}

/* Two engines of each core: DMA loads x, CC all-reduces it SBUF to SBUF, DMA stores y. */
static void test_in_kernel(void) {
    GROUP("an all-reduce inside kernels, on the CC engine");
    vtrn_runtime_t runtime = create_runtime("trn1:2", 30000);
    if (runtime == NULL) return;
    vtrn_device_t devices[2] = { get_device(runtime, 0), get_device(runtime, 1) };
    const uint32_t cores[2] = { 1, 1 };
    vtrn_comm_t comm = make_comm(runtime, devices, cores, 2);
    vtrn_program_t program = NULL;
    EXPECT_OK(vtrn_program_create(runtime, &program));
    uint32_t x = 0, y = 0;
    EXPECT_OK(vtrn_program_add_parameter(program, "x", 128 * 8 * 4, &x));
    EXPECT_OK(vtrn_program_add_parameter(program, "y", 128 * 8 * 4, &y));
    vtrn_access_t hx = { VTRN_MEMORY_HBM, VTRN_DTYPE_FP32, 0, 128, 0, x, 1, { 8, 0, 0, 0 }, { 1, 0, 0, 0 }, 8 };
    vtrn_access_t hy = hx;
    hy.parameter = y;
    vtrn_access_t tile = { VTRN_MEMORY_SBUF, VTRN_DTYPE_FP32, 0, 128, 0, 0, 1, { 8, 0, 0, 0 }, { 1, 0, 0, 0 }, 0 };
    vtrn_sync_t loaded = { -1, 0, 0, VTRN_SEMAPHORE_ADD, 1 }, reduced = { 0, 1, 1, VTRN_SEMAPHORE_ADD, 1 }, store = { 1, 1, -1,
                                                                                                                  VTRN_SEMAPHORE_ADD, 0 };
    EXPECT_OK(vtrn_program_dma_copy(program, tile, hx, &loaded));
    EXPECT_OK(vtrn_program_collective(program, comm, VTRN_COLLECTIVE_ALL_REDUCE, tile, tile, VTRN_ALU_ADD, 0, &reduced));
    EXPECT_OK(vtrn_program_dma_copy(program, hy, tile, &store));
    EXPECT_ERROR(vtrn_program_collective(program, comm, (vtrn_collective_t)9, tile, tile, VTRN_ALU_ADD, 0, NULL),
                 VTRN_ERROR_INVALID_ARGUMENT, "kind is 9");
    vtrn_kernel_t kernels[2];
    for (int r = 0; r < 2; r++) EXPECT_OK(vtrn_kernel_load(devices[r], 1, program, &kernels[r]));
    vtrn_kernel_t outsider = NULL;
    EXPECT_ERROR(vtrn_kernel_load(devices[0], 0, program, &outsider), VTRN_ERROR_INVALID_PROGRAM,
                 "instruction 1 (ALL_REDUCE on CC): core 0 of device 0 is not a member of communicator");
    static float values[2][128 * 8], result[128 * 8];
    vtrn_device_memory_t xs[2], ys[2];
    vtrn_fence_t fences[2];
    for (int r = 0; r < 2; r++) {
        for (int i = 0; i < 128 * 8; i++) values[r][i] = (float)(i * (r + 1));
        xs[r] = device_upload(runtime, devices[r], values[r], sizeof values[r]);
        ys[r] = allocate(devices[r], sizeof values[r]);
        vtrn_binding_t bindings[2] = { { "x", xs[r], 0 }, { "y", ys[r], 0 } };
        EXPECT_OK(vtrn_kernel_execute(kernels[r], bindings, 2, &fences[r]));
    }
    vtrn_execution_info_t execution = VTRN_EXECUTION_INFO_INIT;
    EXPECT_OK(vtrn_fence_wait(fences[1], UINT64_MAX));
    EXPECT_OK(vtrn_fence_get_info(fences[1], &execution));
    EXPECT_EQ_U64(execution.instructions[4], 2);
    EXPECT_EQ_U64(execution.cc_instructions, 1);
    wait_all(fences, 2);
    device_download(runtime, devices[0], ys[0], result, sizeof result);
    int ok = 1;
    for (int i = 0; i < 128 * 8; i++) ok &= result[i] == (float)(3 * i);
    EXPECT_MSG(ok, "in-kernel all-reduce: y != x0 + x1");
    EXPECT_OK(vtrn_program_destroy(program));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_errors(void) {
    GROUP("errors");
    vtrn_runtime_t runtime = create_runtime("trn1:3", 300 * (int)test_slowdown());
    if (runtime == NULL) return;
    vtrn_device_t devices[3] = { get_device(runtime, 0), get_device(runtime, 1), get_device(runtime, 2) };
    const uint32_t cores[3] = { 0, 0, 0 };
    vtrn_comm_member_t twice[2] = { { devices[0], 1, 0 }, { devices[0], 1, 0 } };
    vtrn_comm_t comm = NULL;
    EXPECT_ERROR(vtrn_comm_create(runtime, NULL, 2, &comm), VTRN_ERROR_INVALID_ARGUMENT, "members is NULL");
    EXPECT_ERROR(vtrn_comm_create(runtime, twice, 0, &comm), VTRN_ERROR_INVALID_ARGUMENT, "count is 0");
    EXPECT_ERROR(vtrn_comm_create(runtime, twice, 2, &comm), VTRN_ERROR_INVALID_ARGUMENT,
                 "rank 1: device 0 core 1 is rank 0 already");
    twice[1].core = 7;
    EXPECT_ERROR(vtrn_comm_create(runtime, twice, 2, &comm), VTRN_ERROR_INVALID_ARGUMENT, "rank 1: device 0 has 2 cores");
    twice[1].device = NULL;
    EXPECT_ERROR(vtrn_comm_create(runtime, twice, 2, &comm), VTRN_ERROR_INVALID_HANDLE, "members[1].device");
    comm = make_comm(runtime, devices, cores, 3);

    vtrn_device_memory_t memory[3];
    for (int r = 0; r < 3; r++) memory[r] = allocate(devices[r], 256);
    vtrn_fence_t fences[3];
    vtrn_fence_t fence = NULL;
    vtrn_host_buffer_t host = NULL;
    EXPECT_OK(vtrn_host_buffer_create(runtime, 256, NULL, &host));
    EXPECT_ERROR(vtrn_all_reduce(comm, 3, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 0), 4, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_INVALID_ARGUMENT, "rank 3 does not exist", "has 3 ranks");
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_host_ref(host, 0), vtrn_device_ref(memory[0], 0), 4, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_INVALID_ARGUMENT, "dst is a host buffer");
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory[1], 0), vtrn_device_ref(memory[1], 0), 4, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_INVALID_ARGUMENT, "memory of device 1; rank 0 is on device 0");
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 0), 65, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_OUT_OF_BOUNDS, "65 fp32 elements (260 bytes)", "256-byte block");
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 0), 4, VTRN_DTYPE_FP32,
                                 VTRN_ALU_DIVIDE, &fence), VTRN_ERROR_INVALID_ARGUMENT, "add, max or min");
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 0), 0, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_INVALID_ARGUMENT, "count must be at least 1");
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 0), 4, (vtrn_dtype_t)42,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_INVALID_ARGUMENT, "dtype is 42");
    EXPECT_ERROR(vtrn_send(comm, 1, vtrn_device_ref(memory[1], 0), 4, VTRN_DTYPE_FP32, 1, &fence), VTRN_ERROR_INVALID_ARGUMENT,
                 "cannot send to itself");
    EXPECT_ERROR(vtrn_all_to_all(comm, 0, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 16), 4, VTRN_DTYPE_FP32, &fence),
                 VTRN_ERROR_INVALID_ARGUMENT, "overlap");
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 0), 4, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, NULL), VTRN_ERROR_INVALID_ARGUMENT, "fence is NULL");

    /* Ranks asking for different counts: all fail, the message names both. */
    for (int r = 0; r < 3; r++) {
        EXPECT_OK(vtrn_all_reduce(comm, (uint32_t)r, vtrn_device_ref(memory[r], 0), vtrn_device_ref(memory[r], 0), r == 2 ? 8 : 4,
                                  VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fences[r]));
    }
    for (int r = 0; r < 3; r++) {
        EXPECT_ERROR(vtrn_fence_wait(fences[r], UINT64_MAX), VTRN_ERROR_INVALID_ARGUMENT, "ALL_REDUCE of 8 fp32",
                     "ALL_REDUCE of 4 fp32", "same count, dtype and op");
        EXPECT_OK(vtrn_fence_destroy(fences[r]));
    }
    /* Rank 2 never joins: ranks 0 and 1 name it at the timeout; rank 2 then fails at once. */
    for (int r = 0; r < 2; r++) {
        EXPECT_OK(vtrn_all_gather(comm, (uint32_t)r, vtrn_device_ref(memory[r], 0), vtrn_device_ref(memory[r], 0), 4,
                                  VTRN_DTYPE_INT32, &fences[r]));
    }
    for (int r = 0; r < 2; r++) {
        EXPECT_ERROR(vtrn_fence_wait(fences[r], UINT64_MAX), VTRN_ERROR_TIMEOUT, "collective 1 of communicator",
                     "rank 2 (device 2 core 0) never joined", "VTRN_EXEC_TIMEOUT_MS");
        EXPECT_OK(vtrn_fence_destroy(fences[r]));
    }
    EXPECT_OK(vtrn_all_gather(comm, 2, vtrn_device_ref(memory[2], 0), vtrn_device_ref(memory[2], 0), 4, VTRN_DTYPE_INT32, &fence));
    EXPECT_ERROR(vtrn_fence_wait(fence, UINT64_MAX), VTRN_ERROR_TIMEOUT, "joined too late");
    EXPECT_OK(vtrn_fence_destroy(fence));

    /* A device lost while ranks wait: every rank that waits fails naming it. */
    for (int r = 0; r < 2; r++) {
        EXPECT_OK(vtrn_all_reduce(comm, (uint32_t)r, vtrn_device_ref(memory[r], 0), vtrn_device_ref(memory[r], 0), 4,
                                  VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fences[r]));
    }
    vtrn_fault_t loss = VTRN_FAULT_INIT;
    loss.kind = VTRN_FAULT_DEVICE_LOSS;
    usleep(20000);
    EXPECT_OK(vtrn_device_inject_fault(devices[2], &loss));
    for (int r = 0; r < 2; r++) {
        EXPECT_ERROR(vtrn_fence_wait(fences[r], UINT64_MAX), VTRN_ERROR_DEVICE_LOST, "rank 2 (device 2 core 0) is on device 2, which was lost");
        EXPECT_OK(vtrn_fence_destroy(fences[r]));
    }
    EXPECT_ERROR(vtrn_all_reduce(comm, 2, vtrn_device_ref(memory[2], 0), vtrn_device_ref(memory[2], 0), 4, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_DEVICE_LOST, "device 2 is lost");
    EXPECT_OK(vtrn_device_reset(devices[2], 0));

    /* Across processes without Open MPI: the message says what to install. (This process never
     * loads MPI otherwise; the outcome of the first load is kept for the process.) */
    setenv("VTRN_MPI_LIBRARY", "/nonexistent/libmpi.so.40", 1);
    vtrn_comm_member_t lonely = { devices[0], 1, 0 };
    vtrn_comm_t across = NULL;
    EXPECT_ERROR(vtrn_comm_create_mpi(runtime, &lonely, 1, &across), VTRN_ERROR_UNSUPPORTED,
                 "cannot load Open MPI (/nonexistent/libmpi.so.40, VTRN_MPI_LIBRARY)", "install openmpi-bin and libopenmpi-dev");
    unsetenv("VTRN_MPI_LIBRARY");

    EXPECT_OK(vtrn_comm_destroy(comm));
    EXPECT_ERROR(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory[0], 0), vtrn_device_ref(memory[0], 0), 4, VTRN_DTYPE_FP32,
                                 VTRN_ALU_ADD, &fence), VTRN_ERROR_INVALID_HANDLE, "vtrn_comm_t");
    EXPECT_OK(vtrn_comm_destroy(NULL));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* A runtime destroyed while a rank waits for the others: the wait ends with the runtime (drained,
 * as vtrn_runtime_destroy drains, but a collective that can never complete is not waited for). */
static void test_destroy_while_waiting(void) {
    GROUP("destroy while a rank waits");
    vtrn_runtime_t runtime = create_runtime("trn1:2", 60000);
    if (runtime == NULL) return;
    vtrn_device_t devices[2] = { get_device(runtime, 0), get_device(runtime, 1) };
    const uint32_t cores[2] = { 0, 0 };
    vtrn_comm_t comm = make_comm(runtime, devices, cores, 2);
    vtrn_device_memory_t memory = allocate(devices[0], 64);
    vtrn_fence_t fence = NULL;
    EXPECT_OK(vtrn_all_reduce(comm, 0, vtrn_device_ref(memory, 0), vtrn_device_ref(memory, 0), 4, VTRN_DTYPE_FP32, VTRN_ALU_ADD,
                              &fence));
    usleep(20000);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) * 1e-9;
    EXPECT_MSG(seconds < 10.0, "vtrn_runtime_destroy took %.3f s with a rank waiting in a collective", seconds);
}

/* VTRN_CC_ALGORITHM=torus on a trn1.32xlarge: the same sum (integers: any order gives it), and
 * the cost model's one-hop steps make a small all-reduce cheaper than the ring's. */
static uint64_t small_all_reduce_cost(const char *algorithm) {
    setenv("VTRN_CC_ALGORITHM", algorithm, 1);
    vtrn_runtime_t runtime = create_runtime("trn1.32xlarge", 30000);
    unsetenv("VTRN_CC_ALGORITHM");
    if (runtime == NULL) return 0;
    vtrn_device_t devices[16];
    const uint32_t cores[16] = { 0 };
    int32_t values[16][2], sum[2] = { 0, 0 };
    vtrn_device_memory_t memory[16];
    vtrn_fence_t fences[16];
    for (int r = 0; r < 16; r++) {
        devices[r] = get_device(runtime, (uint32_t)r);
        values[r][0] = r + 1;
        values[r][1] = 100 * r;
        sum[0] += values[r][0];
        sum[1] += values[r][1];
        memory[r] = device_upload(runtime, devices[r], values[r], sizeof values[r]);
    }
    vtrn_comm_t comm = make_comm(runtime, devices, cores, 16);
    for (int r = 0; r < 16; r++) {
        EXPECT_OK(vtrn_all_reduce(comm, (uint32_t)r, vtrn_device_ref(memory[r], 0), vtrn_device_ref(memory[r], 0), 2, VTRN_DTYPE_INT32,
                                  VTRN_ALU_ADD, &fences[r]));
    }
    uint64_t cost = 0;
    for (int r = 0; r < 16; r++) {
        EXPECT_OK(vtrn_fence_wait(fences[r], UINT64_MAX));
        vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
        EXPECT_OK(vtrn_fence_get_info(fences[r], &info));
        if (info.cc_busy_ns > cost) cost = info.cc_busy_ns;
        EXPECT_OK(vtrn_fence_destroy(fences[r]));
        int32_t result[2];
        device_download(runtime, devices[r], memory[r], result, sizeof result);
        EXPECT_MSG(result[0] == sum[0] && result[1] == sum[1], "%s: rank %d got %d %d", algorithm, r, result[0], result[1]);
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    return cost;
}

static void test_torus(void) {
    GROUP("VTRN_CC_ALGORITHM=torus");
    uint64_t ring = small_all_reduce_cost("ring"), torus = small_all_reduce_cost("torus");
    EXPECT_MSG(torus > 0 && torus * 3 < ring, "estimated all-reduce of 8 bytes over 16 ranks: torus %llu ns, ring %llu ns",
               (unsigned long long)torus, (unsigned long long)ring);
    setenv("VTRN_CC_ALGORITHM", "tree", 1);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    vtrn_runtime_t runtime = NULL;
    EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "VTRN_CC_ALGORITHM=\"tree\"", "accepted: ring");
    unsetenv("VTRN_CC_ALGORITHM");
}


/* Collectives move their data on each core's CC ring (DMA engine 15): a DMA abort aimed at one
 * rank's core fails every rank with VTRN_ERROR_DMA_FAULT naming the rank, the ring, the step and
 * the fault; the ring starts again, and the next collective is right. */
static void test_dma_faults(void) {
    GROUP("collectives through DMA: faults");
    vtrn_runtime_t runtime = create_runtime("trn1:4", 5000 * (int)test_slowdown());
    if (runtime == NULL) return;
    enum { COUNT = 100000 };
    static float inputs[RANKS][COUNT], output[COUNT];
    vtrn_device_t devices[RANKS];
    vtrn_device_memory_t sources[RANKS], destinations[RANKS];
    const uint32_t cores[RANKS] = { 0, 0, 0, 0 };
    for (int r = 0; r < RANKS; r++) {
        devices[r] = get_device(runtime, (uint32_t)r);
        for (int i = 0; i < COUNT; i++) inputs[r][i] = (float)(r * 1000 + i % 97);
        sources[r] = device_upload(runtime, devices[r], inputs[r], sizeof inputs[r]);
        destinations[r] = allocate(devices[r], sizeof inputs[r]);
    }
    vtrn_comm_t comm = make_comm(runtime, devices, cores, RANKS);
    vtrn_fault_t abort_fault = VTRN_FAULT_INIT;
    abort_fault.kind = VTRN_FAULT_DMA_ABORT;
    abort_fault.core = 0;
    /* Rank 1's ring folds chunk 1 (100,000 bytes) in 2 blocks of 8 descriptors (a copy into its
     * accumulator, 3 compute descriptors, 4 copies out): the 8th is the first block's last. */
    abort_fault.after = 7;
    EXPECT_OK(vtrn_device_inject_fault(devices[1], &abort_fault));
    vtrn_fence_t fences[RANKS];
    for (int round = 0; round < 2; round++) {
        for (int r = 0; r < RANKS; r++) {
            EXPECT_OK(vtrn_all_reduce(comm, (uint32_t)r, vtrn_device_ref(destinations[r], 0), vtrn_device_ref(sources[r], 0), COUNT,
                                      VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fences[r]));
        }
        if (round == 0) {
            for (int r = 0; r < RANKS; r++) {
                EXPECT_ERROR(vtrn_fence_wait(fences[r], UINT64_MAX), VTRN_ERROR_DMA_FAULT,
                             "DMA abort on the CC ring of rank 1 (device 1 core 0) (DMA engine 15 of core 0)",
                             "at descriptor 7 of collective 0 of communicator", "injected fault 1",
                             "every rank of the collective failed with it");
                EXPECT_OK(vtrn_fence_destroy(fences[r]));
            }
            vtrn_device_error_counters_t counters = VTRN_DEVICE_ERROR_COUNTERS_INIT;
            EXPECT_OK(vtrn_device_get_error_counters(devices[1], &counters));
            EXPECT_MSG(counters.dma_aborts == 1 && counters.armed_faults == 0, "dma_aborts %llu, armed %u",
                   (unsigned long long)counters.dma_aborts, counters.armed_faults);
        } else {
            wait_all(fences, RANKS);
        }
    }
    /* The second all-reduce: chunk c folded from rank c+1 round to rank c (exact for these sums). */
    for (int r = 0; r < RANKS; r++) {
        device_download(runtime, devices[r], destinations[r], output, sizeof output);
        int wrong = 0;
        for (int i = 0; i < COUNT; i++) {
            float sum = 0;
            for (int q = 0; q < RANKS; q++) sum += inputs[q][i];
            if (output[i] != sum) wrong++;
        }
        EXPECT_MSG(wrong == 0, "rank %d: %d of %d elements differ from the sum after the ring restarted", r, wrong, COUNT);
    }
    /* An uncorrectable HBM error under rank 3's source, in chunk 0, which rank 0's ring reads:
     * every rank fails at once, not at the timeout. */
    vtrn_device_memory_info_t info = VTRN_DEVICE_MEMORY_INFO_INIT;
    EXPECT_OK(vtrn_device_memory_get_info(sources[3], &info));
    vtrn_fault_t ue = VTRN_FAULT_INIT;
    ue.kind = VTRN_FAULT_HBM_UE;
    ue.address = info.address + 4096;
    ue.bytes = 64;
    EXPECT_OK(vtrn_device_inject_fault(devices[3], &ue));
    for (int r = 0; r < RANKS; r++) {
        EXPECT_OK(vtrn_all_reduce(comm, (uint32_t)r, vtrn_device_ref(destinations[r], 0), vtrn_device_ref(sources[r], 0), COUNT,
                                  VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fences[r]));
    }
    for (int r = 0; r < RANKS; r++) {
        /* Within a second, where a rank that never came would hold the others for the 5 s timeout. */
        EXPECT_ERROR(vtrn_fence_wait(fences[r], 1000000000ull * test_slowdown()), VTRN_ERROR_HARDWARE,
                     "uncorrectable HBM error: the CC ring of rank 0 (device 0 core 0)", "in the HBM of device 3");
        EXPECT_OK(vtrn_fence_destroy(fences[r]));
    }
    EXPECT_OK(vtrn_comm_destroy(comm));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

int main(void) {
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL;
    unsetenv("VTRN_TOPOLOGY");
    unsetenv("VTRN_FAULTS");
    unsetenv("VTRN_CC_ALGORITHM");
    test_every_collective();
    test_in_kernel();
    test_errors();
    test_destroy_while_waiting();
    test_torus();
    test_dma_faults();
    return finish("test_collectives");
}
