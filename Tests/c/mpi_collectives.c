/*
 * mpi_collectives.c — a communicator across the processes of an MPI job, as a C user meets it:
 * run by `make -C Tests/c mpi` as `mpirun -np 4` (or any count). Process p owns device p of
 * "trn1:20" (one rank each) and joins vtrn_comm_create_mpi; it also owns devices 4+4p..4+4p+3,
 * over which it runs the same collectives in one process, and checks that its rank's results of
 * the MPI communicator equal that rank's of the one-process communicator, byte for byte: fp32
 * and bf16 all-reduce (the order of the arithmetic), int32 max, all-gather, reduce-scatter,
 * all-to-all, broadcast, permute and a ring of sends. Then the errors: processes asking for
 * different counts, and (last, since it leaves the last process behind) a process that never
 * comes, named at the timeout. The program does not use MPI itself: vtrn loads Open MPI.
 *
 * Each process ends with "mpi_collectives[p]: N passed, M failed".
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

#define MAX_PROCESSES 4
#define COUNT 4099

static int process, processes;

/* Rank r's input: values that differ in every bit of their sums' order. */
static void fill(int rank, float *values, uint16_t *halves, int32_t *integers) {
    for (int i = 0; i < COUNT; i++) {
        values[i] = (float)((i * 7919 + rank * 104729) % 2000) / 3.7f - 270.0f + (float)rank * 1e-3f;
        uint32_t bits;
        memcpy(&bits, &values[i], 4);
        halves[i] = (uint16_t)(bits >> 16);
        integers[i] = (int32_t)((i * 31 + rank * 977) % 5003) - 2500;
    }
}

typedef vtrn_status_t (*collective_t)(vtrn_comm_t comm, uint32_t rank, vtrn_device_memory_t dst, vtrn_device_memory_t src,
                                      vtrn_fence_t *fence);

static vtrn_status_t all_reduce_fp32(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    return vtrn_all_reduce(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, 0), COUNT, VTRN_DTYPE_FP32, VTRN_ALU_ADD, f);
}
static vtrn_status_t all_reduce_bf16(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    /* The bf16 halves sit after the fp32 values in the source block. */
    return vtrn_all_reduce(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, COUNT * 4), COUNT, VTRN_DTYPE_BF16, VTRN_ALU_ADD, f);
}
static vtrn_status_t all_reduce_max(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    return vtrn_all_reduce(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, COUNT * 6), COUNT, VTRN_DTYPE_INT32, VTRN_ALU_MAX, f);
}
static vtrn_status_t all_gather(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    return vtrn_all_gather(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, 0), 1000, VTRN_DTYPE_FP32, f);
}
static vtrn_status_t reduce_scatter(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    return vtrn_reduce_scatter(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, 0), COUNT / (uint64_t)processes, VTRN_DTYPE_FP32,
                               VTRN_ALU_ADD, f);
}
static vtrn_status_t all_to_all(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    return vtrn_all_to_all(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, 0), COUNT / (uint64_t)processes, VTRN_DTYPE_FP32, f);
}
static vtrn_status_t broadcast(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    return vtrn_broadcast(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, 0), COUNT, VTRN_DTYPE_FP32, (uint32_t)(processes - 1), f);
}
static vtrn_status_t permute(vtrn_comm_t c, uint32_t r, vtrn_device_memory_t d, vtrn_device_memory_t s, vtrn_fence_t *f) {
    int32_t targets[MAX_PROCESSES];
    for (int i = 0; i < processes; i++) targets[i] = (i + 1) % processes;
    return vtrn_collective_permute(c, r, vtrn_device_ref(d, 0), vtrn_device_ref(s, 0), COUNT, VTRN_DTYPE_FP32, targets, f);
}

static const struct {
    const char *name;
    collective_t call;
    uint64_t bytes; /* of the destination to compare */
} collectives[] = {
    { "all-reduce fp32", all_reduce_fp32, COUNT * 4 },     { "all-reduce bf16", all_reduce_bf16, COUNT * 2 },
    { "all-reduce int32 max", all_reduce_max, COUNT * 4 }, { "all-gather", all_gather, 1000 * 4 * MAX_PROCESSES },
    { "reduce-scatter", reduce_scatter, 0 },               { "all-to-all", all_to_all, 0 },
    { "broadcast", broadcast, COUNT * 4 },                 { "permute", permute, COUNT * 4 },
};

