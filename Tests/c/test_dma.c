/*
 * test_dma.c — host buffers, device memory (HBM) and DMA queues through the C ABI, tested the way
 * a C user meets them: written only from include/vtrn.h and its documented behaviour.
 *
 *   make -C Tests/c check          (or: make -C Tests/c build/test_dma && Tests/c/build/test_dma)
 *
 * The framework is test_framework.h; the program ends with the line
 * "test_dma: N passed, M failed". Set VTRN_TEST_VERBOSE=1 to print each group's name.
 *
 * Devices are the process's, as on a real host: runtimes of the same topology share device 0's
 * HBM and cores, and a core belongs to the first runtime that opens a DMA queue on it until that
 * runtime is destroyed. So every test destroys its runtimes before the next one starts, and the
 * HBM accounting tests can count on an empty device.
 *
 * NUMA: nothing assumes one node. The online nodes come from /sys/devices/system/node/online.
 * Needs an unlimited address space (each device reserves its whole HBM) and about 1 GiB of memory.
 * One test re-runs this program as a child (`test_dma --memlock-child`) under `ulimit -l 64` and
 * without CAP_IPC_LOCK (setpriv), to see the RLIMIT_MEMLOCK message; without setpriv it is skipped.
 */
#define _GNU_SOURCE /* sched_getcpu, sched_setaffinity */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "test_framework.h"
#include "vtrn.h"

/* ============================================================================================
 * Helpers
 * ============================================================================================ */

#define SENTINEL_HOST_BUFFER ((vtrn_host_buffer_t)(uintptr_t)0x5e7e1a13u)
#define SENTINEL_MEMORY ((vtrn_device_memory_t)(uintptr_t)0x5e7e1a14u)
#define SENTINEL_QUEUE ((vtrn_dma_queue_t)(uintptr_t)0x5e7e1a15u)
#define GARBAGE ((void *)(uintptr_t)0x1234)
#define MiB (1024ull * 1024ull)
#define GiB (1024ull * MiB)

static size_t page_size;

static const char *const variables[] = {
    "VTRN_TOPOLOGY", "VTRN_VISIBLE_CORES", "VTRN_LOG_LEVEL", "VTRN_EXEC_TIMEOUT_MS", "VTRN_TRACE",
};

/* A runtime of `topology` with `visible_cores` (NULL: all), or NULL after a recorded failure. */
static vtrn_runtime_t create_runtime_with(const char *topology, const char *visible_cores) {
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    options.visible_cores = visible_cores;
    vtrn_runtime_t runtime = NULL;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    record(status == VTRN_SUCCESS && runtime != NULL, __FILE__, __LINE__,
           "vtrn_runtime_create(topology \"%s\") returned %s: %s", topology, vtrn_status_string(status),
           vtrn_last_error());
    return status == VTRN_SUCCESS ? runtime : NULL;
}

static vtrn_runtime_t create_runtime(const char *topology) { return create_runtime_with(topology, NULL); }

/* A host buffer; placement and flags as given, numa_node for VTRN_NUMA_NODE. NULL on failure. */
static vtrn_host_buffer_t create_buffer(vtrn_runtime_t runtime, size_t bytes, vtrn_numa_placement_t placement,
                                        int32_t numa_node, uint32_t flags) {
    vtrn_host_buffer_options_t options = VTRN_HOST_BUFFER_OPTIONS_INIT;
    options.placement = placement;
    options.numa_node = numa_node;
    options.flags = flags;
    vtrn_host_buffer_t buffer = NULL;
    vtrn_status_t status = vtrn_host_buffer_create(runtime, bytes, &options, &buffer);
    record(status == VTRN_SUCCESS, __FILE__, __LINE__, "vtrn_host_buffer_create(%zu bytes, placement %d, node %d, "
           "flags 0x%x) returned %s: %s", bytes, (int)placement, (int)numa_node, flags, vtrn_status_string(status),
           vtrn_last_error());
    return status == VTRN_SUCCESS ? buffer : NULL;
}

/* A device-local host buffer (device 0), the usual DMA buffer. */
static vtrn_host_buffer_t create_local_buffer(vtrn_runtime_t runtime, size_t bytes) {
    return create_buffer(runtime, bytes, VTRN_NUMA_DEVICE_LOCAL, -1, 0);
}

static unsigned char *map_buffer(vtrn_host_buffer_t buffer) {
    void *data = NULL;
    EXPECT_OK(vtrn_host_buffer_map(buffer, &data, NULL));
    return data;
}

static vtrn_host_buffer_info_t get_buffer_info(vtrn_host_buffer_t buffer) {
    vtrn_host_buffer_info_t info = VTRN_HOST_BUFFER_INFO_INIT;
    EXPECT_OK(vtrn_host_buffer_get_info(buffer, &info));
    return info;
}

static int32_t buffer_node(vtrn_host_buffer_t buffer) {
    int32_t node = -2;
    EXPECT_OK(vtrn_host_buffer_numa_node(buffer, &node));
    return node;
}

/* Resident pages per node (capacity 1024 nodes); returns the node count, 0 on failure. */
static uint32_t node_pages(vtrn_host_buffer_t buffer, uint64_t pages[1024]) {
    uint32_t count = 1024;
    vtrn_status_t status = vtrn_host_buffer_node_pages(buffer, pages, &count);
    record(status == VTRN_SUCCESS, __FILE__, __LINE__, "vtrn_host_buffer_node_pages returned %s: %s",
           vtrn_status_string(status), vtrn_last_error());
    return status == VTRN_SUCCESS ? count : 0;
}

static uint64_t sum(const uint64_t *values, uint32_t count) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++) total += values[i];
    return total;
}

static uint64_t pages_of(size_t bytes) { return (bytes + page_size - 1) / page_size; }

static vtrn_device_memory_t allocate(vtrn_device_t device, uint64_t bytes, uint64_t alignment) {
    vtrn_device_memory_t memory = NULL;
    vtrn_status_t status = vtrn_device_memory_alloc(device, bytes, alignment, &memory);
    record(status == VTRN_SUCCESS, __FILE__, __LINE__, "vtrn_device_memory_alloc(%" PRIu64 " bytes, alignment %"
           PRIu64 ") returned %s: %s", bytes, alignment, vtrn_status_string(status), vtrn_last_error());
    return status == VTRN_SUCCESS ? memory : NULL;
}

static vtrn_device_memory_info_t get_memory_info(vtrn_device_memory_t memory) {
    vtrn_device_memory_info_t info = VTRN_DEVICE_MEMORY_INFO_INIT;
    EXPECT_OK(vtrn_device_memory_get_info(memory, &info));
    return info;
}

static vtrn_memory_usage_t get_usage(vtrn_device_t device) {
    vtrn_memory_usage_t usage = VTRN_MEMORY_USAGE_INIT;
    EXPECT_OK(vtrn_device_get_memory_usage(device, &usage));
    return usage;
}

static vtrn_dma_queue_t open_queue(vtrn_device_t device, uint32_t core, uint32_t engine, uint32_t queue,
                                   uint32_t ring_entries) {
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.core = core;
    options.engine = engine;
    options.queue = queue;
    options.ring_entries = ring_entries;
    vtrn_dma_queue_t out = NULL;
    vtrn_status_t status = vtrn_dma_queue_create(device, &options, &out);
    record(status == VTRN_SUCCESS, __FILE__, __LINE__, "vtrn_dma_queue_create(core %u, engine %u, queue %u, ring %u) "
           "returned %s: %s", core, engine, queue, ring_entries, vtrn_status_string(status), vtrn_last_error());
    return status == VTRN_SUCCESS ? out : NULL;
}

static vtrn_dma_queue_info_t get_queue_info(vtrn_dma_queue_t queue) {
    vtrn_dma_queue_info_t info = VTRN_DMA_QUEUE_INFO_INIT;
    EXPECT_OK(vtrn_dma_queue_get_info(queue, &info));
    return info;
}

static vtrn_dma_transfer_t transfer_of(vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t bytes) {
    vtrn_dma_transfer_t transfer;
    transfer.dst = dst;
    transfer.src = src;
    transfer.bytes = bytes;
    return transfer;
}

/* Enqueues, submits and waits for `count` transfers; returns the first failing status. */
static vtrn_status_t run_transfers(vtrn_dma_queue_t queue, const vtrn_dma_transfer_t *transfers, uint32_t count) {
    uint64_t sequence = 0;
    vtrn_status_t status = vtrn_dma_queue_enqueue(queue, transfers, count);
    if (status == VTRN_SUCCESS) status = vtrn_dma_queue_submit(queue, &sequence);
    if (status == VTRN_SUCCESS) status = vtrn_dma_queue_wait(queue, sequence, UINT64_MAX);
    return status;
}

/* A pseudo-random generator with a seed, so that a failure can be replayed. */
static uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Fills `bytes` with a pattern of `seed` and each byte's position (a misplaced byte shows). */
static void fill_pattern(unsigned char *data, size_t bytes, uint64_t seed) {
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t value = next_random(&state);
        memcpy(data + i, &value, 8);
    }
    uint64_t last = next_random(&state);
    for (; i < bytes; i++) data[i] = (unsigned char)(last >> (8 * (i % 8)));
}

/* 1 when equal; else records nothing but describes the first difference into `why`. */
static int same_bytes(const unsigned char *actual, const unsigned char *expected, size_t bytes, char *why,
                      size_t why_size) {
    if (memcmp(actual, expected, bytes) == 0) return 1;
    size_t i = 0;
    while (actual[i] == expected[i]) i++;
    snprintf(why, why_size, "byte %zu of %zu is 0x%02x, expected 0x%02x", i, bytes, actual[i], expected[i]);
    return 0;
}

