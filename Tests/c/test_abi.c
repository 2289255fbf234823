/*
 * test_abi.c — the C ABI of vtrn, tested the way a C user meets it: written only from
 * include/vtrn.h and its documented behaviour.
 *
 *   make -C Tests/c check          (or: make -C Tests/c build/test_abi && Tests/c/build/test_abi)
 *
 * The framework is test_framework.h: every check counts as passed or failed; a failure prints
 * "FAIL file:line: what"; the program ends with the line "test_abi: N passed, M failed" and exits
 * non-zero when M > 0. Set VTRN_TEST_VERBOSE=1 to print each group's name as it runs.
 *
 * Needs an unlimited address space (ulimit -v unlimited; not under valgrind): every virtual
 * device reserves address space for its whole HBM, and some tests make 64 devices.
 *
 * The tests own the environment: they clear every VTRN_* variable at start and set the ones a
 * test needs with setenv/unsetenv (only on the main thread, never while other threads run).
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "test_framework.h"
#include "vtrn.h"

/* ============================================================================================
 * Helpers
 * ============================================================================================ */

/* Values that no call may write: out-parameters are pre-filled with them to show that a failed
 * call leaves them untouched. */
#define SENTINEL_RUNTIME ((vtrn_runtime_t)(uintptr_t)0x5e7e1a11u)
#define SENTINEL_DEVICE ((vtrn_device_t)(uintptr_t)0x5e7e1a12u)
#define SENTINEL_COUNT 0xdeadbeefu

static const char *const variables[] = {
    "VTRN_TOPOLOGY", "VTRN_VISIBLE_CORES", "VTRN_LOG_LEVEL", "VTRN_EXEC_TIMEOUT_MS", "VTRN_TRACE",
};

static void clear_environment(void) {
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) unsetenv(variables[i]);
}

/* A runtime of `topology` (NULL: from the environment), or NULL after a recorded failure. */
static vtrn_runtime_t create_runtime(const char *topology) {
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    vtrn_runtime_t runtime = NULL;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    record(status == VTRN_SUCCESS && runtime != NULL, __FILE__, __LINE__,
           "vtrn_runtime_create(topology \"%s\") returned %s: %s", topology ? topology : "(NULL)",
           vtrn_status_string(status), vtrn_last_error());
    return status == VTRN_SUCCESS ? runtime : NULL;
}

/* vtrn_runtime_create(NULL, ...) with one variable set for the call; returns the status. */
static vtrn_status_t create_with_variable(const char *name, const char *value, vtrn_runtime_t *out) {
    setenv(name, value, 1);
    vtrn_status_t status = vtrn_runtime_create(NULL, out);
    unsetenv(name);
    return status;
}

static vtrn_runtime_info_t get_runtime_info(vtrn_runtime_t runtime) {
    vtrn_runtime_info_t info = VTRN_RUNTIME_INFO_INIT;
    EXPECT_OK(vtrn_runtime_get_info(runtime, &info));
    return info;
}

