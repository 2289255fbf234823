/*
 * fuzz_api.c — libFuzzer harness: sequences of vtrn C API calls decoded from the fuzzer's bytes.
 *
 * Each input is a program for a small machine: a byte picks one of the header's functions (every
 * one of them), the following bytes its arguments. Handles come from tables of what earlier calls
 * of the same input made — live or destroyed — or are NULL, of another kind, garbage, crafted
 * tokens with the right magic byte, pointers to real memory, or a live token with its generation
 * or slot changed. Sizes, offsets, counts, indices and alignments come from tables of values at
 * and past every limit; enums are sometimes out of range; struct_size is sometimes wrong, and
 * every struct and string passed in sits in a heap block of exactly the size it claims, so ASan
 * catches a library that reads or writes past it. Every call is held to the oracles of
 * fuzz_common.h, and a call on a handle the input destroyed must answer VTRN_ERROR_INVALID_HANDLE.
 * Everything an input made is released at its end (the runtimes are destroyed), so inputs do not
 * depend on one another.
 *
 * What the harness keeps small on purpose, to stay fast and within libFuzzer's memory limit (the
 * limits themselves are still tried with values that must fail): host buffers up to 16 MiB (or
 * sizes no process can map), DMA rings up to 65536 entries (or sizes past the limit), and copies
 * of at most 1 MiB unless the size is one no buffer can hold. Registered memory is the harness's
 * own; a registration that claims more bytes than that is asked only what touches no data, then
 * destroyed before any copy could use it.
 */
#include "fuzz_common.h"

#include <stdbool.h>

enum kind { K_RUNTIME, K_DEVICE, K_HOST, K_MEMORY, K_QUEUE, K_PROGRAM, K_KERNEL, K_FENCE, K_COMM, KIND_COUNT };
static const char *const kind_names[KIND_COUNT] = { "runtime", "device", "host buffer", "device memory",
                                                    "DMA queue", "program", "kernel", "fence", "communicator" };
#define SLOTS 8
#define MAX_LIVE_RUNTIMES 2

typedef struct {
    void *handle;
    bool live;        /* until the harness destroys it, or its runtime */
    int runtime;      /* its runtime's slot; -1 for runtimes */
    uint64_t bytes;   /* host buffers and device memory */
    bool data_ok;     /* a host buffer whose bytes are all really there (else destroyed at once) */
    uint32_t cores;   /* devices */
} object_t;

static object_t objects[KIND_COUNT][SLOTS];
static int filled[KIND_COUNT];
static int next_slot[KIND_COUNT];

/* Memory the harness registers: freed only after the input's runtimes are destroyed. */
#define REGIONS 4
#define REGION_BYTES 8192
static uint8_t *regions[REGIONS];

static int live_runtimes(void) {
    int count = 0;
    for (int i = 0; i < filled[K_RUNTIME]; i++) count += objects[K_RUNTIME][i].live;
    return count;
}

/* Records a new handle; returns its slot. Runtimes never replace one another (objects refer to
 * their runtime's slot); other kinds replace the oldest (its runtime still owns and frees it). */
static int remember(enum kind kind, void *handle, int runtime) {
    int slot;
    if (filled[kind] < SLOTS) {
        slot = filled[kind]++;
    } else {
        slot = next_slot[kind];
        next_slot[kind] = (next_slot[kind] + 1) % SLOTS;
    }
    object_t object = { handle, true, runtime, 0, false, 0 };
    objects[kind][slot] = object;
    return slot;
}

static void forget_runtime(int runtime) {
    objects[K_RUNTIME][runtime].live = false;
    for (int kind = K_DEVICE; kind < KIND_COUNT; kind++)
        for (int i = 0; i < filled[kind]; i++)
            if (objects[kind][i].runtime == runtime) objects[kind][i].live = false;
}

/* The handle a call gets for an argument of `kind`. `picked` receives the table entry when the
 * handle is one of ours of exactly that kind (NULL otherwise). */
static void *pick(reader_t *reader, enum kind kind, object_t **picked) {
    static const uint64_t tags[KIND_COUNT] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    static int stack_variable;
    *picked = NULL;
    uint8_t mode = read_u8(reader);
    uint8_t choice = read_u8(reader);
    switch (mode % 16) {
    case 10: return NULL;
    case 11: { /* a handle of another kind */
        int other = (kind + 1 + choice % (KIND_COUNT - 1)) % KIND_COUNT;
        if (filled[other] > 0) return objects[other][read_u8(reader) % filled[other]].handle;
        return NULL;
    }
    case 12: return (void *)(uintptr_t)read_u64(reader);
    case 13: /* a well-formed token: magic byte, this kind, a small slot and generation */
        return (void *)(uintptr_t)(0x76ull << 56 | tags[kind] << 52 | (uint64_t)(choice & 7) << 32 | (choice >> 3));
    case 14: return (choice & 1) ? (void *)&stack_variable : (void *)&objects[0][0];
    case 15:
        if (filled[kind] > 0) { /* one of ours, one bit field off */
            uint64_t bits = (uint64_t)(uintptr_t)objects[kind][choice % filled[kind]].handle;
            switch (read_u8(reader) % 4) {
            case 0: bits += 1; break;                 /* generation */
            case 1: bits -= 1; break;
            case 2: bits += 1ull << 32; break;        /* slot */
            default: bits ^= 1ull << (52 + read_u8(reader) % 4); break; /* kind */
            }
            return (void *)(uintptr_t)bits;
        }
        return NULL;
    default:
        if (filled[kind] == 0) return NULL;
        *picked = &objects[kind][choice % filled[kind]];
        return (*picked)->handle;
    }
}

/* A handle the input destroyed must be refused as such (the first handle of every function is
 * looked up before anything else is checked). */
static void expect_invalid_handle(const char *function, vtrn_status_t status, const object_t *picked, enum kind kind) {
    if (picked != NULL && !picked->live && status != VTRN_ERROR_INVALID_HANDLE)
        FUZZ_ABORT("%s on a destroyed %s returned %s, not VTRN_ERROR_INVALID_HANDLE", function, kind_names[kind],
                   vtrn_status_string(status));
}

#define HANDLE_SENTINEL ((void *)(uintptr_t)0x5e47141e15e47141ull)

/* An out-parameter: usually real, sometimes NULL. */
#define OUT(reader, variable) (read_u8(reader) < 16 ? NULL : &(variable))

/* On failure, an out-handle must be as it was. */
static void expect_untouched(const char *function, vtrn_status_t status, void *value) {
    if (status != VTRN_SUCCESS && value != HANDLE_SENTINEL)
        FUZZ_ABORT("%s failed with %s but wrote its out-parameter", function, vtrn_status_string(status));
}

