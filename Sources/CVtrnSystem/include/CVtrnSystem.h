/* CVtrnSystem: the few things Swift cannot reach by itself (variadic syscalls, GNU-only macros,
 * thread-local storage with a destructor), plus libnuma's headers. Everything here is hidden:
 * none of it is exported from libvtrn.so. */
#ifndef CVTRN_SYSTEM_H
#define CVTRN_SYSTEM_H

#include <stddef.h>
#include <stdint.h>
#include <numa.h>
#include <numaif.h>
#include <cblas.h>

#define VTRNSYS_HIDDEN __attribute__((visibility("hidden")))

/* This thread's last error message (see vtrn_last_error). The text is copied. */
VTRNSYS_HIDDEN void vtrnsys_set_last_error(const char *message);
/* "" when no error was set on this thread. Valid until the next set on this thread. */
VTRNSYS_HIDDEN const char *vtrnsys_last_error(void);

/* futex(2) on a 32-bit word, process-private. wait returns 0 on wake or value mismatch,
 * -1 with errno ETIMEDOUT on timeout. timeout_ns UINT64_MAX waits forever. */
VTRNSYS_HIDDEN int vtrnsys_futex_wait(uint32_t *word, uint32_t expected, uint64_t timeout_ns);
VTRNSYS_HIDDEN int vtrnsys_futex_wake(uint32_t *word, int count);

/* Atomics on plain memory, for words that futex(2) also sees (Swift's Atomic has no address). */
static inline uint32_t vtrnsys_load_u32(const uint32_t *word) { return __atomic_load_n(word, __ATOMIC_SEQ_CST); }
static inline uint32_t vtrnsys_add_u32(uint32_t *word, uint32_t value) {
    return __atomic_add_fetch(word, value, __ATOMIC_SEQ_CST);
}
static inline void vtrnsys_cpu_relax(void) { __builtin_ia32_pause(); }

/* ThreadSanitizer's happens-before annotations. Weak: they resolve only in a process that has
 * TSan's runtime (a --sanitize=thread build), and cost a test of a null pointer elsewhere. */
void __tsan_acquire(void *address) __attribute__((weak));
void __tsan_release(void *address) __attribute__((weak));
static inline void vtrnsys_tsan_acquire(void *address) {
    if (__tsan_acquire) __tsan_acquire(address);
}
static inline void vtrnsys_tsan_release(void *address) {
    if (__tsan_release) __tsan_release(address);
}

/* Pins the calling thread to the CPUs of a NUMA node (nothing happens if libnuma is unusable). */
VTRNSYS_HIDDEN int vtrnsys_run_on_node(int node);

/* The CPU the calling thread runs on, or -1. */
VTRNSYS_HIDDEN int vtrnsys_current_cpu(void);

/* Starts a detached-or-joinable thread running body(context); returns 0 or an errno. */
VTRNSYS_HIDDEN int vtrnsys_thread_start(void (*body)(void *), void *context, const char *name, uint64_t *thread);
/* Joins a thread, or detaches it when called on that thread itself. */
VTRNSYS_HIDDEN int vtrnsys_thread_join(uint64_t thread);
/* The calling thread's Linux thread id. */
VTRNSYS_HIDDEN int32_t vtrnsys_thread_id(void);

/* RLIMIT_MEMLOCK's soft limit in bytes; UINT64_MAX when unlimited. */
VTRNSYS_HIDDEN uint64_t vtrnsys_memlock_limit(void);

/* Open-file-description locks (fcntl F_OFD_SETLK / F_OFD_GETLK, GNU-only names) on a whole file,
 * for core claims across processes: like flock, a lock belongs to the open file description, so
 * it conflicts with every other open of the file, this process's included, and the kernel drops
 * it when the last descriptor closes, a killed process's too.
 * try_exclusive: 0 when taken; -1 with errno EAGAIN or EACCES when another description holds it.
 * is_locked: 1 when another description holds a lock on the file, 0 when none does, -1 on error;
 * it takes nothing, so it never makes a concurrent claim fail. */
VTRNSYS_HIDDEN int vtrnsys_file_lock_try_exclusive(int fd);
VTRNSYS_HIDDEN int vtrnsys_file_lock_is_locked(int fd);

/* Nanoseconds of CLOCK_MONOTONIC and of this thread's / process's CPU time. */
VTRNSYS_HIDDEN uint64_t vtrnsys_monotonic_ns(void);
VTRNSYS_HIDDEN uint64_t vtrnsys_process_cpu_ns(void);

#endif