#define EXPECT_SAME_BYTES(actual, expected, bytes)                                                    \
    do {                                                                                              \
        char why_[128] = "";                                                                          \
        record(same_bytes((actual), (expected), (bytes), why_, sizeof why_), __FILE__, __LINE__,      \
               "%s differs from %s: %s", #actual, #expected, why_);                                  \
    } while (0)

/* The host's online NUMA nodes, parsed from /sys/devices/system/node/online ("0", "0-3,5").
 * Without the file (no NUMA support), node 0 alone. */
static int online_nodes(int *nodes, int capacity) {
    FILE *file = fopen("/sys/devices/system/node/online", "r");
    if (file == NULL) {
        nodes[0] = 0;
        return 1;
    }
    char line[4096] = "";
    if (fgets(line, sizeof line, file) == NULL) line[0] = '\0';
    fclose(file);
    int count = 0;
    for (char *part = strtok(line, ",\n"); part != NULL; part = strtok(NULL, ",\n")) {
        int first = 0, last = 0;
        int fields = sscanf(part, "%d-%d", &first, &last);
        if (fields < 1) continue;
        if (fields == 1) last = first;
        for (int node = first; node <= last && count < capacity; node++) nodes[count++] = node;
    }
    EXPECT_MSG(count > 0, "no node in /sys/devices/system/node/online");
    return count;
}

/* The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled, or "" without the file. */
static void transparent_huge_pages(char *word, size_t size) {
    word[0] = '\0';
    FILE *file = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (file == NULL) return;
    char line[256] = "";
    if (fgets(line, sizeof line, file) != NULL) {
        char *open = strchr(line, '['), *close = strchr(line, ']');
        if (open != NULL && close != NULL && close > open) {
            snprintf(word, size, "%.*s", (int)(close - open - 1), open + 1);
        }
    }
    fclose(file);
}

/* ============================================================================================
 * Host buffers
 * ============================================================================================ */

static void test_host_buffer_defaults(void) {
    GROUP("host buffer: NULL options");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_info_t device = get_device_info(get_device(runtime, 0));
    size_t bytes = 1 * MiB + 3;
    vtrn_host_buffer_t buffer = SENTINEL_HOST_BUFFER;
    EXPECT_OK(vtrn_host_buffer_create(runtime, bytes, NULL, &buffer));
    vtrn_host_buffer_info_t info = get_buffer_info(buffer);
    EXPECT_EQ_U64(info.struct_size, sizeof info);
    EXPECT_EQ_U64(info.bytes, bytes);
    EXPECT_EQ_U64(info.placement, VTRN_NUMA_DEVICE_LOCAL);
    EXPECT_EQ_I64(info.requested_node, device.numa_node);
    EXPECT_EQ_U64(info.flags, 0);
    EXPECT_EQ_U64(info.huge_pages, 0);
    EXPECT_EQ_U64(info.locked, 0);
    EXPECT_EQ_U64(info.registered, 0);
    EXPECT_STREQ(info.note, "");
    EXPECT_MSG(info.data != NULL && (uintptr_t)info.data % page_size == 0, "data %p is not page aligned", info.data);
    /* Touched at creation: every page resident, on the device's node, and zeroed. */
    EXPECT_EQ_I64(buffer_node(buffer), device.numa_node);
    uint64_t pages[1024];
    uint32_t count = node_pages(buffer, pages);
    EXPECT_EQ_U64(sum(pages, count), pages_of(bytes));
    if (device.numa_node >= 0 && (uint32_t)device.numa_node < count) {
        EXPECT_EQ_U64(pages[device.numa_node], pages_of(bytes));
    }
    void *data = NULL;
    size_t mapped = 0;
    EXPECT_OK(vtrn_host_buffer_map(buffer, &data, &mapped));
    EXPECT(data == info.data);
    EXPECT_EQ_U64(mapped, bytes);
    EXPECT(data != NULL && bytes_are(data, bytes, 0));
    /* bytes is optional. */
    data = NULL;
    EXPECT_OK(vtrn_host_buffer_map(buffer, &data, NULL));
    EXPECT(data == info.data);
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));

    /* Options with every field at its default behave as NULL options. */
    vtrn_host_buffer_options_t options = VTRN_HOST_BUFFER_OPTIONS_INIT;
    EXPECT_OK(vtrn_host_buffer_create(runtime, 4096, &options, &buffer));
    EXPECT_EQ_I64(get_buffer_info(buffer).requested_node, device.numa_node);
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));

    /* A newer caller's bigger options struct: accepted, what lies past ours ignored. */
    struct {
        vtrn_host_buffer_options_t options;
        unsigned char newer_fields[40];
    } bigger;
    memset(&bigger, SENTINEL_BYTE, sizeof bigger);
    bigger.options = (vtrn_host_buffer_options_t)VTRN_HOST_BUFFER_OPTIONS_INIT;
    bigger.options.struct_size = sizeof bigger;
    bigger.options.placement = VTRN_NUMA_INTERLEAVE;
    EXPECT_OK(vtrn_host_buffer_create(runtime, 4096, &bigger.options, &buffer));
    EXPECT_EQ_U64(get_buffer_info(buffer).placement, VTRN_NUMA_INTERLEAVE);
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_host_buffer_placements(void) {
    GROUP("host buffer: placements");
    int nodes[1024];
    int node_count = online_nodes(nodes, 1024);
    const size_t bytes = 1 * MiB;
    uint64_t pages[1024];

    /* Device-local: each device's buffers are on that device's node (devices spread over the
     * nodes in blocks, so on a many-node host they differ). */
    vtrn_runtime_t runtime = create_runtime("trn1:4");
    for (uint32_t d = 0; d < 4; d++) {
        vtrn_device_info_t device = get_device_info(get_device(runtime, d));
        vtrn_host_buffer_options_t options = VTRN_HOST_BUFFER_OPTIONS_INIT;
        options.device = d;
        vtrn_host_buffer_t buffer = NULL;
        EXPECT_OK(vtrn_host_buffer_create(runtime, bytes, &options, &buffer));
        EXPECT_EQ_I64(buffer_node(buffer), device.numa_node);
        EXPECT_EQ_I64(get_buffer_info(buffer).requested_node, device.numa_node);
        EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    runtime = create_runtime("trn1");
    /* Node: every online node, by number. */
    for (int i = 0; i < node_count; i++) {
        vtrn_host_buffer_t buffer = create_buffer(runtime, bytes, VTRN_NUMA_NODE, nodes[i], 0);
        if (buffer == NULL) continue;
        EXPECT_EQ_I64(buffer_node(buffer), nodes[i]);
        vtrn_host_buffer_info_t info = get_buffer_info(buffer);
        EXPECT_EQ_U64(info.placement, VTRN_NUMA_NODE);
        EXPECT_EQ_I64(info.requested_node, nodes[i]);
        uint32_t count = node_pages(buffer, pages);
        EXPECT_MSG(count > (uint32_t)nodes[i], "node_pages count %u does not cover node %d", count, nodes[i]);
        if (count > (uint32_t)nodes[i]) EXPECT_EQ_U64(pages[nodes[i]], pages_of(bytes));
        EXPECT_EQ_U64(sum(pages, count), pages_of(bytes));
        EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    }

    /* Interleave: every page resident, spread over the online nodes. */
    size_t interleaved_bytes = 4 * MiB + 5;
    vtrn_host_buffer_t buffer = create_buffer(runtime, interleaved_bytes, VTRN_NUMA_INTERLEAVE, -1, 0);
    if (buffer != NULL) {
        uint32_t count = node_pages(buffer, pages);
        EXPECT_EQ_U64(sum(pages, count), pages_of(interleaved_bytes));
        vtrn_host_buffer_info_t info = get_buffer_info(buffer);
        EXPECT_EQ_U64(info.placement, VTRN_NUMA_INTERLEAVE);
        EXPECT_EQ_I64(info.requested_node, -1);
        if (node_count == 1) {
            EXPECT_EQ_I64(buffer_node(buffer), nodes[0]);
        } else {
            EXPECT_EQ_I64(buffer_node(buffer), -1);
            for (int i = 0; i < node_count; i++) {
                EXPECT_MSG((uint32_t)nodes[i] < count && pages[nodes[i]] > 0, "interleave put no page on node %d",
                           nodes[i]);
            }
        }
        EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    }

    /* Any: nothing resident until written; then where the writing thread ran. The write happens
     * pinned to one CPU so that every page has the same first-touch node. */
    buffer = create_buffer(runtime, bytes, VTRN_NUMA_ANY, -1, 0);
    if (buffer != NULL) {
        EXPECT_EQ_I64(buffer_node(buffer), -1);
        uint32_t count = node_pages(buffer, pages);
        EXPECT_EQ_U64(sum(pages, count), 0);
        vtrn_host_buffer_info_t info = get_buffer_info(buffer);
        EXPECT_EQ_U64(info.placement, VTRN_NUMA_ANY);
        EXPECT_EQ_I64(info.requested_node, -1);

        cpu_set_t previous, one;
        int pinned = sched_getaffinity(0, sizeof previous, &previous) == 0;
        int cpu = sched_getcpu();
        if (pinned && cpu >= 0) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pinned = sched_setaffinity(0, sizeof one, &one) == 0;
        }
        memset(map_buffer(buffer), 0x5a, bytes);
        if (pinned) (void)sched_setaffinity(0, sizeof previous, &previous);

        int32_t node = buffer_node(buffer);
        int online = 0;
        for (int i = 0; i < node_count; i++) online |= nodes[i] == node;
        EXPECT_MSG(online, "after writing, the buffer's node is %d, not an online node", (int)node);
        count = node_pages(buffer, pages);
        EXPECT_EQ_U64(sum(pages, count), pages_of(bytes));
        EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_host_buffer_errors(void) {
    GROUP("host buffer: errors");
    int nodes[1024];
    int node_count = online_nodes(nodes, 1024);
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_host_buffer_options_t options = VTRN_HOST_BUFFER_OPTIONS_INIT;
    vtrn_host_buffer_t out = SENTINEL_HOST_BUFFER;

    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 0, NULL, &out), VTRN_ERROR_INVALID_ARGUMENT, "bytes is 0");
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 0, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "bytes is 0");
    /* A size_t past INT64_MAX is named as it is (it read as "bytes is 0" once). */
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, SIZE_MAX, NULL, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "bytes is 18446744073709551615", "more than a process can map");
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, NULL, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out", "NULL");

    options.placement = (vtrn_numa_placement_t)7;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.placement is 7", "VTRN_NUMA_DEVICE_LOCAL", "VTRN_NUMA_ANY");
    options.placement = VTRN_NUMA_FORCE32;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.placement");

    options = (vtrn_host_buffer_options_t)VTRN_HOST_BUFFER_OPTIONS_INIT;
    options.flags = 1u << 5;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.flags", "0x20", "VTRN_HOST_BUFFER_HUGEPAGES", "VTRN_HOST_BUFFER_LOCKED");
    options.flags = VTRN_HOST_BUFFER_HUGEPAGES | 0x80000000u;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.flags", "0x80000000");

    /* A device the runtime does not have. */
    options = (vtrn_host_buffer_options_t)VTRN_HOST_BUFFER_OPTIONS_INIT;
    options.device = 1;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.device is 1", "1 device");
    options.device = UINT32_MAX;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.device is 4294967295");

    /* A node that does not exist: the message lists the online ones. */
    options = (vtrn_host_buffer_options_t)VTRN_HOST_BUFFER_OPTIONS_INIT;
    options.placement = VTRN_NUMA_NODE;
    options.numa_node = 999;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.numa_node is 999", "online");
    const char *message = vtrn_last_error();
    const char *list = strstr(message, "online");
    for (int i = 0; i < node_count; i++) {
        char number[16];
        snprintf(number, sizeof number, "%d", nodes[i]);
        EXPECT_MSG(list != NULL && strstr(list, number) != NULL, "message \"%s\" does not list online node %d",
                   message, nodes[i]);
    }
    /* VTRN_NUMA_NODE needs a node. */
    options.numa_node = -1;
    EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "options.numa_node is -1", "VTRN_NUMA_NODE", "online");
    /* ... but the other placements ignore numa_node. */
    options.placement = VTRN_NUMA_INTERLEAVE;
    options.numa_node = 999;
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_create(runtime, 4096, &options, &buffer));
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));

    /* struct_size smaller than the first version's. */
    const size_t small_sizes[] = { 0, 8, sizeof(vtrn_host_buffer_options_t) - 1 };
    for (size_t i = 0; i < sizeof small_sizes / sizeof small_sizes[0]; i++) {
        options = (vtrn_host_buffer_options_t)VTRN_HOST_BUFFER_OPTIONS_INIT;
        options.struct_size = small_sizes[i];
        EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                     "options.struct_size", "VTRN_HOST_BUFFER_OPTIONS_INIT");
    }

    /* Handles. */
    EXPECT_ERROR(vtrn_host_buffer_create(NULL, 4096, NULL, &out), VTRN_ERROR_INVALID_HANDLE, "NULL");
    EXPECT_ERROR(vtrn_host_buffer_create((vtrn_runtime_t)GARBAGE, 4096, NULL, &out), VTRN_ERROR_INVALID_HANDLE,
                 "0x1234", "not a vtrn handle");
    EXPECT_ERROR(vtrn_host_buffer_create((vtrn_runtime_t)(void *)get_device(runtime, 0), 4096, NULL, &out),
                 VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t, not a vtrn_runtime_t");
    EXPECT(out == SENTINEL_HOST_BUFFER);

    /* map, numa_node, node_pages, get_info: NULL outputs. */
    buffer = create_local_buffer(runtime, 4096);
    EXPECT_ERROR(vtrn_host_buffer_map(buffer, NULL, NULL), VTRN_ERROR_INVALID_ARGUMENT, "data", "NULL");
    EXPECT_ERROR(vtrn_host_buffer_numa_node(buffer, NULL), VTRN_ERROR_INVALID_ARGUMENT, "node", "NULL");
    EXPECT_ERROR(vtrn_host_buffer_node_pages(buffer, NULL, NULL), VTRN_ERROR_INVALID_ARGUMENT, "count", "NULL");
    EXPECT_ERROR(vtrn_host_buffer_get_info(buffer, NULL), VTRN_ERROR_INVALID_ARGUMENT, "info", "NULL");

    /* Destroyed: every call says so; a second destroy too. */
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    void *data = (void *)SENTINEL_HOST_BUFFER;
    int32_t node = -7;
    EXPECT_ERROR(vtrn_host_buffer_map(buffer, &data, NULL), VTRN_ERROR_INVALID_HANDLE, "vtrn_host_buffer_t",
                 "destroyed");
    EXPECT_ERROR(vtrn_host_buffer_numa_node(buffer, &node), VTRN_ERROR_INVALID_HANDLE, "destroyed");
    EXPECT_ERROR(vtrn_host_buffer_get_info(buffer, &(vtrn_host_buffer_info_t)VTRN_HOST_BUFFER_INFO_INIT),
                 VTRN_ERROR_INVALID_HANDLE, "destroyed");
    EXPECT_ERROR(vtrn_host_buffer_destroy(buffer), VTRN_ERROR_INVALID_HANDLE, "destroyed");
    EXPECT(data == (void *)SENTINEL_HOST_BUFFER);
    EXPECT_EQ_I64(node, -7);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_huge_pages(void) {
    GROUP("host buffer: huge pages");
    char setting[64];
    transparent_huge_pages(setting, sizeof setting);
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_host_buffer_t buffer = create_buffer(runtime, 4 * MiB + 1, VTRN_NUMA_DEVICE_LOCAL, -1,
                                              VTRN_HOST_BUFFER_HUGEPAGES);
    if (buffer != NULL) {
        vtrn_host_buffer_info_t info = get_buffer_info(buffer);
        EXPECT_EQ_U64(info.flags, VTRN_HOST_BUFFER_HUGEPAGES);
        EXPECT_EQ_U64(info.bytes, 4 * MiB + 1);
        if (setting[0] == '\0' || strcmp(setting, "never") == 0) {
            /* Not available: not an error, and the note says why. */
            EXPECT_EQ_U64(info.huge_pages, 0);
            EXPECT_CONTAINS(info.note, "transparent huge pages");
            EXPECT_CONTAINS(info.note, setting[0] == '\0' ? "missing" : "never");
        } else {
            EXPECT_MSG(info.huge_pages == 1, "huge_pages is %u with transparent_hugepage/enabled [%s]; note \"%s\"",
                       info.huge_pages, setting, info.note);
            EXPECT_STREQ(info.note, "");
        }
        /* Usable like any other buffer. */
        unsigned char *data = map_buffer(buffer);
        EXPECT(data != NULL && bytes_are(data, info.bytes, 0));
        EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    }
    /* Not asked for: not granted, no note. */
    buffer = create_local_buffer(runtime, 4 * MiB);
    vtrn_host_buffer_info_t info = get_buffer_info(buffer);
    EXPECT_EQ_U64(info.huge_pages, 0);
    EXPECT_STREQ(info.note, "");
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* The child's part of test_locked: under a 64 KiB RLIMIT_MEMLOCK and without CAP_IPC_LOCK, a
 * locked 1 MiB buffer must fail and a locked 16 KiB one succeed. Prints one line per attempt
 * for the parent to check. */
static int memlock_child(void) {
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) unsetenv(variables[i]);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1";
    vtrn_runtime_t runtime = NULL;
    if (vtrn_runtime_create(&options, &runtime) != VTRN_SUCCESS) {
        printf("runtime failed: %s\n", vtrn_last_error());
        return 1;
    }
    vtrn_host_buffer_options_t buffer_options = VTRN_HOST_BUFFER_OPTIONS_INIT;
    buffer_options.flags = VTRN_HOST_BUFFER_LOCKED;
    vtrn_host_buffer_t buffer = NULL;
    vtrn_status_t status = vtrn_host_buffer_create(runtime, 1 * MiB, &buffer_options, &buffer);
    printf("large status %d: %s\n", (int)status, status == VTRN_SUCCESS ? "" : vtrn_last_error());
    status = vtrn_host_buffer_create(runtime, 16 * 1024, &buffer_options, &buffer);
    vtrn_host_buffer_info_t info = VTRN_HOST_BUFFER_INFO_INIT;
    if (status == VTRN_SUCCESS) status = vtrn_host_buffer_get_info(buffer, &info);
    printf("small status %d locked %u: %s\n", (int)status, info.locked, status == VTRN_SUCCESS ? "" : vtrn_last_error());
    (void)vtrn_runtime_destroy(runtime);
    return 0;
}

/* The path of an executable named `name` on PATH, or 0. */
static int find_on_path(const char *name, char *path, size_t size) {
    const char *search = getenv("PATH");
    if (search == NULL) search = "/usr/bin:/bin:/usr/sbin:/sbin";
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", search);
    for (char *folder = strtok(copy, ":"); folder != NULL; folder = strtok(NULL, ":")) {
        snprintf(path, size, "%s/%s", folder, name);
        if (access(path, X_OK) == 0) return 1;
    }
    return 0;
}

static void test_locked(void) {
    GROUP("host buffer: locked");
    if (test_sanitizer() != NULL) {
        printf("note: host buffer: locked: skipped under %s sanitizer, whose mlock does nothing\n", test_sanitizer());
        return;
    }
    /* Within the limit (root has CAP_IPC_LOCK and no limit): pinned. */
    struct rlimit limit;
    int roomy = geteuid() == 0 ||
                (getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= 4 * MiB));
    vtrn_runtime_t runtime = create_runtime("trn1");
    if (roomy) {
        vtrn_host_buffer_t buffer = create_buffer(runtime, 1 * MiB, VTRN_NUMA_DEVICE_LOCAL, -1,
                                                  VTRN_HOST_BUFFER_LOCKED | VTRN_HOST_BUFFER_HUGEPAGES);
        vtrn_host_buffer_info_t info = get_buffer_info(buffer);
        EXPECT_EQ_U64(info.locked, 1);
        EXPECT_EQ_U64(info.flags, VTRN_HOST_BUFFER_LOCKED | VTRN_HOST_BUFFER_HUGEPAGES);
        EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    } else {
        printf("note: RLIMIT_MEMLOCK is under 4 MiB and this is not root: the in-limit locked buffer is not tried\n");
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* Over the limit, in a child that has a 64 KiB limit and (as root) no CAP_IPC_LOCK. */
    char self[PATH_MAX], setpriv[PATH_MAX];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) {
        printf("skip: the RLIMIT_MEMLOCK child: readlink(/proc/self/exe) failed: %s\n", strerror(errno));
        return;
    }
    self[length] = '\0';
    char command[2 * PATH_MAX + 256];
    if (geteuid() == 0) {
        if (!find_on_path("setpriv", setpriv, sizeof setpriv)) {
            printf("skip: the RLIMIT_MEMLOCK child: setpriv (util-linux) is not installed, and root's "
                   "CAP_IPC_LOCK would ignore the limit\n");
            return;
        }
        snprintf(command, sizeof command,
                 "ulimit -l 64 && exec '%s' --inh-caps=-ipc_lock --bounding-set=-ipc_lock '%s' --memlock-child 2>&1",
                 setpriv, self);
    } else {
        snprintf(command, sizeof command, "ulimit -l 64 && exec '%s' --memlock-child 2>&1", self);
    }
    fflush(stdout);
    FILE *child = popen(command, "r");
    EXPECT_MSG(child != NULL, "popen(%s) failed: %s", command, strerror(errno));
    if (child == NULL) return;
    char output[8192] = "";
    size_t used = 0;
    while (used < sizeof output - 1) {
        size_t got = fread(output + used, 1, sizeof output - 1 - used, child);
        if (got == 0) break;
        used += got;
    }
    output[used] = '\0';
    int status = pclose(child);
    EXPECT_MSG(status == 0, "the child (%s) exited with %d: %s", command, status, output);

    char expected[64];
    snprintf(expected, sizeof expected, "large status %d: ", (int)VTRN_ERROR_OUT_OF_HOST_MEMORY);
    const char *large = strstr(output, "large status");
    EXPECT_MSG(large != NULL && strncmp(large, expected, strlen(expected)) == 0,
               "a locked 1 MiB buffer under a 64 KiB RLIMIT_MEMLOCK did not fail with out of host memory: %s", output);
    EXPECT_CONTAINS(large, "RLIMIT_MEMLOCK");
    EXPECT_CONTAINS(large, "64 KiB");
    EXPECT_CONTAINS(large, "mlock");
    EXPECT_CONTAINS(output, "small status 0 locked 1");
}

