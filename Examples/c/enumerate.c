/*
 * enumerate.c — list the virtual Trainium devices of a vtrn runtime.
 *
 *   make -C Examples/c && Examples/c/build/enumerate [TOPOLOGY]
 *
 * TOPOLOGY is a vtrn topology such as "trn1", "trn2:2" or "trn1,trn2@node0" (default
 * "trn1,trn2"). The program shows the pattern every vtrn host program follows:
 *   - check the library's major version against the header's;
 *   - check every call's status, and on failure print vtrn_last_error(), this thread's message;
 *   - initialize every struct with its _INIT macro, which sets struct_size;
 *   - destroy the runtime, after which its handles (and its devices') are invalid.
 */
#include <stdio.h>
#include <stdlib.h>

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

/* Same, for a call that must fail with a given status (used here to show stale handles). */
#define CHECK_STATUS(call, expected)                                                             \
    do {                                                                                         \
        vtrn_status_t check_status_ = (call);                                                    \
        if (check_status_ != (expected)) {                                                       \
            fprintf(stderr, "%s:%d: %s returned %s (%d), expected %s\n", __FILE__, __LINE__,     \
                    #call, vtrn_status_string(check_status_), (int)check_status_,                \
                    vtrn_status_string(expected));                                               \
            goto fail;                                                                           \
        }                                                                                        \
    } while (0)

static const char *architecture_name(vtrn_architecture_t architecture) {
    switch (architecture) {
    case VTRN_ARCH_TRN1: return "trn1";
    case VTRN_ARCH_TRN2: return "trn2";
    default: return "unknown";
    }
}

static const char *log_level_name(vtrn_log_level_t level) {
    switch (level) {
    case VTRN_LOG_LEVEL_ERROR: return "error";
    case VTRN_LOG_LEVEL_WARNING: return "warning";
    case VTRN_LOG_LEVEL_INFO: return "info";
    case VTRN_LOG_LEVEL_DEBUG: return "debug";
    case VTRN_LOG_LEVEL_TRACE: return "trace";
    default: return "default";
    }
}

static void print_engines(uint32_t engines) {
    static const struct { uint32_t bit; const char *name; } names[] = {
        { VTRN_ENGINE_PE, "PE" }, { VTRN_ENGINE_ACT, "ACT" },
        { VTRN_ENGINE_DVE, "DVE" }, { VTRN_ENGINE_POOL, "POOL" },
    };
    const char *separator = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (engines & names[i].bit) {
            printf("%s%s", separator, names[i].name);
            separator = "+";
        }
    }
}

int main(int argc, char **argv) {
    const char *topology = argc > 1 ? argv[1] : "trn1,trn2";
    vtrn_runtime_t runtime = NULL;
    vtrn_device_t first_device = NULL;

    /* 1. The library must speak the same major version as the header we were built with. */
    uint32_t version = vtrn_version();
    if (VTRN_VERSION_GET_MAJOR(version) != VTRN_VERSION_MAJOR) {
        fprintf(stderr, "libvtrn is version %u.%u.%u but this program was built with vtrn.h %d.%d.%d\n",
                VTRN_VERSION_GET_MAJOR(version), VTRN_VERSION_GET_MINOR(version),
                VTRN_VERSION_GET_PATCH(version), VTRN_VERSION_MAJOR, VTRN_VERSION_MINOR,
                VTRN_VERSION_PATCH);
        return 1;
    }
    printf("vtrn %u.%u.%u (header %d.%d.%d)\n", VTRN_VERSION_GET_MAJOR(version),
           VTRN_VERSION_GET_MINOR(version), VTRN_VERSION_GET_PATCH(version), VTRN_VERSION_MAJOR,
           VTRN_VERSION_MINOR, VTRN_VERSION_PATCH);

    /* 2. A runtime. Options left NULL/DEFAULT come from the environment (VTRN_*), then defaults. */
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    CHECK(vtrn_runtime_create(&options, &runtime));

    vtrn_runtime_info_t runtime_info = VTRN_RUNTIME_INFO_INIT;
    CHECK(vtrn_runtime_get_info(runtime, &runtime_info));
    printf("topology %s: %u devices, %u cores (%u visible), log level %s\n", runtime_info.topology,
           runtime_info.device_count, runtime_info.core_count, runtime_info.visible_core_count,
           log_level_name(runtime_info.log_level));

    /* 3. Each device, then each of its cores. */
    uint32_t device_count = 0;
    CHECK(vtrn_device_count(runtime, &device_count));
    for (uint32_t d = 0; d < device_count; d++) {
        vtrn_device_t device = NULL;
        CHECK(vtrn_device_get(runtime, d, &device));
        if (d == 0) first_device = device;

        vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
        CHECK(vtrn_device_get_info(device, &info));
        printf("device %u: %s (%s), %u cores (first global core %u), %llu GiB HBM at %.1f GB/s, "
               "NUMA node %d\n",
               info.index, info.name, architecture_name(info.architecture), info.core_count,
               info.first_core, (unsigned long long)(info.hbm_bytes >> 30),
               (double)info.hbm_bandwidth / 1e9, (int)info.numa_node);
        printf("  bus %s, PCI %04x:%04x, uuid %s\n", info.bus_address, (unsigned)info.pci_vendor_id,
               (unsigned)info.pci_device_id, info.uuid);
        printf("  per core: SBUF %llu KiB, PSUM %llu KiB, %u semaphores, %u DMA engines x %u queues\n",
               (unsigned long long)(info.sbuf_bytes_per_core >> 10),
               (unsigned long long)(info.psum_bytes_per_core >> 10), info.semaphores_per_core,
               info.dma_engines_per_core, info.queues_per_dma_engine);

        for (uint32_t c = 0; c < info.core_count; c++) {
            vtrn_core_info_t core = VTRN_CORE_INFO_INIT;
            CHECK(vtrn_device_get_core_info(device, c, &core));
            printf("  core %u (global %u, %s): engines ", core.index, core.global_index,
                   core.visible ? "visible" : "hidden");
            print_engines(core.engines);
            printf(", SBUF %u x %u KiB, PSUM %u x %u KiB in %u banks, clocks PE %.2f ACT %.2f "
                   "DVE %.2f POOL %.2f GHz\n",
                   core.sbuf_partitions, core.sbuf_bytes_per_partition >> 10, core.sbuf_partitions,
                   core.psum_bytes_per_partition >> 10, core.psum_banks, (double)core.pe_clock_hz / 1e9,
                   (double)core.act_clock_hz / 1e9, (double)core.dve_clock_hz / 1e9,
                   (double)core.pool_clock_hz / 1e9);
        }
    }

    /* 4. Destroying the runtime invalidates its handles: using one is an error, never a crash. */
    CHECK(vtrn_runtime_destroy(runtime));
    runtime = NULL;
    if (first_device != NULL) {
        vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
        CHECK_STATUS(vtrn_device_get_info(first_device, &info), VTRN_ERROR_INVALID_HANDLE);
        printf("after destroy: vtrn_device_get_info gives %s: %s\n",
               vtrn_status_string(VTRN_ERROR_INVALID_HANDLE), vtrn_last_error());
    }
    return 0;

fail:
    (void)vtrn_runtime_destroy(runtime); /* NULL is a no-op */
    return 1;
}
