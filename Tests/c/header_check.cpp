/*
 * header_check.cpp — vtrn.h as a C++17 user sees it: it must compile warning-free with
 * -std=c++17 -Wall -Wextra -Werror -pedantic -Wmissing-field-initializers under g++ and
 * clang++, every _INIT macro must work as an initializer (local, static, default member
 * initializer, functional cast, new-expression), and the functions must link with C linkage.
 */
#include "vtrn.h"
#include "vtrn.h" // the include guard holds
#include "abi_layout.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>

#if defined(__clang__)
#define COMPILER "clang++ " __clang_version__
#else
#define COMPILER "g++ " __VERSION__
#endif

static_assert(std::is_trivially_copyable<vtrn_device_info_t>::value, "info structs are plain C data");
static_assert(std::is_standard_layout<vtrn_core_info_t>::value, "info structs are plain C data");
static_assert(std::is_same<decltype(&vtrn_runtime_create),
                           vtrn_status_t (*)(const vtrn_runtime_options_t *, vtrn_runtime_t *)>::value,
              "vtrn_runtime_create signature");

namespace {

vtrn_runtime_options_t static_options = VTRN_RUNTIME_OPTIONS_INIT;
const vtrn_runtime_info_t static_runtime_info = VTRN_RUNTIME_INFO_INIT;
vtrn_device_info_t static_device_infos[2] = { VTRN_DEVICE_INFO_INIT, VTRN_DEVICE_INFO_INIT };
vtrn_core_info_t static_core_info = VTRN_CORE_INFO_INIT;

// Every _INIT macro the header defines (header_inventory.h), in static storage.
#define VT_DEFINE_STATIC(type, init) type static_##type = init;
VT_EACH_INIT(VT_DEFINE_STATIC)

// A C++ class holding the structs, as a wrapper library would.
struct DeviceSnapshot {
    vtrn_device_info_t device = VTRN_DEVICE_INFO_INIT;
    vtrn_core_info_t cores[2] = { VTRN_CORE_INFO_INIT, VTRN_CORE_INFO_INIT };
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    vtrn_runtime_info_t runtime = VTRN_RUNTIME_INFO_INIT;
};

int check(bool condition, const char *what) {
    if (!condition) std::fprintf(stderr, "FAIL header_check.cpp: %s\n", what);
    return condition ? 0 : 1;
}

} // namespace

int main() {
    int failures = 0;

    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    vtrn_runtime_info_t runtime_info = VTRN_RUNTIME_INFO_INIT;
    vtrn_device_info_t device_info = VTRN_DEVICE_INFO_INIT;
    vtrn_core_info_t core_info = VTRN_CORE_INFO_INIT;
    auto functional_cast = vtrn_core_info_t VTRN_CORE_INFO_INIT;
    std::unique_ptr<vtrn_device_info_t> heap(new vtrn_device_info_t VTRN_DEVICE_INFO_INIT);
    DeviceSnapshot snapshot;

    failures += check(options.struct_size == sizeof options, "VTRN_RUNTIME_OPTIONS_INIT struct_size");
    failures += check(options.topology == nullptr && options.visible_cores == nullptr, "options pointers");
    failures += check(options.log_level == VTRN_LOG_LEVEL_DEFAULT, "options log_level");
    failures += check(runtime_info.struct_size == sizeof runtime_info, "VTRN_RUNTIME_INFO_INIT struct_size");
    failures += check(device_info.struct_size == sizeof device_info, "VTRN_DEVICE_INFO_INIT struct_size");
    failures += check(core_info.struct_size == sizeof core_info, "VTRN_CORE_INFO_INIT struct_size");
    failures += check(functional_cast.struct_size == sizeof(vtrn_core_info_t), "functional cast");
    failures += check(heap->struct_size == sizeof(vtrn_device_info_t), "new-expression");
    failures += check(snapshot.device.struct_size == sizeof(vtrn_device_info_t) &&
                          snapshot.cores[1].struct_size == sizeof(vtrn_core_info_t) &&
                          snapshot.options.struct_size == sizeof(vtrn_runtime_options_t) &&
                          snapshot.runtime.struct_size == sizeof(vtrn_runtime_info_t),
                      "default member initializers");
    failures += check(static_options.struct_size == sizeof static_options, "static options");
    failures += check(static_runtime_info.struct_size == sizeof static_runtime_info, "static runtime info");
    failures += check(static_device_infos[1].struct_size == sizeof(vtrn_device_info_t), "static device infos");
    failures += check(static_core_info.struct_size == sizeof static_core_info, "static core info");

    // Every _INIT macro as a local, a functional cast and in static storage.
#define VT_CHECK_INIT(type, init)                                                             \
    {                                                                                         \
        type local = init;                                                                    \
        auto cast = type init;                                                                \
        failures += check(local.struct_size == sizeof(type), #init " sets struct_size");      \
        failures += check(cast.struct_size == sizeof(type), #init " in a functional cast");   \
        failures += check(static_##type.struct_size == sizeof(type), "static " #init);        \
    }
    VT_EACH_INIT(VT_CHECK_INIT)

    // The access-pattern helpers and VTRN_SYNC_NONE: usable as initializers, fields as documented.
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

    // The functions link with C linkage (extern "C") and behave as declared.
    failures += check(VTRN_VERSION_GET_MAJOR(vtrn_version()) == VTRN_VERSION_MAJOR, "vtrn_version major");
    failures += check(std::strcmp(vtrn_status_string(VTRN_ERROR_INVALID_HANDLE), "invalid handle") == 0,
                      "vtrn_status_string");
    failures += check(vtrn_last_error() != nullptr, "vtrn_last_error");
    failures += check(vtrn_runtime_destroy(nullptr) == VTRN_SUCCESS, "vtrn_runtime_destroy(nullptr)");

    if (failures == 0)
        std::printf("header_check (C++17, %s): %d _INIT macros, %d enums: ok\n", COMPILER, VT_INIT_COUNT, VT_ENUM_COUNT);
    return failures == 0 ? 0 : 1;
}