static void test_register(void) {
    GROUP("host buffer: register");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    size_t bytes = 300001;
    unsigned char *memory = malloc(bytes + 64);
    EXPECT(memory != NULL);
    if (memory == NULL) return;
    unsigned char *start = memory + 3; /* not aligned to anything */
    memset(memory, 0, bytes + 64);
    vtrn_host_buffer_t out = SENTINEL_HOST_BUFFER;
    EXPECT_ERROR(vtrn_host_buffer_register(runtime, NULL, bytes, &out), VTRN_ERROR_INVALID_ARGUMENT, "pointer",
                 "NULL");
    EXPECT_ERROR(vtrn_host_buffer_register(runtime, start, 0, &out), VTRN_ERROR_INVALID_ARGUMENT, "bytes is 0");
    EXPECT_ERROR(vtrn_host_buffer_register(runtime, start, bytes, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out");
    EXPECT_ERROR(vtrn_host_buffer_register((vtrn_runtime_t)GARBAGE, start, bytes, &out), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    /* More than the host's memory, or than the process has mapped, is refused: a 2^44-byte
     * registration was accepted, and vtrn_host_buffer_numa_node then walked it page by page for
     * hours (found by the fuzzer). */
    EXPECT_ERROR(vtrn_host_buffer_register(runtime, start, (size_t)1 << 62, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "more than this host's", "of memory");
    EXPECT_ERROR(vtrn_host_buffer_register(runtime, (void *)(UINTPTR_MAX - 4095), 8192, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "wrap around");
    EXPECT_ERROR(vtrn_host_buffer_register(runtime, start, SIZE_MAX, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "18446744073709551615", "more than a process can map");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *gone = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (gone != MAP_FAILED) {
        munmap(gone + page, page); /* the buffer's second page is not mapped any more */
        EXPECT_ERROR(vtrn_host_buffer_register(runtime, gone, 2 * page, &out), VTRN_ERROR_INVALID_ARGUMENT,
                     "not all mapped memory");
        vtrn_host_buffer_t one_page = NULL;
        EXPECT_OK(vtrn_host_buffer_register(runtime, gone, page, &one_page));
        EXPECT_OK(vtrn_host_buffer_destroy(one_page));
        munmap(gone, page);
    }
    EXPECT(out == SENTINEL_HOST_BUFFER);

    vtrn_host_buffer_t registered = NULL;
    EXPECT_OK(vtrn_host_buffer_register(runtime, start, bytes, &registered));
    vtrn_host_buffer_info_t info = get_buffer_info(registered);
    EXPECT(info.data == start);
    EXPECT_EQ_U64(info.bytes, bytes);
    EXPECT_EQ_U64(info.registered, 1);
    EXPECT_EQ_U64(info.placement, VTRN_NUMA_ANY);
    EXPECT_EQ_I64(info.requested_node, -1);
    EXPECT_EQ_U64(info.locked, 0);
    void *data = NULL;
    size_t mapped = 0;
    EXPECT_OK(vtrn_host_buffer_map(registered, &data, &mapped));
    EXPECT(data == start);
    EXPECT_EQ_U64(mapped, bytes);

    /* DMA into the caller's memory: a pattern goes host buffer → HBM → registered memory. */
    vtrn_host_buffer_t source = create_local_buffer(runtime, bytes);
    unsigned char *source_data = map_buffer(source);
    fill_pattern(source_data, bytes, 11);
    vtrn_device_memory_t hbm = allocate(device, bytes, 0);
    vtrn_dma_queue_t queue = open_queue(device, 0, 0, 0, 4096);
    vtrn_dma_transfer_t transfers[2] = {
        transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(source, 0), bytes),
    };
    EXPECT_OK(run_transfers(queue, transfers, 1));
    transfers[0] = transfer_of(vtrn_host_ref(registered, 0), vtrn_device_ref(hbm, 0), bytes);
    EXPECT_OK(run_transfers(queue, transfers, 1));
    EXPECT_SAME_BYTES(start, source_data, bytes);
    EXPECT(bytes_are(memory, 3, 0) && bytes_are(start + bytes, 61, 0));
    /* And out of it, at odd offsets, host to host. */
    fill_pattern(start, bytes, 12);
    transfers[0] = transfer_of(vtrn_host_ref(source, 1), vtrn_host_ref(registered, 17), bytes - 17);
    EXPECT_OK(run_transfers(queue, transfers, 1));
    EXPECT_SAME_BYTES(source_data + 1, start + 17, bytes - 17);

    /* Destroying the buffer leaves the memory to its owner. */
    EXPECT_OK(vtrn_host_buffer_destroy(registered));
    memset(start, 0x77, bytes);
    EXPECT(bytes_are(start, bytes, 0x77));
    EXPECT_ERROR(vtrn_host_buffer_map(registered, &data, NULL), VTRN_ERROR_INVALID_HANDLE, "destroyed");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    free(memory);
}

static void test_node_pages(void) {
    GROUP("host buffer: node pages");
    int nodes[1024];
    int node_count = online_nodes(nodes, 1024);
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_host_buffer_t buffer = create_local_buffer(runtime, 64 * 1024);

    /* Two calls: the count, then the pages. */
    uint32_t count = 0;
    EXPECT_OK(vtrn_host_buffer_node_pages(buffer, NULL, &count));
    EXPECT_MSG(count > (uint32_t)nodes[node_count - 1], "node count %u does not cover online node %d", count,
               nodes[node_count - 1]);
    EXPECT(count >= 1 && count <= 1024);
    uint64_t pages[1024];
    uint32_t capacity = count;
    EXPECT_OK(vtrn_host_buffer_node_pages(buffer, pages, &capacity));
    EXPECT_EQ_U64(capacity, count);
    EXPECT_EQ_U64(sum(pages, count), pages_of(64 * 1024));
    /* A bigger array is fine: count says how much of it holds nodes. */
    capacity = 1024;
    EXPECT_OK(vtrn_host_buffer_node_pages(buffer, pages, &capacity));
    EXPECT_EQ_U64(capacity, count);

    /* Too small a capacity: rejected, count set, the array untouched. */
    memset(pages, SENTINEL_BYTE, sizeof pages);
    capacity = 0;
    EXPECT_ERROR(vtrn_host_buffer_node_pages(buffer, pages, &capacity), VTRN_ERROR_INVALID_ARGUMENT, "*count is 0");
    EXPECT_EQ_U64(capacity, count);
    if (count > 1) {
        capacity = count - 1;
        EXPECT_ERROR(vtrn_host_buffer_node_pages(buffer, pages, &capacity), VTRN_ERROR_INVALID_ARGUMENT, "count");
        EXPECT_EQ_U64(capacity, count);
    }
    EXPECT(bytes_are(pages, sizeof pages, SENTINEL_BYTE));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    /* The runtime took the buffer with it. */
    capacity = 1024;
    EXPECT_ERROR(vtrn_host_buffer_node_pages(buffer, pages, &capacity), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_host_buffer_t", "stale");
}

/* ============================================================================================
 * Struct sizes of the info structs
 * ============================================================================================ */

static vtrn_status_t call_host_buffer_info(void *context, void *info) {
    return vtrn_host_buffer_get_info((vtrn_host_buffer_t)context, (vtrn_host_buffer_info_t *)info);
}
static vtrn_status_t call_device_memory_info(void *context, void *info) {
    return vtrn_device_memory_get_info((vtrn_device_memory_t)context, (vtrn_device_memory_info_t *)info);
}
static vtrn_status_t call_memory_usage(void *context, void *info) {
    return vtrn_device_get_memory_usage((vtrn_device_t)context, (vtrn_memory_usage_t *)info);
}
static vtrn_status_t call_dma_queue_info(void *context, void *info) {
    return vtrn_dma_queue_get_info((vtrn_dma_queue_t)context, (vtrn_dma_queue_info_t *)info);
}

static void test_struct_sizes(void) {
    GROUP("struct sizes");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_host_buffer_t buffer = create_local_buffer(runtime, 4096);
    vtrn_device_memory_t memory = allocate(device, 4096, 0);
    vtrn_dma_queue_t queue = open_queue(device, 0, 0, 0, 64);

    const struct info_kind kinds[] = {
        { "vtrn_host_buffer_info_t", "VTRN_HOST_BUFFER_INFO_INIT", sizeof(vtrn_host_buffer_info_t),
          call_host_buffer_info },
        { "vtrn_device_memory_info_t", "VTRN_DEVICE_MEMORY_INFO_INIT", sizeof(vtrn_device_memory_info_t),
          call_device_memory_info },
        { "vtrn_memory_usage_t", "VTRN_MEMORY_USAGE_INIT", sizeof(vtrn_memory_usage_t), call_memory_usage },
        { "vtrn_dma_queue_info_t", "VTRN_DMA_QUEUE_INFO_INIT", sizeof(vtrn_dma_queue_info_t), call_dma_queue_info },
    };
    void *contexts[] = { (void *)buffer, (void *)memory, (void *)device, (void *)queue };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) check_info_struct_sizes(&kinds[i], contexts[i]);

    /* The options structs: too small is rejected and names the macro (the host buffer's is in
     * test_host_buffer_errors). */
    const size_t small_sizes[] = { 0, 8, sizeof(vtrn_dma_queue_options_t) - 1 };
    for (size_t i = 0; i < sizeof small_sizes / sizeof small_sizes[0]; i++) {
        vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
        options.struct_size = small_sizes[i];
        options.engine = 1;
        vtrn_dma_queue_t out = SENTINEL_QUEUE;
        EXPECT_ERROR(vtrn_dma_queue_create(device, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                     "options.struct_size", "VTRN_DMA_QUEUE_OPTIONS_INIT");
        EXPECT(out == SENTINEL_QUEUE);
    }
    /* A bigger one is accepted. */
    struct {
        vtrn_dma_queue_options_t options;
        unsigned char newer_fields[32];
    } bigger;
    memset(&bigger, SENTINEL_BYTE, sizeof bigger);
    bigger.options = (vtrn_dma_queue_options_t)VTRN_DMA_QUEUE_OPTIONS_INIT;
    bigger.options.struct_size = sizeof bigger;
    bigger.options.engine = 2;
    bigger.options.ring_entries = 100;
    vtrn_dma_queue_t bigger_queue = NULL;
    EXPECT_OK(vtrn_dma_queue_create(device, &bigger.options, &bigger_queue));
    vtrn_dma_queue_info_t info = get_queue_info(bigger_queue);
    EXPECT_EQ_U64(info.engine, 2);
    EXPECT_EQ_U64(info.ring_entries, 100);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Device memory
 * ============================================================================================ */

static void test_device_memory(void) {
    GROUP("device memory");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_memory_usage_t usage = get_usage(device);
    EXPECT_EQ_U64(usage.struct_size, sizeof usage);
    EXPECT_EQ_U64(usage.total_bytes, 32 * GiB);
    EXPECT_EQ_U64(usage.used_bytes, 0);
    EXPECT_EQ_U64(usage.free_bytes, 32 * GiB);
    EXPECT_EQ_U64(usage.largest_free_block, 32 * GiB);
    EXPECT_EQ_U64(usage.tensor_bytes, 0);
    EXPECT_EQ_U64(usage.kernel_bytes, 0);
    EXPECT_EQ_U64(usage.allocation_count, 0);
    EXPECT_EQ_U64(usage.resident_bytes, 0);
    EXPECT_EQ_U64(get_device_info(device).hbm_used_bytes, 0);

    /* Default alignment 64. */
    vtrn_device_memory_t a = allocate(device, 1 * MiB, 0);
    vtrn_device_memory_info_t info = get_memory_info(a);
    EXPECT_EQ_U64(info.struct_size, sizeof info);
    EXPECT_EQ_U64(info.device_index, 0);
    EXPECT_EQ_U64(info.bytes, 1 * MiB);
    EXPECT_EQ_U64(info.alignment, 64);
    EXPECT_EQ_U64(info.address % 64, 0);
    EXPECT(info.address + info.bytes <= 32 * GiB);

    /* Other alignments, up to 1 GiB; an odd size. */
    vtrn_device_memory_t b = allocate(device, 100, 4096);
    vtrn_device_memory_t c = allocate(device, 3, 1ull << 30);
    info = get_memory_info(b);
    EXPECT_EQ_U64(info.alignment, 4096);
    EXPECT_EQ_U64(info.address % 4096, 0);
    EXPECT_EQ_U64(info.bytes, 100);
    info = get_memory_info(c);
    EXPECT_EQ_U64(info.alignment, 1ull << 30);
    EXPECT_EQ_U64(info.address % (1ull << 30), 0);
    /* Blocks do not overlap. */
    vtrn_device_memory_info_t ia = get_memory_info(a), ib = get_memory_info(b), ic = get_memory_info(c);
    EXPECT(ia.address + ia.bytes <= ib.address || ib.address + ib.bytes <= ia.address);
    EXPECT(ia.address + ia.bytes <= ic.address || ic.address + ic.bytes <= ia.address);
    EXPECT(ib.address + ib.bytes <= ic.address || ic.address + ic.bytes <= ib.address);

    /* Usage: what was asked for (odd sizes may be rounded up a little), in tensors, in 3 blocks;
     * device info agrees; nothing resident yet. */
    usage = get_usage(device);
    EXPECT_MSG(usage.used_bytes >= 1 * MiB + 100 + 3 && usage.used_bytes <= 1 * MiB + 3 * 64 + 100 + 3,
               "used_bytes %" PRIu64 " after allocating 1 MiB + 100 + 3 bytes", usage.used_bytes);
    EXPECT_EQ_U64(usage.tensor_bytes, usage.used_bytes);
    EXPECT_EQ_U64(usage.kernel_bytes, 0);
    EXPECT_EQ_U64(usage.allocation_count, 3);
    EXPECT_EQ_U64(usage.free_bytes, 32 * GiB - usage.used_bytes);
    EXPECT_EQ_U64(get_device_info(device).hbm_used_bytes, usage.used_bytes);
    EXPECT_EQ_U64(usage.resident_bytes, 0);

    /* Another runtime of the same topology has the same device: it sees the same usage. */
    vtrn_runtime_t other = create_runtime("trn1");
    vtrn_memory_usage_t seen = get_usage(get_device(other, 0));
    EXPECT_EQ_U64(seen.used_bytes, usage.used_bytes);
    EXPECT_EQ_U64(seen.allocation_count, 3);
    EXPECT_OK(vtrn_runtime_destroy(other));

    /* Freeing returns exactly what the block took. */
    uint64_t before = usage.used_bytes;
    EXPECT_OK(vtrn_device_memory_free(a));
    usage = get_usage(device);
    EXPECT_EQ_U64(usage.used_bytes, before - 1 * MiB);
    EXPECT_EQ_U64(usage.allocation_count, 2);
    EXPECT_EQ_U64(get_device_info(device).hbm_used_bytes, before - 1 * MiB);
    EXPECT_OK(vtrn_device_memory_free(b));
    EXPECT_OK(vtrn_device_memory_free(c));
    usage = get_usage(device);
    EXPECT_EQ_U64(usage.used_bytes, 0);
    EXPECT_EQ_U64(usage.allocation_count, 0);
    EXPECT_EQ_U64(usage.largest_free_block, 32 * GiB);
    EXPECT_EQ_U64(get_device_info(device).hbm_used_bytes, 0);

    /* Errors. */
    vtrn_device_memory_t out = SENTINEL_MEMORY;
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 0, 0, &out), VTRN_ERROR_INVALID_ARGUMENT, "bytes is 0");
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 64, 3, &out), VTRN_ERROR_INVALID_ARGUMENT, "alignment 3",
                 "power of two");
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 64, 96, &out), VTRN_ERROR_INVALID_ARGUMENT, "alignment 96");
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 64, 1ull << 31, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "alignment 2147483648", "1 GiB");
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 64, UINT64_MAX, &out), VTRN_ERROR_INVALID_ARGUMENT, "alignment");
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 64, 0, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out", "NULL");
    EXPECT_ERROR(vtrn_device_memory_alloc((vtrn_device_t)GARBAGE, 64, 0, &out), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    EXPECT_ERROR(vtrn_device_memory_alloc((vtrn_device_t)(void *)runtime, 64, 0, &out), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_runtime_t, not a vtrn_device_t");
    EXPECT(out == SENTINEL_MEMORY);
    EXPECT_ERROR(vtrn_device_memory_get_info(a, &info), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_memory_t", "freed");
    EXPECT_ERROR(vtrn_device_memory_free(a), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_memory_t", "freed");
    EXPECT_ERROR(vtrn_device_memory_get_info(b, NULL), VTRN_ERROR_INVALID_HANDLE, "freed");
    vtrn_device_memory_t live = allocate(device, 64, 0);
    EXPECT_ERROR(vtrn_device_memory_get_info(live, NULL), VTRN_ERROR_INVALID_ARGUMENT, "info", "NULL");
    EXPECT_ERROR(vtrn_device_get_memory_usage(device, NULL), VTRN_ERROR_INVALID_ARGUMENT, "usage", "NULL");
    EXPECT_ERROR(vtrn_device_get_memory_usage((vtrn_device_t)GARBAGE, &usage), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    EXPECT_OK(vtrn_device_memory_free(live));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_resident_bytes(void) {
    GROUP("device memory: backed lazily");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    /* A large block costs no host memory until written. */
    vtrn_device_memory_t block = allocate(device, 64 * MiB, 0);
    EXPECT_EQ_U64(get_usage(device).resident_bytes, 0);
    /* Writing 1 MiB commits about that much (a huge page at most per touched region). */
    vtrn_host_buffer_t buffer = create_local_buffer(runtime, 1 * MiB);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(block, 0), vtrn_host_ref(buffer, 0), 1 * MiB));
    uint64_t resident = get_usage(device).resident_bytes;
    EXPECT_MSG(resident >= 1 * MiB && resident <= 4 * MiB, "resident_bytes is %" PRIu64 " after writing 1 MiB",
               resident);
    /* Freed blocks count no more. */
    EXPECT_OK(vtrn_device_memory_free(block));
    EXPECT_EQ_U64(get_usage(device).resident_bytes, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_out_of_device_memory(void) {
    GROUP("device memory: out of memory, coalescing");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_device_memory_t out = SENTINEL_MEMORY;

    /* More than the device has. */
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 33 * GiB, 0, &out), VTRN_ERROR_OUT_OF_DEVICE_MEMORY, "device 0",
                 "35433480192", "largest free block 32 GiB", "tensors");

    /* All of it in four blocks, then nothing more. */
    vtrn_device_memory_t blocks[4];
    for (int i = 0; i < 4; i++) blocks[i] = allocate(device, 8 * GiB, 0);
    vtrn_memory_usage_t usage = get_usage(device);
    EXPECT_EQ_U64(usage.used_bytes, 32 * GiB);
    EXPECT_EQ_U64(usage.free_bytes, 0);
    EXPECT_EQ_U64(usage.largest_free_block, 0);
    EXPECT_EQ_U64(usage.allocation_count, 4);
    EXPECT_EQ_U64(usage.resident_bytes, 0);
    EXPECT_EQ_U64(get_device_info(device).hbm_used_bytes, 32 * GiB);
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 1, 0, &out), VTRN_ERROR_OUT_OF_DEVICE_MEMORY, "cannot allocate 1 byte",
                 "largest free block 0", "tensors 32 GiB");

    /* Two holes of 8 GiB: 16 GiB free, but no 9 GiB block. The report says so. */
    EXPECT_OK(vtrn_device_memory_free(blocks[0]));
    EXPECT_OK(vtrn_device_memory_free(blocks[2]));
    usage = get_usage(device);
    EXPECT_EQ_U64(usage.free_bytes, 16 * GiB);
    EXPECT_EQ_U64(usage.largest_free_block, 8 * GiB);
    EXPECT_ERROR(vtrn_device_memory_alloc(device, 9 * GiB, 0, &out), VTRN_ERROR_OUT_OF_DEVICE_MEMORY,
                 "9663676416",             /* requested */
                 "16 GiB (17179869184 bytes) of 32 GiB", /* free of total */
                 "largest free block 8 GiB",             /* why it failed */
                 "tensors 16 GiB", "2 blocks");          /* use by category */
    EXPECT(out == SENTINEL_MEMORY);
    /* An 8 GiB block fits a hole exactly. */
    blocks[0] = allocate(device, 8 * GiB, 0);
    EXPECT_EQ_U64(get_usage(device).largest_free_block, 8 * GiB);
    EXPECT_OK(vtrn_device_memory_free(blocks[0]));

    /* Freed neighbours coalesce: after freeing all, one block of the whole HBM fits. */
    EXPECT_OK(vtrn_device_memory_free(blocks[1]));
    EXPECT_OK(vtrn_device_memory_free(blocks[3]));
    usage = get_usage(device);
    EXPECT_EQ_U64(usage.used_bytes, 0);
    EXPECT_EQ_U64(usage.largest_free_block, 32 * GiB);
    vtrn_device_memory_t whole = allocate(device, 32 * GiB, 0);
    EXPECT_EQ_U64(get_memory_info(whole).address, 0);
    EXPECT_OK(vtrn_device_memory_free(whole));

    /* The runtime's destruction frees what it still holds. */
    for (int i = 0; i < 4; i++) blocks[i] = allocate(device, 8 * GiB, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    runtime = create_runtime("trn1");
    usage = get_usage(get_device(runtime, 0));
    EXPECT_EQ_U64(usage.used_bytes, 0);
    EXPECT_EQ_U64(usage.allocation_count, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * DMA queues: creation
 * ============================================================================================ */

static void test_queue_create(void) {
    GROUP("DMA queue: create");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    vtrn_device_t trn1 = get_device(runtime, 0), trn2 = get_device(runtime, 1);

    /* NULL options: core 0, engine 0, queue 0, 4096 entries. */
    vtrn_dma_queue_t queue = SENTINEL_QUEUE;
    EXPECT_OK(vtrn_dma_queue_create(trn1, NULL, &queue));
    vtrn_dma_queue_info_t info = get_queue_info(queue);
    EXPECT_EQ_U64(info.struct_size, sizeof info);
    EXPECT_EQ_U64(info.device_index, 0);
    EXPECT_EQ_U64(info.core, 0);
    EXPECT_EQ_U64(info.engine, 0);
    EXPECT_EQ_U64(info.queue, 0);
    EXPECT_EQ_U64(info.ring_entries, 4096);
    EXPECT_EQ_U64(info.free_entries, 4096);
    EXPECT_EQ_U64(info.submitted_sequence, 0);
    EXPECT_EQ_U64(info.completed_sequence, 0);
    EXPECT_EQ_U64(info.descriptors_completed, 0);
    EXPECT_EQ_U64(info.bytes_completed, 0);
    uint64_t completed = 99;
    EXPECT_OK(vtrn_dma_queue_completed(queue, &completed));
    EXPECT_EQ_U64(completed, 0);

    /* The last of everything; the smallest ring. */
    vtrn_dma_queue_t last = open_queue(trn2, 7, 15, 15, VTRN_DMA_MIN_RING_ENTRIES);
    info = get_queue_info(last);
    EXPECT_EQ_U64(info.device_index, 1);
    EXPECT_EQ_U64(info.core, 7);
    EXPECT_EQ_U64(info.engine, 15);
    EXPECT_EQ_U64(info.queue, 15);
    EXPECT_EQ_U64(info.ring_entries, 32);
    EXPECT_EQ_U64(info.free_entries, 32);

    /* Out of range. */
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    vtrn_dma_queue_t out = SENTINEL_QUEUE;
    options.core = 2;
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "device 0 has 2 cores",
                 "core 2");
    options.core = 8;
    EXPECT_ERROR(vtrn_dma_queue_create(trn2, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "device 1 has 8 cores",
                 "core 8");
    options = (vtrn_dma_queue_options_t)VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.engine = 16;
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "16 DMA engines",
                 "engine 16");
    options = (vtrn_dma_queue_options_t)VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.queue = 16;
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "16 queues", "queue 16");
    options.queue = UINT32_MAX;
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "queue 4294967295");
    options = (vtrn_dma_queue_options_t)VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.ring_entries = 31;
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "ring_entries is 31",
                 "32", "16777200");
    options.ring_entries = 1u << 24;
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, &options, &out), VTRN_ERROR_INVALID_ARGUMENT,
                 "ring_entries is 16777216", "16777200");
    options.ring_entries = 0;
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "ring_entries is 0");
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, NULL, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out", "NULL");
    EXPECT_ERROR(vtrn_dma_queue_create((vtrn_device_t)GARBAGE, NULL, &out), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    EXPECT_ERROR(vtrn_dma_queue_create(NULL, NULL, &out), VTRN_ERROR_INVALID_HANDLE, "NULL");
    EXPECT(out == SENTINEL_QUEUE);

    /* Open already: busy, in this runtime too. Once destroyed, it opens again. */
    EXPECT_ERROR(vtrn_dma_queue_create(trn1, NULL, &out), VTRN_ERROR_BUSY, "queue 0 of DMA engine 0 of core 0",
                 "open already");
    EXPECT(out == SENTINEL_QUEUE);
    EXPECT_OK(vtrn_dma_queue_destroy(queue));
    EXPECT_ERROR(vtrn_dma_queue_get_info(queue, &info), VTRN_ERROR_INVALID_HANDLE, "vtrn_dma_queue_t", "destroyed");
    EXPECT_ERROR(vtrn_dma_queue_destroy(queue), VTRN_ERROR_INVALID_HANDLE, "destroyed");
    queue = open_queue(trn1, 0, 0, 0, 4096);
    /* Other queues of the same engine and other engines are separate. */
    vtrn_dma_queue_t sibling = open_queue(trn1, 0, 0, 1, 64);
    vtrn_dma_queue_t neighbour = open_queue(trn1, 0, 1, 0, 64);
    EXPECT(sibling != NULL && neighbour != NULL && sibling != queue && neighbour != sibling);

    /* NULL outputs of the other calls. */
    EXPECT_ERROR(vtrn_dma_queue_get_info(queue, NULL), VTRN_ERROR_INVALID_ARGUMENT, "info", "NULL");
    EXPECT_ERROR(vtrn_dma_queue_completed(queue, NULL), VTRN_ERROR_INVALID_ARGUMENT, "sequence", "NULL");
    EXPECT_OK(vtrn_dma_queue_submit(queue, NULL)); /* the sequence is optional */
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* A core VTRN_VISIBLE_CORES hides (here through the options). */
    runtime = create_runtime_with("trn1", "1");
    vtrn_device_t device = get_device(runtime, 0);
    options = (vtrn_dma_queue_options_t)VTRN_DMA_QUEUE_OPTIONS_INIT;
    EXPECT_ERROR(vtrn_dma_queue_create(device, &options, &out), VTRN_ERROR_INVALID_ARGUMENT, "core 0",
                 "not visible", "VTRN_VISIBLE_CORES");
    options.core = 1;
    EXPECT_OK(vtrn_dma_queue_create(device, &options, &queue));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_core_claims(void) {
    GROUP("DMA queue: cores are claimed by runtimes");
    vtrn_runtime_t first = create_runtime("trn1");
    vtrn_runtime_t second = create_runtime("trn1");
    vtrn_device_t first_device = get_device(first, 0), second_device = get_device(second, 0);
    vtrn_dma_queue_t queue = open_queue(first_device, 0, 3, 0, 64);

    /* Another runtime with the same device: core 0 is the first runtime's, any queue of it. */
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.engine = 5;
    vtrn_dma_queue_t out = SENTINEL_QUEUE;
    EXPECT_ERROR(vtrn_dma_queue_create(second_device, &options, &out), VTRN_ERROR_BUSY, "core 0 of device 0",
                 "claimed by runtime", "until it is destroyed");
    EXPECT(out == SENTINEL_QUEUE);
    /* Core 1 is free: the second runtime takes it, and then the first cannot. */
    vtrn_dma_queue_t second_queue = open_queue(second_device, 1, 0, 0, 64);
    options.core = 1;
    EXPECT_ERROR(vtrn_dma_queue_create(first_device, &options, &out), VTRN_ERROR_BUSY, "core 1 of device 0",
                 "claimed by runtime");

    /* Closing the queue keeps the claim: it lasts until the runtime is destroyed. */
    EXPECT_OK(vtrn_dma_queue_destroy(queue));
    options.core = 0;
    EXPECT_ERROR(vtrn_dma_queue_create(second_device, &options, &out), VTRN_ERROR_BUSY, "claimed by runtime");
    EXPECT_OK(vtrn_runtime_destroy(first));
    vtrn_dma_queue_t taken = open_queue(second_device, 0, 5, 0, 64);
    EXPECT(taken != NULL && second_queue != NULL);

    /* vtrn_memcpy uses the device's host DMA engines and claims no core: it works for a runtime
     * whose cores are all someone else's. */
    vtrn_runtime_t third = create_runtime("trn1");
    vtrn_device_t third_device = get_device(third, 0);
    vtrn_host_buffer_t a = create_local_buffer(third, 4096), b = create_local_buffer(third, 4096);
    memset(map_buffer(a), 0x3c, 4096);
    EXPECT_OK(vtrn_memcpy(third_device, vtrn_host_ref(b, 0), vtrn_host_ref(a, 0), 4096));
    EXPECT(bytes_are(map_buffer(b), 4096, 0x3c));
    EXPECT_ERROR(vtrn_dma_queue_create(third_device, NULL, &out), VTRN_ERROR_BUSY, "claimed by runtime");
    EXPECT_OK(vtrn_runtime_destroy(third));
    EXPECT_OK(vtrn_runtime_destroy(second));
}

/* ============================================================================================
 * DMA queues: enqueue errors
 * ============================================================================================ */

static void test_enqueue_errors(void) {
    GROUP("DMA queue: enqueue errors");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_host_buffer_t host = create_local_buffer(runtime, 1 * MiB);
    vtrn_device_memory_t hbm = allocate(device, 1 * MiB, 0);
    vtrn_device_memory_t freed = allocate(device, 4096, 0);
    EXPECT_OK(vtrn_device_memory_free(freed));
    vtrn_dma_queue_t queue = open_queue(device, 0, 0, 0, 64);
    const uint32_t ring = 64;

    /* count 0 is a no-op, even with NULL transfers; NULL with a count is an error. */
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, NULL, 0));
    vtrn_dma_transfer_t transfers[8];
    for (int i = 0; i < 8; i++) {
        transfers[i] = transfer_of(vtrn_device_ref(hbm, (uint64_t)i * 4096), vtrn_host_ref(host, (uint64_t)i * 4096),
                                   4096);
    }
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, transfers, 0));
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, NULL, 3), VTRN_ERROR_INVALID_ARGUMENT, "transfers is NULL",
                 "count is 3");

    /* Bad memory handles, in the middle of a batch: the message names the transfer and the end. */
    transfers[2].src.memory = GARBAGE;
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 4), VTRN_ERROR_INVALID_HANDLE, "transfer 2: src.memory: ",
                 "0x1234", "not a vtrn handle");
    transfers[2].src = vtrn_host_ref(host, 2 * 4096);
    transfers[3].dst.memory = NULL;
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 4), VTRN_ERROR_INVALID_HANDLE, "transfer 3: dst.memory: ",
                 "NULL");
    transfers[3].dst = vtrn_device_ref(freed, 0);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 4), VTRN_ERROR_INVALID_HANDLE, "transfer 3: dst.memory: ",
                 "vtrn_device_memory_t", "stale", "freed");
    transfers[3].dst.memory = (void *)queue;
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 4), VTRN_ERROR_INVALID_HANDLE, "transfer 3: dst.memory: ",
                 "is a vtrn_dma_queue_t, not a vtrn_host_buffer_t or vtrn_device_memory_t");
    transfers[3].dst.memory = (void *)device;
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 4), VTRN_ERROR_INVALID_HANDLE, "transfer 3: dst.memory: ",
                 "is a vtrn_device_t");
    transfers[3].dst = vtrn_device_ref(hbm, 3 * 4096);
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring);

    /* Out of bounds in the middle of a batch: nothing of it is enqueued. */
    transfers[3].src.offset = 1 * MiB - 4095; /* one byte past the end */
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 6), VTRN_ERROR_OUT_OF_BOUNDS, "transfer 3", "src",
                 "runs past the end");
    transfers[3].src.offset = 1 * MiB - 4096; /* exactly to the end: fine */
    transfers[4].dst.offset = UINT64_MAX;     /* no overflow in the check */
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 6), VTRN_ERROR_OUT_OF_BOUNDS, "transfer 4", "dst",
                 "runs past the end");
    transfers[4].dst.offset = 4 * 4096;
    transfers[5].bytes = UINT64_MAX;
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 6), VTRN_ERROR_OUT_OF_BOUNDS, "transfer 5",
                 "runs past the end");
    transfers[5].bytes = 4096;
    transfers[1].dst.offset = 1 * MiB + 1; /* an offset alone past the end */
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 6), VTRN_ERROR_OUT_OF_BOUNDS, "transfer 1", "dst");
    transfers[1].dst.offset = 4096;
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring);

    /* 0 bytes. */
    transfers[2].bytes = 0;
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 4), VTRN_ERROR_INVALID_ARGUMENT, "transfer 2: bytes is 0");
    transfers[2].bytes = 4096;

    /* Overlapping ranges of the same memory; touching ranges are fine. */
    vtrn_dma_transfer_t overlap = transfer_of(vtrn_device_ref(hbm, 100), vtrn_device_ref(hbm, 0), 200);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &overlap, 1), VTRN_ERROR_INVALID_ARGUMENT, "transfer 0", "overlap");
    overlap = transfer_of(vtrn_host_ref(host, 0), vtrn_host_ref(host, 199), 200);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &overlap, 1), VTRN_ERROR_INVALID_ARGUMENT, "overlap");
    overlap = transfer_of(vtrn_host_ref(host, 5), vtrn_host_ref(host, 5), 1);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &overlap, 1), VTRN_ERROR_INVALID_ARGUMENT, "overlap");
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring);
    vtrn_dma_transfer_t touching = transfer_of(vtrn_host_ref(host, 200), vtrn_host_ref(host, 0), 200);
    EXPECT_OK(run_transfers(queue, &touching, 1));

    /* A ring of 64: a batch that needs 65 descriptors is refused whole. */
    uint64_t before = get_queue_info(queue).submitted_sequence;
    vtrn_dma_transfer_t big = transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(host, 0), 1 * MiB); /* 16 */
    vtrn_dma_transfer_t batch[5] = { big, big, big, big, transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(host, 0), 1) };
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, batch, 5), VTRN_ERROR_QUEUE_FULL, "needs 65 descriptors",
                 "64 free of 64");
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring);
    /* Exactly full is fine; then one more descriptor is refused until the ring drains. */
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, batch, 4));
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, 0);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &batch[4], 1), VTRN_ERROR_QUEUE_FULL, "needs 1 descriptor",
                 "0 free of 64");
    uint64_t sequence = 0;
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_EQ_U64(sequence, before + 1);
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring);
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &batch[4], 1));
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring - 1);
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));

    /* A failed enqueue after a good one leaves the good one enqueued. */
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, transfers, 1));
    vtrn_dma_transfer_t bad = transfer_of(vtrn_device_ref(hbm, 1 * MiB), vtrn_host_ref(host, 0), 1);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &bad, 1), VTRN_ERROR_OUT_OF_BOUNDS, "transfer 0");
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, ring - 1);
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));

    /* The queue handle itself. */
    EXPECT_ERROR(vtrn_dma_queue_enqueue((vtrn_dma_queue_t)GARBAGE, transfers, 1), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    EXPECT_ERROR(vtrn_dma_queue_enqueue((vtrn_dma_queue_t)(void *)hbm, transfers, 1), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_memory_t, not a vtrn_dma_queue_t");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* Memory of another device, and host buffers of another runtime. */
static void test_enqueue_foreign_memory(void) {
    GROUP("DMA queue: memory of another device or runtime");
    vtrn_runtime_t runtime = create_runtime("trn1:2");
    vtrn_device_t device0 = get_device(runtime, 0), device1 = get_device(runtime, 1);
    vtrn_host_buffer_t host = create_local_buffer(runtime, 4096);
    vtrn_device_memory_t mine = allocate(device0, 4096, 0);
    vtrn_device_memory_t theirs = allocate(device1, 4096, 0);
    vtrn_dma_queue_t queue = open_queue(device0, 0, 0, 0, 64);
    vtrn_dma_transfer_t transfers[2] = {
        transfer_of(vtrn_device_ref(mine, 0), vtrn_host_ref(host, 0), 4096),
        transfer_of(vtrn_device_ref(theirs, 0), vtrn_host_ref(host, 0), 4096),
    };
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 2), VTRN_ERROR_INVALID_ARGUMENT, "transfer 1", "dst",
                 "memory of device 1", "device 0");
    transfers[1] = transfer_of(vtrn_host_ref(host, 0), vtrn_device_ref(theirs, 0), 4096);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 2), VTRN_ERROR_INVALID_ARGUMENT, "transfer 1", "src",
                 "memory of device 1");
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, 64);
    /* vtrn_memcpy checks the same. */
    EXPECT_ERROR(vtrn_memcpy(device0, vtrn_device_ref(theirs, 0), vtrn_host_ref(host, 0), 64),
                 VTRN_ERROR_INVALID_ARGUMENT, "memory of device 1");
    /* Host buffers may go to any device of their runtime. */
    EXPECT_OK(vtrn_memcpy(device1, vtrn_device_ref(theirs, 0), vtrn_host_ref(host, 0), 4096));

    /* Host buffers and device memory of another runtime are refused, even on the same device
     * (as another process's memory is not mapped for this one's DMA). */
    vtrn_runtime_t other = create_runtime("trn1:2");
    vtrn_host_buffer_t foreign = create_local_buffer(other, 4096);
    vtrn_device_memory_t foreign_memory = allocate(get_device(other, 0), 4096, 0);
    transfers[1] = transfer_of(vtrn_device_ref(mine, 0), vtrn_host_ref(foreign, 0), 4096);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 2), VTRN_ERROR_INVALID_ARGUMENT, "transfer 1", "src",
                 "host buffer of runtime");
    transfers[1] = transfer_of(vtrn_device_ref(foreign_memory, 0), vtrn_host_ref(host, 0), 4096);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, transfers, 2), VTRN_ERROR_INVALID_ARGUMENT, "transfer 1", "dst",
                 "device memory of runtime");
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, 64);
    EXPECT_ERROR(vtrn_memcpy(device0, vtrn_host_ref(host, 0), vtrn_host_ref(foreign, 0), 64),
                 VTRN_ERROR_INVALID_ARGUMENT, "src", "host buffer of runtime");
    EXPECT_ERROR(vtrn_memcpy(device0, vtrn_device_ref(foreign_memory, 0), vtrn_host_ref(host, 0), 64),
                 VTRN_ERROR_INVALID_ARGUMENT, "dst", "device memory of runtime");
    EXPECT_OK(vtrn_runtime_destroy(other));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * DMA queues: submit, wait, completion
 * ============================================================================================ */

