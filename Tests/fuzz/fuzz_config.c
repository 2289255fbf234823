/*
 * fuzz_config.c — libFuzzer harness: the configuration strings vtrn_runtime_create parses.
 *
 * An input is text: a mode character, then lines
 *
 *     <mode><topology>\n<visible cores>\n<log level>\n<exec timeout>\n<fault spec>
 *
 * The mode's bits say where each goes: bit 0 topology and bit 1 visible cores through
 * vtrn_runtime_options_t (else through VTRN_TOPOLOGY / VTRN_VISIBLE_CORES), bits 2-4 whether
 * VTRN_LOG_LEVEL, VTRN_EXEC_TIMEOUT_MS and VTRN_FAULTS are set (else unset), bit 5 the options'
 * topology NULL and bit 6 their visible cores NULL (so the environment's, or the default, apply).
 * A missing line is an empty string (an empty variable counts as unset).
 *
 * When the runtime is created the harness holds it to what the header promises: the devices'
 * cores add up to the runtime's, visible cores to its visible count, every core's `visible` agrees,
 * a DMA queue opens on a visible core and not on a hidden one (VTRN_ERROR_INVALID_ARGUMENT), and
 * the canonical topology the runtime reports, given back as options.topology, makes a runtime
 * that reports the same topology and devices. A failure must be VTRN_ERROR_INVALID_ARGUMENT (or
 * out of host memory) with a message naming the option or variable.
 *
 * VTRN_FAULTS, the fault-injection spec (issue 8), is set from the fifth line already: until the
 * library reads it this changes nothing; once it does, its parser is fuzzed with no change here.
 * Seeds for it go in corpus/config (see README "Fuzzing"); FAULT_HOOK below is where to add calls
 * that exercise an armed fault (vtrn_device_inject_fault with a vtrn_fault_t decoded from the
 * input, or a kernel and a DMA transfer that a fault would hit).
 */
#include "fuzz_common.h"

#include <ctype.h>
#include <strings.h>

#define FIELDS 5

static void require(vtrn_status_t status, const char *what) {
    if (status != VTRN_SUCCESS) FUZZ_ABORT("%s: %s", what, vtrn_last_error());
}

/* Levels above warning print on every runtime: the harness keeps the quiet ones (and every
 * spelling that is not a level, for the parser's errors). */
static void quiet_log_level(char *text) {
    const char *start = text;
    while (*start == ' ' || *start == '\t') start++;
    if (strncasecmp(start, "info", 4) == 0 || strncasecmp(start, "debug", 5) == 0 || strncasecmp(start, "trace", 5) == 0)
        memcpy((char *)start, "error", start[0] == 'i' || start[0] == 'I' ? 4 : 5);
}

static void set_or_unset(const char *name, const char *value, int set) {
    if (set) setenv(name, value, 1);
    else unsetenv(name);
}

/* Checks a created runtime; returns its canonical topology in `canonical`. With a fault spec
 * armed (`faults`), opening a queue on a visible core may fail as a faulty device would. */
