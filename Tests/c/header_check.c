/*
 * header_check.c — vtrn.h as a C11 user sees it: it must compile warning-free with
 * -std=c11 -Wall -Wextra -Werror -pedantic -Wmissing-field-initializers under gcc and clang,
 * every _INIT macro must work as an initializer (local, static, array element, compound
 * literal), and the program must link against libvtrn and run.
 */
#include "vtrn.h"
#include "vtrn.h" /* the include guard holds */
#include "abi_layout.h"

#include <stdio.h>
#include <string.h>

#if defined(__clang__)
#define COMPILER "clang " __clang_version__
#else
#define COMPILER "gcc " __VERSION__
#endif

/* Static storage: the macros are constant expressions. */
static vtrn_runtime_options_t static_options = VTRN_RUNTIME_OPTIONS_INIT;
static const vtrn_runtime_info_t static_runtime_info = VTRN_RUNTIME_INFO_INIT;
static vtrn_device_info_t static_device_infos[2] = { VTRN_DEVICE_INFO_INIT, VTRN_DEVICE_INFO_INIT };
static vtrn_core_info_t static_core_info = VTRN_CORE_INFO_INIT;

/* Every _INIT macro the header defines (header_inventory.h), in static storage. */
#define VT_DEFINE_STATIC(type, init) static type static_##type = init;
VT_EACH_INIT(VT_DEFINE_STATIC)

struct aggregate {
    vtrn_runtime_options_t options;
    vtrn_core_info_t core;
};

static int check(int condition, const char *what) {
    if (!condition) fprintf(stderr, "FAIL header_check.c: %s\n", what);
    return condition ? 0 : 1;
}

int main(void) {
    int failures = 0;

    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    vtrn_runtime_info_t runtime_info = VTRN_RUNTIME_INFO_INIT;
    vtrn_device_info_t device_info = VTRN_DEVICE_INFO_INIT;
    vtrn_core_info_t core_info = VTRN_CORE_INFO_INIT;
    struct aggregate nested = { VTRN_RUNTIME_OPTIONS_INIT, VTRN_CORE_INFO_INIT };
    vtrn_core_info_t from_literal = (vtrn_core_info_t)VTRN_CORE_INFO_INIT;
    const vtrn_runtime_options_t *pointer_to_literal = &(vtrn_runtime_options_t)VTRN_RUNTIME_OPTIONS_INIT;

    failures += check(options.struct_size == sizeof options, "VTRN_RUNTIME_OPTIONS_INIT struct_size");
    failures += check(options.topology == NULL && options.visible_cores == NULL, "options pointers NULL");
    failures += check(options.log_level == VTRN_LOG_LEVEL_DEFAULT, "options log_level DEFAULT");
    failures += check(runtime_info.struct_size == sizeof runtime_info, "VTRN_RUNTIME_INFO_INIT struct_size");
    failures += check(runtime_info.topology[0] == '\0', "runtime_info topology empty");
    failures += check(device_info.struct_size == sizeof device_info, "VTRN_DEVICE_INFO_INIT struct_size");
    failures += check(device_info.name[0] == '\0' && device_info.uuid[0] == '\0', "device_info strings empty");
    failures += check(core_info.struct_size == sizeof core_info, "VTRN_CORE_INFO_INIT struct_size");
    failures += check(nested.options.struct_size == sizeof(vtrn_runtime_options_t), "nested options");
    failures += check(nested.core.struct_size == sizeof(vtrn_core_info_t), "nested core info");
    failures += check(from_literal.struct_size == sizeof from_literal, "compound literal");
    failures += check(pointer_to_literal->struct_size == sizeof(vtrn_runtime_options_t), "pointer to literal");
    failures += check(static_options.struct_size == sizeof static_options, "static options");
    failures += check(static_runtime_info.struct_size == sizeof static_runtime_info, "static runtime info");
    failures += check(static_device_infos[1].struct_size == sizeof(vtrn_device_info_t), "static device infos");
    failures += check(static_core_info.struct_size == sizeof static_core_info, "static core info");

    /* Every _INIT macro as a local and in static storage: struct_size set to the struct's size. */
#define VT_CHECK_INIT(type, init)                                                             \
    {                                                                                         \
        type local = init;                                                                    \
        failures += check(local.struct_size == sizeof(type), #init " sets struct_size");      \
        failures += check(static_##type.struct_size == sizeof(type), "static " #init);        \
    }
    VT_EACH_INIT(VT_CHECK_INIT)

    /* The access-pattern helpers and VTRN_SYNC_NONE: usable as initializers, fields as documented. */
    {
        const vtrn_access_t tile = vtrn_sbuf(32, 64, 1024, VTRN_DTYPE_BF16, 300);
        const vtrn_access_t accumulator = vtrn_psum(0, 128, 2048, VTRN_DTYPE_FP32, 512);
        const vtrn_access_t rows = vtrn_hbm(2, 4096, VTRN_DTYPE_FP32, 128, 1000, 250);
        const vtrn_sync_t none = VTRN_SYNC_NONE;
        failures += check(tile.space == VTRN_MEMORY_SBUF && tile.dtype == VTRN_DTYPE_BF16 && tile.start_partition == 32 &&
                              tile.partitions == 64 && tile.offset == 1024 && tile.dims == 1 && tile.size[0] == 300 &&
                              tile.size[1] == 1 && tile.size[3] == 1 && tile.stride[0] == 1 && tile.stride[1] == 0 &&
                              tile.partition_stride == 0,
                          "vtrn_sbuf");
        failures += check(accumulator.space == VTRN_MEMORY_PSUM && accumulator.offset == 2048 &&
                              accumulator.size[0] == 512 && accumulator.partitions == 128,
                          "vtrn_psum");
        failures += check(rows.space == VTRN_MEMORY_HBM && rows.parameter == 2 && rows.offset == 4096 &&
                              rows.partitions == 128 && rows.partition_stride == 1000 && rows.size[0] == 250 &&
                              rows.stride[0] == 1 && rows.dims == 1,
                          "vtrn_hbm");
        failures += check(none.wait_semaphore == -1 && none.signal_semaphore == -1 &&
                              none.signal_op == VTRN_SEMAPHORE_ADD,
                          "VTRN_SYNC_NONE");
        const vtrn_scalar_t mask = vtrn_scalar_int32(INT32_MIN + 5);
        int32_t bits = 0;
        memcpy(&bits, &mask.value, sizeof bits);
        failures += check(mask.is_tile == VTRN_SCALAR_INT32 && bits == INT32_MIN + 5, "vtrn_scalar_int32");
    }

    /* The functions link with C linkage and behave as declared. */
    failures += check(VTRN_VERSION_GET_MAJOR(vtrn_version()) == VTRN_VERSION_MAJOR, "vtrn_version major");
    failures += check(strcmp(vtrn_status_string(VTRN_ERROR_INVALID_HANDLE), "invalid handle") == 0,
                      "vtrn_status_string");
    failures += check(vtrn_last_error() != NULL, "vtrn_last_error");
    failures += check(vtrn_runtime_destroy(NULL) == VTRN_SUCCESS, "vtrn_runtime_destroy(NULL)");

    if (failures == 0) printf("header_check (C11, %s): %d _INIT macros, %d enums: ok\n", COMPILER, VT_INIT_COUNT, VT_ENUM_COUNT);
    return failures == 0 ? 0 : 1;
}