static void test_submit_and_wait(void) {
    GROUP("DMA queue: submit and wait");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    const size_t bytes = 32 * MiB;
    vtrn_host_buffer_t host = create_local_buffer(runtime, bytes);
    vtrn_host_buffer_t back = create_local_buffer(runtime, bytes);
    vtrn_device_memory_t hbm = allocate(device, bytes, 0);
    vtrn_dma_queue_t queue = open_queue(device, 0, 0, 0, 4096);
    fill_pattern(map_buffer(host), bytes, 21);

    /* Nothing submitted yet: submit returns 0, and sequence 0 counts as complete. */
    uint64_t sequence = 99;
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_EQ_U64(sequence, 0);
    EXPECT_OK(vtrn_dma_queue_wait(queue, 0, 0));
    /* A sequence never submitted. */
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, 1, 0), VTRN_ERROR_INVALID_ARGUMENT, "sequence 1", "never submitted");
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, UINT64_MAX, UINT64_MAX), VTRN_ERROR_INVALID_ARGUMENT, "never submitted");

    /* One big transfer: polling says not ready (or, on a fast host, done); waiting finishes it. */
    vtrn_dma_transfer_t transfer = transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(host, 0), bytes);
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
    EXPECT_EQ_U64(get_queue_info(queue).free_entries, 4096 - bytes / 65536);
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_EQ_U64(sequence, 1);
    vtrn_status_t polled = vtrn_dma_queue_wait(queue, 1, 0);
    EXPECT_MSG(polled == VTRN_NOT_READY || polled == VTRN_SUCCESS, "polling returned %s: %s",
               vtrn_status_string(polled), vtrn_last_error());
    if (polled == VTRN_NOT_READY) EXPECT_CONTAINS(vtrn_last_error(), "sequence 1 has not completed");
    /* A short timeout: timed out (or done). */
    vtrn_status_t timed = vtrn_dma_queue_wait(queue, 1, 1000);
    EXPECT_MSG(timed == VTRN_ERROR_TIMEOUT || timed == VTRN_SUCCESS, "a 1 us wait returned %s: %s",
               vtrn_status_string(timed), vtrn_last_error());
    if (timed == VTRN_ERROR_TIMEOUT) EXPECT_CONTAINS(vtrn_last_error(), "did not complete within 1000 ns");
    /* The submitted sequence is reported while it runs. */
    EXPECT_EQ_U64(get_queue_info(queue).submitted_sequence, 1);
    EXPECT_OK(vtrn_dma_queue_wait(queue, 1, UINT64_MAX));
    EXPECT_OK(vtrn_dma_queue_wait(queue, 1, 0)); /* done stays done */
    uint64_t completed = 0;
    EXPECT_OK(vtrn_dma_queue_completed(queue, &completed));
    EXPECT_EQ_U64(completed, 1);
    vtrn_dma_queue_info_t info = get_queue_info(queue);
    EXPECT_EQ_U64(info.completed_sequence, 1);
    EXPECT_EQ_U64(info.descriptors_completed, bytes / 65536);
    EXPECT_EQ_U64(info.bytes_completed, bytes);
    EXPECT_EQ_U64(info.free_entries, 4096);

    /* Submitting with nothing new returns the same sequence. */
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_EQ_U64(sequence, 1);
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, NULL, 0));
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_EQ_U64(sequence, 1);

    /* Several submits in flight: each sequence one more; waiting on the last covers the rest. */
    uint64_t sequences[4];
    for (int i = 0; i < 4; i++) {
        transfer = transfer_of(vtrn_host_ref(back, (uint64_t)i * (bytes / 4)), vtrn_device_ref(hbm, (uint64_t)i * (bytes / 4)),
                               bytes / 4);
        EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
        EXPECT_OK(vtrn_dma_queue_submit(queue, &sequences[i]));
        EXPECT_EQ_U64(sequences[i], 2 + (uint64_t)i);
    }
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequences[3], UINT64_MAX));
    for (int i = 0; i < 4; i++) EXPECT_OK(vtrn_dma_queue_wait(queue, sequences[i], 0));
    EXPECT_OK(vtrn_dma_queue_completed(queue, &completed));
    EXPECT_EQ_U64(completed, 5);
    EXPECT_SAME_BYTES(map_buffer(back), map_buffer(host), bytes);
    info = get_queue_info(queue);
    EXPECT_EQ_U64(info.submitted_sequence, 5);
    EXPECT_EQ_U64(info.bytes_completed, 2 * (uint64_t)bytes);
    EXPECT_EQ_U64(info.descriptors_completed, 2 * (uint64_t)bytes / 65536);

    /* Descriptors: a transfer of N bytes takes ceil(N / 64 KiB) of them. */
    static const uint64_t sizes[] = { 1, 65535, 65536, 65537, 131072, 300000 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t descriptors = (sizes[i] + VTRN_DMA_MAX_DESCRIPTOR_BYTES - 1) / VTRN_DMA_MAX_DESCRIPTOR_BYTES;
        uint64_t previous = get_queue_info(queue).descriptors_completed;
        transfer = transfer_of(vtrn_device_ref(hbm, 3), vtrn_host_ref(host, 5), sizes[i]);
        EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
        EXPECT_EQ_U64(get_queue_info(queue).free_entries, 4096 - descriptors);
        EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
        EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));
        EXPECT_EQ_U64(get_queue_info(queue).descriptors_completed - previous, descriptors);
    }

    /* Bad handles. */
    EXPECT_ERROR(vtrn_dma_queue_submit((vtrn_dma_queue_t)GARBAGE, &sequence), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    EXPECT_ERROR(vtrn_dma_queue_wait((vtrn_dma_queue_t)GARBAGE, 1, 0), VTRN_ERROR_INVALID_HANDLE, "not a vtrn handle");
    EXPECT_ERROR(vtrn_dma_queue_completed((vtrn_dma_queue_t)(void *)host, &completed), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_host_buffer_t, not a vtrn_dma_queue_t");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * DMA queues: data integrity
 * ============================================================================================ */

/* Four regions of 8 MiB, two host buffers and two HBM blocks, each with a shadow copy that the
 * test updates as the DMA should. Rounds alternate: the first pair is read and the second
 * written, then the other way round. Within a round the writes never overlap each other or a
 * read, so the expected result does not depend on the order the engine copies in. */
enum { region_bytes = 8 << 20, region_count = 4 };

struct region {
    const char *name;
    vtrn_host_buffer_t host;
    vtrn_device_memory_t device;
    unsigned char *shadow;
    uint64_t cursor; /* where the next write of this round may start */
};

static vtrn_memory_ref_t region_ref(const struct region *region, uint64_t offset) {
    return region->host != NULL ? vtrn_host_ref(region->host, offset) : vtrn_device_ref(region->device, offset);
}

/* Reads a region's current contents into `out` (via vtrn_memcpy for HBM). */
static void read_region(vtrn_device_t device, const struct region *region, vtrn_host_buffer_t scratch,
                        unsigned char *out) {
    if (region->host != NULL) {
        memcpy(out, map_buffer(region->host), region_bytes);
    } else {
        EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(scratch, 0), vtrn_device_ref(region->device, 0), region_bytes));
        memcpy(out, map_buffer(scratch), region_bytes);
    }
}

