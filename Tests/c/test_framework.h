/*
 * test_framework.h — the tiny self-contained test framework of the C test programs (test_abi.c,
 * test_dma.c, test_kernels.c). Each program includes it once.
 *
 * Every check counts as passed or failed; a failure prints "FAIL file:line: what". A program ends
 * with finish("NAME"), which prints the line "NAME: N passed, M failed" and gives the exit status
 * (non-zero when M > 0). `make -C Tests/c test` runs every program and sums those lines into the
 * suite's closing line "c: N passed, M failed" (run-tests.sh). Set VTRN_TEST_VERBOSE=1 to print
 * each group's name as it runs.
 *
 * Checks may be recorded from several threads at once.
 */
#ifndef VTRN_TEST_FRAMEWORK_H
#define VTRN_TEST_FRAMEWORK_H

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vtrn.h"

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long passed_count;
static unsigned long failed_count;

/* Records one check; on failure prints "FAIL file:line: " and the formatted explanation. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static inline void record(int ok, const char *file, int line, const char *format, ...) {
    pthread_mutex_lock(&report_lock);
    if (ok) {
        passed_count++;
    } else {
        failed_count++;
        va_list arguments;
        va_start(arguments, format);
        printf("FAIL %s:%d: ", file, line);
        vprintf(format, arguments);
        printf("\n");
        fflush(stdout);
        va_end(arguments);
    }
    pthread_mutex_unlock(&report_lock);
}

static inline int contains(const char *text, const char *needle) {
    return text != NULL && needle != NULL && strstr(text, needle) != NULL;
}

/* A condition. */
#define EXPECT(condition) record((condition) != 0, __FILE__, __LINE__, "%s", #condition)
/* A condition with its own explanation (printf format and arguments). */
#define EXPECT_MSG(condition, ...) record((condition) != 0, __FILE__, __LINE__, __VA_ARGS__)

#define EXPECT_EQ_U64(actual, expected)                                                            \
    do {                                                                                           \
        uint64_t actual_ = (uint64_t)(actual), expected_ = (uint64_t)(expected);                   \
        record(actual_ == expected_, __FILE__, __LINE__, "%s is %" PRIu64 " (0x%" PRIx64           \
               "), expected %" PRIu64 " (0x%" PRIx64 ")", #actual, actual_, actual_, expected_,    \
               expected_);                                                                         \
    } while (0)