static uint32_t get_device_count(vtrn_runtime_t runtime) {
    uint32_t count = SENTINEL_COUNT;
    EXPECT_OK(vtrn_device_count(runtime, &count));
    return count;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* "0000:10:1e.0": domain:bus:device.function in hexadecimal. */
static int is_bus_address(const char *text) {
    static const char pattern[] = "xxxx:xx:xx.x";
    if (strlen(text) != sizeof pattern - 1) return 0;
    for (size_t i = 0; i < sizeof pattern - 1; i++) {
        if (pattern[i] == 'x' ? !is_hex(text[i]) : text[i] != pattern[i]) return 0;
    }
    return 1;
}

/* 8-4-4-4-12 hexadecimal digits. */
static int is_uuid(const char *text) {
    static const char pattern[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    if (strlen(text) != sizeof pattern - 1) return 0;
    for (size_t i = 0; i < sizeof pattern - 1; i++) {
        if (pattern[i] == 'x' ? !is_hex(text[i]) : text[i] != pattern[i]) return 0;
    }
    return 1;
}

static int compare_pointers(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* ============================================================================================
 * Version, status strings, last error
 * ============================================================================================ */

static void test_version(void) {
    GROUP("version");
    uint32_t version = vtrn_version();
    EXPECT_EQ_U64(VTRN_VERSION_GET_MAJOR(version), VTRN_VERSION_MAJOR);
    /* The library in this tree is built from this header. */
    EXPECT_EQ_U64(version, VTRN_VERSION);
    EXPECT_EQ_U64(VTRN_MAKE_VERSION(1, 2, 3), 0x010203u);
    EXPECT_EQ_U64(VTRN_VERSION_GET_MINOR(VTRN_MAKE_VERSION(4, 250, 7)), 250);
    EXPECT_EQ_U64(VTRN_VERSION_GET_PATCH(VTRN_MAKE_VERSION(4, 250, 7)), 7);
}

static void test_status_strings(void) {
    GROUP("status strings");
    static const vtrn_status_t statuses[] = {
        VTRN_SUCCESS, VTRN_NOT_READY, VTRN_ERROR_INVALID_ARGUMENT, VTRN_ERROR_INVALID_HANDLE,
        VTRN_ERROR_NOT_FOUND, VTRN_ERROR_OUT_OF_BOUNDS, VTRN_ERROR_OUT_OF_HOST_MEMORY,
        VTRN_ERROR_OUT_OF_DEVICE_MEMORY, VTRN_ERROR_BUSY, VTRN_ERROR_TIMEOUT, VTRN_ERROR_QUEUE_FULL,
        VTRN_ERROR_UNSUPPORTED, VTRN_ERROR_INVALID_PROGRAM, VTRN_ERROR_DMA_FAULT, VTRN_ERROR_HARDWARE,
        VTRN_ERROR_DEADLOCK, VTRN_ERROR_INTERNAL, VTRN_ERROR_RESET, VTRN_ERROR_DEVICE_LOST,
    };
    enum { count = sizeof statuses / sizeof statuses[0] };
    const char *texts[count];
    for (size_t i = 0; i < count; i++) {
        texts[i] = vtrn_status_string(statuses[i]);
        EXPECT_MSG(texts[i] != NULL && texts[i][0] != '\0', "vtrn_status_string(%d) is empty", (int)statuses[i]);
        if (texts[i] == NULL) continue;
        EXPECT_MSG(strcmp(texts[i], "unknown status") != 0, "vtrn_status_string(%d) is \"unknown status\"",
                   (int)statuses[i]);
        /* Static text: the same pointer every time. */
        EXPECT_MSG(vtrn_status_string(statuses[i]) == texts[i], "vtrn_status_string(%d) moved", (int)statuses[i]);
        for (size_t j = 0; j < i; j++) {
            EXPECT_MSG(texts[j] == NULL || strcmp(texts[i], texts[j]) != 0,
                       "statuses %d and %d share the text \"%s\"", (int)statuses[j], (int)statuses[i], texts[i]);
        }
    }
    EXPECT_STREQ(vtrn_status_string(VTRN_ERROR_INVALID_HANDLE), "invalid handle");
    EXPECT_STREQ(vtrn_status_string((vtrn_status_t)19), "unknown status");
    EXPECT_STREQ(vtrn_status_string((vtrn_status_t)1000), "unknown status");
    EXPECT_STREQ(vtrn_status_string((vtrn_status_t)-1), "unknown status");
    EXPECT_STREQ(vtrn_status_string(VTRN_STATUS_FORCE32), "unknown status");
}

static void test_last_error_lifetime(void) {
    GROUP("last error lifetime");
    vtrn_runtime_t runtime = create_runtime("trn1");
    uint32_t count = 0;
    EXPECT_ERROR(vtrn_device_count(runtime, NULL), VTRN_ERROR_INVALID_ARGUMENT, "count");
    const char *message = vtrn_last_error();
    char saved[512];
    snprintf(saved, sizeof saved, "%s", message);
    /* Successful calls leave the message, and its storage, as they were. */
    EXPECT_OK(vtrn_device_count(runtime, &count));
    EXPECT_OK(vtrn_runtime_get_info(runtime, &(vtrn_runtime_info_t)VTRN_RUNTIME_INFO_INIT));
    EXPECT_STREQ(vtrn_last_error(), saved);
    EXPECT_STREQ(message, saved);
    /* The next failure replaces it. */
    EXPECT_ERROR(vtrn_device_get(runtime, 7, &(vtrn_device_t){NULL}), VTRN_ERROR_NOT_FOUND, "7");
    EXPECT_MSG(strcmp(vtrn_last_error(), saved) != 0, "the message did not change: \"%s\"", saved);

    /* A message longer than any fixed buffer is kept whole. */
    size_t long_length = 5000;
    char *long_topology = malloc(long_length + 1);
    memset(long_topology, 'x', long_length);
    long_topology[long_length] = '\0';
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = long_topology;
    vtrn_runtime_t unused = SENTINEL_RUNTIME;
    EXPECT_ERROR(vtrn_runtime_create(&options, &unused), VTRN_ERROR_INVALID_ARGUMENT, long_topology);
    EXPECT(unused == SENTINEL_RUNTIME);
    free(long_topology);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Enumeration: presets and identity
 * ============================================================================================ */

struct expected_preset {
    const char *name;
    vtrn_architecture_t architecture;
    uint32_t cores;
    uint64_t hbm_bytes;
    uint64_t hbm_bandwidth;
    uint16_t pci_device_id;
    uint32_t sbuf_bytes_per_partition;
    uint64_t pe_hz, act_hz, dve_hz, pool_hz;
};

static const struct expected_preset trn1_preset = {
    "Trainium1", VTRN_ARCH_TRN1, 2, 32ull << 30, 820000000000ull, 0x7164, 192 * 1024,
    2800000000ull, 1400000000ull, 1120000000ull, 1400000000ull,
};
static const struct expected_preset trn2_preset = {
    "Trainium2", VTRN_ARCH_TRN2, 8, 96ull << 30, 2900000000000ull, 0x7364, 224 * 1024,
    2400000000ull, 1200000000ull, 960000000ull, 1200000000ull,
};

static void check_device(vtrn_device_t device, uint32_t index, uint32_t first_core,
                         const struct expected_preset *preset) {
    vtrn_device_info_t info = get_device_info(device);
    EXPECT_EQ_U64(info.struct_size, sizeof info);
    EXPECT_EQ_U64(info.index, index);
    EXPECT_EQ_U64(info.architecture, preset->architecture);
    EXPECT_STREQ(info.name, preset->name);
    EXPECT_EQ_U64(info.core_count, preset->cores);
    EXPECT_EQ_U64(info.first_core, first_core);
    EXPECT_EQ_U64(info.hbm_bytes, preset->hbm_bytes);
    EXPECT_EQ_U64(info.hbm_used_bytes, 0);
    EXPECT_EQ_U64(info.hbm_bandwidth, preset->hbm_bandwidth);
    EXPECT(info.numa_node >= 0);
    EXPECT_EQ_U64(info.pci_vendor_id, 0x1d0f);
    EXPECT_EQ_U64(info.pci_device_id, preset->pci_device_id);
    EXPECT_MSG(is_bus_address(info.bus_address), "bus address \"%s\" is not like 0000:10:1e.0", info.bus_address);
    EXPECT_MSG(is_uuid(info.uuid), "uuid \"%s\" is not 8-4-4-4-12 hexadecimal digits", info.uuid);
    EXPECT_EQ_U64(info.dma_engines_per_core, 16);
    EXPECT_EQ_U64(info.queues_per_dma_engine, 16);
    EXPECT_EQ_U64(info.sbuf_bytes_per_core, 128ull * preset->sbuf_bytes_per_partition);
    EXPECT_EQ_U64(info.psum_bytes_per_core, 128ull * 16 * 1024);
    EXPECT_EQ_U64(info.semaphores_per_core, 256);
    EXPECT_EQ_U64(info.visible_core_count, preset->cores);

    for (uint32_t c = 0; c < preset->cores; c++) {
        vtrn_core_info_t core = VTRN_CORE_INFO_INIT;
        EXPECT_OK(vtrn_device_get_core_info(device, c, &core));
        EXPECT_EQ_U64(core.struct_size, sizeof core);
        EXPECT_EQ_U64(core.device_index, index);
        EXPECT_EQ_U64(core.index, c);
        EXPECT_EQ_U64(core.global_index, first_core + c);
        EXPECT_EQ_U64(core.visible, 1);
        EXPECT_EQ_U64(core.engines, VTRN_ENGINE_PE | VTRN_ENGINE_ACT | VTRN_ENGINE_DVE | VTRN_ENGINE_POOL);
        EXPECT_EQ_U64(core.sbuf_partitions, 128);
        EXPECT_EQ_U64(core.sbuf_bytes_per_partition, preset->sbuf_bytes_per_partition);
        EXPECT_EQ_U64(core.psum_bytes_per_partition, 16 * 1024);
        EXPECT_EQ_U64(core.psum_banks, 8);
        EXPECT_EQ_U64(core.semaphores, 256);
        EXPECT_EQ_U64(core.dma_engines, 16);
        EXPECT_EQ_U64(core.queues_per_dma_engine, 16);
        EXPECT_EQ_U64(core.pe_clock_hz, preset->pe_hz);
        EXPECT_EQ_U64(core.act_clock_hz, preset->act_hz);
        EXPECT_EQ_U64(core.dve_clock_hz, preset->dve_hz);
        EXPECT_EQ_U64(core.pool_clock_hz, preset->pool_hz);
        /* The per-core numbers agree with the device's. */
        EXPECT_EQ_U64((uint64_t)core.sbuf_partitions * core.sbuf_bytes_per_partition, info.sbuf_bytes_per_core);
        EXPECT_EQ_U64((uint64_t)core.sbuf_partitions * core.psum_bytes_per_partition, info.psum_bytes_per_core);
    }
}

static void test_presets(void) {
    GROUP("presets");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    EXPECT_EQ_U64(get_device_count(runtime), 2);
    vtrn_device_t trn1 = get_device(runtime, 0);
    vtrn_device_t trn2 = get_device(runtime, 1);
    check_device(trn1, 0, 0, &trn1_preset);
    check_device(trn2, 1, 2, &trn2_preset);
    /* The exact numbers the presets come from (DESIGN.md). */
    vtrn_device_info_t info = get_device_info(trn1);
    EXPECT_EQ_U64(info.sbuf_bytes_per_core, 25165824);
    EXPECT_EQ_U64(info.psum_bytes_per_core, 2097152);
    EXPECT_EQ_U64(info.hbm_bytes, 34359738368ull);
    info = get_device_info(trn2);
    EXPECT_EQ_U64(info.sbuf_bytes_per_core, 29360128);
    EXPECT_EQ_U64(info.hbm_bytes, 103079215104ull);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* Order follows the topology. */
    runtime = create_runtime("trn2,trn1:2");
    EXPECT_EQ_U64(get_device_count(runtime), 3);
    check_device(get_device(runtime, 0), 0, 0, &trn2_preset);
    check_device(get_device(runtime, 1), 1, 8, &trn1_preset);
    check_device(get_device(runtime, 2), 2, 10, &trn1_preset);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_identity(void) {
    GROUP("identity");
    vtrn_runtime_t first = create_runtime("trn1,trn2");
    vtrn_runtime_t second = create_runtime("trn1,trn2");
    EXPECT(first != second);
    vtrn_device_t a0 = get_device(first, 0), a1 = get_device(first, 1);
    vtrn_device_t b0 = get_device(second, 0), b1 = get_device(second, 1);
    /* The same index always gives the same handle; another runtime's devices are other handles. */
    EXPECT(get_device(first, 0) == a0);
    EXPECT(get_device(first, 1) == a1);
    EXPECT(a0 != a1 && a0 != b0 && a0 != b1 && a1 != b0 && a1 != b1 && b0 != b1);

    vtrn_device_info_t i0 = get_device_info(a0), i1 = get_device_info(a1);
    vtrn_device_info_t j0 = get_device_info(b0), j1 = get_device_info(b1);
    EXPECT_MSG(strcmp(i0.bus_address, i1.bus_address) != 0, "devices 0 and 1 share bus address %s", i0.bus_address);
    EXPECT_MSG(strcmp(i0.uuid, i1.uuid) != 0, "devices 0 and 1 share uuid %s", i0.uuid);
    /* Stable for the same topology and index. */
    EXPECT_STREQ(j0.uuid, i0.uuid);
    EXPECT_STREQ(j1.uuid, i1.uuid);
    EXPECT_STREQ(j0.bus_address, i0.bus_address);
    EXPECT_STREQ(j1.bus_address, i1.bus_address);
    EXPECT_OK(vtrn_runtime_destroy(first));
    EXPECT_OK(vtrn_runtime_destroy(second));

    /* ... and across a destroy: a new runtime of the same topology reports the same uuid. */
    vtrn_runtime_t third = create_runtime("trn1,trn2");
    vtrn_device_info_t again = get_device_info(get_device(third, 1));
    EXPECT_STREQ(again.uuid, i1.uuid);
    EXPECT_OK(vtrn_runtime_destroy(third));

    /* The most devices a topology may have: all with distinct bus addresses and uuids. */
    vtrn_runtime_t full = create_runtime("trn1:32,trn2:32");
    uint32_t count = get_device_count(full);
    EXPECT_EQ_U64(count, 64);
    static vtrn_device_info_t infos[64];
    for (uint32_t d = 0; d < count && d < 64; d++) {
        infos[d] = get_device_info(get_device(full, d));
        EXPECT_EQ_U64(infos[d].index, d);
        EXPECT_EQ_U64(infos[d].first_core, d < 32 ? 2 * d : 64 + 8 * (d - 32));
        EXPECT_MSG(is_bus_address(infos[d].bus_address), "device %u bus address \"%s\"", d, infos[d].bus_address);
        for (uint32_t e = 0; e < d; e++) {
            EXPECT_MSG(strcmp(infos[d].bus_address, infos[e].bus_address) != 0,
                       "devices %u and %u share bus address %s", e, d, infos[d].bus_address);
            EXPECT_MSG(strcmp(infos[d].uuid, infos[e].uuid) != 0, "devices %u and %u share uuid %s", e, d,
                       infos[d].uuid);
        }
    }
    vtrn_runtime_info_t runtime_info = get_runtime_info(full);
    EXPECT_EQ_U64(runtime_info.core_count, 32 * 2 + 32 * 8);
    vtrn_core_info_t core = VTRN_CORE_INFO_INIT;
    EXPECT_OK(vtrn_device_get_core_info(get_device(full, 63), 7, &core));
    EXPECT_EQ_U64(core.global_index, 32 * 2 + 32 * 8 - 1);
    EXPECT_OK(vtrn_runtime_destroy(full));
}

static void test_runtime_info(void) {
    GROUP("runtime info");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    vtrn_runtime_info_t info = get_runtime_info(runtime);
    EXPECT_EQ_U64(info.struct_size, sizeof info);
    EXPECT_EQ_U64(info.device_count, 2);
    EXPECT_EQ_U64(info.core_count, 10);
    EXPECT_EQ_U64(info.visible_core_count, 10);
    EXPECT_EQ_U64(info.log_level, VTRN_LOG_LEVEL_WARNING);
    EXPECT_EQ_U64(info.exec_timeout_ns, 30000ull * 1000000ull);
    EXPECT_STREQ(info.topology, "trn1,trn2");
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* The topology comes back in canonical form. */
    runtime = create_runtime("trn1:2,trn2");
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn1:2,trn2");
    EXPECT_EQ_U64(info.device_count, 3);
    EXPECT_EQ_U64(info.core_count, 12);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    runtime = create_runtime("trn2:1");
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn2");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

/* ============================================================================================
 * Configuration: environment, options, and their errors
 * ============================================================================================ */

static void test_environment(void) {
    GROUP("environment");
    clear_environment();

    /* Nothing set: one trn1, all cores, warning, 30 s. */
    vtrn_runtime_t runtime = NULL;
    EXPECT_OK(vtrn_runtime_create(NULL, &runtime));
    vtrn_runtime_info_t info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn1");
    EXPECT_EQ_U64(info.device_count, 1);
    EXPECT_EQ_U64(info.visible_core_count, 2);
    EXPECT_EQ_U64(info.log_level, VTRN_LOG_LEVEL_WARNING);
    EXPECT_EQ_U64(info.exec_timeout_ns, 30000000000ull);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* Options with every field left NULL/DEFAULT behave as NULL options. */
    vtrn_runtime_options_t defaults = VTRN_RUNTIME_OPTIONS_INIT;
    EXPECT_OK(vtrn_runtime_create(&defaults, &runtime));
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn1");
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* VTRN_TOPOLOGY */
    EXPECT_OK(create_with_variable("VTRN_TOPOLOGY", "trn2:2", &runtime));
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn2:2");
    EXPECT_EQ_U64(info.device_count, 2);
    EXPECT_EQ_U64(info.core_count, 16);
    EXPECT_EQ_U64(get_device_info(get_device(runtime, 1)).architecture, VTRN_ARCH_TRN2);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* VTRN_VISIBLE_CORES, counted across devices: cores 1 and 2 are trn1's second and trn2's first. */
    setenv("VTRN_TOPOLOGY", "trn1,trn2", 1);
    EXPECT_OK(create_with_variable("VTRN_VISIBLE_CORES", "1-2", &runtime));
    info = get_runtime_info(runtime);
    EXPECT_EQ_U64(info.core_count, 10);
    EXPECT_EQ_U64(info.visible_core_count, 2);
    vtrn_device_t trn1 = get_device(runtime, 0), trn2 = get_device(runtime, 1);
    EXPECT_EQ_U64(get_device_info(trn1).visible_core_count, 1);
    EXPECT_EQ_U64(get_device_info(trn2).visible_core_count, 1);
    for (uint32_t c = 0; c < 10; c++) {
        vtrn_core_info_t core = VTRN_CORE_INFO_INIT;
        EXPECT_OK(vtrn_device_get_core_info(c < 2 ? trn1 : trn2, c < 2 ? c : c - 2, &core));
        EXPECT_MSG(core.visible == (c == 1 || c == 2), "global core %u: visible is %u", c, core.visible);
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_OK(create_with_variable("VTRN_VISIBLE_CORES", "0,2,5-6", &runtime));
    EXPECT_EQ_U64(get_runtime_info(runtime).visible_core_count, 4);
    EXPECT_EQ_U64(get_device_info(get_device(runtime, 1)).visible_core_count, 3);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    unsetenv("VTRN_TOPOLOGY");

    /* VTRN_LOG_LEVEL */
    EXPECT_OK(create_with_variable("VTRN_LOG_LEVEL", "error", &runtime));
    EXPECT_EQ_U64(get_runtime_info(runtime).log_level, VTRN_LOG_LEVEL_ERROR);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_OK(create_with_variable("VTRN_LOG_LEVEL", "warning", &runtime));
    EXPECT_EQ_U64(get_runtime_info(runtime).log_level, VTRN_LOG_LEVEL_WARNING);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* VTRN_EXEC_TIMEOUT_MS, reported in nanoseconds; 0 means no timeout (UINT64_MAX). */
    EXPECT_OK(create_with_variable("VTRN_EXEC_TIMEOUT_MS", "1500", &runtime));
    EXPECT_EQ_U64(get_runtime_info(runtime).exec_timeout_ns, 1500000000ull);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_OK(create_with_variable("VTRN_EXEC_TIMEOUT_MS", "0", &runtime));
    EXPECT_EQ_U64(get_runtime_info(runtime).exec_timeout_ns, UINT64_MAX);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* An empty variable counts as unset. */
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) setenv(variables[i], "", 1);
    EXPECT_OK(vtrn_runtime_create(NULL, &runtime));
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn1");
    EXPECT_EQ_U64(info.visible_core_count, 2);
    EXPECT_EQ_U64(info.log_level, VTRN_LOG_LEVEL_WARNING);
    EXPECT_EQ_U64(info.exec_timeout_ns, 30000000000ull);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    clear_environment();

    /* Options override the environment. */
    setenv("VTRN_TOPOLOGY", "trn2:3", 1);
    setenv("VTRN_VISIBLE_CORES", "0", 1);
    setenv("VTRN_LOG_LEVEL", "error", 1);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    EXPECT_OK(vtrn_runtime_create(&options, &runtime)); /* all from the environment */
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn2:3");
    EXPECT_EQ_U64(info.visible_core_count, 1);
    EXPECT_EQ_U64(info.log_level, VTRN_LOG_LEVEL_ERROR);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    options.topology = "trn1";
    options.visible_cores = "1";
    options.log_level = VTRN_LOG_LEVEL_WARNING;
    EXPECT_OK(vtrn_runtime_create(&options, &runtime));
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn1");
    EXPECT_EQ_U64(info.device_count, 1);
    EXPECT_EQ_U64(info.visible_core_count, 1);
    EXPECT_EQ_U64(info.log_level, VTRN_LOG_LEVEL_WARNING);
    vtrn_core_info_t core = VTRN_CORE_INFO_INIT;
    EXPECT_OK(vtrn_device_get_core_info(get_device(runtime, 0), 1, &core));
    EXPECT_EQ_U64(core.visible, 1);
    EXPECT_OK(vtrn_device_get_core_info(get_device(runtime, 0), 0, &core));
    EXPECT_EQ_U64(core.visible, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* An overridden variable is not used, so even a bad value in it does no harm. */
    setenv("VTRN_TOPOLOGY", "not-a-topology", 1);
    setenv("VTRN_VISIBLE_CORES", "not-cores", 1);
    setenv("VTRN_LOG_LEVEL", "not-a-level", 1);
    EXPECT_OK(vtrn_runtime_create(&options, &runtime));
    info = get_runtime_info(runtime);
    EXPECT_STREQ(info.topology, "trn1");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    clear_environment();
}

static void test_bad_topologies(void) {
    GROUP("bad topologies");
    static const struct {
        const char *topology;
        const char *detail; /* a part of the message that says what is wrong */
    } cases[] = {
        { "trn3", "trn3" },            /* unknown architecture */
        { "inf2:2", "inf2" },          /* unknown architecture */
        { "trn1:0", "0" },             /* count 0 */
        { "trn1:65", "65" },           /* count past 64 */
        { "trn1:", "count" },          /* no count */
        { "trn1:x", "x" },             /* count not a number */
        { "trn1:64,trn2", "64" },      /* more than 64 devices in all */
        { "trn1,,trn2", "empty" },     /* empty entry */
        { "trn1,", "empty" },          /* empty last entry */
        { ",trn1", "empty" },          /* empty first entry */
        { "", "empty" },               /* empty topology */
        { "@nodeX", "@nodeX" },        /* bad node and no architecture */
        { "trn1@nodeX", "@nodeX" },    /* bad node */
        { "trn1@node", "@node" },      /* node without a number */
        { "trn1@node-1", "node-1" },   /* negative node */
        { "trn1@1", "@1" },            /* not @nodeN */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = cases[i].topology;
        vtrn_runtime_t runtime = SENTINEL_RUNTIME;
        vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
        const char *message = vtrn_last_error();
        char quoted[128];
        snprintf(quoted, sizeof quoted, "\"%s\"", cases[i].topology);
        EXPECT_MSG(status == VTRN_ERROR_INVALID_ARGUMENT, "topology \"%s\": %s (%d), expected invalid argument",
                   cases[i].topology, vtrn_status_string(status), (int)status);
        EXPECT_MSG(runtime == SENTINEL_RUNTIME, "topology \"%s\": out was written", cases[i].topology);
        if (status == VTRN_SUCCESS && runtime != SENTINEL_RUNTIME) (void)vtrn_runtime_destroy(runtime);
        if (status == VTRN_SUCCESS) continue;
        /* The message names the option, quotes the value, says what is wrong and what is accepted. */
        EXPECT_MSG(contains(message, "topology") && contains(message, quoted) &&
                       contains(message, cases[i].detail) && contains(message, "accepted"),
                   "topology \"%s\": message \"%s\" lacks the option, the quoted value, \"%s\" or \"accepted\"",
                   cases[i].topology, message, cases[i].detail);
    }

    /* From the environment, the message names the variable. */
    vtrn_runtime_t runtime = SENTINEL_RUNTIME;
    EXPECT_ERROR(create_with_variable("VTRN_TOPOLOGY", "trn9", &runtime), VTRN_ERROR_INVALID_ARGUMENT,
                 "VTRN_TOPOLOGY", "trn9", "accepted");
    EXPECT(runtime == SENTINEL_RUNTIME);

    /* A string that is not UTF-8. */
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1\xff\xfe";
    EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "topology", "UTF-8");
    options.topology = "trn1";
    options.visible_cores = "\xc3";
    EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "visible_cores", "UTF-8");
    EXPECT(runtime == SENTINEL_RUNTIME);
}

/* The NUMA nodes the library considers online, as it spreads devices over them. */
static int online_nodes(int *nodes, int capacity) {
    vtrn_runtime_t runtime = create_runtime("trn1:64");
    if (runtime == NULL) return 0;
    int count = 0;
    int previous = -1;
    for (uint32_t d = 0; d < 64; d++) {
        int node = get_device_info(get_device(runtime, d)).numa_node;
        /* Spread in blocks: nondecreasing, the first device on the first node. */
        EXPECT_MSG(node >= previous, "device %u on node %d after a device on node %d", d, node, previous);
        if (node != previous && count < capacity) nodes[count++] = node;
        previous = node;
    }
    (void)vtrn_runtime_destroy(runtime);
    return count;
}

static void test_numa(void) {
    GROUP("NUMA");
    int nodes[64];
    int count = online_nodes(nodes, 64);
    EXPECT(count >= 1);
    if (count < 1) return;

    /* Every online node can be asked for by name. */
    for (int i = 0; i < count; i++) {
        char topology[64];
        snprintf(topology, sizeof topology, "trn1,trn2@node%d", nodes[i]);
        vtrn_runtime_t runtime = create_runtime(topology);
        if (runtime == NULL) continue;
        EXPECT_EQ_I64(get_device_info(get_device(runtime, 1)).numa_node, nodes[i]);
        EXPECT_EQ_I64(get_device_info(get_device(runtime, 0)).numa_node, nodes[0]);
        EXPECT_OK(vtrn_runtime_destroy(runtime));
    }

    /* A node that does not exist: the message names it and every online node. */
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1,trn2@node999";
    vtrn_runtime_t runtime = SENTINEL_RUNTIME;
    EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "999", "online",
                 "topology");
    EXPECT(runtime == SENTINEL_RUNTIME);
    const char *message = vtrn_last_error();
    const char *list = strstr(message, "online");
    for (int i = 0; i < count; i++) {
        char number[16];
        snprintf(number, sizeof number, "%d", nodes[i]);
        EXPECT_MSG(list != NULL && strstr(list, number) != NULL, "message \"%s\" does not name online node %d",
                   message, nodes[i]);
    }
}

static void test_bad_visible_cores(void) {
    GROUP("bad visible cores");
    static const struct {
        const char *cores;
        const char *detail;
    } cases[] = {
        { "9", "2 cores" },  /* past the last of trn1's 2 cores */
        { "2", "2 cores" },
        { "2-1", "2-1" },    /* a range that ends before it starts */
        { "x", "x" },        /* not a number */
        { "0-", "0-" },
        { "-1", "-1" },
        { "0,,1", "\"\"" },
        { "", "core" },      /* nothing listed */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = "trn1";
        options.visible_cores = cases[i].cores;
        vtrn_runtime_t runtime = SENTINEL_RUNTIME;
        vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
        const char *message = vtrn_last_error();
        EXPECT_MSG(status == VTRN_ERROR_INVALID_ARGUMENT, "visible cores \"%s\": %s (%d)", cases[i].cores,
                   vtrn_status_string(status), (int)status);
        EXPECT(runtime == SENTINEL_RUNTIME);
        if (status == VTRN_SUCCESS) {
            (void)vtrn_runtime_destroy(runtime);
            continue;
        }
        EXPECT_MSG(contains(message, "visible_cores") && contains(message, cases[i].detail) &&
                       contains(message, "accepted"),
                   "visible cores \"%s\": message \"%s\" lacks visible_cores, \"%s\" or \"accepted\"",
                   cases[i].cores, message, cases[i].detail);
    }
    /* From the environment. */
    setenv("VTRN_TOPOLOGY", "trn1", 1);
    vtrn_runtime_t runtime = SENTINEL_RUNTIME;
    EXPECT_ERROR(create_with_variable("VTRN_VISIBLE_CORES", "9", &runtime), VTRN_ERROR_INVALID_ARGUMENT,
                 "VTRN_VISIBLE_CORES", "\"9\"", "2 cores", "accepted");
    EXPECT_ERROR(create_with_variable("VTRN_VISIBLE_CORES", "2-1", &runtime), VTRN_ERROR_INVALID_ARGUMENT,
                 "VTRN_VISIBLE_CORES", "2-1");
    EXPECT_ERROR(create_with_variable("VTRN_VISIBLE_CORES", "x", &runtime), VTRN_ERROR_INVALID_ARGUMENT,
                 "VTRN_VISIBLE_CORES", "\"x\"");
    EXPECT(runtime == SENTINEL_RUNTIME);
    unsetenv("VTRN_TOPOLOGY");
}

static void test_bad_settings(void) {
    GROUP("bad log level, timeout, trace");
    vtrn_runtime_t runtime = SENTINEL_RUNTIME;
    static const char *const levels[] = { "loud", "6", "errors", "verbose" };
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        char quoted[32];
        snprintf(quoted, sizeof quoted, "\"%s\"", levels[i]);
        EXPECT_ERROR(create_with_variable("VTRN_LOG_LEVEL", levels[i], &runtime), VTRN_ERROR_INVALID_ARGUMENT,
                     "VTRN_LOG_LEVEL", quoted, "error, warning, info, debug, trace");
    }

    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.log_level = (vtrn_log_level_t)42;
    EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "log_level", "42");
    options.log_level = (vtrn_log_level_t)6;
    EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "log_level", "6");
    options.log_level = VTRN_LOG_LEVEL_FORCE32;
    EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "log_level");

    static const char *const timeouts[] = { "abc", "-1", "+5", "1.5", "10ms", "99999999999999999999" };
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", timeouts[i]);
        EXPECT_ERROR(create_with_variable("VTRN_EXEC_TIMEOUT_MS", timeouts[i], &runtime),
                     VTRN_ERROR_INVALID_ARGUMENT, "VTRN_EXEC_TIMEOUT_MS", quoted, "accepted");
    }

    EXPECT_ERROR(create_with_variable("VTRN_TRACE", "/nonexistent-vtrn-folder/trace.json", &runtime),
                 VTRN_ERROR_INVALID_ARGUMENT, "VTRN_TRACE", "/nonexistent-vtrn-folder");
    EXPECT(runtime == SENTINEL_RUNTIME);
}