static void test_data_integrity(void) {
    GROUP("DMA queue: data integrity, seeded random transfers");
    const uint64_t seed = 0x5eed0001;
    uint64_t random = seed;
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_host_buffer_t scratch = create_local_buffer(runtime, region_bytes);
    struct region regions[region_count] = {
        { "host 0", NULL, NULL, NULL, 0 }, { "HBM 0", NULL, NULL, NULL, 0 },
        { "host 1", NULL, NULL, NULL, 0 }, { "HBM 1", NULL, NULL, NULL, 0 },
    };
    int ready = scratch != NULL;
    for (int r = 0; r < region_count; r++) {
        regions[r].shadow = malloc(region_bytes);
        ready &= regions[r].shadow != NULL;
        if (regions[r].shadow != NULL) fill_pattern(regions[r].shadow, region_bytes, seed + (uint64_t)r);
        if (r % 2 == 0) {
            regions[r].host = create_buffer(runtime, region_bytes, VTRN_NUMA_DEVICE_LOCAL, -1,
                                            r == 0 ? VTRN_HOST_BUFFER_HUGEPAGES : 0);
            ready &= regions[r].host != NULL;
            if (regions[r].host != NULL && regions[r].shadow != NULL) {
                memcpy(map_buffer(regions[r].host), regions[r].shadow, region_bytes);
            }
        } else {
            regions[r].device = allocate(device, region_bytes, r == 1 ? 0 : 4096);
            ready &= regions[r].device != NULL && scratch != NULL;
            if (ready) {
                memcpy(map_buffer(scratch), regions[r].shadow, region_bytes);
                EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(regions[r].device, 0), vtrn_host_ref(scratch, 0),
                                      region_bytes));
            }
        }
    }
    /* A small ring, so that it wraps many times and fills up now and then (how often depends on
     * how fast the engine drains it, so only the verbose output counts it). */
    const uint32_t ring = 64;
    vtrn_dma_queue_t queue = open_queue(device, 1, 4, 2, ring);
    ready &= queue != NULL;
    if (!ready) {
        EXPECT_MSG(0, "setup failed; seed 0x%" PRIx64, seed);
        (void)vtrn_runtime_destroy(runtime);
        for (int r = 0; r < region_count; r++) free(regions[r].shadow);
        return;
    }

    static const uint64_t special_sizes[] = { 1, 2, 3, 63, 64, 65, 4095, 4096, 4097, 65535, 65536, 65537,
                                              131071, 131072, 131073, 299999, 300000 };
    enum { rounds = 16, max_batch = 8 };
    uint64_t total_bytes = 0, transfer_count = 0, full_rings = 0, kinds[4] = { 0, 0, 0, 0 };
    unsigned failures = 0;
    uint64_t last_sequence = 0;
    for (int round = 0; round < rounds && failures == 0; round++) {
        int first_source = round % 2 == 0 ? 0 : 2, first_destination = round % 2 == 0 ? 2 : 0;
        regions[first_destination].cursor = next_random(&random) % 4096;
        regions[first_destination + 1].cursor = next_random(&random) % 4096;
        int transfers_this_round = 10 + (int)(next_random(&random) % 30);
        int planned = 0;
        while (planned < transfers_this_round && failures == 0) {
            vtrn_dma_transfer_t batch[max_batch];
            uint32_t count = 0, wanted = 1 + (uint32_t)(next_random(&random) % max_batch);
            while (count < wanted && planned < transfers_this_round) {
                planned++;
                struct region *source = &regions[first_source + (int)(next_random(&random) % 2)];
                struct region *destination = &regions[first_destination + (int)(next_random(&random) % 2)];
                uint64_t bytes = next_random(&random) % 2 == 0
                                     ? special_sizes[next_random(&random) % (sizeof special_sizes / sizeof special_sizes[0])]
                                     : 1 + next_random(&random) % 300000;
                uint64_t destination_offset = destination->cursor + next_random(&random) % 4096;
                if (destination_offset + bytes > region_bytes) continue; /* this region is full this round */
                destination->cursor = destination_offset + bytes;
                uint64_t source_offset = next_random(&random) % (region_bytes - bytes + 1);
                memcpy(destination->shadow + destination_offset, source->shadow + source_offset, bytes);
                batch[count++] = transfer_of(region_ref(destination, destination_offset),
                                             region_ref(source, source_offset), bytes);
                kinds[(source->host == NULL) * 2 + (destination->host == NULL)]++;
                total_bytes += bytes;
                transfer_count++;
            }
            if (count == 0) continue;
            vtrn_status_t status = vtrn_dma_queue_enqueue(queue, batch, count);
            if (status == VTRN_ERROR_QUEUE_FULL) {
                /* The ring is full: publish what is in it, let it drain, and try again. */
                full_rings++;
                uint64_t sequence = 0;
                if (vtrn_dma_queue_submit(queue, &sequence) != VTRN_SUCCESS ||
                    vtrn_dma_queue_wait(queue, sequence, UINT64_MAX) != VTRN_SUCCESS) {
                    failures++;
                    EXPECT_MSG(0, "round %d: draining a full ring failed: %s (seed 0x%" PRIx64 ")", round,
                               vtrn_last_error(), seed);
                    break;
                }
                status = vtrn_dma_queue_enqueue(queue, batch, count);
            }
            if (status != VTRN_SUCCESS) {
                failures++;
                EXPECT_MSG(0, "round %d: enqueue of %u transfers returned %s: %s (seed 0x%" PRIx64 ")", round, count,
                           vtrn_status_string(status), vtrn_last_error(), seed);
                break;
            }
            /* Sometimes ring the doorbell mid-round, without waiting. */
            if (next_random(&random) % 3 == 0) EXPECT_OK(vtrn_dma_queue_submit(queue, &last_sequence));
        }
        EXPECT_OK(vtrn_dma_queue_submit(queue, &last_sequence));
        vtrn_status_t status = vtrn_dma_queue_wait(queue, last_sequence, UINT64_MAX);
        if (status != VTRN_SUCCESS) {
            failures++;
            EXPECT_MSG(0, "round %d: wait returned %s: %s", round, vtrn_status_string(status), vtrn_last_error());
        }
        /* The host regions written this round, checked at once (the HBM ones at the end). */
        for (int r = first_destination; r < first_destination + 2; r++) {
            if (regions[r].host == NULL) continue;
            char why[128] = "";
            int same = same_bytes(map_buffer(regions[r].host), regions[r].shadow, region_bytes, why, sizeof why);
            if (!same) failures++;
            EXPECT_MSG(same, "round %d: %s: %s (seed 0x%" PRIx64 ")", round, regions[r].name, why, seed);
        }
    }

    /* Every region ends as its shadow. */
    unsigned char *contents = malloc(region_bytes);
    EXPECT(contents != NULL);
    for (int r = 0; r < region_count && contents != NULL; r++) {
        read_region(device, &regions[r], scratch, contents);
        char why[128] = "";
        EXPECT_MSG(same_bytes(contents, regions[r].shadow, region_bytes, why, sizeof why), "%s: %s (seed 0x%" PRIx64 ")",
                   regions[r].name, why, seed);
    }
    free(contents);
    vtrn_dma_queue_info_t info = get_queue_info(queue);
    EXPECT_EQ_U64(info.bytes_completed, total_bytes);
    EXPECT_EQ_U64(info.completed_sequence, last_sequence);
    EXPECT_EQ_U64(info.free_entries, ring);
    EXPECT_MSG(info.descriptors_completed > 4 * ring, "the ring wrapped only %" PRIu64 " descriptors",
               info.descriptors_completed);
    for (int k = 0; k < 4; k++) {
        static const char *const names[] = { "host to host", "host to HBM", "HBM to host", "HBM to HBM" };
        EXPECT_MSG(kinds[k] > 0, "no %s transfer in %" PRIu64 " (seed 0x%" PRIx64 ")", names[k], transfer_count, seed);
    }
    if (verbose) {
        printf("#   %" PRIu64 " transfers, %" PRIu64 " bytes, %" PRIu64 " full rings, %" PRIu64 " descriptors\n",
               transfer_count, total_bytes, full_rings, info.descriptors_completed);
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    for (int r = 0; r < region_count; r++) free(regions[r].shadow);
}

