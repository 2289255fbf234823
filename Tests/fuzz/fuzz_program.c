/*
 * fuzz_program.c — libFuzzer harness: random instruction streams through the program builders
 * and vtrn_kernel_load, executed when they load.
 *
 * An input is a header (device, core, parameters, the seed of the data in HBM) followed by
 * instruction records, each one builder call with operands from fuzz_common.h's read_access:
 * mostly plausible tiles, sometimes any field at an extreme. The program is loaded on the chosen
 * core; when it loads, every parameter is bound to device memory filled with values that include
 * NaN, infinities and integers at their limits, the kernel is executed and its fence waited for
 * (VTRN_EXEC_TIMEOUT_MS is 200, so a hang ends as VTRN_ERROR_TIMEOUT), then the outputs are read
 * back. Beyond fuzz_common.h's oracles:
 *   - validation happens at load: a kernel whose parameters are all bound to memory at least as
 *     large as declared, and that has no indirect DMA (whose indices are data), must not fail at
 *     run time with VTRN_ERROR_OUT_OF_BOUNDS;
 *   - an execution ends with its own status: success, deadlock, timeout or out of bounds;
 *   - the fence's counters are consistent with the program (no engine executes more
 *     instructions than the program has).
 */
#include "fuzz_common.h"

#define MAX_PARAMETERS 4
#define MAX_INSTRUCTIONS 64
/* HBM is backed lazily, but what a kernel touches is real: parameters up to 1 MiB get memory of
 * their size; larger ones (or, when the input says so, smaller ones) get a smaller block. */
#define MAX_BOUND_BYTES (1u << 20)

static uint32_t next_random(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (uint32_t)(*state >> 16);
}

/* Data for HBM: small numbers mostly, and the values conversions trip over. */
static void fill(uint8_t *bytes, size_t count, uint64_t seed) {
    static const uint32_t special[] = { 0x7fc00000u, 0xffc00000u, 0x7f800000u, 0xff800000u, 0x7f7fffffu, 0xff7fffffu,
                                        0x4f000000u, 0xcf000000u, 0x80000000u, 0x00000001u, 0x7fffffffu, 0xffffffffu,
                                        0x3f800000u, 0x00000000u, 0x000000ffu, 0x00000080u };
    uint64_t state = seed | 1;
    for (size_t i = 0; i + 4 <= count; i += 4) {
        uint32_t random = next_random(&state);
        uint32_t value;
        if ((random & 7) == 0) {
            value = special[(random >> 3) % 16];
        } else {
            float small = (float)((int32_t)(random >> 8) % 512) / 8.0f;
            memcpy(&value, &small, sizeof value);
        }
        memcpy(bytes + i, &value, sizeof value);
    }
}

/* FUZZ_VERBOSE=1: each call and its outcome on stderr, for reading what an input does. */
static int verbose;

