/*
 * fuzz_common.h — what the libFuzzer harnesses of vtrn share: a reader that turns the fuzzer's
 * bytes into choices (running out of bytes gives zeros, never an error), tables of values at and
 * past vtrn's limits, access patterns that are mostly plausible and sometimes hostile, and the
 * oracles every call is held to (the header's conventions):
 *   - the status is a vtrn_status_t;
 *   - a failure leaves a vtrn_last_error() that names the function ("vtrn_memcpy: ...");
 *   - a failure leaves out-parameters untouched;
 *   - a call on a handle the harness destroyed answers VTRN_ERROR_INVALID_HANDLE.
 * A broken oracle aborts with a message: libFuzzer records the input as a crash.
 */
#ifndef VTRN_FUZZ_COMMON_H
#define VTRN_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vtrn.h"

/* ---- the fuzzer's bytes as choices ---------------------------------------------------------- */

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t position;
} reader_t;

static inline int reader_done(const reader_t *reader) { return reader->position >= reader->size; }

static inline uint8_t read_u8(reader_t *reader) {
    return reader->position < reader->size ? reader->data[reader->position++] : 0;
}

static inline uint16_t read_u16(reader_t *reader) {
    uint16_t low = read_u8(reader);
    return (uint16_t)(low | (uint16_t)read_u8(reader) << 8);
}

static inline uint32_t read_u32(reader_t *reader) {
    uint32_t low = read_u16(reader);
    return low | (uint32_t)read_u16(reader) << 16;
}

static inline uint64_t read_u64(reader_t *reader) {
    uint64_t low = read_u32(reader);
    return low | (uint64_t)read_u32(reader) << 32;
}

/* 0 .. count-1 (count > 0). */
static inline uint32_t read_below(reader_t *reader, uint32_t count) {
    return count <= 256 ? read_u8(reader) % count : read_u32(reader) % count;
}

static const uint64_t interesting_u64[] = {
    0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 255, 256, 257, 511, 512,
    513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 16383, 16384, 65535, 65536, 65537,
    196608, 229376, 1u << 20, (1u << 24) - 16, (1u << 24) - 15, 1u << 24, 0x7fffffffu, 0x80000000u,
    0xffffffffu, 0x100000000ull, 1ull << 40, 32ull << 30, (32ull << 30) + 1, 96ull << 30,
    (96ull << 30) + 1, 1ull << 44, 1ull << 52, 1ull << 62, 0x7fffffffffffffffull,
    0x8000000000000000ull, 0xfffffffffffffffeull, 0xffffffffffffffffull,
};
#define INTERESTING_COUNT (sizeof interesting_u64 / sizeof interesting_u64[0])

/* A number for a size, count or offset: often small, often a limit, sometimes anything. */
static inline uint64_t read_number(reader_t *reader) {
    uint8_t mode = read_u8(reader);
    switch (mode & 3) {
    case 0: return interesting_u64[read_u8(reader) % INTERESTING_COUNT];
    case 1: return read_u8(reader);
    case 2: return read_u16(reader);
    default: return (mode & 4) ? read_u64(reader) : read_u32(reader);
    }
}

/* A signed number (strides): small of either sign, or an extreme. */
static inline int64_t read_signed(reader_t *reader) {
    static const int64_t extremes[] = { 0, 1, -1, 2, -2, 64, -64, 512, -512, INT32_MAX, INT32_MIN,
                                        (int64_t)1 << 32, -((int64_t)1 << 32), (int64_t)1 << 40,
                                        INT64_MAX, INT64_MIN, INT64_MIN + 1, INT64_MAX - 1 };
    uint8_t mode = read_u8(reader);
    switch (mode & 3) {
    case 0: return extremes[read_u8(reader) % (sizeof extremes / sizeof extremes[0])];
    case 1: return (int8_t)read_u8(reader);
    case 2: return (int16_t)read_u16(reader);
    default: return (int64_t)read_u64(reader);
    }
}