/* Threads on different DMA engines of one runtime, each moving and checking its own data. */
struct submitter {
    vtrn_device_t device;
    vtrn_runtime_t runtime;
    uint32_t engine;
    int use_memcpy; /* this one goes through vtrn_memcpy instead of its queue */
    unsigned failures;
    char first_failure[256];
    uint64_t bytes_moved;
};

static void submitter_failed(struct submitter *submitter, const char *what) {
    if (submitter->failures++ == 0) {
        snprintf(submitter->first_failure, sizeof submitter->first_failure, "%s: %s", what, vtrn_last_error());
    }
}

static void *submit_and_check(void *argument) {
    struct submitter *submitter = argument;
    const size_t bytes = 4 * MiB;
    vtrn_host_buffer_options_t options = VTRN_HOST_BUFFER_OPTIONS_INIT;
    vtrn_host_buffer_t source = NULL, destination = NULL;
    vtrn_device_memory_t hbm = NULL;
    vtrn_dma_queue_t queue = NULL;
    vtrn_dma_queue_options_t queue_options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    queue_options.engine = submitter->engine;
    queue_options.ring_entries = 256;
    if (vtrn_host_buffer_create(submitter->runtime, bytes, &options, &source) != VTRN_SUCCESS ||
        vtrn_host_buffer_create(submitter->runtime, bytes, &options, &destination) != VTRN_SUCCESS ||
        vtrn_device_memory_alloc(submitter->device, bytes, 0, &hbm) != VTRN_SUCCESS ||
        (!submitter->use_memcpy && vtrn_dma_queue_create(submitter->device, &queue_options, &queue) != VTRN_SUCCESS)) {
        submitter_failed(submitter, "setup");
        return NULL;
    }
    void *source_data = NULL, *destination_data = NULL;
    (void)vtrn_host_buffer_map(source, &source_data, NULL);
    (void)vtrn_host_buffer_map(destination, &destination_data, NULL);
    uint64_t random = 0xc0ffee00u + submitter->engine;
    for (int iteration = 0; iteration < 12; iteration++) {
        uint64_t size = 1 + next_random(&random) % bytes;
        uint64_t offset = next_random(&random) % (bytes - size + 1);
        fill_pattern(source_data, bytes, random);
        memset(destination_data, 0, bytes);
        if (submitter->use_memcpy) {
            if (vtrn_memcpy(submitter->device, vtrn_device_ref(hbm, offset), vtrn_host_ref(source, 0), size) !=
                    VTRN_SUCCESS ||
                vtrn_memcpy(submitter->device, vtrn_host_ref(destination, 0), vtrn_device_ref(hbm, offset), size) !=
                    VTRN_SUCCESS) {
                submitter_failed(submitter, "vtrn_memcpy");
                break;
            }
        } else {
            vtrn_dma_transfer_t in = transfer_of(vtrn_device_ref(hbm, offset), vtrn_host_ref(source, 0), size);
            vtrn_dma_transfer_t out = transfer_of(vtrn_host_ref(destination, 0), vtrn_device_ref(hbm, offset), size);
            if (run_transfers(queue, &in, 1) != VTRN_SUCCESS || run_transfers(queue, &out, 1) != VTRN_SUCCESS) {
                submitter_failed(submitter, "transfer");
                break;
            }
        }
        char why[128] = "";
        if (!same_bytes(destination_data, source_data, size, why, sizeof why) ||
            !bytes_are((unsigned char *)destination_data + size, bytes - size, 0)) {
            if (submitter->failures++ == 0) {
                snprintf(submitter->first_failure, sizeof submitter->first_failure, "iteration %d: %s", iteration,
                         why[0] ? why : "bytes past the transfer were written");
            }
        }
        submitter->bytes_moved += 2 * size;
    }
    if (queue != NULL) {
        vtrn_dma_queue_info_t info = VTRN_DMA_QUEUE_INFO_INIT;
        if (vtrn_dma_queue_get_info(queue, &info) != VTRN_SUCCESS || info.bytes_completed != submitter->bytes_moved) {
            submitter_failed(submitter, "queue counters");
        }
    }
    if (vtrn_dma_queue_destroy(queue) != VTRN_SUCCESS || vtrn_device_memory_free(hbm) != VTRN_SUCCESS ||
        vtrn_host_buffer_destroy(source) != VTRN_SUCCESS || vtrn_host_buffer_destroy(destination) != VTRN_SUCCESS) {
        submitter_failed(submitter, "cleanup");
    }
    return NULL;
}