static void require(vtrn_status_t status, const char *what) {
    if (status != VTRN_SUCCESS) FUZZ_ABORT("%s: %s", what, vtrn_last_error());
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    unsetenv("VTRN_TOPOLOGY");
    unsetenv("VTRN_VISIBLE_CORES");
    unsetenv("VTRN_TRACE");
    setenv("VTRN_LOG_LEVEL", "error", 1);
    setenv("VTRN_EXEC_TIMEOUT_MS", "200", 1);
    verbose = fuzz_trace = getenv("FUZZ_VERBOSE") != NULL;
    /* Runtimes that live as long as the process keep device 0 of trn1 and of trn2 (devices are the
     * process's, shared by runtimes with the same topology): each input's runtime then finds the
     * device, its core threads and their SBUF made already, instead of making them (26 MiB of
     * NaN per core) every time. They claim no core. */
    static vtrn_runtime_t anchors[2];
    const char *topologies[2] = { "trn1", "trn2" };
    for (int i = 0; i < 2; i++) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = topologies[i];
        require(vtrn_runtime_create(&options, &anchors[i]), "vtrn_runtime_create");
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const names[] = { "x", "y", "z", "w", "x", "" };
    reader_t reader = { data, size, 0 };
    uint8_t header = read_u8(&reader);
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = (header & 1) ? "trn2" : "trn1";
    vtrn_runtime_t runtime;
    require(vtrn_runtime_create(&options, &runtime), "vtrn_runtime_create");
    vtrn_device_t device;
    require(vtrn_device_get(runtime, 0, &device), "vtrn_device_get");
    uint32_t core = (header & 0x80) ? (uint32_t)read_number(&reader) : (header >> 1) % 9; /* trn1 has 2, trn2 8 */
    uint64_t seed = read_u64(&reader);

    vtrn_program_t program;
    require(vtrn_program_create(runtime, &program), "vtrn_program_create");
    uint32_t parameters = read_u8(&reader) % (MAX_PARAMETERS + 1);
    uint64_t parameter_bytes[MAX_PARAMETERS];
    const char *parameter_names[MAX_PARAMETERS];
    uint32_t declared = 0;
    for (uint32_t i = 0; i < parameters; i++) {
        uint8_t name = read_u8(&reader);
        uint64_t bytes = read_number(&reader);
        if (bytes > MAX_BOUND_BYTES && bytes < (1ull << 40)) bytes %= MAX_BOUND_BYTES + 1;
        vtrn_status_t status = vtrn_program_add_parameter(program, names[name % 6], bytes, NULL);
        check_status("vtrn_program_add_parameter", status);
        if (status == VTRN_SUCCESS) {
            parameter_names[declared] = names[name % 6];
            parameter_bytes[declared++] = bytes;
        }
    }

    int indirect = 0;
    uint32_t appended = 0;
    for (int i = 0; i < MAX_INSTRUCTIONS && !reader_done(&reader); i++) {
        const char *function;
        vtrn_status_t status = append_instruction(&reader, program, declared, &function);
        check_status(function, status);
        if (verbose) fprintf(stderr, "%s: %s %s\n", function, vtrn_status_string(status), status ? vtrn_last_error() : "");
        if (status == VTRN_SUCCESS) {
            appended++;
            /* A dma_copy_ex record with an index tile may be an indirect copy: data decides. */
            if (strcmp(function, "vtrn_program_dma_copy_ex") == 0) indirect = 1;
        }
    }
    uint32_t count = 0;
    require(vtrn_program_instruction_count(program, &count), "vtrn_program_instruction_count");
    if (count != appended) FUZZ_ABORT("the program has %u instructions; %u were appended", count, appended);

    vtrn_kernel_t kernel;
    vtrn_status_t status = vtrn_kernel_load(device, core, program, &kernel);
    check_status("vtrn_kernel_load", status);
    if (verbose) fprintf(stderr, "vtrn_kernel_load(core %u): %s %s\n", core, vtrn_status_string(status), status ? vtrn_last_error() : "");
    require(vtrn_program_destroy(program), "vtrn_program_destroy"); /* the kernel does not need it */
    if (status == VTRN_SUCCESS) {
        vtrn_device_memory_t memory[MAX_PARAMETERS];
        vtrn_binding_t bindings[MAX_PARAMETERS];
        int fully_bound = 1;
        uint8_t *bytes = NULL;
        vtrn_host_buffer_t staging = NULL;
        for (uint32_t i = 0; i < declared; i++) {
            uint64_t block = parameter_bytes[i] > MAX_BOUND_BYTES ? MAX_BOUND_BYTES : parameter_bytes[i];
            if ((seed >> i) & 0x100) block /= 2; /* smaller than declared: allowed, may fail at run time */
            if (block < parameter_bytes[i]) fully_bound = 0;
            if (block == 0) block = 1;
            require(vtrn_device_memory_alloc(device, block, 0, &memory[i]), "vtrn_device_memory_alloc");
            if (staging == NULL) {
                require(vtrn_host_buffer_create(runtime, MAX_BOUND_BYTES, NULL, &staging), "vtrn_host_buffer_create");
                require(vtrn_host_buffer_map(staging, (void **)&bytes, NULL), "vtrn_host_buffer_map");
            }
            fill(bytes, block, seed + i);
            require(vtrn_memcpy(device, vtrn_device_ref(memory[i], 0), vtrn_host_ref(staging, 0), block), "vtrn_memcpy to HBM");
            bindings[i].name = parameter_names[i];
            bindings[i].memory = memory[i];
            bindings[i].offset = 0;
        }
        vtrn_fence_t fence;
        status = vtrn_kernel_execute(kernel, bindings, declared, &fence);
        check_status("vtrn_kernel_execute", status);
        if (status == VTRN_SUCCESS) {
            vtrn_status_t outcome = vtrn_fence_wait(fence, UINT64_MAX);
            check_status("vtrn_fence_wait", outcome);
            if (verbose) fprintf(stderr, "execution: %s %s\n", vtrn_status_string(outcome), outcome ? vtrn_last_error() : "");
            if (outcome != VTRN_SUCCESS && outcome != VTRN_ERROR_DEADLOCK && outcome != VTRN_ERROR_TIMEOUT &&
                outcome != VTRN_ERROR_OUT_OF_BOUNDS)
                FUZZ_ABORT("an execution ended with %s: %s", vtrn_status_string(outcome), vtrn_last_error());
            if (outcome == VTRN_ERROR_OUT_OF_BOUNDS && fully_bound && !indirect)
                FUZZ_ABORT("a kernel that passed validation, with every parameter fully bound, ran out of bounds: %s",
                           vtrn_last_error());
            vtrn_execution_info_t info = VTRN_EXECUTION_INFO_INIT;
            require(vtrn_fence_get_info(fence, &info), "vtrn_fence_get_info");
            if (info.status != outcome) FUZZ_ABORT("the fence says %s, its wait said %s", vtrn_status_string(info.status),
                                                   vtrn_status_string(outcome));
            uint64_t executed = 0;
            for (int engine = 0; engine < 5; engine++) executed += info.instructions[engine];
            if (executed > count) FUZZ_ABORT("%llu instructions executed of a %u-instruction program", (unsigned long long)executed, count);
            for (uint32_t i = 0; i < declared; i++) {
                uint64_t block = parameter_bytes[i] > MAX_BOUND_BYTES ? MAX_BOUND_BYTES : parameter_bytes[i];
                if ((seed >> i) & 0x100) block /= 2;
                if (block == 0) block = 1;
                require(vtrn_memcpy(device, vtrn_host_ref(staging, 0), vtrn_device_ref(memory[i], 0), block), "vtrn_memcpy from HBM");
            }
            require(vtrn_fence_destroy(fence), "vtrn_fence_destroy");
        }
        require(vtrn_kernel_unload(kernel), "vtrn_kernel_unload");
    }
    require(vtrn_runtime_destroy(runtime), "vtrn_runtime_destroy");
    return 0;
}