static void check_runtime(vtrn_runtime_t runtime, char canonical[256], uint32_t *device_count, int faults) {
    vtrn_runtime_info_t info = VTRN_RUNTIME_INFO_INIT;
    require(vtrn_runtime_get_info(runtime, &info), "vtrn_runtime_get_info");
    if (memchr(info.topology, 0, sizeof info.topology) == NULL) FUZZ_ABORT("the topology is not NUL-terminated");
    memcpy(canonical, info.topology, 256);
    uint32_t count = 0;
    require(vtrn_device_count(runtime, &count), "vtrn_device_count");
    if (count != info.device_count || count == 0 || count > 64) FUZZ_ABORT("%u devices, info says %u", count, info.device_count);
    if (info.visible_core_count > info.core_count) FUZZ_ABORT("%u visible cores of %u", info.visible_core_count, info.core_count);
    *device_count = count;

    uint32_t cores = 0, visible = 0;
    int tried_visible = 0, tried_hidden = 0;
    for (uint32_t index = 0; index < count; index++) {
        vtrn_device_t device;
        require(vtrn_device_get(runtime, index, &device), "vtrn_device_get");
        vtrn_device_info_t device_info = VTRN_DEVICE_INFO_INIT;
        require(vtrn_device_get_info(device, &device_info), "vtrn_device_get_info");
        if (device_info.first_core != cores) FUZZ_ABORT("device %u's first core is %u, not %u", index, device_info.first_core, cores);
        uint32_t device_visible = 0;
        for (uint32_t core = 0; core < device_info.core_count; core++) {
            vtrn_core_info_t core_info = VTRN_CORE_INFO_INIT;
            require(vtrn_device_get_core_info(device, core, &core_info), "vtrn_device_get_core_info");
            if (core_info.global_index != cores + core) FUZZ_ABORT("core %u of device %u is global %u", core, index, core_info.global_index);
            device_visible += core_info.visible;
            /* A queue opens on the first visible core and not on the first hidden one. */
            if ((core_info.visible && !tried_visible) || (!core_info.visible && !tried_hidden)) {
                vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
                options.core = core;
                options.ring_entries = 32;
                vtrn_dma_queue_t queue;
                vtrn_status_t status = vtrn_dma_queue_create(device, &options, &queue);
                check_status("vtrn_dma_queue_create", status);
                if (core_info.visible) {
                    tried_visible = 1;
                    if (status != VTRN_SUCCESS && !faults)
                        FUZZ_ABORT("no queue on visible core %u: %s", cores + core, vtrn_last_error());
                    if (status == VTRN_SUCCESS) require(vtrn_dma_queue_destroy(queue), "vtrn_dma_queue_destroy");
                } else {
                    tried_hidden = 1;
                    if (status != VTRN_ERROR_INVALID_ARGUMENT) FUZZ_ABORT("a queue on hidden core %u: %s", cores + core, vtrn_status_string(status));
                }
            }
        }
        if (device_visible != device_info.visible_core_count)
            FUZZ_ABORT("device %u has %u visible cores, its info says %u", index, device_visible, device_info.visible_core_count);
        cores += device_info.core_count;
        visible += device_visible;
    }
    if (cores != info.core_count || visible != info.visible_core_count)
        FUZZ_ABORT("devices have %u cores (%u visible), the runtime says %u (%u)", cores, visible, info.core_count, info.visible_core_count);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    unsetenv("VTRN_TRACE");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint8_t mode = data[0];
    /* The fields, NUL-terminated, each in a block of its exact size. A NUL byte in the input
     * ends its field early (C strings cannot hold one). */
    char *fields[FIELDS];
    size_t start = 1;
    for (int field = 0; field < FIELDS; field++) {
        size_t end = start;
        while (end < size && data[end] != '\n') end++;
        size_t length = start < size ? end - start : 0;
        fields[field] = malloc(length + 1);
        if (length) memcpy(fields[field], data + start, length);
        fields[field][length] = 0;
        start = end + 1;
    }
    quiet_log_level(fields[2]);

    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = (mode & 0x20) ? NULL : (mode & 1) ? fields[0] : NULL;
    options.visible_cores = (mode & 0x40) ? NULL : (mode & 2) ? fields[1] : NULL;
    set_or_unset("VTRN_TOPOLOGY", fields[0], !(mode & 1));
    set_or_unset("VTRN_VISIBLE_CORES", fields[1], !(mode & 2));
    set_or_unset("VTRN_LOG_LEVEL", fields[2], mode & 4);
    set_or_unset("VTRN_EXEC_TIMEOUT_MS", fields[3], mode & 8);
    set_or_unset("VTRN_FAULTS", fields[4], mode & 0x10);

    vtrn_runtime_t runtime;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    check_status("vtrn_runtime_create", status);
    if (status == VTRN_SUCCESS) {
        char canonical[256];
        uint32_t devices = 0;
        check_runtime(runtime, canonical, &devices, (mode & 0x10) && fields[4][0] != 0);
        /* FAULT_HOOK: with VTRN_FAULTS armed, work that a fault would hit goes here. */

        /* The canonical form means the same devices. */
        vtrn_runtime_options_t again = VTRN_RUNTIME_OPTIONS_INIT;
        again.topology = canonical;
        again.visible_cores = options.visible_cores;
        vtrn_runtime_t second;
        status = vtrn_runtime_create(&again, &second);
        if (status != VTRN_SUCCESS) FUZZ_ABORT("the canonical topology \"%s\" fails: %s", canonical, vtrn_last_error());
        char canonical_again[256];
        uint32_t devices_again = 0;
        vtrn_runtime_info_t info = VTRN_RUNTIME_INFO_INIT;
        require(vtrn_runtime_get_info(second, &info), "vtrn_runtime_get_info");
        memcpy(canonical_again, info.topology, sizeof canonical_again);
        require(vtrn_device_count(second, &devices_again), "vtrn_device_count");
        if (strcmp(canonical, canonical_again) != 0 || devices != devices_again)
            FUZZ_ABORT("topology \"%s\" (%u devices) reads back as \"%s\" (%u devices)", canonical, devices, canonical_again, devices_again);
        require(vtrn_runtime_destroy(second), "vtrn_runtime_destroy");
        require(vtrn_runtime_destroy(runtime), "vtrn_runtime_destroy");
    } else {
        const char *message = vtrn_last_error();
        if (status != VTRN_ERROR_INVALID_ARGUMENT && status != VTRN_ERROR_OUT_OF_HOST_MEMORY)
            FUZZ_ABORT("vtrn_runtime_create failed with %s: %s", vtrn_status_string(status), message);
        if (status == VTRN_ERROR_INVALID_ARGUMENT && strstr(message, "options.") == NULL && strstr(message, "VTRN_") == NULL)
            FUZZ_ABORT("the message names no option or variable: %s", message);
    }
    for (int field = 0; field < FIELDS; field++) free(fields[field]);
    return 0;
}