int main(void) {
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL;
    const char *rank_text = getenv("OMPI_COMM_WORLD_RANK"), *size_text = getenv("OMPI_COMM_WORLD_SIZE");
    if (rank_text == NULL || size_text == NULL) {
        fprintf(stderr, "mpi_collectives: run me with mpirun (OMPI_COMM_WORLD_RANK is not set)\n");
        return 2;
    }
    process = atoi(rank_text);
    processes = atoi(size_text);
    if (processes < 1 || processes > MAX_PROCESSES) {
        fprintf(stderr, "mpi_collectives: 1 to %d processes\n", MAX_PROCESSES);
        return 2;
    }
    char name[64];
    snprintf(name, sizeof name, "mpi_collectives[%d]", process);
    setenv("VTRN_EXEC_TIMEOUT_MS", "20000", 1);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1:20";
    vtrn_runtime_t runtime = NULL;
    EXPECT_OK(vtrn_runtime_create(&options, &runtime));
    if (runtime == NULL) return finish(name);

    /* This process's rank in the MPI communicator, and its own one-process reference. */
    vtrn_device_t mine = get_device(runtime, (uint32_t)process);
    vtrn_comm_member_t member = { mine, 0, 0 };
    vtrn_comm_t world = NULL;
    EXPECT_OK(vtrn_comm_create_mpi(runtime, &member, 1, &world));
    vtrn_comm_info_t info = VTRN_COMM_INFO_INIT;
    EXPECT_OK(vtrn_comm_get_info(world, &info));
    EXPECT_EQ_U64(info.ranks, (uint64_t)processes);
    EXPECT_EQ_U64(info.first_local_rank, (uint64_t)process);
    EXPECT_EQ_U64(info.local_ranks, 1);
    EXPECT_EQ_U64(info.process, (uint64_t)process);
    EXPECT_EQ_U64(info.processes, (uint64_t)processes);
    vtrn_device_t reference_devices[MAX_PROCESSES];
    vtrn_comm_member_t reference_members[MAX_PROCESSES];
    for (int r = 0; r < processes; r++) {
        reference_devices[r] = get_device(runtime, (uint32_t)(4 + 4 * process + r));
        reference_members[r] = (vtrn_comm_member_t){ reference_devices[r], 0, 0 };
    }
    vtrn_comm_t single = NULL;
    EXPECT_OK(vtrn_comm_create(runtime, reference_members, (uint32_t)processes, &single));

    static float values[COUNT];
    static uint16_t halves[COUNT];
    static int32_t integers[COUNT];
    static unsigned char block[COUNT * 10], got[COUNT * 4 * MAX_PROCESSES], want[COUNT * 4 * MAX_PROCESSES];
    vtrn_device_memory_t source[MAX_PROCESSES], output[MAX_PROCESSES];
    for (int r = 0; r < processes; r++) {
        fill(r, values, halves, integers);
        memcpy(block, values, COUNT * 4);
        memcpy(block + COUNT * 4, halves, COUNT * 2);
        memcpy(block + COUNT * 6, integers, COUNT * 4);
        source[r] = device_upload(runtime, reference_devices[r], block, sizeof block);
        EXPECT_OK(vtrn_device_memory_alloc(reference_devices[r], COUNT * 4 * MAX_PROCESSES, 0, &output[r]));
    }
    fill(process, values, halves, integers);
    memcpy(block, values, COUNT * 4);
    memcpy(block + COUNT * 4, halves, COUNT * 2);
    memcpy(block + COUNT * 6, integers, COUNT * 4);
    vtrn_device_memory_t my_source = device_upload(runtime, mine, block, sizeof block), my_output = NULL;
    EXPECT_OK(vtrn_device_memory_alloc(mine, COUNT * 4 * MAX_PROCESSES, 0, &my_output));

    for (size_t k = 0; k < sizeof collectives / sizeof collectives[0]; k++) {
        GROUP(collectives[k].name);
        uint64_t bytes = collectives[k].bytes;
        if (bytes == 0) bytes = (COUNT / (uint64_t)processes) * 4 * (strcmp(collectives[k].name, "all-to-all") == 0 ? (uint64_t)processes : 1);
        if (strcmp(collectives[k].name, "all-gather") == 0) bytes = 1000 * 4 * (uint64_t)processes;
        vtrn_fence_t fences[MAX_PROCESSES], fence = NULL;
        for (int r = 0; r < processes; r++) EXPECT_OK(collectives[k].call(single, (uint32_t)r, output[r], source[r], &fences[r]));
        EXPECT_OK(collectives[k].call(world, (uint32_t)process, my_output, my_source, &fence));
        for (int r = 0; r < processes; r++) {
            EXPECT_OK(vtrn_fence_wait(fences[r], UINT64_MAX));
            EXPECT_OK(vtrn_fence_destroy(fences[r]));
        }
        vtrn_status_t status = vtrn_fence_wait(fence, UINT64_MAX);
        EXPECT_MSG(status == VTRN_SUCCESS, "%s over MPI: %s: %s", collectives[k].name, vtrn_status_string(status), vtrn_last_error());
        EXPECT_OK(vtrn_fence_destroy(fence));
        device_download(runtime, reference_devices[process], output[process], want, bytes);
        device_download(runtime, mine, my_output, got, bytes);
        EXPECT_MSG(memcmp(got, want, bytes) == 0, "%s: rank %d's result over MPI differs from one process's", collectives[k].name,
                   process);
    }

    /* A ring of sends across the processes (even ranks send first). */
    GROUP("send/receive");
    if (processes > 1) {
        uint32_t next = (uint32_t)((process + 1) % processes), previous = (uint32_t)((process + processes - 1) % processes);
        vtrn_fence_t a = NULL, b = NULL;
        if (process % 2 == 0) {
            EXPECT_OK(vtrn_send(world, (uint32_t)process, vtrn_device_ref(my_source, 0), 100, VTRN_DTYPE_INT32, next, &a));
            EXPECT_OK(vtrn_recv(world, (uint32_t)process, vtrn_device_ref(my_output, 0), 100, VTRN_DTYPE_INT32, previous, &b));
        } else {
            EXPECT_OK(vtrn_recv(world, (uint32_t)process, vtrn_device_ref(my_output, 0), 100, VTRN_DTYPE_INT32, previous, &b));
            EXPECT_OK(vtrn_send(world, (uint32_t)process, vtrn_device_ref(my_source, 0), 100, VTRN_DTYPE_INT32, next, &a));
        }
        EXPECT_OK(vtrn_fence_wait(a, UINT64_MAX));
        EXPECT_OK(vtrn_fence_wait(b, UINT64_MAX));
        fill((int)previous, values, halves, integers);
        device_download(runtime, mine, my_output, got, 400);
        EXPECT_MSG(memcmp(got, values, 400) == 0, "rank %d received something else than rank %u sent", process, previous);
    }

    /* Not a rank of this process. */
    vtrn_fence_t refused = NULL;
    if (processes > 1) {
        EXPECT_ERROR(all_reduce_fp32(world, (uint32_t)((process + 1) % processes), my_output, my_source, &refused),
                     VTRN_ERROR_INVALID_ARGUMENT, "is in process");
    }

    /* Processes asking for different counts: every process fails, naming the difference. */
    GROUP("mismatch");
    if (processes > 1) {
        vtrn_fence_t fence = NULL;
        uint64_t count = process == processes - 1 ? 8 : 16;
        EXPECT_OK(vtrn_all_reduce(world, (uint32_t)process, vtrn_device_ref(my_output, 0), vtrn_device_ref(my_source, 0), count,
                                  VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fence));
        EXPECT_ERROR(vtrn_fence_wait(fence, UINT64_MAX), VTRN_ERROR_INVALID_ARGUMENT, "asked for ALL_REDUCE of",
                     "same count, dtype, op and root");
        EXPECT_OK(vtrn_fence_destroy(fence));
    }

    /* The last process never comes: the others name it at the timeout. */
    GROUP("a process that never comes");
    if (processes > 1) {
        vtrn_runtime_t short_runtime = NULL;
        setenv("VTRN_EXEC_TIMEOUT_MS", "1500", 1);
        vtrn_runtime_options_t short_options = VTRN_RUNTIME_OPTIONS_INIT;
        short_options.topology = "trn1:28";
        EXPECT_OK(vtrn_runtime_create(&short_options, &short_runtime));
        vtrn_comm_member_t short_member = { get_device(short_runtime, (uint32_t)(20 + process)), 0, 0 };
        vtrn_comm_t short_world = NULL;
        EXPECT_OK(vtrn_comm_create_mpi(short_runtime, &short_member, 1, &short_world));
        if (process != processes - 1) {
            vtrn_device_memory_t memory = NULL;
            EXPECT_OK(vtrn_device_memory_alloc(short_member.device, 64, 0, &memory));
            vtrn_fence_t fence = NULL;
            EXPECT_OK(vtrn_all_reduce(short_world, (uint32_t)process, vtrn_device_ref(memory, 0), vtrn_device_ref(memory, 0), 16,
                                      VTRN_DTYPE_FP32, VTRN_ALU_ADD, &fence));
            EXPECT_ERROR(vtrn_fence_wait(fence, UINT64_MAX), VTRN_ERROR_TIMEOUT, "before the execution timeout");
        }
        EXPECT_OK(vtrn_runtime_destroy(short_runtime));
    }

    EXPECT_OK(vtrn_runtime_destroy(runtime));
    return finish(name);
}