static void test_concurrent_submitters(void) {
    GROUP("DMA queue: concurrent submitters");
    enum { threads = 5 };
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    struct submitter submitters[threads];
    pthread_t ids[threads];
    for (int i = 0; i < threads; i++) {
        memset(&submitters[i], 0, sizeof submitters[i]);
        submitters[i].runtime = runtime;
        submitters[i].device = device;
        submitters[i].engine = (uint32_t)i * 3; /* engines 0, 3, 6, 9; the last uses vtrn_memcpy */
        submitters[i].use_memcpy = i == threads - 1;
        EXPECT(pthread_create(&ids[i], NULL, submit_and_check, &submitters[i]) == 0);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        EXPECT_MSG(submitters[i].failures == 0, "thread %d (engine %u%s): %u failures, first: %s", i,
                   submitters[i].engine, submitters[i].use_memcpy ? ", vtrn_memcpy" : "", submitters[i].failures,
                   submitters[i].first_failure);
    }
    EXPECT_EQ_U64(get_usage(device).used_bytes, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* Blocks freed and allocated from several threads: a freed block's pages were given back
 * (MADV_DONTNEED) after its space went back to the allocator, so another thread could be given
 * the space, write it, and lose what it wrote: 2-8 of 24,000 round trips read back zeros (the
 * "data mismatches" of issue 8's 8-thread stress, isolated with ThreadSanitizer clean). */
struct reuser {
    vtrn_runtime_t runtime;
    vtrn_device_t device;
    int id;
    unsigned wrong;
    unsigned errors;
};

static void *reuse_device_memory(void *argument) {
    struct reuser *reuser = argument;
    size_t bytes = 4096 * (size_t)(1 + reuser->id % 4);
    vtrn_host_buffer_t in = NULL, out = NULL;
    unsigned char *in_data = NULL, *out_data = NULL;
    if (vtrn_host_buffer_create(reuser->runtime, bytes, NULL, &in) != VTRN_SUCCESS ||
        vtrn_host_buffer_create(reuser->runtime, bytes, NULL, &out) != VTRN_SUCCESS ||
        vtrn_host_buffer_map(in, (void **)&in_data, NULL) != VTRN_SUCCESS ||
        vtrn_host_buffer_map(out, (void **)&out_data, NULL) != VTRN_SUCCESS) {
        reuser->errors++;
        return NULL;
    }
    for (int iteration = 0; iteration < 4000; iteration++) {
        vtrn_device_memory_t memory = NULL;
        if (vtrn_device_memory_alloc(reuser->device, bytes, 0, &memory) != VTRN_SUCCESS) {
            reuser->errors++;
            break;
        }
        for (size_t i = 0; i < bytes; i++) in_data[i] = (unsigned char)(i * 7 + (size_t)reuser->id + (size_t)iteration);
        memset(out_data, 0, bytes);
        if (vtrn_memcpy(reuser->device, vtrn_device_ref(memory, 0), vtrn_host_ref(in, 0), bytes) != VTRN_SUCCESS ||
            vtrn_memcpy(reuser->device, vtrn_host_ref(out, 0), vtrn_device_ref(memory, 0), bytes) != VTRN_SUCCESS) {
            reuser->errors++;
        } else if (memcmp(in_data, out_data, bytes) != 0) {
            reuser->wrong++;
        }
        if (vtrn_device_memory_free(memory) != VTRN_SUCCESS) reuser->errors++;
    }
    vtrn_host_buffer_destroy(in);
    vtrn_host_buffer_destroy(out);
    return NULL;
}

static void test_concurrent_reuse(void) {
    GROUP("device memory: freed and reused from 6 threads, no data lost");
    enum { threads = 6 };
    vtrn_runtime_t runtime = create_runtime("trn1");
    struct reuser reusers[threads];
    pthread_t ids[threads];
    for (int i = 0; i < threads; i++) {
        reusers[i] = (struct reuser){ runtime, get_device(runtime, 0), i, 0, 0 };
        EXPECT(pthread_create(&ids[i], NULL, reuse_device_memory, &reusers[i]) == 0);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        EXPECT_MSG(reusers[i].wrong == 0 && reusers[i].errors == 0, "thread %d: %u of 4000 round trips read back other bytes, %u errors",
                   i, reusers[i].wrong, reusers[i].errors);
    }
    EXPECT_EQ_U64(get_usage(get_device(runtime, 0)).used_bytes, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * DMA queues: what happens to objects while transfers are in flight
 * ============================================================================================ */

static void test_in_flight(void) {
    GROUP("DMA queue: destroying things in flight");
    const size_t bytes = 32 * MiB;
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_dma_queue_t queue = open_queue(device, 0, 0, 0, 4096);
    vtrn_device_memory_t hbm = allocate(device, bytes, 0);
    vtrn_host_buffer_t check = create_local_buffer(runtime, bytes);
    unsigned char *expected = malloc(bytes);
    EXPECT(expected != NULL);
    if (expected == NULL || queue == NULL || hbm == NULL || check == NULL) {
        (void)vtrn_runtime_destroy(runtime);
        free(expected);
        return;
    }
    fill_pattern(expected, bytes, 31);

    /* A host buffer destroyed right after its transfer is submitted: the call succeeds, the
     * transfer completes with the buffer's data, and the handle is dead for new transfers. */
    vtrn_host_buffer_t source = create_local_buffer(runtime, bytes);
    memcpy(map_buffer(source), expected, bytes);
    vtrn_dma_transfer_t transfer = transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(source, 0), bytes);
    uint64_t sequence = 0;
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_OK(vtrn_host_buffer_destroy(source));
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(check, 0), vtrn_device_ref(hbm, 0), bytes));
    EXPECT_SAME_BYTES(map_buffer(check), expected, bytes);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &transfer, 1), VTRN_ERROR_INVALID_HANDLE, "transfer 0: src.memory: ",
                 "vtrn_host_buffer_t", "destroyed");

    /* Destroyed before it was even submitted: the enqueued descriptors keep the pages alive. */
    source = create_local_buffer(runtime, bytes);
    fill_pattern(expected, bytes, 32);
    memcpy(map_buffer(source), expected, bytes);
    transfer = transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(source, 0), bytes);
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
    EXPECT_OK(vtrn_host_buffer_destroy(source));
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(check, 0), vtrn_device_ref(hbm, 0), bytes));
    EXPECT_SAME_BYTES(map_buffer(check), expected, bytes);

    /* Device memory freed while a transfer into it runs: the header says its space returns to
     * the allocator only once the queue notices the completion. Checked when the transfer was
     * seen still running after the usage was read. */
    vtrn_device_memory_t target = allocate(device, bytes, 0);
    source = create_local_buffer(runtime, bytes);
    transfer = transfer_of(vtrn_device_ref(target, 0), vtrn_host_ref(source, 0), bytes);
    uint64_t used_before = get_usage(device).used_bytes;
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_OK(vtrn_device_memory_free(target));
    vtrn_memory_usage_t usage = get_usage(device);
    uint64_t completed = 0;
    EXPECT_OK(vtrn_dma_queue_completed(queue, &completed));
    if (completed < sequence) {
        EXPECT_MSG(usage.used_bytes == used_before, "device memory freed during a transfer into it: used_bytes fell "
                   "from %" PRIu64 " to %" PRIu64 " before the transfer completed", used_before, usage.used_bytes);
    } else if (verbose) {
        printf("#   the transfer completed before the usage was read; the freed-in-flight check did not apply\n");
    }
    EXPECT_OK(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX));
    EXPECT_OK(vtrn_host_buffer_destroy(source));
    /* Once the queue has noticed, the space is back. */
    transfer = transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(check, 0), 64);
    EXPECT_OK(run_transfers(queue, &transfer, 1));
    EXPECT_EQ_U64(get_usage(device).used_bytes, used_before - bytes);

    /* A queue destroyed with work in it: the submitted transfer completes, the unsubmitted one
     * is dropped. */
    source = create_local_buffer(runtime, bytes);
    fill_pattern(expected, bytes, 33);
    memcpy(map_buffer(source), expected, bytes);
    memset(map_buffer(check), 0, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(hbm, 0), vtrn_host_ref(check, 0), bytes)); /* zero the HBM */
    vtrn_dma_transfer_t halves[2] = {
        transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(source, 0), bytes / 2),
        transfer_of(vtrn_device_ref(hbm, bytes / 2), vtrn_host_ref(source, bytes / 2), bytes / 2),
    };
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &halves[0], 1));
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &halves[1], 1));
    EXPECT_OK(vtrn_dma_queue_destroy(queue));
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(check, 0), vtrn_device_ref(hbm, 0), bytes));
    EXPECT_SAME_BYTES(map_buffer(check), expected, bytes / 2);
    EXPECT(bytes_are(map_buffer(check) + bytes / 2, bytes / 2, 0));
    /* The hardware queue is free again (the core stays this runtime's). */
    queue = open_queue(device, 0, 0, 0, 4096);

    /* The runtime destroyed with a transfer in flight: no crash, everything released. */
    transfer = transfer_of(vtrn_device_ref(hbm, 0), vtrn_host_ref(source, 0), bytes);
    EXPECT_OK(vtrn_dma_queue_enqueue(queue, &transfer, 1));
    EXPECT_OK(vtrn_dma_queue_submit(queue, &sequence));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, sequence, UINT64_MAX), VTRN_ERROR_INVALID_HANDLE, "vtrn_dma_queue_t",
                 "stale");
    runtime = create_runtime("trn1");
    usage = get_usage(get_device(runtime, 0));
    EXPECT_EQ_U64(usage.used_bytes, 0);
    /* ... and core 0 is free for the next runtime. */
    vtrn_dma_queue_t again = open_queue(get_device(runtime, 0), 0, 0, 0, 64);
    EXPECT(again != NULL);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    free(expected);
}