/* An output struct: struct_size from the fuzzer, the rest a pattern; NULL sometimes. On failure
 * the block must be unchanged; on success struct_size must be as given. */
typedef struct {
    void *block;
    void *copy;
    size_t bytes;
    size_t struct_size;
} output_t;

static output_t output_struct(reader_t *reader, size_t size) {
    output_t output = { NULL, NULL, 0, 0 };
    if (read_u8(reader) < 8) return output;
    output.struct_size = read_struct_size(reader, size);
    output.bytes = output.struct_size < sizeof(size_t) ? sizeof(size_t) : output.struct_size > size ? size : output.struct_size;
    output.block = malloc(output.bytes);
    memset(output.block, 0xa5, output.bytes);
    memcpy(output.block, &output.struct_size, sizeof(size_t));
    output.copy = malloc(output.bytes);
    memcpy(output.copy, output.block, output.bytes);
    return output;
}

static void finish_output(const char *function, vtrn_status_t status, output_t *output) {
    if (output->block != NULL) {
        if (status != VTRN_SUCCESS && memcmp(output->block, output->copy, output->bytes) != 0)
            FUZZ_ABORT("%s failed with %s but wrote its output struct", function, vtrn_status_string(status));
        size_t written;
        memcpy(&written, output->block, sizeof written);
        if (status == VTRN_SUCCESS && written != output->struct_size)
            FUZZ_ABORT("%s changed struct_size from %zu to %zu", function, output->struct_size, written);
    }
    free(output->block);
    free(output->copy);
}

static const char *const topologies[] = { "trn1", "trn2", "trn1:2", "trn1,trn2", "trn2,trn1", " trn1 ", "",
                                          "trn3", "trn1:0", "trn1:65", "trn2:64", "trn1@node0", "trn1@node9",
                                          "trn1:64,trn1", "TRN2", "trn1:", ",", "trn1,,trn2" };
static const char *const core_lists[] = { "0", "1", "0-1", "0,1", "1-0", "2", "0-9", " 0 ", "", "-", "0-",
                                          "99999999999999999999", "0,0,0", "5-6", "0-7" };

/* Most copies stay under 1 MiB; a size past any buffer is kept, to be refused. */
static uint64_t transfer_bytes(reader_t *reader) {
    uint64_t bytes = read_number(reader);
    if (bytes > (1u << 20) && bytes < (1ull << 40)) bytes %= (1u << 20) + 1;
    return bytes;
}

/* One end of a copy; `picked` receives our table entry for it, if it is one of ours. */
static vtrn_memory_ref_t read_ref(reader_t *reader, object_t **picked) {
    vtrn_memory_ref_t ref;
    uint8_t mode = read_u8(reader);
    ref.memory = pick(reader, (mode & 1) ? K_MEMORY : K_HOST, picked);
    ref.offset = (mode & 6) == 0 && *picked != NULL ? (*picked)->bytes - (read_u8(reader) % 4) : read_number(reader);
    return ref;
}

/* ---- the operations ------------------------------------------------------------------------- */

static void op_runtime_create(reader_t *reader) {
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    uint8_t mode = read_u8(reader);
    char *topology = NULL, *visible = NULL;
    if (mode & 1) {
        topology = (mode & 4) ? read_string(reader) : exact_string(topologies[read_u8(reader) % (sizeof topologies / sizeof topologies[0])]);
        options.topology = topology;
    } else {
        options.topology = read_u8(reader) & 1 ? "trn2" : "trn1"; /* not the environment's */
    }
    if (mode & 2) {
        visible = (mode & 8) ? read_string(reader) : exact_string(core_lists[read_u8(reader) % (sizeof core_lists / sizeof core_lists[0])]);
        options.visible_cores = visible;
    }
    /* Levels above warning print to stderr on every call: only the quiet ones, or invalid ones. */
    uint32_t level = read_enum(reader, VTRN_LOG_LEVEL_DEFAULT, 3);
    options.log_level = (vtrn_log_level_t)(level >= 3 && level <= 5 ? 2 : level);
    options.struct_size = read_struct_size(reader, sizeof options);
    void *block = (mode & 16) ? NULL : exact_block(&options, sizeof options, options.struct_size);
    vtrn_runtime_t runtime = HANDLE_SENTINEL;
    /* With two runtimes live, only calls that must fail (a NULL out) are made. */
    bool room = live_runtimes() < MAX_LIVE_RUNTIMES && filled[K_RUNTIME] < SLOTS;
    vtrn_runtime_t *out = room ? OUT(reader, runtime) : NULL;
    vtrn_status_t status = vtrn_runtime_create(block, out);
    check_status("vtrn_runtime_create", status);
    expect_untouched("vtrn_runtime_create", status, runtime);
    if (status == VTRN_SUCCESS) {
        if (out == NULL) FUZZ_ABORT("vtrn_runtime_create succeeded with a NULL out");
        int slot = remember(K_RUNTIME, runtime, -1);
        uint32_t count = 0;
        if (vtrn_device_count(runtime, &count) != VTRN_SUCCESS || count == 0 || count > 64)
            FUZZ_ABORT("a new runtime has %u devices: %s", count, vtrn_last_error());
        for (uint32_t index = 0; index < count && index < 4; index++) {
            vtrn_device_t device;
            if (vtrn_device_get(runtime, index, &device) != VTRN_SUCCESS) FUZZ_ABORT("vtrn_device_get: %s", vtrn_last_error());
            vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
            if (vtrn_device_get_info(device, &info) != VTRN_SUCCESS) FUZZ_ABORT("vtrn_device_get_info: %s", vtrn_last_error());
            int device_slot = remember(K_DEVICE, device, slot);
            objects[K_DEVICE][device_slot].cores = info.core_count;
        }
    }
    free(block);
    free(topology);
    free(visible);
}