/* A 32-bit enum value: mostly one of the `count` valid ones from `first`, else out of range. */
static inline uint32_t read_enum(reader_t *reader, uint32_t first, uint32_t count) {
    static const uint32_t wrong[] = { 0, 0x7fffffffu, 0x80000000u, 0xffffffffu, 100, 0x7ffffffeu };
    uint8_t mode = read_u8(reader);
    if (mode < 224) return first + mode % count;
    if (mode < 240) return first + count + (mode & 3); /* just past the last */
    return wrong[mode % (sizeof wrong / sizeof wrong[0])];
}

/* A struct_size: mostly right, sometimes too small, sometimes larger than this header's struct
 * (the library must read and write only what it knows). */
static inline size_t read_struct_size(reader_t *reader, size_t size) {
    uint8_t mode = read_u8(reader);
    if (mode < 192) return size;
    switch (mode & 7) {
    case 0: return 0;
    case 1: return size - 1;
    case 2: return size + 1 + read_u8(reader);
    case 3: return SIZE_MAX;
    case 4: return (size_t)1 << 63;
    case 5: return sizeof(size_t);
    case 6: return read_u16(reader);
    default: return (size_t)read_u64(reader);
    }
}

/* ---- blocks the library must stay inside ------------------------------------------------ */

/* A heap block holding the first bytes of `value` (a struct of `size` bytes starting with
 * struct_size): exactly struct_size bytes when that is smaller than the struct, so that reading or
 * writing past what the caller's size holds is an ASan report. At least a size_t. */
static inline void *exact_block(const void *value, size_t size, size_t struct_size) {
    size_t bytes = struct_size < sizeof(size_t) ? sizeof(size_t) : struct_size > size ? size : struct_size;
    void *block = malloc(bytes);
    memcpy(block, value, bytes);
    return block;
}

/* A C string in a heap block of exactly its length + 1. */
static inline char *exact_string(const char *text) {
    size_t length = strlen(text);
    char *copy = malloc(length + 1);
    memcpy(copy, text, length + 1);
    return copy;
}

/* A string from the fuzzer's bytes: up to 80 of them, any values but NUL (so also invalid UTF-8). */
static inline char *read_string(reader_t *reader) {
    size_t length = read_u8(reader) % 81;
    char *text = malloc(length + 1);
    for (size_t i = 0; i < length; i++) {
        uint8_t byte = read_u8(reader);
        text[i] = (char)(byte ? byte : 'a');
    }
    text[length] = 0;
    return text;
}

/* ---- access patterns ------------------------------------------------------------------------ */

/* An operand: plausible (quadrant starts, tiles that fit, small strides) most of the time, and
 * with any field at an extreme some of the time. `parameters` is how many the program has. */
static inline vtrn_access_t read_access(reader_t *reader, uint32_t parameters) {
    vtrn_access_t access;
    memset(&access, 0, sizeof access);
    uint8_t mode = read_u8(reader);
    int hostile = (mode & 0xe0) == 0xe0;
    access.space = (vtrn_memory_space_t)(hostile && (mode & 0x10) ? read_u32(reader) : 1 + (mode & 3) % 3);
    uint8_t kind = read_u8(reader);
    access.dtype = (vtrn_dtype_t)(hostile && (kind & 0x80) ? read_u32(reader) : 1u + kind % 8u);
    static const uint32_t starts[] = { 0, 32, 64, 96, 0, 0 };
    uint8_t start = read_u8(reader);
    access.start_partition = start < 240 ? starts[start % 6] : (hostile ? (uint32_t)read_number(reader) : start & 127u);
    uint8_t partitions = read_u8(reader);
    access.partitions = partitions < 224 ? 1u + partitions % 128u : (uint32_t)read_number(reader);
    uint8_t offset = read_u8(reader);
    access.offset = offset < 224 ? (uint64_t)(offset & 31) * 64 : read_number(reader);
    uint8_t parameter = read_u8(reader);
    access.parameter = parameter < 240 ? parameter % (parameters ? parameters : 1) : (uint32_t)read_number(reader);
    uint8_t dims = read_u8(reader);
    access.dims = dims < 240 ? 1u + dims % 4u : (uint32_t)read_number(reader);
    for (int d = 0; d < 4; d++) {
        uint8_t size = read_u8(reader);
        /* Mostly tiles of at most 64 x 8 x 8 x 8 elements: one instruction at the validator's
         * limits (2^26 elements for DMA) takes tens of seconds in this build, and the execution
         * timeout is checked between instructions. Larger sizes stay reachable. */
        access.size[d] = d >= (int)access.dims ? 1 : size < 200 ? 1u + size % (d == 0 ? 64u : 8u)
                         : size < 240 ? 1u << (size % 10) : (uint32_t)read_number(reader);
        uint8_t stride = read_u8(reader);
        access.stride[d] = stride < 160 ? (d == 0 ? 1 : (int64_t)access.size[d - 1]) : stride < 224 ? (int8_t)(stride * 7) : read_signed(reader);
    }
    uint8_t partition_stride = read_u8(reader);
    access.partition_stride = partition_stride < 192 ? (int64_t)((uint64_t)access.size[0] * access.size[1]) : read_signed(reader);
    return access;
}

