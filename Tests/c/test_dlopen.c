/*
 * test_dlopen.c — libvtrn loaded, used, and unloaded again, 100 times, as a plugin host does.
 *
 * Built without linking libvtrn (the Makefile passes its path as VTRN_LIBRARY_PATH): each round
 * dlopens it, runs a runtime through a DMA round trip and a kernel, destroys everything, and
 * dlcloses it. Nothing may crash, and the process must not grow: threads, file descriptors and
 * resident memory are compared between round 10 and round 100.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>

#include "test_framework.h"

#ifndef VTRN_LIBRARY_PATH
#error "build with -DVTRN_LIBRARY_PATH=\"/path/to/libvtrn.so\""
#endif

/* The functions a round uses, looked up afresh after each dlopen. */
typedef struct {
    vtrn_status_t (*runtime_create)(const vtrn_runtime_options_t *, vtrn_runtime_t *);
    vtrn_status_t (*runtime_destroy)(vtrn_runtime_t);
    vtrn_status_t (*device_get)(vtrn_runtime_t, uint32_t, vtrn_device_t *);
    vtrn_status_t (*host_buffer_create)(vtrn_runtime_t, size_t, const vtrn_host_buffer_options_t *, vtrn_host_buffer_t *);
    vtrn_status_t (*host_buffer_map)(vtrn_host_buffer_t, void **, size_t *);
    vtrn_status_t (*host_buffer_destroy)(vtrn_host_buffer_t);
    vtrn_status_t (*device_memory_alloc)(vtrn_device_t, uint64_t, uint64_t, vtrn_device_memory_t *);
    vtrn_status_t (*device_memory_free)(vtrn_device_memory_t);
    vtrn_status_t (*memcpy_)(vtrn_device_t, vtrn_memory_ref_t, vtrn_memory_ref_t, uint64_t);
    vtrn_status_t (*program_create)(vtrn_runtime_t, vtrn_program_t *);
    vtrn_status_t (*program_add_parameter)(vtrn_program_t, const char *, uint64_t, uint32_t *);
    vtrn_status_t (*program_dma_copy)(vtrn_program_t, vtrn_access_t, vtrn_access_t, const vtrn_sync_t *);
    vtrn_status_t (*program_destroy)(vtrn_program_t);
    vtrn_status_t (*kernel_load)(vtrn_device_t, uint32_t, vtrn_program_t, vtrn_kernel_t *);
    vtrn_status_t (*kernel_execute)(vtrn_kernel_t, const vtrn_binding_t *, uint32_t, vtrn_fence_t *);
    vtrn_status_t (*fence_wait)(vtrn_fence_t, uint64_t);
    vtrn_status_t (*fence_destroy)(vtrn_fence_t);
    vtrn_status_t (*kernel_unload)(vtrn_kernel_t);
    vtrn_status_t (*get_handle_counts)(vtrn_handle_counts_t *);
    const char *(*last_error)(void);
} api_t;

static int resolve(void *library, api_t *api) {
#define RESOLVE(field, name)                                                                        \
    do {                                                                                           \
        *(void **)(&api->field) = dlsym(library, name);                                            \
        if (api->field == NULL) {                                                                  \
            EXPECT_MSG(0, "dlsym(%s): %s", name, dlerror());                                       \
            return 0;                                                                              \
        }                                                                                          \
    } while (0)
    RESOLVE(runtime_create, "vtrn_runtime_create");
    RESOLVE(runtime_destroy, "vtrn_runtime_destroy");
    RESOLVE(device_get, "vtrn_device_get");
    RESOLVE(host_buffer_create, "vtrn_host_buffer_create");
    RESOLVE(host_buffer_map, "vtrn_host_buffer_map");
    RESOLVE(host_buffer_destroy, "vtrn_host_buffer_destroy");
    RESOLVE(device_memory_alloc, "vtrn_device_memory_alloc");
    RESOLVE(device_memory_free, "vtrn_device_memory_free");
    RESOLVE(memcpy_, "vtrn_memcpy");
    RESOLVE(program_create, "vtrn_program_create");
    RESOLVE(program_add_parameter, "vtrn_program_add_parameter");
    RESOLVE(program_dma_copy, "vtrn_program_dma_copy");
    RESOLVE(program_destroy, "vtrn_program_destroy");
    RESOLVE(kernel_load, "vtrn_kernel_load");
    RESOLVE(kernel_execute, "vtrn_kernel_execute");
    RESOLVE(fence_wait, "vtrn_fence_wait");
    RESOLVE(fence_destroy, "vtrn_fence_destroy");
    RESOLVE(kernel_unload, "vtrn_kernel_unload");
    RESOLVE(get_handle_counts, "vtrn_get_handle_counts");
    RESOLVE(last_error, "vtrn_last_error");
#undef RESOLVE
    return 1;
}

