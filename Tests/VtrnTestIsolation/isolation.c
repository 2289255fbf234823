/* VtrnTestIsolation: gives the Swift test process a lock directory of its own before any test
 * runs, so that the cores its runtimes claim never contend with a user's real claims or with
 * another test run on the same host (see "Core ownership" in include/vtrn.h).
 *
 * It is a constructor because Swift Testing has no hook that runs before every test, and
 * VTRN_LOCK_DIR must be in the environment before the first thread starts (setenv racing a
 * getenv on another thread is undefined). The variable is always replaced: a user's own
 * VTRN_LOCK_DIR is where their real claims live. Child processes the tests start inherit it. The
 * directory and its lock files are removed at exit. */
#include "VtrnTestIsolation.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char lock_directory[64];

static void remove_lock_directory(void) {
    DIR *directory = opendir(lock_directory);
    if (directory == NULL) return;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        char path[sizeof lock_directory + 256];
        snprintf(path, sizeof path, "%s/%s", lock_directory, entry->d_name);
        unlink(path);
    }
    closedir(directory);
    rmdir(lock_directory);
}

__attribute__((constructor)) static void isolate_core_claims(void) {
    strcpy(lock_directory, "/tmp/vtrn-test-locks-XXXXXX");
    if (mkdtemp(lock_directory) == NULL) {
        perror("VtrnTestIsolation: mkdtemp /tmp/vtrn-test-locks-XXXXXX");
        abort(); /* running on would claim cores in the user's lock directory */
    }
    setenv("VTRN_LOCK_DIR", lock_directory, 1);
    atexit(remove_lock_directory);
}

const char *vtrn_test_lock_directory(void) { return lock_directory; }
