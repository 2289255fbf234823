#include "CVtrnSystem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- last error: one heap buffer per thread, freed by the key's destructor at thread exit. */

struct last_error { size_t capacity; char text[]; };
static pthread_key_t last_error_key;
static pthread_once_t last_error_once = PTHREAD_ONCE_INIT;
static void make_last_error_key(void) { (void)pthread_key_create(&last_error_key, free); }

void vtrnsys_set_last_error(const char *message) {
    (void)pthread_once(&last_error_once, make_last_error_key);
    size_t length = strlen(message);
    struct last_error *slot = pthread_getspecific(last_error_key);
    if (slot == NULL || slot->capacity <= length) {
        size_t capacity = length < 256 ? 256 : length + 1;
        struct last_error *grown = realloc(slot, sizeof *grown + capacity);
        if (grown == NULL) return; /* keep the old message rather than none */
        grown->capacity = capacity;
        slot = grown;
        (void)pthread_setspecific(last_error_key, slot);
    }
    memcpy(slot->text, message, length + 1);
}

const char *vtrnsys_last_error(void) {
    (void)pthread_once(&last_error_once, make_last_error_key);
    struct last_error *slot = pthread_getspecific(last_error_key);
    return slot ? slot->text : "";
}

/* ---- futex */

int vtrnsys_futex_wait(uint32_t *word, uint32_t expected, uint64_t timeout_ns) {
    struct timespec timeout, *timeout_pointer = NULL;
    if (timeout_ns != UINT64_MAX) {
        timeout.tv_sec = (time_t)(timeout_ns / 1000000000u);
        timeout.tv_nsec = (long)(timeout_ns % 1000000000u);
        timeout_pointer = &timeout;
    }
    long result = syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, timeout_pointer, NULL, 0);
    if (result == -1 && (errno == EAGAIN || errno == EINTR)) return 0;
    return (int)result;
}

int vtrnsys_futex_wake(uint32_t *word, int count) {
    return (int)syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

/* ---- CPU placement */

int vtrnsys_run_on_node(int node) {
    if (numa_available() < 0) return 0;
    return numa_run_on_node(node);
}

int vtrnsys_current_cpu(void) { return sched_getcpu(); }

/* ---- threads */

struct thread_start { void (*body)(void *); void *context; };

static void *thread_trampoline(void *argument) {
    struct thread_start start = *(struct thread_start *)argument;
    free(argument);
    start.body(start.context);
    return NULL;
}

int vtrnsys_thread_start(void (*body)(void *), void *context, const char *name, uint64_t *thread) {
    struct thread_start *start = malloc(sizeof *start);
    if (start == NULL) return ENOMEM;
    start->body = body;
    start->context = context;
    pthread_t handle;
    int result = pthread_create(&handle, NULL, thread_trampoline, start);
    if (result != 0) { free(start); return result; }
    if (name != NULL) {
        char short_name[16];
        strncpy(short_name, name, sizeof short_name - 1);
        short_name[sizeof short_name - 1] = 0;
        (void)pthread_setname_np(handle, short_name);
    }
    *thread = (uint64_t)handle;
    return 0;
}

/* Joins the thread; a thread that would join itself (it dropped the last reference to what owns
 * it) is detached instead, so that it is reclaimed when it returns. */
int vtrnsys_thread_join(uint64_t thread) {
    if (pthread_equal((pthread_t)thread, pthread_self())) return pthread_detach((pthread_t)thread);
    return pthread_join((pthread_t)thread, NULL);
}

/* The calling thread's Linux thread id (what top and Perfetto show). */
int32_t vtrnsys_thread_id(void) { return (int32_t)syscall(SYS_gettid); }

/* ---- clocks */

uint64_t vtrnsys_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

uint64_t vtrnsys_process_cpu_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

uint64_t vtrnsys_memlock_limit(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
    return (uint64_t)limit.rlim_cur;
}

/* ---- open-file-description locks, whole file. */

int vtrnsys_file_lock_try_exclusive(int fd) {
    struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    return fcntl(fd, F_OFD_SETLK, &lock);
}

int vtrnsys_file_lock_is_locked(int fd) {
    struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    if (fcntl(fd, F_OFD_GETLK, &lock) != 0) return -1;
    return lock.l_type != F_UNLCK;
}