static inline vtrn_sync_t read_sync(reader_t *reader) {
    vtrn_sync_t sync = VTRN_SYNC_NONE;
    uint8_t mode = read_u8(reader);
    if (mode & 1) {
        sync.wait_semaphore = (mode & 0x80) ? (int32_t)read_u32(reader) : read_u8(reader) % 8;
        sync.wait_value = read_u8(reader) % 4;
    }
    if (mode & 2) {
        sync.signal_semaphore = (mode & 0x40) ? (int32_t)read_u32(reader) : read_u8(reader) % 8;
        sync.signal_value = (mode & 0x20) ? read_u32(reader) : read_u8(reader) % 4;
        sync.signal_op = (vtrn_semaphore_op_t)read_enum(reader, VTRN_SEMAPHORE_ADD, 2);
    }
    return sync;
}

/* The engine argument: one of the five, or something that is not an engine. */
static inline vtrn_engine_flags_t read_engine(reader_t *reader) {
    uint8_t mode = read_u8(reader);
    if (mode < 224) return (vtrn_engine_flags_t)(1u << (mode % 5));
    static const uint32_t wrong[] = { 0, 3, 1u << 5, 0x1f, 0x7fffffff, 0xffffffff };
    return (vtrn_engine_flags_t)wrong[mode % 6];
}

static inline vtrn_scalar_t read_scalar(reader_t *reader, uint32_t parameters) {
    vtrn_scalar_t scalar;
    memset(&scalar, 0, sizeof scalar);
    uint8_t mode = read_u8(reader);
    static const float values[] = { 0.0f, 1.0f, -1.0f, 0.5f, 2.0f, 1e30f, -1e30f, 1e-40f };
    scalar.is_tile = mode < 200 ? VTRN_SCALAR_IMMEDIATE : mode < 230 ? VTRN_SCALAR_TILE : mode < 245 ? VTRN_SCALAR_INT32 : read_u32(reader);
    uint32_t bits = read_u32(reader);
    if (scalar.is_tile == VTRN_SCALAR_INT32 || (mode & 1)) {
        memcpy(&scalar.value, &bits, sizeof bits); /* any bit pattern: NaNs, infinities */
    } else {
        scalar.value = values[bits % 8];
    }
    if (scalar.is_tile == VTRN_SCALAR_TILE) scalar.tile = read_access(reader, parameters);
    return scalar;
}

/* Set by a harness (FUZZ_VERBOSE) to print each instruction's operands on stderr. */
static int fuzz_trace;

static inline void trace_access(const char *name, const vtrn_access_t *a) {
    if (!fuzz_trace) return;
    fprintf(stderr, "  %s: space %u dtype %u start %u partitions %u offset %llu parameter %u dims %u sizes [%u %u %u %u] "
            "strides [%lld %lld %lld %lld] partition_stride %lld\n", name, (unsigned)a->space, (unsigned)a->dtype,
            a->start_partition, a->partitions, (unsigned long long)a->offset, a->parameter, a->dims, a->size[0], a->size[1],
            a->size[2], a->size[3], (long long)a->stride[0], (long long)a->stride[1], (long long)a->stride[2],
            (long long)a->stride[3], (long long)a->partition_stride);
}

