/* CVtrnSystem: the few things Swift cannot reach by itself (variadic syscalls, GNU-only macros,
 * thread-local storage with a destructor), plus libnuma's headers. Everything here is hidden:
 * none of it is exported from libvtrn.so. */
#ifndef CVTRN_SYSTEM_H
#define CVTRN_SYSTEM_H

#include <stddef.h>
#include <stdint.h>
#include <numa.h>
#include <numaif.h>

#define VTRNSYS_HIDDEN __attribute__((visibility("hidden")))

/* This thread's last error message (see vtrn_last_error). The text is copied. */
VTRNSYS_HIDDEN void vtrnsys_set_last_error(const char *message);
/* "" when no error was set on this thread. Valid until the next set on this thread. */
VTRNSYS_HIDDEN const char *vtrnsys_last_error(void);

/* futex(2) on a 32-bit word, process-private. wait returns 0 on wake or value mismatch,
 * -1 with errno ETIMEDOUT on timeout. timeout_ns UINT64_MAX waits forever. */
VTRNSYS_HIDDEN int vtrnsys_futex_wait(uint32_t *word, uint32_t expected, uint64_t timeout_ns);
VTRNSYS_HIDDEN int vtrnsys_futex_wake(uint32_t *word, int count);

/* Pins the calling thread to the CPUs of a NUMA node (nothing happens if libnuma is unusable). */
VTRNSYS_HIDDEN int vtrnsys_run_on_node(int node);

/* The CPU the calling thread runs on, or -1. */
VTRNSYS_HIDDEN int vtrnsys_current_cpu(void);

#endif
