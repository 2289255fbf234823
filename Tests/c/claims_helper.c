/*
 * claims_helper.c — a process that claims cores, for the tests of core ownership across processes
 * (test_claims.c, and the Swift and Python suites, which build it too). It speaks one line at a
 * time on stdin and stdout, and claims a core the way users do, with vtrn_dma_queue_create.
 * Its lock directory is VTRN_LOCK_DIR's, as for any vtrn program.
 *
 *   claims_helper hold TOPOLOGY DEVICE CORE...
 *       claims the cores of device DEVICE, prints "held PID", then waits for stdin to close
 *       (or for a signal), destroys its runtime and prints "released".
 *   claims_helper hold-spawn TOPOLOGY DEVICE CORE
 *       claims the core, then starts `sleep 600` with fork and exec, closing nothing (so the
 *       child inherits every descriptor not opened O_CLOEXEC), prints "held PID SLEEPER_PID" and
 *       waits for stdin to close.
 *   claims_helper race TOPOLOGY DEVICE CORE
 *       for each line "claim": a new runtime tries to claim the core and prints "won" or
 *       "lost STATUS MESSAGE"; for each line "release": the runtime (if any) is destroyed and it
 *       prints "released". A runtime that never claims keeps the virtual device alive between
 *       rounds, so a round costs a claim, not a device's start-up. Ends at end of input.
 *
 * Exits 0, or 2 with a message on stderr when something other than the claim fails.
 */
#define _GNU_SOURCE /* pipe2, mkdtemp, kill, readlink under -std=c11 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "vtrn.h"

static void die(const char *what, vtrn_status_t status) {
    fprintf(stderr, "claims_helper: %s failed: %s: %s\n", what, vtrn_status_string(status), vtrn_last_error());
    exit(2);
}

static vtrn_runtime_t create_runtime(const char *topology) {
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    vtrn_runtime_t runtime = NULL;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    if (status != VTRN_SUCCESS) die("vtrn_runtime_create", status);
    return runtime;
}

/* Claims `core` of device `index` with a DMA queue; returns the status. */
static vtrn_status_t claim(vtrn_runtime_t runtime, uint32_t index, uint32_t core) {
    vtrn_device_t device = NULL;
    vtrn_status_t status = vtrn_device_get(runtime, index, &device);
    if (status != VTRN_SUCCESS) die("vtrn_device_get", status);
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.core = core;
    vtrn_dma_queue_t queue = NULL;
    return vtrn_dma_queue_create(device, &options, &queue);
}

static void wait_for_end_of_input(void) {
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: claims_helper hold|hold-spawn|race TOPOLOGY DEVICE CORE...\n");
        return 2;
    }
    const char *mode = argv[1], *topology = argv[2];
    uint32_t index = (uint32_t)strtoul(argv[3], NULL, 10);

    if (strcmp(mode, "hold") == 0 || strcmp(mode, "hold-spawn") == 0) {
        vtrn_runtime_t runtime = create_runtime(topology);
        for (int argument = 4; argument < argc; argument++) {
            vtrn_status_t status = claim(runtime, index, (uint32_t)strtoul(argv[argument], NULL, 10));
            if (status != VTRN_SUCCESS) die("claiming a core", status);
        }
        if (strcmp(mode, "hold-spawn") == 0) {
            pid_t sleeper = fork();
            if (sleeper < 0) {
                perror("claims_helper: fork");
                return 2;
            }
            if (sleeper == 0) {
                execlp("sleep", "sleep", "600", (char *)NULL);
                _exit(127);
            }
            printf("held %d %d\n", (int)getpid(), (int)sleeper);
        } else {
            printf("held %d\n", (int)getpid());
        }
        fflush(stdout);
        wait_for_end_of_input();
        vtrn_runtime_destroy(runtime);
        printf("released\n");
        return 0;
    }

    if (strcmp(mode, "race") == 0) {
        uint32_t core = (uint32_t)strtoul(argv[4], NULL, 10);
        vtrn_runtime_t keeper = create_runtime(topology);
        vtrn_runtime_t runtime = NULL;
        char line[256];
        while (fgets(line, sizeof line, stdin) != NULL) {
            if (strncmp(line, "claim", 5) == 0) {
                runtime = create_runtime(topology);
                vtrn_status_t status = claim(runtime, index, core);
                if (status == VTRN_SUCCESS) {
                    printf("won\n");
                } else {
                    printf("lost %d %s\n", (int)status, vtrn_last_error());
                    vtrn_runtime_destroy(runtime);
                    runtime = NULL;
                }
            } else if (strncmp(line, "release", 7) == 0) {
                vtrn_runtime_destroy(runtime);
                runtime = NULL;
                printf("released\n");
            }
            fflush(stdout);
        }
        vtrn_runtime_destroy(runtime);
        vtrn_runtime_destroy(keeper);
        return 0;
    }

    fprintf(stderr, "claims_helper: unknown mode \"%s\"\n", mode);
    return 2;
}