#define CALL(call)                                                                                  \
    do {                                                                                           \
        vtrn_status_t status_ = (call);                                                            \
        if (status_ != VTRN_SUCCESS) {                                                             \
            EXPECT_MSG(0, "round %d: %s returned %d: %s", round, #call, (int)status_, api.last_error()); \
            ok = 0;                                                                                \
        }                                                                                          \
    } while (0)

/* One round: everything made, used and destroyed; 1 when every call succeeded. */
static int use(const api_t api, int round) {
    int ok = 1;
    enum { BYTES = 1 << 16 };
    vtrn_runtime_t runtime = NULL;
    vtrn_device_t device = NULL;
    vtrn_host_buffer_t buffer = NULL;
    vtrn_device_memory_t memory = NULL;
    vtrn_program_t program = NULL;
    vtrn_kernel_t kernel = NULL;
    vtrn_fence_t fence = NULL;
    unsigned char *bytes = NULL;
    uint32_t parameter = 0;
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1";
    CALL(api.runtime_create(&options, &runtime));
    if (!ok) return 0;
    CALL(api.device_get(runtime, 0, &device));
    CALL(api.host_buffer_create(runtime, BYTES, NULL, &buffer));
    CALL(api.host_buffer_map(buffer, (void **)&bytes, NULL));
    CALL(api.device_memory_alloc(device, BYTES, 0, &memory));
    if (ok) {
        for (int i = 0; i < BYTES; i++) bytes[i] = (unsigned char)(i * 13 + round);
        CALL(api.memcpy_(device, vtrn_device_ref(memory, 0), vtrn_host_ref(buffer, 0), BYTES));
        /* A kernel copies the first 8 KiB to the second through SBUF. */
        CALL(api.program_create(runtime, &program));
        CALL(api.program_add_parameter(program, "x", BYTES, &parameter));
        vtrn_sync_t loaded = {-1, 0, 0, VTRN_SEMAPHORE_SET, 1}, stored = {0, 1, -1, VTRN_SEMAPHORE_ADD, 0};
        CALL(api.program_dma_copy(program, vtrn_sbuf(0, 32, 0, VTRN_DTYPE_UINT8, 256),
                                  vtrn_hbm(parameter, 0, VTRN_DTYPE_UINT8, 32, 256, 256), &loaded));
        CALL(api.program_dma_copy(program, vtrn_hbm(parameter, 8192, VTRN_DTYPE_UINT8, 32, 256, 256),
                                  vtrn_sbuf(0, 32, 0, VTRN_DTYPE_UINT8, 256), &stored));
        CALL(api.kernel_load(device, 0, program, &kernel));
        vtrn_binding_t binding = {"x", memory, 0};
        CALL(api.kernel_execute(kernel, &binding, 1, &fence));
        CALL(api.fence_wait(fence, UINT64_MAX));
        memset(bytes, 0, BYTES);
        CALL(api.memcpy_(device, vtrn_host_ref(buffer, 0), vtrn_device_ref(memory, 0), BYTES));
        int same = 1;
        for (int i = 0; i < 8192 && ok; i++) {
            if (bytes[8192 + i] != (unsigned char)(i * 13 + round)) same = 0;
        }
        if (ok && !same) {
            EXPECT_MSG(0, "round %d: the kernel's copy came back wrong", round);
            ok = 0;
        }
    }
    CALL(api.fence_destroy(fence));
    CALL(api.kernel_unload(kernel));
    CALL(api.program_destroy(program));
    CALL(api.device_memory_free(memory));
    CALL(api.host_buffer_destroy(buffer));
    CALL(api.runtime_destroy(runtime));
    vtrn_handle_counts_t counts = VTRN_HANDLE_COUNTS_INIT;
    CALL(api.get_handle_counts(&counts));
    if (counts.total != 0) {
        EXPECT_MSG(0, "round %d: %" PRIu64 " handles live after destroying everything", round, counts.total);
        ok = 0;
    }
    return ok;
}

/* A field of /proc/self/status, in its unit (kB for memory). */
static long status_field(const char *name) {
    FILE *file = fopen("/proc/self/status", "r");
    char line[256];
    long value = -1;
    size_t length = strlen(name);
    while (file && fgets(line, sizeof line, file)) {
        if (strncmp(line, name, length) == 0 && line[length] == ':') value = atol(line + length + 1);
    }
    if (file) fclose(file);
    return value;
}

static long open_descriptors(void) {
    DIR *directory = opendir("/proc/self/fd");
    long count = 0;
    while (directory && readdir(directory)) count++;
    if (directory) closedir(directory);
    return count;
}

int main(void) {
    enum { ROUNDS = 100, SETTLED = 10 };
    int succeeded = 0, unloaded = 0;
    long threads = 0, descriptors = 0, resident = 0;
    GROUP("dlopen, use, dlclose");
    for (int round = 1; round <= ROUNDS; round++) {
        void *library = dlopen(VTRN_LIBRARY_PATH, RTLD_NOW | RTLD_LOCAL);
        if (library == NULL) {
            EXPECT_MSG(0, "round %d: dlopen: %s", round, dlerror());
            break;
        }
        api_t api;
        memset(&api, 0, sizeof api);
        if (!resolve(library, &api)) break;
        succeeded += use(api, round);
        EXPECT_MSG(dlclose(library) == 0, "round %d: dlclose: %s", round, dlerror());
        /* The library is linked -z nodelete (Package.swift says why): it stays mapped, and the next
         * dlopen finds the same copy. */
        void *still = dlopen(VTRN_LIBRARY_PATH, RTLD_NOW | RTLD_NOLOAD);
        if (still == NULL) {
            unloaded++;
        } else {
            dlclose(still);
        }
        EXPECT_MSG(still != NULL, "round %d: dlclose unmapped the library, which is linked -z nodelete", round);
        if (round == SETTLED) {
            threads = status_field("Threads");
            descriptors = open_descriptors();
            resident = status_field("VmRSS");
        }
    }
    EXPECT_EQ_I64(succeeded, ROUNDS);
    long threads_after = status_field("Threads"), descriptors_after = open_descriptors(), resident_after = status_field("VmRSS");
    EXPECT_MSG(threads_after == threads, "threads: %ld after round %d, %ld after round %d", threads, SETTLED, threads_after, ROUNDS);
    EXPECT_MSG(descriptors_after == descriptors, "open file descriptors: %ld after round %d, %ld after round %d", descriptors,
               SETTLED, descriptors_after, ROUNDS);
    /* 90 rounds; a leak of one 64 KiB buffer or one runtime's device each round would show. */
    EXPECT_MSG(resident_after - resident < 8192, "resident memory grew from %ld kB to %ld kB over %d rounds", resident,
               resident_after, ROUNDS - SETTLED);
    printf("dlopen: %d rounds; the library was unmapped by dlclose in %d of them (it is linked -z nodelete); threads %ld -> %ld, fds %ld -> %ld, "
           "RSS %ld kB -> %ld kB (rounds %d -> %d)\n",
           ROUNDS, unloaded, threads, threads_after, descriptors, descriptors_after, resident, resident_after, SETTLED, ROUNDS);
    return finish("test_dlopen");
}