static void op_runtime_destroy(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    vtrn_status_t status = vtrn_runtime_destroy(runtime);
    check_status("vtrn_runtime_destroy", status);
    expect_invalid_handle("vtrn_runtime_destroy", status, picked, K_RUNTIME);
    if (runtime == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_runtime_destroy(NULL) returned %s", vtrn_status_string(status));
    if (status == VTRN_SUCCESS && runtime != NULL) {
        bool found = false;
        for (int i = 0; i < filled[K_RUNTIME]; i++)
            if (objects[K_RUNTIME][i].handle == runtime && objects[K_RUNTIME][i].live) {
                forget_runtime(i);
                found = true;
            }
        if (!found) FUZZ_ABORT("vtrn_runtime_destroy accepted %p, which is no live runtime", runtime);
    }
}

static void op_runtime_get_info(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    output_t output = output_struct(reader, sizeof(vtrn_runtime_info_t));
    vtrn_status_t status = vtrn_runtime_get_info(runtime, output.block);
    check_status("vtrn_runtime_get_info", status);
    expect_invalid_handle("vtrn_runtime_get_info", status, picked, K_RUNTIME);
    if (status == VTRN_SUCCESS && output.bytes >= sizeof(vtrn_runtime_info_t)) {
        const vtrn_runtime_info_t *info = output.block;
        if (memchr(info->topology, 0, sizeof info->topology) == NULL) FUZZ_ABORT("runtime topology is not NUL-terminated");
        if (info->visible_core_count > info->core_count) FUZZ_ABORT("more visible cores than cores");
    }
    finish_output("vtrn_runtime_get_info", status, &output);
}

static void op_device_count(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    uint32_t count = 0xdeadbeef;
    vtrn_status_t status = vtrn_device_count(runtime, OUT(reader, count));
    check_status("vtrn_device_count", status);
    expect_invalid_handle("vtrn_device_count", status, picked, K_RUNTIME);
    if (status != VTRN_SUCCESS && count != 0xdeadbeef) FUZZ_ABORT("vtrn_device_count failed but wrote count");
}

static void op_device_get(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    uint32_t index = read_u8(reader) < 200 ? read_u8(reader) % 4 : (uint32_t)read_number(reader);
    vtrn_device_t device = HANDLE_SENTINEL;
    vtrn_device_t *out = OUT(reader, device);
    vtrn_status_t status = vtrn_device_get(runtime, index, out);
    check_status("vtrn_device_get", status);
    expect_invalid_handle("vtrn_device_get", status, picked, K_RUNTIME);
    expect_untouched("vtrn_device_get", status, device);
    if (status == VTRN_SUCCESS && picked != NULL) {
        vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
        if (vtrn_device_get_info(device, &info) != VTRN_SUCCESS) FUZZ_ABORT("vtrn_device_get_info: %s", vtrn_last_error());
        if (info.index != index) FUZZ_ABORT("device %u reports index %u", index, info.index);
        int slot = remember(K_DEVICE, device, (int)(picked - objects[K_RUNTIME]));
        objects[K_DEVICE][slot].cores = info.core_count;
    }
}

static void op_device_get_info(reader_t *reader) {
    object_t *picked;
    vtrn_device_t device = pick(reader, K_DEVICE, &picked);
    output_t output = output_struct(reader, sizeof(vtrn_device_info_t));
    vtrn_status_t status = vtrn_device_get_info(device, output.block);
    check_status("vtrn_device_get_info", status);
    expect_invalid_handle("vtrn_device_get_info", status, picked, K_DEVICE);
    finish_output("vtrn_device_get_info", status, &output);
}

static void op_device_get_core_info(reader_t *reader) {
    object_t *picked;
    vtrn_device_t device = pick(reader, K_DEVICE, &picked);
    uint32_t core = read_u8(reader) < 200 ? read_u8(reader) % 10 : (uint32_t)read_number(reader);
    output_t output = output_struct(reader, sizeof(vtrn_core_info_t));
    vtrn_status_t status = vtrn_device_get_core_info(device, core, output.block);
    check_status("vtrn_device_get_core_info", status);
    expect_invalid_handle("vtrn_device_get_core_info", status, picked, K_DEVICE);
    finish_output("vtrn_device_get_core_info", status, &output);
}

static void op_host_buffer_create(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    uint64_t bytes = read_number(reader);
    /* Pages are committed at once: keep real sizes small, and pass on only sizes no process maps. */
    if (bytes > (16u << 20) && bytes < (1ull << 47)) bytes %= (16u << 20) + 1;
    vtrn_host_buffer_options_t options = VTRN_HOST_BUFFER_OPTIONS_INIT;
    options.placement = (vtrn_numa_placement_t)read_enum(reader, VTRN_NUMA_DEVICE_LOCAL, 4);
    options.device = read_u8(reader) < 224 ? read_u8(reader) % 3 : (uint32_t)read_number(reader);
    options.numa_node = read_u8(reader) < 224 ? (int8_t)read_u8(reader) % 3 : (int32_t)read_u32(reader);
    uint8_t flags = read_u8(reader);
    options.flags = flags < 240 ? flags & 3 : read_u32(reader);
    options.struct_size = read_struct_size(reader, sizeof options);
    void *block = read_u8(reader) < 32 ? NULL : exact_block(&options, sizeof options, options.struct_size);
    vtrn_host_buffer_t buffer = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_host_buffer_create(runtime, (size_t)bytes, block, OUT(reader, buffer));
    check_status("vtrn_host_buffer_create", status);
    expect_invalid_handle("vtrn_host_buffer_create", status, picked, K_RUNTIME);
    expect_untouched("vtrn_host_buffer_create", status, buffer);
    if (status == VTRN_SUCCESS && picked != NULL) {
        int slot = remember(K_HOST, buffer, (int)(picked - objects[K_RUNTIME]));
        objects[K_HOST][slot].bytes = bytes;
        objects[K_HOST][slot].data_ok = true;
        void *data = NULL;
        size_t size = 0;
        if (vtrn_host_buffer_map(buffer, &data, &size) != VTRN_SUCCESS || size != bytes)
            FUZZ_ABORT("vtrn_host_buffer_map of a new buffer: %s", vtrn_last_error());
        ((volatile uint8_t *)data)[0] = 1; /* the first and last bytes are really there */
        ((volatile uint8_t *)data)[size - 1] = 2;
    }
    free(block);
}

static void op_host_buffer_register(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    uint8_t mode = read_u8(reader);
    int region = mode % REGIONS;
    if (regions[region] == NULL) regions[region] = calloc(1, REGION_BYTES);
    uint64_t offset = read_u16(reader) % REGION_BYTES;
    void *pointer = (mode & 0x80) ? NULL : (mode & 0x40) ? (void *)(uintptr_t)read_u64(reader) : regions[region] + offset;
    uint64_t bytes = read_number(reader);
    bool data_ok = pointer == regions[region] + offset && bytes <= REGION_BYTES - offset;
    vtrn_host_buffer_t buffer = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_host_buffer_register(runtime, pointer, (size_t)bytes, OUT(reader, buffer));
    check_status("vtrn_host_buffer_register", status);
    expect_invalid_handle("vtrn_host_buffer_register", status, picked, K_RUNTIME);
    expect_untouched("vtrn_host_buffer_register", status, buffer);
    if (status == VTRN_SUCCESS && picked != NULL) {
        int slot = remember(K_HOST, buffer, (int)(picked - objects[K_RUNTIME]));
        objects[K_HOST][slot].bytes = bytes;
        objects[K_HOST][slot].data_ok = data_ok;
        if (!data_ok) {
            /* It claims memory the harness does not own: ask what touches no data, then destroy
             * it before any copy could name it. */
            int32_t node;
            uint32_t count = 0;
            vtrn_host_buffer_info_t info = VTRN_HOST_BUFFER_INFO_INIT;
            check_status("vtrn_host_buffer_numa_node", vtrn_host_buffer_numa_node(buffer, &node));
            check_status("vtrn_host_buffer_node_pages", vtrn_host_buffer_node_pages(buffer, NULL, &count));
            check_status("vtrn_host_buffer_get_info", vtrn_host_buffer_get_info(buffer, &info));
            if (vtrn_host_buffer_destroy(buffer) != VTRN_SUCCESS) FUZZ_ABORT("vtrn_host_buffer_destroy: %s", vtrn_last_error());
            objects[K_HOST][slot].live = false;
        }
    }
}

static void op_host_buffer_map(reader_t *reader) {
    object_t *picked;
    vtrn_host_buffer_t buffer = pick(reader, K_HOST, &picked);
    void *data = HANDLE_SENTINEL;
    size_t bytes = 0x5e47141e;
    uint8_t mode = read_u8(reader);
    vtrn_status_t status = vtrn_host_buffer_map(buffer, (mode & 1) ? NULL : &data, (mode & 2) ? NULL : &bytes);
    check_status("vtrn_host_buffer_map", status);
    expect_invalid_handle("vtrn_host_buffer_map", status, picked, K_HOST);
    expect_untouched("vtrn_host_buffer_map", status, data);
    if (status == VTRN_SUCCESS && picked != NULL && !(mode & 2) && bytes != picked->bytes)
        FUZZ_ABORT("vtrn_host_buffer_map reports %zu bytes of a %llu-byte buffer", bytes, (unsigned long long)picked->bytes);
}

static void op_host_buffer_numa_node(reader_t *reader) {
    object_t *picked;
    vtrn_host_buffer_t buffer = pick(reader, K_HOST, &picked);
    int32_t node = 0x5e47141e;
    vtrn_status_t status = vtrn_host_buffer_numa_node(buffer, OUT(reader, node));
    check_status("vtrn_host_buffer_numa_node", status);
    expect_invalid_handle("vtrn_host_buffer_numa_node", status, picked, K_HOST);
    if (status != VTRN_SUCCESS && node != 0x5e47141e) FUZZ_ABORT("vtrn_host_buffer_numa_node failed but wrote node");
}

static void op_host_buffer_node_pages(reader_t *reader) {
    object_t *picked;
    vtrn_host_buffer_t buffer = pick(reader, K_HOST, &picked);
    uint8_t mode = read_u8(reader);
    uint32_t capacity = mode % 4;
    uint64_t *pages = (mode & 0x80) ? NULL : calloc(capacity ? capacity : 1, sizeof *pages);
    uint32_t count = capacity;
    vtrn_status_t status = vtrn_host_buffer_node_pages(buffer, pages, (mode & 0x40) ? NULL : &count);
    check_status("vtrn_host_buffer_node_pages", status);
    expect_invalid_handle("vtrn_host_buffer_node_pages", status, picked, K_HOST);
    free(pages);
}

static void op_host_buffer_get_info(reader_t *reader) {
    object_t *picked;
    vtrn_host_buffer_t buffer = pick(reader, K_HOST, &picked);
    output_t output = output_struct(reader, sizeof(vtrn_host_buffer_info_t));
    vtrn_status_t status = vtrn_host_buffer_get_info(buffer, output.block);
    check_status("vtrn_host_buffer_get_info", status);
    expect_invalid_handle("vtrn_host_buffer_get_info", status, picked, K_HOST);
    finish_output("vtrn_host_buffer_get_info", status, &output);
}

static void op_host_buffer_destroy(reader_t *reader) {
    object_t *picked;
    vtrn_host_buffer_t buffer = pick(reader, K_HOST, &picked);
    vtrn_status_t status = vtrn_host_buffer_destroy(buffer);
    check_status("vtrn_host_buffer_destroy", status);
    expect_invalid_handle("vtrn_host_buffer_destroy", status, picked, K_HOST);
    if (buffer == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_host_buffer_destroy(NULL) failed");
    if (status == VTRN_SUCCESS && picked != NULL) picked->live = false;
}

static void op_device_memory_alloc(reader_t *reader) {
    object_t *picked;
    vtrn_device_t device = pick(reader, K_DEVICE, &picked);
    uint64_t bytes = read_number(reader); /* HBM is backed lazily: any size costs nothing */
    uint64_t alignment = read_u8(reader) < 160 ? 0 : read_number(reader);
    vtrn_device_memory_t memory = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_device_memory_alloc(device, bytes, alignment, OUT(reader, memory));
    check_status("vtrn_device_memory_alloc", status);
    expect_invalid_handle("vtrn_device_memory_alloc", status, picked, K_DEVICE);
    expect_untouched("vtrn_device_memory_alloc", status, memory);
    if (status == VTRN_SUCCESS && picked != NULL) {
        vtrn_device_memory_info_t info = VTRN_DEVICE_MEMORY_INFO_INIT;
        if (vtrn_device_memory_get_info(memory, &info) != VTRN_SUCCESS) FUZZ_ABORT("vtrn_device_memory_get_info: %s", vtrn_last_error());
        if (info.bytes != bytes) FUZZ_ABORT("memory of %llu bytes reports %llu", (unsigned long long)bytes, (unsigned long long)info.bytes);
        uint64_t in_force = alignment ? alignment : 64;
        if (info.address % in_force != 0) FUZZ_ABORT("address 0x%llx is not aligned to %llu", (unsigned long long)info.address,
                                                     (unsigned long long)in_force);
        int slot = remember(K_MEMORY, memory, picked->runtime);
        objects[K_MEMORY][slot].bytes = bytes;
    }
}

static void op_device_memory_free(reader_t *reader) {
    object_t *picked;
    vtrn_device_memory_t memory = pick(reader, K_MEMORY, &picked);
    vtrn_status_t status = vtrn_device_memory_free(memory);
    check_status("vtrn_device_memory_free", status);
    expect_invalid_handle("vtrn_device_memory_free", status, picked, K_MEMORY);
    if (memory == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_device_memory_free(NULL) failed");
    if (status == VTRN_SUCCESS && picked != NULL) picked->live = false;
}

static void op_device_memory_get_info(reader_t *reader) {
    object_t *picked;
    vtrn_device_memory_t memory = pick(reader, K_MEMORY, &picked);
    output_t output = output_struct(reader, sizeof(vtrn_device_memory_info_t));
    vtrn_status_t status = vtrn_device_memory_get_info(memory, output.block);
    check_status("vtrn_device_memory_get_info", status);
    expect_invalid_handle("vtrn_device_memory_get_info", status, picked, K_MEMORY);
    finish_output("vtrn_device_memory_get_info", status, &output);
}

static void op_device_get_memory_usage(reader_t *reader) {
    object_t *picked;
    vtrn_device_t device = pick(reader, K_DEVICE, &picked);
    output_t output = output_struct(reader, sizeof(vtrn_memory_usage_t));
    vtrn_status_t status = vtrn_device_get_memory_usage(device, output.block);
    check_status("vtrn_device_get_memory_usage", status);
    expect_invalid_handle("vtrn_device_get_memory_usage", status, picked, K_DEVICE);
    if (status == VTRN_SUCCESS && output.bytes >= sizeof(vtrn_memory_usage_t)) {
        const vtrn_memory_usage_t *usage = output.block;
        if (usage->used_bytes + usage->free_bytes != usage->total_bytes || usage->largest_free_block > usage->free_bytes)
            FUZZ_ABORT("memory usage does not add up: used %llu + free %llu != total %llu, largest %llu",
                       (unsigned long long)usage->used_bytes, (unsigned long long)usage->free_bytes,
                       (unsigned long long)usage->total_bytes, (unsigned long long)usage->largest_free_block);
    }
    finish_output("vtrn_device_get_memory_usage", status, &output);
}

static void op_dma_queue_create(reader_t *reader) {
    object_t *picked;
    vtrn_device_t device = pick(reader, K_DEVICE, &picked);
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.core = read_u8(reader) < 224 ? read_u8(reader) % 9 : (uint32_t)read_number(reader);
    options.engine = read_u8(reader) < 224 ? read_u8(reader) % 17 : (uint32_t)read_number(reader);
    options.queue = read_u8(reader) < 224 ? read_u8(reader) % 17 : (uint32_t)read_number(reader);
    uint64_t entries = read_u8(reader) < 128 ? 32u << (read_u8(reader) % 8) : read_number(reader);
    /* A ring costs 32 bytes an entry, written at creation: keep valid sizes at most 65536. */
    if (entries > 65536 && entries <= VTRN_DMA_MAX_RING_ENTRIES) entries = 65536;
    options.ring_entries = (uint32_t)entries;
    options.struct_size = read_struct_size(reader, sizeof options);
    void *block = read_u8(reader) < 16 ? NULL : exact_block(&options, sizeof options, options.struct_size);
    vtrn_dma_queue_t queue = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_dma_queue_create(device, block, OUT(reader, queue));
    check_status("vtrn_dma_queue_create", status);
    expect_invalid_handle("vtrn_dma_queue_create", status, picked, K_DEVICE);
    expect_untouched("vtrn_dma_queue_create", status, queue);
    if (status == VTRN_SUCCESS && picked != NULL) remember(K_QUEUE, queue, picked->runtime);
    free(block);
}

static void op_dma_queue_enqueue(reader_t *reader) {
    object_t *picked;
    vtrn_dma_queue_t queue = pick(reader, K_QUEUE, &picked);
    uint8_t mode = read_u8(reader);
    uint32_t count = mode < 200 ? mode % 5 : mode < 250 ? 1 + read_u16(reader) % 5000 : read_u32(reader);
    uint32_t distinct = count < 4 ? count : 4;
    vtrn_dma_transfer_t *transfers = NULL;
    bool null_array = count > 5000 || (mode & 0x10 && read_u8(reader) < 16);
    if (!null_array) {
        transfers = malloc((count ? count : 1) * sizeof *transfers);
        for (uint32_t i = 0; i < distinct; i++) {
            object_t *dst_object, *src_object;
            transfers[i].dst = read_ref(reader, &dst_object);
            transfers[i].src = read_ref(reader, &src_object);
            transfers[i].bytes = transfer_bytes(reader);
        }
        for (uint32_t i = distinct; i < count; i++) transfers[i] = transfers[i % distinct];
    }
    vtrn_status_t status = vtrn_dma_queue_enqueue(queue, transfers, count);
    check_status("vtrn_dma_queue_enqueue", status);
    expect_invalid_handle("vtrn_dma_queue_enqueue", status, picked, K_QUEUE);
    free(transfers);
}

static void op_dma_queue_submit(reader_t *reader) {
    object_t *picked;
    vtrn_dma_queue_t queue = pick(reader, K_QUEUE, &picked);
    uint64_t sequence = 0x5e47141e;
    vtrn_status_t status = vtrn_dma_queue_submit(queue, read_u8(reader) < 32 ? NULL : &sequence);
    check_status("vtrn_dma_queue_submit", status);
    expect_invalid_handle("vtrn_dma_queue_submit", status, picked, K_QUEUE);
    if (status != VTRN_SUCCESS && sequence != 0x5e47141e) FUZZ_ABORT("vtrn_dma_queue_submit failed but wrote sequence");
}

static void op_dma_queue_wait(reader_t *reader) {
    object_t *picked;
    vtrn_dma_queue_t queue = pick(reader, K_QUEUE, &picked);
    uint64_t sequence = read_u8(reader) < 200 ? read_u8(reader) % 4 : read_number(reader);
    static const uint64_t timeouts[] = { 0, 1, 1000, 1000000, 100000000, UINT64_MAX };
    uint64_t timeout = timeouts[read_u8(reader) % 6];
    vtrn_status_t status = vtrn_dma_queue_wait(queue, sequence, timeout);
    check_status("vtrn_dma_queue_wait", status);
    expect_invalid_handle("vtrn_dma_queue_wait", status, picked, K_QUEUE);
    if (status == VTRN_NOT_READY && timeout != 0) FUZZ_ABORT("vtrn_dma_queue_wait returned VTRN_NOT_READY with a timeout");
}

static void op_dma_queue_completed(reader_t *reader) {
    object_t *picked;
    vtrn_dma_queue_t queue = pick(reader, K_QUEUE, &picked);
    uint64_t sequence = 0x5e47141e;
    vtrn_status_t status = vtrn_dma_queue_completed(queue, OUT(reader, sequence));
    check_status("vtrn_dma_queue_completed", status);
    expect_invalid_handle("vtrn_dma_queue_completed", status, picked, K_QUEUE);
    if (status != VTRN_SUCCESS && sequence != 0x5e47141e) FUZZ_ABORT("vtrn_dma_queue_completed failed but wrote sequence");
}

static void op_dma_queue_get_info(reader_t *reader) {
    object_t *picked;
    vtrn_dma_queue_t queue = pick(reader, K_QUEUE, &picked);
    output_t output = output_struct(reader, sizeof(vtrn_dma_queue_info_t));
    vtrn_status_t status = vtrn_dma_queue_get_info(queue, output.block);
    check_status("vtrn_dma_queue_get_info", status);
    expect_invalid_handle("vtrn_dma_queue_get_info", status, picked, K_QUEUE);
    if (status == VTRN_SUCCESS && output.bytes >= sizeof(vtrn_dma_queue_info_t)) {
        const vtrn_dma_queue_info_t *info = output.block;
        if (info->completed_sequence > info->submitted_sequence || info->free_entries > info->ring_entries)
            FUZZ_ABORT("DMA queue info is inconsistent: completed %llu > submitted %llu, or free %u > ring %u",
                       (unsigned long long)info->completed_sequence, (unsigned long long)info->submitted_sequence,
                       info->free_entries, info->ring_entries);
    }
    finish_output("vtrn_dma_queue_get_info", status, &output);
}

static void op_dma_queue_destroy(reader_t *reader) {
    object_t *picked;
    vtrn_dma_queue_t queue = pick(reader, K_QUEUE, &picked);
    vtrn_status_t status = vtrn_dma_queue_destroy(queue);
    check_status("vtrn_dma_queue_destroy", status);
    expect_invalid_handle("vtrn_dma_queue_destroy", status, picked, K_QUEUE);
    if (queue == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_dma_queue_destroy(NULL) failed");
    if (status == VTRN_SUCCESS && picked != NULL) picked->live = false;
}

static void op_memcpy(reader_t *reader) {
    object_t *picked;
    vtrn_device_t device = pick(reader, K_DEVICE, &picked);
    object_t *dst_object, *src_object;
    vtrn_memory_ref_t dst = read_ref(reader, &dst_object);
    vtrn_memory_ref_t src = read_ref(reader, &src_object);
    uint64_t bytes = transfer_bytes(reader);
    vtrn_status_t status = vtrn_memcpy(device, dst, src, bytes);
    check_status("vtrn_memcpy", status);
    expect_invalid_handle("vtrn_memcpy", status, picked, K_DEVICE);
}

static void op_program_create(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    vtrn_program_t program = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_program_create(runtime, OUT(reader, program));
    check_status("vtrn_program_create", status);
    expect_invalid_handle("vtrn_program_create", status, picked, K_RUNTIME);
    expect_untouched("vtrn_program_create", status, program);
    if (status == VTRN_SUCCESS && picked != NULL) remember(K_PROGRAM, program, (int)(picked - objects[K_RUNTIME]));
}

static void op_program_destroy(reader_t *reader) {
    object_t *picked;
    vtrn_program_t program = pick(reader, K_PROGRAM, &picked);
    vtrn_status_t status = vtrn_program_destroy(program);
    check_status("vtrn_program_destroy", status);
    expect_invalid_handle("vtrn_program_destroy", status, picked, K_PROGRAM);
    if (program == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_program_destroy(NULL) failed");
    if (status == VTRN_SUCCESS && picked != NULL) picked->live = false;
}

static void op_program_add_parameter(reader_t *reader) {
    static const char *const names[] = { "x", "y", "a_parameter", "", "x" /* twice */,
                                         "a-name-of-exactly-sixty-three-bytes-which-is-the-most-allowed-", /* 63 */
                                         "a-name-of-exactly-sixty-four-bytes-which-is-one-past-the-limit-x" /* 64 */ };
    object_t *picked;
    vtrn_program_t program = pick(reader, K_PROGRAM, &picked);
    uint8_t mode = read_u8(reader);
    char *name = (mode & 0x80) ? NULL : (mode & 0x40) ? read_string(reader) : exact_string(names[mode % 7]);
    uint32_t index = 0x5e47141e;
    vtrn_status_t status = vtrn_program_add_parameter(program, name, read_number(reader), read_u8(reader) < 32 ? NULL : &index);
    check_status("vtrn_program_add_parameter", status);
    expect_invalid_handle("vtrn_program_add_parameter", status, picked, K_PROGRAM);
    if (status != VTRN_SUCCESS && index != 0x5e47141e) FUZZ_ABORT("vtrn_program_add_parameter failed but wrote index");
    free(name);
}

static void op_program_instruction_count(reader_t *reader) {
    object_t *picked;
    vtrn_program_t program = pick(reader, K_PROGRAM, &picked);
    uint32_t count = 0x5e47141e;
    vtrn_status_t status = vtrn_program_instruction_count(program, OUT(reader, count));
    check_status("vtrn_program_instruction_count", status);
    expect_invalid_handle("vtrn_program_instruction_count", status, picked, K_PROGRAM);
}

/* One builder call, any of them (fuzz_common.h's append_instruction). */
static void op_program_build(reader_t *reader) {
    object_t *picked;
    vtrn_program_t program = pick(reader, K_PROGRAM, &picked);
    const char *function;
    vtrn_status_t status = append_instruction(reader, program, 3, &function);
    check_status(function, status);
    expect_invalid_handle(function, status, picked, K_PROGRAM);
}

/* A program that loads and runs: parameter "x" (4 KiB) through SBUF and back, so that executions
 * and fences are reached often. */
static void op_program_valid(reader_t *reader) {
    object_t *picked;
    vtrn_program_t program = pick(reader, K_PROGRAM, &picked);
    uint32_t x = 0;
    if (vtrn_program_add_parameter(program, "x", 4096, &x) != VTRN_SUCCESS) x = 0;
    vtrn_access_t tile = vtrn_sbuf(0, 8, 0, VTRN_DTYPE_FP32, 128);
    vtrn_access_t hbm = vtrn_hbm(x, 0, VTRN_DTYPE_FP32, 8, 128, 128);
    vtrn_sync_t loaded = VTRN_SYNC_NONE;
    loaded.signal_semaphore = 0;
    loaded.signal_value = 1;
    vtrn_sync_t after = VTRN_SYNC_NONE;
    after.wait_semaphore = 0;
    after.wait_value = 1;
    vtrn_status_t status = vtrn_program_dma_copy(program, tile, hbm, &loaded);
    check_status("vtrn_program_dma_copy", status);
    expect_invalid_handle("vtrn_program_dma_copy", status, picked, K_PROGRAM);
    status = vtrn_program_dma_copy(program, hbm, tile, &after);
    check_status("vtrn_program_dma_copy", status);
}

static void op_kernel_load(reader_t *reader) {
    object_t *picked, *picked_program;
    vtrn_device_t device = pick(reader, K_DEVICE, &picked);
    uint32_t core = read_u8(reader) < 224 ? read_u8(reader) % 9 : (uint32_t)read_number(reader);
    vtrn_program_t program = pick(reader, K_PROGRAM, &picked_program);
    vtrn_kernel_t kernel = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_kernel_load(device, core, program, OUT(reader, kernel));
    check_status("vtrn_kernel_load", status);
    expect_invalid_handle("vtrn_kernel_load", status, picked, K_DEVICE);
    if (picked != NULL && picked->live) expect_invalid_handle("vtrn_kernel_load", status, picked_program, K_PROGRAM);
    expect_untouched("vtrn_kernel_load", status, kernel);
    if (status == VTRN_SUCCESS && picked != NULL) remember(K_KERNEL, kernel, picked->runtime);
}

static void op_kernel_unload(reader_t *reader) {
    object_t *picked;
    vtrn_kernel_t kernel = pick(reader, K_KERNEL, &picked);
    vtrn_status_t status = vtrn_kernel_unload(kernel);
    check_status("vtrn_kernel_unload", status);
    expect_invalid_handle("vtrn_kernel_unload", status, picked, K_KERNEL);
    if (kernel == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_kernel_unload(NULL) failed");
    if (status == VTRN_SUCCESS && picked != NULL) picked->live = false;
}

static void op_kernel_execute(reader_t *reader) {
    static const char *const names[] = { "x", "y", "a_parameter", "" };
    object_t *picked;
    vtrn_kernel_t kernel = pick(reader, K_KERNEL, &picked);
    uint8_t mode = read_u8(reader);
    uint32_t count = mode % 4;
    vtrn_binding_t *bindings = (mode & 0x80) ? NULL : malloc((count ? count : 1) * sizeof *bindings);
    char *strings[3] = { NULL, NULL, NULL };
    for (uint32_t i = 0; bindings && i < count; i++) {
        object_t *memory;
        uint8_t name = read_u8(reader);
        strings[i] = name & 0x80 ? NULL : name & 0x40 ? read_string(reader) : exact_string(names[name % 4]);
        bindings[i].name = strings[i];
        bindings[i].memory = pick(reader, K_MEMORY, &memory);
        bindings[i].offset = read_u8(reader) < 200 ? 0 : read_number(reader);
    }
    vtrn_fence_t fence = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_kernel_execute(kernel, bindings, count, OUT(reader, fence));
    check_status("vtrn_kernel_execute", status);
    expect_invalid_handle("vtrn_kernel_execute", status, picked, K_KERNEL);
    expect_untouched("vtrn_kernel_execute", status, fence);
    if (status == VTRN_SUCCESS && picked != NULL) remember(K_FENCE, fence, picked->runtime);
    for (int i = 0; i < 3; i++) free(strings[i]);
    free(bindings);
}

static void op_fence_wait(reader_t *reader) {
    object_t *picked;
    vtrn_fence_t fence = pick(reader, K_FENCE, &picked);
    static const uint64_t timeouts[] = { 0, 1, 1000000, 50000000, UINT64_MAX };
    uint64_t timeout = timeouts[read_u8(reader) % 5];
    vtrn_status_t status = vtrn_fence_wait(fence, timeout);
    check_status("vtrn_fence_wait", status);
    expect_invalid_handle("vtrn_fence_wait", status, picked, K_FENCE);
    if (status == VTRN_NOT_READY && timeout != 0) FUZZ_ABORT("vtrn_fence_wait returned VTRN_NOT_READY with a timeout");
}

static void op_fence_status(reader_t *reader) {
    object_t *picked;
    vtrn_fence_t fence = pick(reader, K_FENCE, &picked);
    vtrn_status_t value = (vtrn_status_t)0x5e47141e;
    vtrn_status_t status = vtrn_fence_status(fence, OUT(reader, value));
    check_status("vtrn_fence_status", status);
    expect_invalid_handle("vtrn_fence_status", status, picked, K_FENCE);
    if (status == VTRN_SUCCESS && (uint32_t)value > VTRN_ERROR_INTERNAL) FUZZ_ABORT("vtrn_fence_status gave %u", (unsigned)value);
}

static void op_fence_get_info(reader_t *reader) {
    object_t *picked;
    vtrn_fence_t fence = pick(reader, K_FENCE, &picked);
    output_t output = output_struct(reader, sizeof(vtrn_execution_info_t));
    vtrn_status_t status = vtrn_fence_get_info(fence, output.block);
    check_status("vtrn_fence_get_info", status);
    expect_invalid_handle("vtrn_fence_get_info", status, picked, K_FENCE);
    finish_output("vtrn_fence_get_info", status, &output);
}

static void op_fence_destroy(reader_t *reader) {
    object_t *picked;
    vtrn_fence_t fence = pick(reader, K_FENCE, &picked);
    vtrn_status_t status = vtrn_fence_destroy(fence);
    check_status("vtrn_fence_destroy", status);
    expect_invalid_handle("vtrn_fence_destroy", status, picked, K_FENCE);
    if (fence == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_fence_destroy(NULL) failed");
    if (status == VTRN_SUCCESS && picked != NULL) picked->live = false;
}

/* Communicators: made of the devices the input holds (cores from the input, sometimes the same
 * twice or out of range), then every collective with fuzzed kinds, ranks, references, counts,
 * dtypes, ops, peers and pairs. A collective whose other ranks never come ends at the execution
 * timeout (200 ms here); a fence is kept so that later inputs wait on it, destroy it, or not. */
static void op_comm_create(reader_t *reader) {
    object_t *picked;
    vtrn_runtime_t runtime = pick(reader, K_RUNTIME, &picked);
    uint32_t count = read_u8(reader) < 240 ? 1 + read_u8(reader) % 4 : (uint32_t)read_number(reader);
    vtrn_comm_member_t members[4];
    vtrn_comm_member_t *given = count <= 4 ? members : NULL;
    if (given != NULL) {
        for (uint32_t i = 0; i < count; i++) {
            object_t *device_object;
            members[i].device = pick(reader, K_DEVICE, &device_object);
            members[i].core = read_u8(reader) < 224 ? read_u8(reader) % 3 : (uint32_t)read_number(reader);
            members[i].reserved = read_u8(reader) < 248 ? 0 : read_u32(reader);
        }
    }
    vtrn_comm_t comm = HANDLE_SENTINEL;
    vtrn_status_t status = vtrn_comm_create(runtime, given, count, OUT(reader, comm));
    check_status("vtrn_comm_create", status);
    expect_invalid_handle("vtrn_comm_create", status, picked, K_RUNTIME);
    expect_untouched("vtrn_comm_create", status, comm);
    if (status == VTRN_SUCCESS && picked != NULL) remember(K_COMM, comm, (int)(picked - objects[K_RUNTIME]));
}

static void op_comm_use(reader_t *reader) {
    object_t *picked;
    vtrn_comm_t comm = pick(reader, K_COMM, &picked);
    uint8_t what = read_u8(reader);
    uint32_t rank = read_u8(reader) < 224 ? read_u8(reader) % 5 : (uint32_t)read_number(reader);
    const char *function = "vtrn_comm_get_info";
    vtrn_status_t status;
    switch (what % 6) {
    case 0: {
        output_t output = output_struct(reader, sizeof(vtrn_comm_info_t));
        status = vtrn_comm_get_info(comm, output.block);
        check_status(function, status);
        finish_output(function, status, &output);
        break;
    }
    case 1: {
        object_t *device_object;
        vtrn_device_t device = pick(reader, K_DEVICE, &device_object);
        uint32_t core = read_u8(reader) % 3, value = 0x5e47141e;
        function = "vtrn_comm_rank";
        status = vtrn_comm_rank(comm, device, core, OUT(reader, value));
        check_status(function, status);
        if (status != VTRN_SUCCESS && value != 0x5e47141e) FUZZ_ABORT("vtrn_comm_rank failed but wrote its rank");
        break;
    }
    case 2:
        function = "vtrn_comm_destroy";
        status = vtrn_comm_destroy(comm);
        check_status(function, status);
        if (comm == NULL && status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_comm_destroy(NULL) failed");
        if (status == VTRN_SUCCESS && picked != NULL) picked->live = false;
        break;
    default: { /* a collective, or a permute */
        object_t *dst_object, *src_object;
        vtrn_memory_ref_t dst = read_ref(reader, &dst_object);
        vtrn_memory_ref_t src = read_ref(reader, &src_object);
        uint64_t count = read_u8(reader) < 224 ? read_u8(reader) % 64 : read_number(reader);
        vtrn_dtype_t dtype = (vtrn_dtype_t)(read_u8(reader) < 240 ? 1 + read_u8(reader) % 8 : read_u32(reader));
        vtrn_fence_t fence = HANDLE_SENTINEL;
        if (what % 6 == 5) {
            int32_t targets[8];
            for (int i = 0; i < 8; i++) targets[i] = (int32_t)(read_u8(reader) % 7) - 2;
            function = "vtrn_collective_permute";
            status = vtrn_collective_permute(comm, rank, dst, src, count, dtype, read_u8(reader) < 16 ? NULL : targets, OUT(reader, fence));
        } else {
            vtrn_collective_t kind = (vtrn_collective_t)(read_u8(reader) < 240 ? 1 + read_u8(reader) % 8 : read_u32(reader));
            vtrn_alu_op_t op = (vtrn_alu_op_t)(read_u8(reader) < 240 ? 1 + read_u8(reader) % 6 : read_u32(reader));
            uint32_t peer = read_u8(reader) < 224 ? read_u8(reader) % 5 : (uint32_t)read_number(reader);
            function = "vtrn_comm_collective";
            status = vtrn_comm_collective(comm, rank, kind, dst, src, count, dtype, op, peer, OUT(reader, fence));
        }
        check_status(function, status);
        expect_untouched(function, status, fence);
        if (status == VTRN_SUCCESS && picked != NULL) remember(K_FENCE, fence, picked->runtime);
        break;
    }
    }
    expect_invalid_handle(function, status, picked, K_COMM);
}

static void op_comm(reader_t *reader) {
    if (read_u8(reader) < 64) op_comm_create(reader);
    else op_comm_use(reader);
}

static void op_errors(reader_t *reader) {
    if (vtrn_version() != VTRN_VERSION) FUZZ_ABORT("vtrn_version() is 0x%x, the header's 0x%x", vtrn_version(), VTRN_VERSION);
    uint32_t status = read_u8(reader) < 128 ? read_u8(reader) % 20 : read_u32(reader);
    const char *text = vtrn_status_string((vtrn_status_t)status);
    if (text == NULL || text[0] == 0) FUZZ_ABORT("vtrn_status_string(%u) is empty", status);
    const char *message = vtrn_last_error();
    if (message == NULL) FUZZ_ABORT("vtrn_last_error() is NULL");
    (void)strlen(message);
}

typedef void (*operation_t)(reader_t *);
static const operation_t operations[] = {
    op_runtime_create, op_runtime_destroy, op_runtime_get_info, op_device_count, op_device_get, op_device_get_info,
    op_device_get_core_info, op_host_buffer_create, op_host_buffer_register, op_host_buffer_map, op_host_buffer_numa_node,
    op_host_buffer_node_pages, op_host_buffer_get_info, op_host_buffer_destroy, op_device_memory_alloc, op_device_memory_free,
    op_device_memory_get_info, op_device_get_memory_usage, op_dma_queue_create, op_dma_queue_enqueue, op_dma_queue_submit,
    op_dma_queue_wait, op_dma_queue_completed, op_dma_queue_get_info, op_dma_queue_destroy, op_memcpy, op_program_create,
    op_program_destroy, op_program_add_parameter, op_program_instruction_count, op_program_build, op_comm,
    op_program_valid, op_kernel_load, op_kernel_unload, op_kernel_execute, op_fence_wait, op_fence_status,
    op_fence_get_info, op_fence_destroy, op_errors,
};
#define OPERATION_COUNT (sizeof operations / sizeof operations[0])

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* The environment must not decide what an input does; executions that hang end quickly. */
    unsetenv("VTRN_TOPOLOGY");
    unsetenv("VTRN_VISIBLE_CORES");
    unsetenv("VTRN_TRACE");
    setenv("VTRN_LOG_LEVEL", "error", 1);
    setenv("VTRN_EXEC_TIMEOUT_MS", "200", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader_t reader = { data, size, 0 };
    memset(objects, 0, sizeof objects);
    memset(filled, 0, sizeof filled);
    memset(next_slot, 0, sizeof next_slot);
    /* Most inputs start with a runtime, so that the rest has something to work on. */
    if (read_u8(&reader) < 224) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = read_u8(&reader) & 1 ? "trn2" : "trn1";
        vtrn_runtime_t runtime;
        vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
        if (status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_runtime_create(%s): %s", options.topology, vtrn_last_error());
        int slot = remember(K_RUNTIME, runtime, -1);
        vtrn_device_t device;
        vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
        if (vtrn_device_get(runtime, 0, &device) != VTRN_SUCCESS || vtrn_device_get_info(device, &info) != VTRN_SUCCESS)
            FUZZ_ABORT("device 0: %s", vtrn_last_error());
        objects[K_DEVICE][remember(K_DEVICE, device, slot)].cores = info.core_count;
    }
    for (int steps = 0; steps < 200 && !reader_done(&reader); steps++) operations[read_u8(&reader) % OPERATION_COUNT](&reader);
    for (int i = 0; i < filled[K_RUNTIME]; i++) {
        if (!objects[K_RUNTIME][i].live) continue;
        vtrn_status_t status = vtrn_runtime_destroy(objects[K_RUNTIME][i].handle);
        if (status != VTRN_SUCCESS) FUZZ_ABORT("vtrn_runtime_destroy of a live runtime: %s", vtrn_last_error());
    }
    for (int i = 0; i < REGIONS; i++) {
        free(regions[i]);
        regions[i] = NULL;
    }
    return 0;
}