#define EXPECT_EQ_I64(actual, expected)                                                            \
    do {                                                                                           \
        int64_t actual_ = (int64_t)(actual), expected_ = (int64_t)(expected);                      \
        record(actual_ == expected_, __FILE__, __LINE__, "%s is %" PRId64 ", expected %" PRId64,   \
               #actual, actual_, expected_);                                                       \
    } while (0)

#define EXPECT_STREQ(actual, expected)                                                             \
    do {                                                                                           \
        const char *actual_ = (actual), *expected_ = (expected);                                   \
        record(actual_ != NULL && strcmp(actual_, expected_) == 0, __FILE__, __LINE__,             \
               "%s is \"%s\", expected \"%s\"", #actual, actual_ ? actual_ : "(NULL)", expected_); \
    } while (0)

#define EXPECT_CONTAINS(text, needle)                                                              \
    do {                                                                                           \
        const char *text_ = (text), *needle_ = (needle);                                           \
        record(contains(text_, needle_), __FILE__, __LINE__, "%s is \"%s\", which lacks \"%s\"",   \
               #text, text_ ? text_ : "(NULL)", needle_);                                          \
    } while (0)

/* A call that must succeed; on failure prints its status and vtrn_last_error(). */
#define EXPECT_OK(call)                                                                            \
    do {                                                                                           \
        vtrn_status_t status_ = (call);                                                            \
        record(status_ == VTRN_SUCCESS, __FILE__, __LINE__, "%s returned %s (%d): %s", #call,      \
               vtrn_status_string(status_), (int)status_, vtrn_last_error());                      \
    } while (0)

/* A call that must return `expected`; the message is not checked. */
#define EXPECT_STATUS(call, expected)                                                              \
    do {                                                                                           \
        vtrn_status_t status_ = (call);                                                            \
        record(status_ == (expected), __FILE__, __LINE__, "%s returned %s (%d), expected %s (%d)"  \
               "; last error: \"%s\"", #call, vtrn_status_string(status_), (int)status_,           \
               vtrn_status_string(expected), (int)(expected), vtrn_last_error());                  \
    } while (0)

/* A call that must fail with `expected` and leave a vtrn_last_error() containing every one of
 * the strings that follow (at least one). Counts as one check. */
#define EXPECT_ERROR(call, expected, ...) \
    expect_error(__FILE__, __LINE__, #call, (call), (expected), __VA_ARGS__, (const char *)NULL)

static inline void expect_error(const char *file, int line, const char *call, vtrn_status_t status,
                         vtrn_status_t expected, ...) {
    const char *message = vtrn_last_error();
    if (status != expected) {
        record(0, file, line, "%s returned %s (%d), expected %s (%d); last error: \"%s\"", call,
               vtrn_status_string(status), (int)status, vtrn_status_string(expected), (int)expected,
               message);
        return;
    }
    va_list needles;
    va_start(needles, expected);
    const char *missing = NULL;
    for (const char *needle = va_arg(needles, const char *); needle != NULL;
         needle = va_arg(needles, const char *)) {
        if (!contains(message, needle)) {
            missing = needle;
            break;
        }
    }
    va_end(needles);
    if (missing != NULL) {
        record(0, file, line, "%s: vtrn_last_error() is \"%s\", which lacks \"%s\"", call, message,
               missing);
    } else {
        record(1, file, line, "%s", "");
    }
}

/* 1 when every byte of [bytes, bytes + count) is `value`. */
static inline int bytes_are(const void *bytes, size_t count, unsigned char value) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i < count; i++) {
        if (p[i] != value) return 0;
    }
    return 1;
}

static int verbose;

/* The sanitizer the program was built with, as `make sanitize` says in VTRN_TEST_SANITIZER
 * ("address", "thread"), or NULL. A few checks cannot hold as written under one: mlock is a
 * no-op under every sanitizer, and tight execution timeouts meet engines slowed down. */
static inline const char *test_sanitizer(void) {
    const char *name = getenv("VTRN_TEST_SANITIZER");
    return name != NULL && name[0] != 0 ? name : NULL;
}

/* How much slower the library runs: ThreadSanitizer about 10 times, AddressSanitizer 3. Tests
 * whose execution must still be running when a timeout of N ms passes use N times this. */
static inline unsigned test_slowdown(void) {
    const char *name = test_sanitizer();
    return name == NULL ? 1 : strcmp(name, "thread") == 0 ? 10 : 3;
}

/* Seconds since the first call, for the verbose group lines (so slow groups show). */
static inline double elapsed_seconds(void) {
    static struct timespec start;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (start.tv_sec == 0 && start.tv_nsec == 0) start = now;
    return (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) * 1e-9;
}

/* Names a group of checks; with VTRN_TEST_VERBOSE=1 prints it with the time it starts at. */
#define GROUP(name)                                                            \
    do {                                                                       \
        if (verbose) printf("# [%7.3f s] %s\n", elapsed_seconds(), name);      \
    } while (0)

/* A byte that no call may write: buffers are pre-filled with it to show what a call left alone. */
#define SENTINEL_BYTE 0xa5

/* One of the *_get_info calls on `context` (a handle) and a caller's buffer
 * that begins with struct_size, so that one routine can check every info struct. */
typedef vtrn_status_t (*info_call_t)(void *context, void *info);

struct info_kind {
    const char *name;
    const char *init_macro; /* the message tells the caller to use it */
    size_t size;
    info_call_t call;
};

/* Too small a struct_size is rejected, names struct_size and the _INIT macro, and writes nothing;
 * a larger one is accepted and the bytes past our struct are left alone. */
/* As check_info_struct_sizes, for a struct that has grown since its first version, `first_size`
 * bytes (the smallest struct_size the library accepts): that size is accepted too, and filled up
 * to it only. */
static inline void check_grown_info_struct_sizes(const struct info_kind *kind, size_t first_size, void *context) {
    enum { extra = 64 };
    unsigned char buffer[512 + extra];
    const size_t small_sizes[] = { 0, 8, first_size - 1 };
    for (size_t i = 0; i < sizeof small_sizes / sizeof small_sizes[0]; i++) {
        size_t struct_size = small_sizes[i];
        memset(buffer, SENTINEL_BYTE, sizeof buffer);
        memcpy(buffer, &struct_size, sizeof struct_size);
        vtrn_status_t status = kind->call(context, buffer);
        const char *message = vtrn_last_error();
        EXPECT_MSG(status == VTRN_ERROR_INVALID_ARGUMENT, "%s with struct_size %zu: %s (%d)", kind->name,
                   struct_size, vtrn_status_string(status), (int)status);
        EXPECT_MSG(contains(message, "struct_size") && contains(message, kind->init_macro),
                   "%s with struct_size %zu: message \"%s\" does not name struct_size and %s", kind->name,
                   struct_size, message, kind->init_macro);
        size_t written_size;
        memcpy(&written_size, buffer, sizeof written_size);
        EXPECT_MSG(written_size == struct_size && bytes_are(buffer + sizeof(size_t), sizeof buffer - sizeof(size_t),
                                                            SENTINEL_BYTE),
                   "%s with struct_size %zu: the struct was written", kind->name, struct_size);
    }

    /* An older caller's first-version struct: accepted, filled up to its size, nothing past it. */
    if (first_size < kind->size) {
        size_t old_size = first_size;
        memset(buffer, SENTINEL_BYTE, sizeof buffer);
        memcpy(buffer, &old_size, sizeof old_size);
        vtrn_status_t old_status = kind->call(context, buffer);
        EXPECT_MSG(old_status == VTRN_SUCCESS, "%s with the first version's struct_size %zu: %s: %s", kind->name,
                   old_size, vtrn_status_string(old_status), vtrn_last_error());
        EXPECT_MSG(bytes_are(buffer + first_size, sizeof buffer - first_size, SENTINEL_BYTE),
                   "%s with struct_size %zu: bytes past %zu were written", kind->name, old_size, first_size);
        EXPECT_MSG(!bytes_are(buffer + sizeof(size_t), first_size - sizeof(size_t), SENTINEL_BYTE),
                   "%s with struct_size %zu: nothing was filled", kind->name, old_size);
    }

    /* A newer caller's bigger struct: accepted, filled up to our size, the rest untouched. */
    size_t struct_size = kind->size + extra;
    memset(buffer, SENTINEL_BYTE, sizeof buffer);
    memcpy(buffer, &struct_size, sizeof struct_size);
    vtrn_status_t status = kind->call(context, buffer);
    EXPECT_MSG(status == VTRN_SUCCESS, "%s with struct_size %zu: %s: %s", kind->name, struct_size,
               vtrn_status_string(status), vtrn_last_error());
    size_t written_size;
    memcpy(&written_size, buffer, sizeof written_size);
    EXPECT_MSG(written_size == struct_size, "%s: struct_size became %zu, was %zu", kind->name, written_size,
               struct_size);
    EXPECT_MSG(bytes_are(buffer + kind->size, sizeof buffer - kind->size, SENTINEL_BYTE),
               "%s with struct_size %zu: bytes past %zu were written", kind->name, struct_size, kind->size);
    EXPECT_MSG(!bytes_are(buffer + sizeof(size_t), kind->size - sizeof(size_t), SENTINEL_BYTE),
               "%s with struct_size %zu: nothing was filled", kind->name, struct_size);
}

static inline void check_info_struct_sizes(const struct info_kind *kind, void *context) {
    check_grown_info_struct_sizes(kind, kind->size, context);
}

/* Prints the program's closing line "NAME: N passed, M failed"; returns the exit status. */
static inline int finish(const char *program) {
    printf("%s: %lu passed, %lu failed\n", program, passed_count, failed_count);
    fflush(stdout);
    return failed_count == 0 ? 0 : 1;
}

/* Device `index` of a runtime, and its info, recording a failure if the call fails. */
static inline vtrn_device_t get_device(vtrn_runtime_t runtime, uint32_t index) {
    vtrn_device_t device = NULL;
    EXPECT_OK(vtrn_device_get(runtime, index, &device));
    return device;
}

static inline vtrn_device_info_t get_device_info(vtrn_device_t device) {
    vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;
    EXPECT_OK(vtrn_device_get_info(device, &info));
    return info;
}

/* Device memory of `device` holding `bytes` of `data`, copied in through a host buffer. */
static inline vtrn_device_memory_t device_upload(vtrn_runtime_t runtime, vtrn_device_t device, const void *data, uint64_t bytes) {
    vtrn_device_memory_t memory = NULL;
    EXPECT_OK(vtrn_device_memory_alloc(device, bytes, 0, &memory));
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_create(runtime, bytes, NULL, &buffer));
    void *mapped = NULL;
    size_t size = 0;
    EXPECT_OK(vtrn_host_buffer_map(buffer, &mapped, &size));
    if (mapped != NULL) memcpy(mapped, data, bytes);
    EXPECT_OK(vtrn_memcpy(device, vtrn_device_ref(memory, 0), vtrn_host_ref(buffer, 0), bytes));
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
    return memory;
}

/* `bytes` of device memory, copied out through a host buffer into `data`. */
static inline void device_download(vtrn_runtime_t runtime, vtrn_device_t device, vtrn_device_memory_t memory, void *data,
                                   uint64_t bytes) {
    vtrn_host_buffer_t buffer = NULL;
    EXPECT_OK(vtrn_host_buffer_create(runtime, bytes, NULL, &buffer));
    void *mapped = NULL;
    size_t size = 0;
    EXPECT_OK(vtrn_host_buffer_map(buffer, &mapped, &size));
    EXPECT_OK(vtrn_memcpy(device, vtrn_host_ref(buffer, 0), vtrn_device_ref(memory, 0), bytes));
    if (mapped != NULL) memcpy(data, mapped, bytes);
    EXPECT_OK(vtrn_host_buffer_destroy(buffer));
}

#endif /* VTRN_TEST_FRAMEWORK_H */
