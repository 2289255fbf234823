/*
 * dma_copy.c — move data host → HBM → HBM → host through a DMA queue, and check every byte.
 *
 *   make -C Examples/c && Examples/c/build/dma_copy [TOPOLOGY [MiB]]
 *
 * TOPOLOGY is a vtrn topology (default "trn1"); MiB the size of the large transfer (default 256).
 * The program shows the pattern of every program that moves data with vtrn:
 *   - host buffers come from vtrn_host_buffer_create, placed on the device's NUMA node
 *     (VTRN_NUMA_DEVICE_LOCAL), as DMA buffers are on a real host; vtrn_host_buffer_map gives
 *     their memory to the program;
 *   - device memory (HBM) comes from vtrn_device_memory_alloc;
 *   - a DMA queue is one hardware queue of one DMA engine of one NeuronCore: enqueue writes
 *     descriptors into its ring (each moves at most VTRN_DMA_MAX_DESCRIPTOR_BYTES), submit rings
 *     the doorbell and returns a sequence number, wait blocks until that sequence completes;
 *   - vtrn_memcpy does the same synchronously, on the device's host DMA engines, for code that
 *     wants one copy and no queue.
 * It copies a large buffer and an odd-sized, unaligned range both ways, verifies them byte for
 * byte, prints the bandwidth of each hop and the queue's counters, and exits non-zero on any
 * failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
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

static double now_seconds(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (double)time.tv_sec + (double)time.tv_nsec * 1e-9;
}

/* Fills `bytes` with a pattern that depends on `seed` and on each byte's position, so that a
 * byte copied to the wrong place, or not at all, is noticed. */
static void fill_pattern(unsigned char *data, size_t bytes, uint64_t seed) {
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        memcpy(data + i, &state, 8);
    }
    for (; i < bytes; i++) data[i] = (unsigned char)(state >> (8 * (i % 8)));
}

/* 1 when the ranges are equal; else prints the first byte that differs and returns 0. */
static int same_bytes(const char *what, const unsigned char *actual, const unsigned char *expected, size_t bytes) {
    if (memcmp(actual, expected, bytes) == 0) return 1;
    size_t i = 0;
    while (actual[i] == expected[i]) i++;
    fprintf(stderr, "%s: byte %zu of %zu is 0x%02x, expected 0x%02x\n", what, i, bytes, actual[i], expected[i]);
    return 0;
}

static void print_rate(const char *hop, uint64_t bytes, double seconds) {
    printf("  %-34s %10" PRIu64 " bytes in %8.3f ms: %6.2f GB/s\n", hop, bytes, seconds * 1e3,
           seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0);
}

/* One transfer through the queue: enqueue its descriptors, ring the doorbell, wait for the
 * sequence the doorbell returned. Returns the status of the first call that failed. */
static vtrn_status_t queue_copy(vtrn_dma_queue_t queue, vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t bytes,
                                double *seconds) {
    vtrn_dma_transfer_t transfer;
    transfer.dst = dst;
    transfer.src = src;
    transfer.bytes = bytes;
    double start = now_seconds();
    vtrn_status_t status = vtrn_dma_queue_enqueue(queue, &transfer, 1);
    uint64_t sequence = 0;
    if (status == VTRN_SUCCESS) status = vtrn_dma_queue_submit(queue, &sequence);
    if (status == VTRN_SUCCESS) status = vtrn_dma_queue_wait(queue, sequence, UINT64_MAX);
    *seconds = now_seconds() - start;
    return status;
}

static const char *placement_name(vtrn_numa_placement_t placement) {
    switch (placement) {
    case VTRN_NUMA_DEVICE_LOCAL: return "device-local";
    case VTRN_NUMA_NODE: return "node";
    case VTRN_NUMA_INTERLEAVE: return "interleave";
    case VTRN_NUMA_ANY: return "any";
    default: return "unknown";
    }
}