/* Appends one instruction through one of the builders (any of them), its operands from
 * read_access over a program of `parameters` parameters; `function` receives the builder's name. */
static inline vtrn_status_t append_instruction(reader_t *reader, vtrn_program_t program, uint32_t parameters,
                                               const char **function_name) {
    uint8_t which = read_u8(reader) % 15;
    uint8_t options_mode = read_u8(reader);
    vtrn_access_t dst = read_access(reader, parameters), a = read_access(reader, parameters), b = read_access(reader, parameters);
    vtrn_sync_t sync_value = read_sync(reader);
    const vtrn_sync_t *sync = read_u8(reader) < 128 ? NULL : &sync_value;
    vtrn_scalar_t x0 = read_scalar(reader, parameters), x1 = read_scalar(reader, parameters);
    int32_t steps[4] = { (int32_t)read_signed(reader), (int32_t)read_signed(reader), 1, -1 };
    trace_access("dst", &dst);
    trace_access("a", &a);
    trace_access("b", &b);
    vtrn_status_t status;
    const char *function;
    switch (which) {
    case 0: function = "vtrn_program_dma_copy"; status = vtrn_program_dma_copy(program, dst, a, sync); break;
    case 1: {
        function = "vtrn_program_dma_copy_ex";
        vtrn_dma_copy_options_t options = VTRN_DMA_COPY_OPTIONS_INIT;
        options.dst_rmw_op = (vtrn_alu_op_t)read_enum(reader, VTRN_ALU_ADD, VTRN_ALU_INVERT);
        options.indirect = (vtrn_dma_indirect_t)read_enum(reader, VTRN_DMA_INDIRECT_NONE, 3);
        options.index = (options_mode & 1) ? &b : NULL;
        options.oob_mode = (vtrn_dma_oob_mode_t)read_enum(reader, VTRN_DMA_OOB_ERROR, 2);
        options.struct_size = read_struct_size(reader, sizeof options);
        void *block = (options_mode & 2) ? NULL : exact_block(&options, sizeof options, options.struct_size);
        status = vtrn_program_dma_copy_ex(program, dst, a, block, sync);
        free(block);
        break;
    }
    case 2: function = "vtrn_program_matmul"; status = vtrn_program_matmul(program, dst, a, b, read_u32(reader), sync); break;
    case 3: function = "vtrn_program_transpose"; status = vtrn_program_transpose(program, dst, a, sync); break;
    case 4: function = "vtrn_program_transpose_on"; status = vtrn_program_transpose_on(program, read_engine(reader), dst, a, sync); break;
    case 5:
        function = "vtrn_program_activate";
        status = vtrn_program_activate(program, dst, (vtrn_activation_t)read_enum(reader, VTRN_ACT_COPY, VTRN_ACT_GELU_APPRX_SIGMOID_DX),
                                       a, (options_mode & 1) ? NULL : &x0, (options_mode & 2) ? &b : NULL,
                                       (options_mode & 4) ? &b : NULL, sync);
        break;
    case 6:
        function = "vtrn_program_tensor_tensor";
        status = vtrn_program_tensor_tensor(program, dst, a, b, (vtrn_alu_op_t)read_enum(reader, VTRN_ALU_ADD, VTRN_ALU_INVERT), sync);
        break;
    case 7:
        function = "vtrn_program_tensor_scalar";
        status = vtrn_program_tensor_scalar(program, read_engine(reader), dst, a, (vtrn_alu_op_t)read_enum(reader, VTRN_ALU_ADD, VTRN_ALU_INVERT),
                                            (options_mode & 1) ? NULL : &x0, (vtrn_alu_op_t)read_enum(reader, VTRN_ALU_ADD, VTRN_ALU_INVERT),
                                            (options_mode & 2) ? NULL : &x1, read_u32(reader), sync);
        break;
    case 8:
        function = "vtrn_program_tensor_reduce";
        status = vtrn_program_tensor_reduce(program, dst, a, (vtrn_alu_op_t)read_enum(reader, VTRN_ALU_ADD, VTRN_ALU_INVERT), read_u32(reader), sync);
        break;
    case 9: function = "vtrn_program_tensor_copy"; status = vtrn_program_tensor_copy(program, read_engine(reader), dst, a, sync); break;
    case 10: {
        function = "vtrn_program_memset";
        uint32_t bits = read_u32(reader);
        float value;
        memcpy(&value, &bits, sizeof value);
        status = vtrn_program_memset(program, read_engine(reader), dst, value, sync);
        break;
    }
    case 11: {
        function = "vtrn_program_iota";
        /* steps holds dst.dims values: only as many as that, in an exact block. */
        uint32_t count = dst.dims >= 1 && dst.dims <= 4 ? dst.dims : 4;
        int32_t *exact = (options_mode & 1) ? NULL : malloc(count * sizeof *exact);
        if (exact) memcpy(exact, steps, count * sizeof *exact);
        if (dst.dims > 4) dst.dims = 4 + (dst.dims & 1); /* a bad dims, but no read past steps */
        status = vtrn_program_iota(program, dst, exact, (int32_t)read_signed(reader), (int32_t)read_signed(reader), sync);
        free(exact);
        break;
    }
    case 12: {
        function = "vtrn_program_affine_select";
        uint32_t count = dst.dims >= 1 && dst.dims <= 4 ? dst.dims : 4;
        int32_t *exact = (options_mode & 1) ? NULL : malloc(count * sizeof *exact);
        if (exact) memcpy(exact, steps, count * sizeof *exact);
        if (dst.dims > 4) dst.dims = 4 + (dst.dims & 1);
        uint32_t bits = read_u32(reader);
        float value;
        memcpy(&value, &bits, sizeof value);
        status = vtrn_program_affine_select(program, dst, exact, (int32_t)read_signed(reader), (int32_t)read_signed(reader),
                                            (vtrn_alu_op_t)read_enum(reader, VTRN_ALU_ADD, VTRN_ALU_INVERT), a, value, sync);
        free(exact);
        break;
    }
    case 13:
        function = "vtrn_program_sem_signal";
        status = vtrn_program_sem_signal(program, read_engine(reader), read_u8(reader) < 200 ? read_u8(reader) % 8 : (uint32_t)read_number(reader),
                                         (vtrn_semaphore_op_t)read_enum(reader, VTRN_SEMAPHORE_ADD, 2), read_u32(reader));
        break;
    default:
        function = "vtrn_program_sem_wait";
        status = vtrn_program_sem_wait(program, read_engine(reader), read_u8(reader) < 200 ? read_u8(reader) % 8 : (uint32_t)read_number(reader),
                                       read_u8(reader) % 4);
        break;
    }
    *function_name = function;
    return status;
}