/* ============================================================================================
 * Argument checking: NULL pointers, indices, struct sizes, untouched outputs
 * ============================================================================================ */

static void test_null_out_pointers(void) {
    GROUP("NULL out-pointers");
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1";
    EXPECT_ERROR(vtrn_runtime_create(&options, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out", "NULL");
    EXPECT_ERROR(vtrn_runtime_create(NULL, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out", "NULL");

    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    EXPECT_ERROR(vtrn_runtime_get_info(runtime, NULL), VTRN_ERROR_INVALID_ARGUMENT, "info", "NULL");
    EXPECT_ERROR(vtrn_device_count(runtime, NULL), VTRN_ERROR_INVALID_ARGUMENT, "count", "NULL");
    EXPECT_ERROR(vtrn_device_get(runtime, 0, NULL), VTRN_ERROR_INVALID_ARGUMENT, "out", "NULL");
    EXPECT_ERROR(vtrn_device_get_info(device, NULL), VTRN_ERROR_INVALID_ARGUMENT, "info", "NULL");
    EXPECT_ERROR(vtrn_device_get_core_info(device, 0, NULL), VTRN_ERROR_INVALID_ARGUMENT, "info", "NULL");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_indices(void) {
    GROUP("device and core indices");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    vtrn_device_t device = SENTINEL_DEVICE;
    EXPECT_ERROR(vtrn_device_get(runtime, 2, &device), VTRN_ERROR_NOT_FOUND, "2 devices", "device 2");
    EXPECT_ERROR(vtrn_device_get(runtime, 64, &device), VTRN_ERROR_NOT_FOUND, "2 devices", "64");
    EXPECT_ERROR(vtrn_device_get(runtime, UINT32_MAX, &device), VTRN_ERROR_NOT_FOUND, "2 devices", "4294967295");
    EXPECT(device == SENTINEL_DEVICE);

    vtrn_device_t trn1 = get_device(runtime, 0), trn2 = get_device(runtime, 1);
    vtrn_core_info_t core;
    memset(&core, SENTINEL_BYTE, sizeof core);
    core.struct_size = sizeof core;
    EXPECT_ERROR(vtrn_device_get_core_info(trn1, 2, &core), VTRN_ERROR_NOT_FOUND, "2 cores", "core 2");
    EXPECT_ERROR(vtrn_device_get_core_info(trn2, 8, &core), VTRN_ERROR_NOT_FOUND, "8 cores", "core 8");
    EXPECT_ERROR(vtrn_device_get_core_info(trn2, UINT32_MAX, &core), VTRN_ERROR_NOT_FOUND, "8 cores",
                 "4294967295");
    EXPECT_EQ_U64(core.struct_size, sizeof core);
    EXPECT(bytes_are((char *)&core + sizeof core.struct_size, sizeof core - sizeof core.struct_size, SENTINEL_BYTE));
    /* The last core is found. */
    EXPECT_OK(vtrn_device_get_core_info(trn2, 7, &core));
    EXPECT_EQ_U64(core.global_index, 9);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* A one-device runtime says "1 device". */
    runtime = create_runtime("trn2");
    EXPECT_ERROR(vtrn_device_get(runtime, 1, &device), VTRN_ERROR_NOT_FOUND, "1 device");
    EXPECT_MSG(!contains(vtrn_last_error(), "1 devices"), "\"%s\" says \"1 devices\"", vtrn_last_error());
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}


static vtrn_status_t call_runtime_info(void *context, void *info) {
    return vtrn_runtime_get_info((vtrn_runtime_t)context, (vtrn_runtime_info_t *)info);
}
static vtrn_status_t call_device_info(void *context, void *info) {
    return vtrn_device_get_info((vtrn_device_t)context, (vtrn_device_info_t *)info);
}
static vtrn_status_t call_core_info(void *context, void *info) {
    return vtrn_device_get_core_info((vtrn_device_t)context, 1, (vtrn_core_info_t *)info);
}

static void test_struct_sizes(void) {
    GROUP("struct sizes");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    vtrn_device_t device = get_device(runtime, 1);

    const struct info_kind runtime_info = { "vtrn_runtime_info_t", "VTRN_RUNTIME_INFO_INIT",
                                            sizeof(vtrn_runtime_info_t), call_runtime_info };
    const struct info_kind device_info = { "vtrn_device_info_t", "VTRN_DEVICE_INFO_INIT",
                                           sizeof(vtrn_device_info_t), call_device_info };
    const struct info_kind core_info = { "vtrn_core_info_t", "VTRN_CORE_INFO_INIT",
                                         sizeof(vtrn_core_info_t), call_core_info };
    /* Both have grown since their first versions (288 and 224 bytes), which stay accepted. */
    check_grown_info_struct_sizes(&runtime_info, offsetof(vtrn_runtime_info_t, instance_type), (void *)runtime);
    check_grown_info_struct_sizes(&device_info, offsetof(vtrn_device_info_t, interconnect), (void *)device);
    check_info_struct_sizes(&core_info, (void *)device);

    /* The bigger structs hold the same values as the plain ones. */
    struct {
        vtrn_device_info_t info;
        unsigned char newer_fields[40];
    } bigger_device;
    memset(&bigger_device, SENTINEL_BYTE, sizeof bigger_device);
    bigger_device.info.struct_size = sizeof bigger_device;
    EXPECT_OK(vtrn_device_get_info(device, &bigger_device.info));
    vtrn_device_info_t plain = get_device_info(device);
    EXPECT_STREQ(bigger_device.info.uuid, plain.uuid);
    EXPECT_EQ_U64(bigger_device.info.hbm_bytes, plain.hbm_bytes);
    EXPECT_EQ_U64(bigger_device.info.visible_core_count, plain.visible_core_count);
    EXPECT(bytes_are(bigger_device.newer_fields, sizeof bigger_device.newer_fields, SENTINEL_BYTE));
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* Options: too small is rejected; bigger is accepted and what lies past our struct ignored. */
    const size_t small_sizes[] = { 0, 8, sizeof(vtrn_runtime_options_t) - 1 };
    for (size_t i = 0; i < sizeof small_sizes / sizeof small_sizes[0]; i++) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.struct_size = small_sizes[i];
        options.topology = "trn1";
        vtrn_runtime_t out = SENTINEL_RUNTIME;
        EXPECT_ERROR(vtrn_runtime_create(&options, &out), VTRN_ERROR_INVALID_ARGUMENT, "options", "struct_size",
                     "VTRN_RUNTIME_OPTIONS_INIT");
        EXPECT(out == SENTINEL_RUNTIME);
    }
    struct {
        vtrn_runtime_options_t options;
        unsigned char newer_fields[48];
    } bigger_options;
    memset(&bigger_options, SENTINEL_BYTE, sizeof bigger_options);
    bigger_options.options = (vtrn_runtime_options_t)VTRN_RUNTIME_OPTIONS_INIT;
    bigger_options.options.struct_size = sizeof bigger_options;
    bigger_options.options.topology = "trn2";
    bigger_options.options.log_level = VTRN_LOG_LEVEL_ERROR;
    vtrn_runtime_t out = NULL;
    EXPECT_OK(vtrn_runtime_create(&bigger_options.options, &out));
    if (out != NULL) {
        vtrn_runtime_info_t info = get_runtime_info(out);
        EXPECT_STREQ(info.topology, "trn2");
        EXPECT_EQ_U64(info.log_level, VTRN_LOG_LEVEL_ERROR);
        EXPECT_OK(vtrn_runtime_destroy(out));
    }
    EXPECT(bytes_are(bigger_options.newer_fields, sizeof bigger_options.newer_fields, SENTINEL_BYTE));
}

/* `bytes` of memory that end where an inaccessible page starts: a call that reads or writes one
 * byte past them faults. */
static void *before_guard_page(size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *pages = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED) return NULL;
    mprotect(pages + page, page, PROT_NONE);
    return pages + page - bytes;
}

static void release_guarded(void *block) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap((void *)((uintptr_t)block / page * page), 2 * page);
}

/* A struct whose struct_size is too small is refused having read struct_size alone: the library
 * once read the whole struct (as its header knows it) just to get at struct_size, past the end of
 * a caller's smaller struct (found by the fuzzer, under ASan). Each struct here is only its
 * struct_size, right before an inaccessible page. */
static void test_struct_size_read_alone(void) {
    GROUP("struct_size read alone");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_host_buffer_t buffer = NULL;
    vtrn_device_memory_t memory = NULL;
    vtrn_dma_queue_t queue = NULL;
    vtrn_program_t program = NULL;
    vtrn_kernel_t kernel = NULL;
    vtrn_fence_t fence = NULL;
    EXPECT_OK(vtrn_host_buffer_create(runtime, 4096, NULL, &buffer));
    EXPECT_OK(vtrn_device_memory_alloc(device, 4096, 0, &memory));
    EXPECT_OK(vtrn_dma_queue_create(device, NULL, &queue));
    EXPECT_OK(vtrn_program_create(runtime, &program));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(0, 1, 0, VTRN_DTYPE_FP32, 1), 1.0f, NULL));
    EXPECT_OK(vtrn_kernel_load(device, 0, program, &kernel));
    EXPECT_OK(vtrn_kernel_execute(kernel, NULL, 0, &fence));
    EXPECT_OK(vtrn_fence_wait(fence, UINT64_MAX));

    const size_t claims[] = { 0, sizeof(size_t) };
    for (size_t i = 0; i < sizeof claims / sizeof claims[0]; i++) {
        size_t *size = before_guard_page(sizeof(size_t));
        if (size == NULL) {
            EXPECT_MSG(0, "mmap failed");
            break;
        }
        *size = claims[i];
        vtrn_runtime_t out_runtime = SENTINEL_RUNTIME;
        EXPECT_ERROR(vtrn_runtime_create((vtrn_runtime_options_t *)size, &out_runtime), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        EXPECT(out_runtime == SENTINEL_RUNTIME);
        EXPECT_ERROR(vtrn_runtime_get_info(runtime, (vtrn_runtime_info_t *)size), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        EXPECT_ERROR(vtrn_device_get_info(device, (vtrn_device_info_t *)size), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        EXPECT_ERROR(vtrn_device_get_core_info(device, 0, (vtrn_core_info_t *)size), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        vtrn_host_buffer_t out_buffer = NULL;
        EXPECT_ERROR(vtrn_host_buffer_create(runtime, 4096, (vtrn_host_buffer_options_t *)size, &out_buffer),
                     VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        EXPECT_ERROR(vtrn_host_buffer_get_info(buffer, (vtrn_host_buffer_info_t *)size), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        EXPECT_ERROR(vtrn_device_memory_get_info(memory, (vtrn_device_memory_info_t *)size), VTRN_ERROR_INVALID_ARGUMENT,
                     "struct_size");
        EXPECT_ERROR(vtrn_device_get_memory_usage(device, (vtrn_memory_usage_t *)size), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        vtrn_dma_queue_t out_queue = NULL;
        EXPECT_ERROR(vtrn_dma_queue_create(device, (vtrn_dma_queue_options_t *)size, &out_queue), VTRN_ERROR_INVALID_ARGUMENT,
                     "struct_size");
        EXPECT_ERROR(vtrn_dma_queue_get_info(queue, (vtrn_dma_queue_info_t *)size), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        vtrn_access_t tile = vtrn_sbuf(0, 1, 0, VTRN_DTYPE_FP32, 1);
        EXPECT_ERROR(vtrn_program_dma_copy_ex(program, tile, tile, (vtrn_dma_copy_options_t *)size, NULL),
                     VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        EXPECT_ERROR(vtrn_fence_get_info(fence, (vtrn_execution_info_t *)size), VTRN_ERROR_INVALID_ARGUMENT, "struct_size");
        EXPECT_EQ_U64(*size, claims[i]);
        release_guarded(size);
    }

    /* A struct of exactly its first version's size, right before the page, works. */
    vtrn_device_info_t *info = before_guard_page(sizeof *info);
    if (info != NULL) {
        *info = (vtrn_device_info_t)VTRN_DEVICE_INFO_INIT;
        EXPECT_OK(vtrn_device_get_info(device, info));
        EXPECT_EQ_U64(info->core_count, 2);
        release_guarded(info);
    }
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_outputs_untouched(void) {
    GROUP("outputs untouched on failure");
    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* Every output of a failed call keeps its sentinel. */
    uint32_t count = SENTINEL_COUNT;
    EXPECT_STATUS(vtrn_device_count(runtime, &count), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_EQ_U64(count, SENTINEL_COUNT);
    vtrn_device_t out_device = SENTINEL_DEVICE;
    EXPECT_STATUS(vtrn_device_get(runtime, 0, &out_device), VTRN_ERROR_INVALID_HANDLE);
    EXPECT(out_device == SENTINEL_DEVICE);

    vtrn_runtime_info_t runtime_info;
    memset(&runtime_info, SENTINEL_BYTE, sizeof runtime_info);
    runtime_info.struct_size = sizeof runtime_info;
    EXPECT_STATUS(vtrn_runtime_get_info(runtime, &runtime_info), VTRN_ERROR_INVALID_HANDLE);
    EXPECT(bytes_are((char *)&runtime_info + sizeof(size_t), sizeof runtime_info - sizeof(size_t), SENTINEL_BYTE));

    vtrn_device_info_t device_info;
    memset(&device_info, SENTINEL_BYTE, sizeof device_info);
    device_info.struct_size = sizeof device_info;
    EXPECT_STATUS(vtrn_device_get_info(device, &device_info), VTRN_ERROR_INVALID_HANDLE);
    EXPECT(bytes_are((char *)&device_info + sizeof(size_t), sizeof device_info - sizeof(size_t), SENTINEL_BYTE));

    vtrn_core_info_t core_info;
    memset(&core_info, SENTINEL_BYTE, sizeof core_info);
    core_info.struct_size = sizeof core_info;
    EXPECT_STATUS(vtrn_device_get_core_info(device, 0, &core_info), VTRN_ERROR_INVALID_HANDLE);
    EXPECT(bytes_are((char *)&core_info + sizeof(size_t), sizeof core_info - sizeof(size_t), SENTINEL_BYTE));
    EXPECT_EQ_U64(core_info.struct_size, sizeof core_info);

    vtrn_runtime_t out = SENTINEL_RUNTIME;
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1";
    options.visible_cores = "5";
    EXPECT_STATUS(vtrn_runtime_create(&options, &out), VTRN_ERROR_INVALID_ARGUMENT);
    EXPECT(out == SENTINEL_RUNTIME);
    /* The options are read, never written. */
    EXPECT_EQ_U64(options.struct_size, sizeof options);
    EXPECT_STREQ(options.topology, "trn1");
    EXPECT_STREQ(options.visible_cores, "5");
}

/* ============================================================================================
 * Handles
 * ============================================================================================ */

static void test_handles(void) {
    GROUP("handles");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    vtrn_device_t trn1 = get_device(runtime, 0), trn2 = get_device(runtime, 1);
    uint32_t count = SENTINEL_COUNT;
    vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
    vtrn_core_info_t core = VTRN_CORE_INFO_INIT;
    vtrn_device_t out = SENTINEL_DEVICE;

    /* NULL handles. */
    EXPECT_ERROR(vtrn_device_count(NULL, &count), VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t", "NULL");
    EXPECT_ERROR(vtrn_device_get(NULL, 0, &out), VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t", "NULL");
    EXPECT_ERROR(vtrn_runtime_get_info(NULL, &(vtrn_runtime_info_t)VTRN_RUNTIME_INFO_INIT),
                 VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t", "NULL");
    EXPECT_ERROR(vtrn_device_get_info(NULL, &info), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t", "NULL");
    EXPECT_ERROR(vtrn_device_get_core_info(NULL, 0, &core), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t", "NULL");
    EXPECT_OK(vtrn_runtime_destroy(NULL));

    /* A handle of the other kind. */
    EXPECT_ERROR(vtrn_device_count((vtrn_runtime_t)(void *)trn1, &count), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_t", "vtrn_runtime_t");
    EXPECT_ERROR(vtrn_runtime_destroy((vtrn_runtime_t)(void *)trn2), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t");
    EXPECT_ERROR(vtrn_device_get_info((vtrn_device_t)(void *)runtime, &info), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_runtime_t", "vtrn_device_t");
    EXPECT_ERROR(vtrn_device_get_core_info((vtrn_device_t)(void *)runtime, 0, &core), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_runtime_t");
    /* ... which did no harm: the runtime and its devices still work. */
    EXPECT_EQ_U64(get_device_count(runtime), 2);
    EXPECT_EQ_U64(get_device_info(trn2).core_count, 8);

    /* Garbage. */
    void *heap = malloc(256);
    memset(heap, 0, 256);
    const vtrn_runtime_t garbage[] = {
        (vtrn_runtime_t)(uintptr_t)0x1234, (vtrn_runtime_t)(uintptr_t)-1, (vtrn_runtime_t)(uintptr_t)1,
        (vtrn_runtime_t)heap, (vtrn_runtime_t)(void *)&count, (vtrn_runtime_t)(uintptr_t)0x8000000000000000ull,
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        vtrn_runtime_info_t runtime_info = VTRN_RUNTIME_INFO_INIT;
        EXPECT_STATUS(vtrn_device_count(garbage[i], &count), VTRN_ERROR_INVALID_HANDLE);
        EXPECT_STATUS(vtrn_device_get(garbage[i], 0, &out), VTRN_ERROR_INVALID_HANDLE);
        EXPECT_STATUS(vtrn_runtime_get_info(garbage[i], &runtime_info), VTRN_ERROR_INVALID_HANDLE);
        EXPECT_STATUS(vtrn_runtime_destroy(garbage[i]), VTRN_ERROR_INVALID_HANDLE);
        EXPECT_STATUS(vtrn_device_get_info((vtrn_device_t)(void *)garbage[i], &info), VTRN_ERROR_INVALID_HANDLE);
        EXPECT_STATUS(vtrn_device_get_core_info((vtrn_device_t)(void *)garbage[i], 0, &core),
                      VTRN_ERROR_INVALID_HANDLE);
    }
    EXPECT_ERROR(vtrn_device_count((vtrn_runtime_t)(uintptr_t)0x1234, &count), VTRN_ERROR_INVALID_HANDLE, "0x1234");
    EXPECT_ERROR(vtrn_runtime_destroy((vtrn_runtime_t)heap), VTRN_ERROR_INVALID_HANDLE, "not a vtrn handle");
    /* The library never wrote through the "handle". */
    EXPECT(bytes_are(heap, 256, 0));
    free(heap);
    EXPECT_EQ_U64(count, SENTINEL_COUNT);
    EXPECT(out == SENTINEL_DEVICE);

    /* Destroyed: the runtime's handle and its devices' are stale; a second destroy fails. */
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_ERROR(vtrn_device_count(runtime, &count), VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t", "destroyed");
    EXPECT_ERROR(vtrn_device_get(runtime, 0, &out), VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t", "destroyed");
    EXPECT_ERROR(vtrn_runtime_get_info(runtime, &(vtrn_runtime_info_t)VTRN_RUNTIME_INFO_INIT),
                 VTRN_ERROR_INVALID_HANDLE, "destroyed");
    EXPECT_ERROR(vtrn_device_get_info(trn1, &info), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t", "destroyed");
    EXPECT_ERROR(vtrn_device_get_core_info(trn2, 0, &core), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_t",
                 "destroyed");
    EXPECT_ERROR(vtrn_runtime_destroy(runtime), VTRN_ERROR_INVALID_HANDLE, "vtrn_runtime_t", "destroyed");
    EXPECT_ERROR(vtrn_runtime_destroy(runtime), VTRN_ERROR_INVALID_HANDLE, "destroyed");
    EXPECT_EQ_U64(count, SENTINEL_COUNT);

    /* A stale handle stays stale when a new runtime is created after it. */
    vtrn_runtime_t next = create_runtime("trn1,trn2");
    EXPECT(next != runtime);
    EXPECT(get_device(next, 0) != trn1);
    EXPECT_STATUS(vtrn_device_count(runtime, &count), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_STATUS(vtrn_device_get_info(trn1, &info), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_OK(vtrn_runtime_destroy(next));
}

static void test_several_runtimes(void) {
    GROUP("several runtimes at once");
    vtrn_runtime_t a = create_runtime("trn1");
    vtrn_runtime_t b = create_runtime("trn2:2");
    vtrn_runtime_t c = create_runtime("trn1,trn2");
    EXPECT(a != b && b != c && a != c);
    vtrn_device_t b1 = get_device(b, 1);
    vtrn_device_t c0 = get_device(c, 0);
    EXPECT_EQ_U64(get_device_count(a), 1);
    EXPECT_EQ_U64(get_device_count(b), 2);
    EXPECT_EQ_U64(get_device_count(c), 2);
    /* Destroying one leaves the others whole. */
    EXPECT_OK(vtrn_runtime_destroy(b));
    EXPECT_STATUS(vtrn_device_get_info(b1, &(vtrn_device_info_t)VTRN_DEVICE_INFO_INIT), VTRN_ERROR_INVALID_HANDLE);
    EXPECT_EQ_U64(get_device_count(a), 1);
    vtrn_runtime_info_t c_info = get_runtime_info(c);
    EXPECT_STREQ(c_info.topology, "trn1,trn2");
    EXPECT_EQ_U64(get_device_info(c0).architecture, VTRN_ARCH_TRN1);
    EXPECT_EQ_U64(get_device_info(get_device(a, 0)).architecture, VTRN_ARCH_TRN1);
    EXPECT_OK(vtrn_runtime_destroy(a));
    EXPECT_EQ_U64(get_device_info(get_device(c, 1)).core_count, 8);
    EXPECT_OK(vtrn_runtime_destroy(c));
}

static void test_stress(void) {
    GROUP("1000 runtimes");
    enum { rounds = 1000 };
    static vtrn_runtime_t runtimes[rounds];
    static vtrn_device_t devices[rounds];
    unsigned failures = 0;
    for (int i = 0; i < rounds; i++) {
        runtimes[i] = NULL;
        devices[i] = NULL;
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = (i % 2) ? "trn1,trn2" : "trn2";
        if (vtrn_runtime_create(&options, &runtimes[i]) != VTRN_SUCCESS ||
            vtrn_device_get(runtimes[i], 0, &devices[i]) != VTRN_SUCCESS ||
            vtrn_runtime_destroy(runtimes[i]) != VTRN_SUCCESS) {
            if (failures++ == 0) printf("FAIL %s:%d: round %d: %s\n", __FILE__, __LINE__, i, vtrn_last_error());
        }
    }
    EXPECT_EQ_U64(failures, 0);

    /* A live runtime among the stale handles must be none of them. */
    vtrn_runtime_t live = create_runtime("trn1,trn2");
    vtrn_device_t live_device = get_device(live, 0);
    unsigned accepted = 0;
    for (int i = 0; i < rounds; i++) {
        uint32_t count = SENTINEL_COUNT;
        vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
        if (runtimes[i] == live || devices[i] == live_device) accepted++;
        if (vtrn_device_count(runtimes[i], &count) != VTRN_ERROR_INVALID_HANDLE || count != SENTINEL_COUNT) accepted++;
        if (vtrn_device_get_info(devices[i], &info) != VTRN_ERROR_INVALID_HANDLE) accepted++;
        if (vtrn_runtime_destroy(runtimes[i]) != VTRN_ERROR_INVALID_HANDLE) accepted++;
    }
    EXPECT_MSG(accepted == 0, "%u uses of stale handles were not rejected", accepted);

    /* Every handle handed out was distinct (a reused value would make a stale handle live). */
    qsort(runtimes, rounds, sizeof runtimes[0], compare_pointers);
    qsort(devices, rounds, sizeof devices[0], compare_pointers);
    unsigned repeats = 0;
    for (int i = 1; i < rounds; i++) repeats += (runtimes[i] == runtimes[i - 1]) + (devices[i] == devices[i - 1]);
    EXPECT_MSG(repeats == 0, "%u handle values were handed out twice", repeats);
    EXPECT_EQ_U64(get_device_count(live), 2);
    EXPECT_OK(vtrn_runtime_destroy(live));
}

/* With no runtime alive, no value at all is a valid handle: a sweep of structured and
 * pseudo-random 64-bit values must all be rejected, none crash. */
static void test_garbage_sweep(void) {
    GROUP("garbage sweep");
    unsigned accepted = 0;
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 20000; i++) {
        uint64_t value;
        if (i < 4096) {
            /* every top byte, with small low bits and a few middle patterns */
            value = ((uint64_t)(i & 0xff) << 56) | ((uint64_t)((i >> 8) & 0xf) << 52) | (uint64_t)((i >> 12) & 1) << 32 |
                    (uint64_t)(i % 3);
        } else {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            value = state;
        }
        if (value == 0) continue;
        uint32_t count = SENTINEL_COUNT;
        vtrn_core_info_t core = VTRN_CORE_INFO_INIT;
        if (vtrn_device_count((vtrn_runtime_t)(uintptr_t)value, &count) != VTRN_ERROR_INVALID_HANDLE) accepted++;
        if (vtrn_device_get_core_info((vtrn_device_t)(uintptr_t)value, 0, &core) != VTRN_ERROR_INVALID_HANDLE) accepted++;
        if (vtrn_runtime_destroy((vtrn_runtime_t)(uintptr_t)value) != VTRN_ERROR_INVALID_HANDLE) accepted++;
    }
    EXPECT_MSG(accepted == 0, "%u garbage handle uses were not rejected", accepted);
}

/* ============================================================================================
 * Threads
 * ============================================================================================ */

static pthread_barrier_t error_barrier;

struct error_thread {
    int which;
    vtrn_runtime_t runtime; /* shared, read only */
    char fresh[64];         /* vtrn_last_error() before any call on the thread */
    vtrn_status_t status;
    char message[512];      /* vtrn_last_error() after both threads failed */
};

static void *provoke_error(void *argument) {
    struct error_thread *thread = argument;
    snprintf(thread->fresh, sizeof thread->fresh, "%s", vtrn_last_error());
    if (thread->which == 0) {
        thread->status = vtrn_device_count(thread->runtime, NULL);
    } else {
        vtrn_device_t device = SENTINEL_DEVICE;
        thread->status = vtrn_device_get(thread->runtime, 5, &device);
    }
    /* Both have failed before either reads its message. */
    pthread_barrier_wait(&error_barrier);
    snprintf(thread->message, sizeof thread->message, "%s", vtrn_last_error());
    return NULL;
}

static void test_last_error_per_thread(void) {
    GROUP("last error per thread");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    /* The main thread's own message, which the threads must not disturb. */
    EXPECT_ERROR(vtrn_device_get_core_info(get_device(runtime, 0), 3, &(vtrn_core_info_t)VTRN_CORE_INFO_INIT),
                 VTRN_ERROR_NOT_FOUND, "core 3");
    char main_message[512];
    snprintf(main_message, sizeof main_message, "%s", vtrn_last_error());

    pthread_barrier_init(&error_barrier, NULL, 2);
    struct error_thread threads[2];
    pthread_t ids[2];
    for (int i = 0; i < 2; i++) {
        memset(&threads[i], 0, sizeof threads[i]);
        threads[i].which = i;
        threads[i].runtime = runtime;
        EXPECT(pthread_create(&ids[i], NULL, provoke_error, &threads[i]) == 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(ids[i], NULL);
    pthread_barrier_destroy(&error_barrier);

    EXPECT_STREQ(threads[0].fresh, "");
    EXPECT_STREQ(threads[1].fresh, "");
    EXPECT_EQ_U64(threads[0].status, VTRN_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ_U64(threads[1].status, VTRN_ERROR_NOT_FOUND);
    EXPECT_CONTAINS(threads[0].message, "count");
    EXPECT_MSG(!contains(threads[0].message, "2 devices"), "thread 0 reads thread 1's message: %s",
               threads[0].message);
    EXPECT_CONTAINS(threads[1].message, "2 devices");
    EXPECT_MSG(!contains(threads[1].message, "count"), "thread 1 reads thread 0's message: %s", threads[1].message);
    EXPECT_STREQ(vtrn_last_error(), main_message);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

struct worker {
    int id;
    unsigned failures;
    char first_failure[512];
};

/* Each worker creates, inspects and destroys its own runtimes while the others do the same. */
static void *runtime_worker(void *argument) {
    struct worker *worker = argument;
    for (int round = 0; round < 100; round++) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = (round + worker->id) % 2 ? "trn2:2" : "trn1";
        uint32_t expected_devices = (round + worker->id) % 2 ? 2 : 1;
        vtrn_runtime_t runtime = NULL;
        vtrn_device_t device = NULL;
        uint32_t count = 0;
        vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
        int ok = vtrn_runtime_create(&options, &runtime) == VTRN_SUCCESS &&
                 vtrn_device_count(runtime, &count) == VTRN_SUCCESS && count == expected_devices &&
                 vtrn_device_get(runtime, count - 1, &device) == VTRN_SUCCESS &&
                 vtrn_device_get_info(device, &info) == VTRN_SUCCESS && info.index == count - 1 &&
                 vtrn_runtime_destroy(runtime) == VTRN_SUCCESS &&
                 vtrn_device_get_info(device, &info) == VTRN_ERROR_INVALID_HANDLE;
        if (!ok && worker->failures++ == 0) {
            snprintf(worker->first_failure, sizeof worker->first_failure, "round %d: %s", round, vtrn_last_error());
        }
    }
    return NULL;
}

static void test_concurrent_runtimes(void) {
    GROUP("concurrent runtimes");
    enum { workers = 4 };
    struct worker state[workers];
    pthread_t ids[workers];
    for (int i = 0; i < workers; i++) {
        memset(&state[i], 0, sizeof state[i]);
        state[i].id = i;
        EXPECT(pthread_create(&ids[i], NULL, runtime_worker, &state[i]) == 0);
    }
    for (int i = 0; i < workers; i++) {
        pthread_join(ids[i], NULL);
        EXPECT_MSG(state[i].failures == 0, "worker %d: %u failures, first: %s", i, state[i].failures,
                   state[i].first_failure);
    }
}

struct reader {
    vtrn_device_t device;
    vtrn_runtime_t runtime;
    atomic_int stop;
    unsigned successes, invalid, other;
};

/* Reads a device and its runtime in a loop while the main thread destroys the runtime. */
static void *racing_reader(void *argument) {
    struct reader *reader = argument;
    unsigned after_stop = 0;
    while (after_stop < 1000) {
        if (atomic_load(&reader->stop)) after_stop++;
        vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
        uint32_t count = 0;
        vtrn_status_t a = vtrn_device_get_info(reader->device, &info);
        vtrn_status_t b = vtrn_device_count(reader->runtime, &count);
        for (int i = 0; i < 2; i++) {
            vtrn_status_t status = i ? b : a;
            if (status == VTRN_SUCCESS) reader->successes++;
            else if (status == VTRN_ERROR_INVALID_HANDLE) reader->invalid++;
            else reader->other++;
        }
    }
    return NULL;
}

static void test_destroy_race(void) {
    GROUP("destroy racing readers");
    vtrn_runtime_t runtime = create_runtime("trn1,trn2");
    struct reader reader;
    memset(&reader, 0, sizeof reader);
    reader.device = get_device(runtime, 1);
    reader.runtime = runtime;
    atomic_init(&reader.stop, 0);
    pthread_t id;
    EXPECT(pthread_create(&id, NULL, racing_reader, &reader) == 0);
    /* Let the reader get going, then pull the runtime from under it. */
    for (int i = 0; i < 200; i++) (void)get_runtime_info(runtime);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    atomic_store(&reader.stop, 1);
    pthread_join(id, NULL);
    EXPECT_MSG(reader.other == 0, "%u calls racing a destroy returned neither success nor invalid handle",
               reader.other);
    EXPECT_MSG(reader.invalid >= 2000, "only %u calls after the destroy failed", reader.invalid);
}

/* ============================================================================================ */

int main(void) {
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL;
    clear_environment();

    /* Each device reserves address space for its whole HBM (96 GiB for a trn2), and some tests
     * make 64 devices: under a limit most runtimes fail to be created, which says why. */
    struct rlimit address_space;
    if (getrlimit(RLIMIT_AS, &address_space) == 0 && address_space.rlim_cur != RLIM_INFINITY) {
        printf("note: the address space is limited to %llu MiB (ulimit -v); these tests need it unlimited\n",
               (unsigned long long)(address_space.rlim_cur >> 20));
    }

    test_version();
    test_status_strings();
    test_last_error_per_thread();
    test_last_error_lifetime();
    test_presets();
    test_identity();
    test_runtime_info();
    test_environment();
    test_bad_topologies();
    test_numa();
    test_bad_visible_cores();
    test_bad_settings();
    test_null_out_pointers();
    test_indices();
    test_struct_sizes();
    test_struct_size_read_alone();
    test_outputs_untouched();
    test_handles();
    test_several_runtimes();
    test_concurrent_runtimes();
    test_destroy_race();
    test_stress();
    test_garbage_sweep();

    return finish("test_abi");
}