int main(int argc, char **argv) {
    const char *topology = argc > 1 ? argv[1] : "trn1";
    uint64_t large = (argc > 2 ? strtoull(argv[2], NULL, 10) : 256) << 20;
    /* An odd size at odd offsets: neither a multiple of a descriptor nor aligned to anything. */
    const uint64_t odd = 1000003, odd_src_offset = 7, odd_hbm_offset = 4093, odd_dst_offset = 13;
    if (large < odd + 8192) {
        fprintf(stderr, "the large transfer must be at least 1 MiB\n");
        return 1;
    }
    int ok = 1;
    vtrn_runtime_t runtime = NULL;
    vtrn_host_buffer_t source = NULL, destination = NULL;
    vtrn_device_memory_t hbm_a = NULL, hbm_b = NULL;
    vtrn_dma_queue_t queue = NULL;

    uint32_t version = vtrn_version();
    if (VTRN_VERSION_GET_MAJOR(version) != VTRN_VERSION_MAJOR) {
        fprintf(stderr, "libvtrn is version %u.%u.%u but this program was built with vtrn.h %d.%d.%d\n",
                VTRN_VERSION_GET_MAJOR(version), VTRN_VERSION_GET_MINOR(version),
                VTRN_VERSION_GET_PATCH(version), VTRN_VERSION_MAJOR, VTRN_VERSION_MINOR,
                VTRN_VERSION_PATCH);
        return 1;
    }

    /* 1. A runtime and its first device. */
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    CHECK(vtrn_runtime_create(&options, &runtime));
    vtrn_device_t device = NULL;
    CHECK(vtrn_device_get(runtime, 0, &device));
    vtrn_device_info_t device_info = VTRN_DEVICE_INFO_INIT;
    CHECK(vtrn_device_get_info(device, &device_info));
    printf("device 0: %s, %" PRIu64 " GiB HBM, NUMA node %d\n", device_info.name, device_info.hbm_bytes >> 30,
           (int)device_info.numa_node);

    /* 2. Host buffers on the device's NUMA node. Huge pages are asked for; if the system has none
     *    the buffer is made anyway and its info says why. */
    vtrn_host_buffer_options_t buffer_options = VTRN_HOST_BUFFER_OPTIONS_INIT;
    buffer_options.placement = VTRN_NUMA_DEVICE_LOCAL;
    buffer_options.device = 0;
    buffer_options.flags = VTRN_HOST_BUFFER_HUGEPAGES;
    CHECK(vtrn_host_buffer_create(runtime, (size_t)large, &buffer_options, &source));
    CHECK(vtrn_host_buffer_create(runtime, (size_t)large, &buffer_options, &destination));
    unsigned char *source_data = NULL, *destination_data = NULL;
    CHECK(vtrn_host_buffer_map(source, (void **)&source_data, NULL));
    CHECK(vtrn_host_buffer_map(destination, (void **)&destination_data, NULL));
    int32_t source_node = -1, destination_node = -1;
    CHECK(vtrn_host_buffer_numa_node(source, &source_node));
    CHECK(vtrn_host_buffer_numa_node(destination, &destination_node));
    vtrn_host_buffer_info_t buffer_info = VTRN_HOST_BUFFER_INFO_INIT;
    CHECK(vtrn_host_buffer_get_info(source, &buffer_info));
    printf("host buffers: 2 x %" PRIu64 " MiB, %s, pages on NUMA node %d and %d, huge pages %s%s%s\n", large >> 20,
           placement_name(buffer_info.placement), (int)source_node, (int)destination_node,
           buffer_info.huge_pages ? "yes" : "no", buffer_info.note[0] ? ": " : "", buffer_info.note);
    if (source_node != device_info.numa_node || destination_node != device_info.numa_node) {
        fprintf(stderr, "the buffers' pages are not on the device's node %d\n", (int)device_info.numa_node);
        ok = 0;
    }

    /* 3. Two blocks of HBM, and the memory they take. */
    CHECK(vtrn_device_memory_alloc(device, large, 0, &hbm_a));
    CHECK(vtrn_device_memory_alloc(device, large, 0, &hbm_b));
    vtrn_memory_usage_t usage = VTRN_MEMORY_USAGE_INIT;
    CHECK(vtrn_device_get_memory_usage(device, &usage));
    printf("HBM: %" PRIu64 " MiB used in %" PRIu64 " blocks, %" PRIu64 " MiB resident (backed lazily: nothing "
           "is written yet)\n", usage.used_bytes >> 20, usage.allocation_count, usage.resident_bytes >> 20);

    /* 4. A queue: core 0, DMA engine 0, queue 0 (claims core 0 for this runtime). Its ring must
     *    hold the descriptors of the largest transfer: one per 64 KiB. */
    vtrn_dma_queue_options_t queue_options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    uint64_t descriptors = (large + VTRN_DMA_MAX_DESCRIPTOR_BYTES - 1) / VTRN_DMA_MAX_DESCRIPTOR_BYTES;
    if (descriptors > queue_options.ring_entries) queue_options.ring_entries = (uint32_t)descriptors;
    CHECK(vtrn_dma_queue_create(device, &queue_options, &queue));

    /* 5. The large transfer: host → HBM → HBM → host, one submit per hop (each hop reads what the
     *    one before wrote, so it waits for it). */
    printf("large transfer (%" PRIu64 " descriptors per hop):\n", descriptors);
    fill_pattern(source_data, (size_t)large, 1);
    memset(destination_data, 0, (size_t)large);
    double seconds = 0;
    CHECK(queue_copy(queue, vtrn_device_ref(hbm_a, 0), vtrn_host_ref(source, 0), large, &seconds));
    /* The first write to HBM commits its host pages (HBM is backed lazily), which costs more
     * than the copy: the vtrn_memcpy runs below show the speed over committed pages. */
    print_rate("host -> HBM (first touch)", large, seconds);
    CHECK(queue_copy(queue, vtrn_device_ref(hbm_b, 0), vtrn_device_ref(hbm_a, 0), large, &seconds));
    print_rate("HBM -> HBM (first touch)", large, seconds);
    CHECK(queue_copy(queue, vtrn_host_ref(destination, 0), vtrn_device_ref(hbm_b, 0), large, &seconds));
    print_rate("HBM -> host", large, seconds);
    if (!same_bytes("large transfer", destination_data, source_data, (size_t)large)) ok = 0;
    CHECK(vtrn_device_get_memory_usage(device, &usage));
    printf("  HBM resident now: %" PRIu64 " MiB\n", usage.resident_bytes >> 20);

    /* 6. The odd-sized transfer at unaligned offsets, same path. */
    printf("odd-sized transfer (offsets %" PRIu64 ", %" PRIu64 ", %" PRIu64 "):\n", odd_src_offset, odd_hbm_offset,
           odd_dst_offset);
    fill_pattern(source_data, (size_t)(odd + odd_src_offset), 2);
    memset(destination_data, 0, (size_t)(odd + 2 * odd_dst_offset));
    CHECK(queue_copy(queue, vtrn_device_ref(hbm_a, odd_hbm_offset), vtrn_host_ref(source, odd_src_offset), odd,
                     &seconds));
    print_rate("host -> HBM", odd, seconds);
    CHECK(queue_copy(queue, vtrn_device_ref(hbm_b, odd_hbm_offset + 1), vtrn_device_ref(hbm_a, odd_hbm_offset), odd,
                     &seconds));
    print_rate("HBM -> HBM", odd, seconds);
    CHECK(queue_copy(queue, vtrn_host_ref(destination, odd_dst_offset), vtrn_device_ref(hbm_b, odd_hbm_offset + 1),
                     odd, &seconds));
    print_rate("HBM -> host", odd, seconds);
    if (!same_bytes("odd-sized transfer", destination_data + odd_dst_offset, source_data + odd_src_offset,
                    (size_t)odd)) {
        ok = 0;
    }
    /* The bytes around the range were not written. */
    static const unsigned char zeros[16];
    if (!same_bytes("before the odd-sized range", destination_data, zeros, (size_t)odd_dst_offset) ||
        !same_bytes("after the odd-sized range", destination_data + odd_dst_offset + odd, zeros,
                    (size_t)odd_dst_offset)) {
        ok = 0;
    }

    /* 7. What the queue counted. */
    vtrn_dma_queue_info_t queue_info = VTRN_DMA_QUEUE_INFO_INIT;
    CHECK(vtrn_dma_queue_get_info(queue, &queue_info));
    printf("queue %u of DMA engine %u of core %u: sequence %" PRIu64 " submitted, %" PRIu64 " completed; %" PRIu64
           " descriptors and %" PRIu64 " bytes completed; %u of %u ring entries free\n",
           queue_info.queue, queue_info.engine, queue_info.core, queue_info.submitted_sequence,
           queue_info.completed_sequence, queue_info.descriptors_completed, queue_info.bytes_completed,
           queue_info.free_entries, queue_info.ring_entries);
    if (queue_info.submitted_sequence != 6 || queue_info.completed_sequence != 6 ||
        queue_info.bytes_completed != 3 * (large + odd) || queue_info.free_entries != queue_info.ring_entries) {
        fprintf(stderr, "unexpected queue counters\n");
        ok = 0;
    }

    /* 8. vtrn_memcpy: the same copies in one call each, no queue needed. */
    printf("vtrn_memcpy:\n");
    fill_pattern(source_data, (size_t)large, 3);
    memset(destination_data, 0, (size_t)large);
    double start = now_seconds();
    CHECK(vtrn_memcpy(device, vtrn_device_ref(hbm_a, 0), vtrn_host_ref(source, 0), large));
    print_rate("host -> HBM", large, now_seconds() - start);
    start = now_seconds();
    CHECK(vtrn_memcpy(device, vtrn_device_ref(hbm_b, 0), vtrn_device_ref(hbm_a, 0), large));
    print_rate("HBM -> HBM", large, now_seconds() - start);
    start = now_seconds();
    CHECK(vtrn_memcpy(device, vtrn_host_ref(destination, 0), vtrn_device_ref(hbm_b, 0), large));
    print_rate("HBM -> host", large, now_seconds() - start);
    if (!same_bytes("vtrn_memcpy", destination_data, source_data, (size_t)large)) ok = 0;
    start = now_seconds();
    CHECK(vtrn_memcpy(device, vtrn_host_ref(destination, odd_dst_offset), vtrn_host_ref(source, odd_src_offset), odd));
    print_rate("host -> host (odd-sized)", odd, now_seconds() - start);
    if (!same_bytes("vtrn_memcpy odd-sized", destination_data + odd_dst_offset, source_data + odd_src_offset,
                    (size_t)odd)) {
        ok = 0;
    }

    /* 9. Release in any order; destroying the runtime alone would release everything too. */
    CHECK(vtrn_dma_queue_destroy(queue));
    CHECK(vtrn_device_memory_free(hbm_a));
    CHECK(vtrn_device_memory_free(hbm_b));
    CHECK(vtrn_host_buffer_destroy(source));
    CHECK(vtrn_host_buffer_destroy(destination));
    CHECK(vtrn_runtime_destroy(runtime));
    printf(ok ? "all bytes verified\n" : "verification FAILED\n");
    return ok ? 0 : 1;

fail:
    (void)vtrn_runtime_destroy(runtime); /* releases the queue, the memory and the buffers */
    return 1;
}