/* ---- oracles -------------------------------------------------------------------------------- */

#define FUZZ_ABORT(...)                                                                           \
    do {                                                                                          \
        fprintf(stderr, "fuzz oracle: " __VA_ARGS__);                                             \
        fprintf(stderr, "\n");                                                                    \
        abort();                                                                                  \
    } while (0)

/* Checks a returned status against the conventions; `function` is the C name. */
static inline void check_status(const char *function, vtrn_status_t status) {
    if ((uint32_t)status > (uint32_t)VTRN_ERROR_INTERNAL) FUZZ_ABORT("%s returned %u, not a vtrn_status_t", function, (unsigned)status);
    if (status == VTRN_ERROR_INTERNAL) FUZZ_ABORT("%s returned VTRN_ERROR_INTERNAL: %s", function, vtrn_last_error());
    if (status == VTRN_SUCCESS || status == VTRN_NOT_READY) return;
    const char *message = vtrn_last_error();
    size_t length = strlen(function);
    if (message == NULL || strncmp(message, function, length) != 0 || message[length] != ':')
        FUZZ_ABORT("%s failed with %s but vtrn_last_error() is \"%s\"", function, vtrn_status_string(status),
                   message ? message : "(NULL)");
    if (vtrn_status_string(status) == NULL) FUZZ_ABORT("vtrn_status_string(%d) is NULL", (int)status);
}

#endif /* VTRN_FUZZ_COMMON_H */