/* ============================================================================================
 * Handles: stale, NULL, garbage
 * ============================================================================================ */

static void test_handles(void) {
    GROUP("handles of buffers, memory and queues");
    /* destroy(NULL) is a no-op for each new kind. */
    EXPECT_OK(vtrn_host_buffer_destroy(NULL));
    EXPECT_OK(vtrn_device_memory_free(NULL));
    EXPECT_OK(vtrn_dma_queue_destroy(NULL));

    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_host_buffer_t buffer = create_local_buffer(runtime, 4096);
    vtrn_device_memory_t memory = allocate(device, 4096, 0);
    vtrn_dma_queue_t queue = open_queue(device, 0, 0, 0, 64);

    /* Garbage and handles of another kind, for every function. */
    void *data = NULL;
    int32_t node = 0;
    uint32_t count = 0;
    uint64_t sequence = 0;
    vtrn_host_buffer_info_t buffer_info = VTRN_HOST_BUFFER_INFO_INIT;
    vtrn_device_memory_info_t memory_info = VTRN_DEVICE_MEMORY_INFO_INIT;
    vtrn_dma_queue_info_t queue_info = VTRN_DMA_QUEUE_INFO_INIT;
    EXPECT_ERROR(vtrn_host_buffer_map((vtrn_host_buffer_t)GARBAGE, &data, NULL), VTRN_ERROR_INVALID_HANDLE,
                 "0x1234", "not a vtrn handle");
    EXPECT_ERROR(vtrn_host_buffer_numa_node((vtrn_host_buffer_t)(void *)memory, &node), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_memory_t, not a vtrn_host_buffer_t");
    EXPECT_ERROR(vtrn_host_buffer_node_pages((vtrn_host_buffer_t)(void *)queue, NULL, &count),
                 VTRN_ERROR_INVALID_HANDLE, "vtrn_dma_queue_t, not a vtrn_host_buffer_t");
    EXPECT_ERROR(vtrn_host_buffer_get_info((vtrn_host_buffer_t)(void *)device, &buffer_info),
                 VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t, not a vtrn_host_buffer_t");
    EXPECT_ERROR(vtrn_host_buffer_destroy((vtrn_host_buffer_t)(void *)runtime), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_runtime_t, not a vtrn_host_buffer_t");
    EXPECT_ERROR(vtrn_device_memory_get_info((vtrn_device_memory_t)(void *)buffer, &memory_info),
                 VTRN_ERROR_INVALID_HANDLE, "vtrn_host_buffer_t, not a vtrn_device_memory_t");
    EXPECT_ERROR(vtrn_device_memory_free((vtrn_device_memory_t)GARBAGE), VTRN_ERROR_INVALID_HANDLE,
                 "not a vtrn handle");
    EXPECT_ERROR(vtrn_dma_queue_get_info((vtrn_dma_queue_t)(void *)memory, &queue_info), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_memory_t, not a vtrn_dma_queue_t");
    EXPECT_ERROR(vtrn_dma_queue_destroy((vtrn_dma_queue_t)GARBAGE), VTRN_ERROR_INVALID_HANDLE, "not a vtrn handle");
    /* None of that harmed the real objects. */
    EXPECT_OK(vtrn_host_buffer_get_info(buffer, &buffer_info));
    EXPECT_OK(vtrn_device_memory_get_info(memory, &memory_info));
    EXPECT_OK(vtrn_dma_queue_get_info(queue, &queue_info));

    /* After the runtime is destroyed, every handle it owned is stale. */
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    vtrn_dma_transfer_t transfer = transfer_of(vtrn_device_ref(memory, 0), vtrn_host_ref(buffer, 0), 64);
    EXPECT_ERROR(vtrn_dma_queue_enqueue(queue, &transfer, 1), VTRN_ERROR_INVALID_HANDLE, "vtrn_dma_queue_t", "stale",
                 "destroyed");
    EXPECT_ERROR(vtrn_dma_queue_submit(queue, &sequence), VTRN_ERROR_INVALID_HANDLE, "vtrn_dma_queue_t", "stale");
    EXPECT_ERROR(vtrn_dma_queue_wait(queue, 0, 0), VTRN_ERROR_INVALID_HANDLE, "vtrn_dma_queue_t", "stale");
    EXPECT_ERROR(vtrn_dma_queue_completed(queue, &sequence), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_dma_queue_get_info(queue, &queue_info), VTRN_ERROR_INVALID_HANDLE, "stale");
    EXPECT_ERROR(vtrn_dma_queue_destroy(queue), VTRN_ERROR_INVALID_HANDLE, "vtrn_dma_queue_t", "stale");
    EXPECT_ERROR(vtrn_host_buffer_map(buffer, &data, NULL), VTRN_ERROR_INVALID_HANDLE, "vtrn_host_buffer_t", "stale");
    EXPECT_ERROR(vtrn_host_buffer_destroy(buffer), VTRN_ERROR_INVALID_HANDLE, "vtrn_host_buffer_t", "stale");
    EXPECT_ERROR(vtrn_device_memory_get_info(memory, &memory_info), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_memory_t", "stale");
    EXPECT_ERROR(vtrn_device_memory_free(memory), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_memory_t", "stale");
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(memory, 0), vtrn_host_ref(buffer, 0), 64),
                 VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t", "stale");

    /* ... and stays stale when a new runtime makes new objects. */
    vtrn_runtime_t next = create_runtime("trn1");
    vtrn_host_buffer_t next_buffer = create_local_buffer(next, 4096);
    vtrn_dma_queue_t next_queue = open_queue(get_device(next, 0), 0, 0, 0, 64);
    EXPECT(next_buffer != buffer && next_queue != queue);
    EXPECT_STATUS(vtrn_host_buffer_map(buffer, &data, NULL), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_STATUS(vtrn_dma_queue_get_info(queue, &queue_info), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_OK(vtrn_runtime_destroy(next));
}

/* ============================================================================================
 * vtrn_memcpy
 * ============================================================================================ */

static void test_memcpy(void) {
    GROUP("vtrn_memcpy");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    const size_t bytes = 300 * MiB;
    vtrn_host_buffer_t host = create_local_buffer(runtime, bytes);
    vtrn_device_memory_t hbm = allocate(device, bytes, 0);
    unsigned char *expected = malloc(bytes);
    EXPECT(expected != NULL);
    if (host == NULL || hbm == NULL || expected == NULL) {
        (void)vtrn_runtime_destroy(runtime);
        free(expected);
        return;
    }
    unsigned char *data = map_buffer(host);

    /* Errors. */
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(hbm, 1), vtrn_host_ref(host, 0), bytes),
                 VTRN_ERROR_OUT_OF_BOUNDS, "dst", "runs past the end");
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(hbm, 0), vtrn_host_ref(host, bytes), 1),
                 VTRN_ERROR_OUT_OF_BOUNDS, "src", "runs past the end");
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(hbm, UINT64_MAX), vtrn_host_ref(host, 0), 2),
                 VTRN_ERROR_OUT_OF_BOUNDS, "dst");
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(hbm, 0), vtrn_host_ref(host, 0), UINT64_MAX),
                 VTRN_ERROR_OUT_OF_BOUNDS, "runs past the end");
    vtrn_memory_ref_t garbage = { GARBAGE, 0 };
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(hbm, 0), garbage, 64), VTRN_ERROR_INVALID_HANDLE,
                 "src.memory", "0x1234", "not a vtrn handle");
    EXPECT_ERROR(vtrn_memcpy(device, garbage, vtrn_device_ref(hbm, 0), 64), VTRN_ERROR_INVALID_HANDLE,
                 "dst.memory", "0x1234");
    vtrn_memory_ref_t null_ref = { NULL, 0 };
    EXPECT_ERROR(vtrn_memcpy(device, null_ref, vtrn_device_ref(hbm, 0), 64), VTRN_ERROR_INVALID_HANDLE,
                 "dst.memory", "NULL");
    vtrn_memory_ref_t wrong_kind = { (void *)device, 0 };
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(hbm, 0), wrong_kind, 64), VTRN_ERROR_INVALID_HANDLE,
                 "src.memory", "is a vtrn_device_t");
    /* 0 bytes checks the references and copies nothing. */
    data[0] = 0x11;
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(host, 0), vtrn_device_ref(hbm, 0), 0));
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(host, bytes), vtrn_device_ref(hbm, bytes), 0)); /* at the end */
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(host, 0), vtrn_host_ref(host, 0), 0));
    EXPECT_EQ_U64(data[0], 0x11);
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_host_ref(host, bytes + 1), vtrn_device_ref(hbm, 0), 0),
                 VTRN_ERROR_OUT_OF_BOUNDS, "dst", "runs past the end");
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_host_ref(host, 0), garbage, 0), VTRN_ERROR_INVALID_HANDLE, "src.memory",
                 "not a vtrn handle");
    EXPECT_ERROR(vtrn_memcpy(device, vtrn_device_ref(hbm, 0), vtrn_device_ref(hbm, 10), 64),
                 VTRN_ERROR_INVALID_ARGUMENT, "overlap");
    EXPECT_ERROR(vtrn_memcpy((vtrn_device_t)GARBAGE, vtrn_device_ref(hbm, 0), vtrn_host_ref(host, 0), 64),
                 VTRN_ERROR_INVALID_HANDLE, "not a vtrn handle");

    /* Sizes from 1 byte up, both ways, at odd offsets; nothing around the range is written. */
    static const uint64_t sizes[] = { 1, 7, 65535, 65536, 65537, 1000003, 64 * MiB + 1 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t size = sizes[i];
        uint64_t host_offset = 4096 - (i + 1), device_offset = i * 3;
        size_t window = (size_t)(host_offset + size + 4096); /* what this round looks at */
        fill_pattern(expected, (size_t)size, 40 + i);
        memcpy(data + host_offset, expected, (size_t)size);
        EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(hbm, device_offset), vtrn_host_ref(host, host_offset), size));
        memset(data, 0, window);
        EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(host, host_offset), vtrn_device_ref(hbm, device_offset), size));
        char why[128] = "";
        EXPECT_MSG(same_bytes(data + host_offset, expected, (size_t)size, why, sizeof why), "%" PRIu64 " bytes: %s",
                   size, why);
        EXPECT_MSG(bytes_are(data, (size_t)host_offset, 0) && bytes_are(data + host_offset + size, 4096, 0),
                   "%" PRIu64 " bytes: vtrn_memcpy wrote outside its range", size);
    }
    /* The whole 300 MiB (more than one ring of the host queue holds), and device to device. */
    fill_pattern(data, bytes, 50);
    memcpy(expected, data, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(hbm, 0), vtrn_host_ref(host, 0), bytes));
    vtrn_device_memory_t other = allocate(device, 1 * MiB, 0);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(other, 0), vtrn_device_ref(hbm, bytes - 1 * MiB), 1 * MiB));
    memset(data, 0, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(host, 0), vtrn_device_ref(hbm, 0), bytes));
    EXPECT_SAME_BYTES(data, expected, bytes);
    memset(data, 0, 1 * MiB);
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(host, 0), vtrn_device_ref(other, 0), 1 * MiB));
    EXPECT_SAME_BYTES(data, expected + bytes - 1 * MiB, 1 * MiB);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    free(expected);
}

/* ============================================================================================ */

int main(int argc, char **argv) {
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    if (argc > 1 && strcmp(argv[1], "--memlock-child") == 0) return memlock_child();
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL;
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) unsetenv(variables[i]);

    test_host_buffer_defaults();
    test_host_buffer_placements();
    test_host_buffer_errors();
    test_huge_pages();
    test_locked();
    test_register();
    test_node_pages();
    test_struct_sizes();
    test_device_memory();
    test_resident_bytes();
    test_out_of_device_memory();
    test_queue_create();
    test_core_claims();
    test_enqueue_errors();
    test_enqueue_foreign_memory();
    test_submit_and_wait();
    test_data_integrity();
    test_concurrent_submitters();
    test_concurrent_reuse();
    test_in_flight();
    test_handles();
    test_memcpy();

    return finish("test_dma");
}
