/*
 * test_claims.c — core ownership across processes (include/vtrn.h, "Core ownership"), with real
 * processes: claims_helper (built beside this program) holds cores or races for them.
 *
 *   - a holder killed with SIGKILL frees its cores at once for another process;
 *   - a core claimed by a process that is gone from memory stays free, though its lock file
 *     still names it; a program the holder execs does not inherit its claims (O_CLOEXEC);
 *   - two processes racing for one core: exactly one wins, every one of 200 rounds;
 *   - BUSY messages and vtrn_device_get_core_holder name the holder's pid and command line;
 *   - an unusable lock directory or lock file is an error naming it, never silently no locking.
 *
 * The program keeps its claims in a lock directory of its own (mkdtemp), set before its first
 * runtime; the helpers inherit it.
 */
#define _GNU_SOURCE /* pipe2, mkdtemp, kill, readlink under -std=c11 */

#include "test_framework.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static char helper_path[4096];
static char lock_directory[64];

/* ---- helper processes ---------------------------------------------------------------------- */

struct helper {
    pid_t pid;
    FILE *input;  /* its stdin */
    FILE *output; /* its stdout */
};

/* Starts claims_helper with `arguments` (after the program name), stdin and stdout piped. */
static struct helper start_helper(const char *const *arguments) {
    struct helper helper = { -1, NULL, NULL };
    const char *argv[16] = { helper_path };
    for (int i = 0; arguments[i] != NULL && i < 14; i++) argv[i + 1] = arguments[i];
    int to_child[2], from_child[2];
    /* O_CLOEXEC: a later helper must not inherit this one's pipes (its stdin would never end). */
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
        EXPECT_MSG(0, "pipe2: %s", strerror(errno));
        return helper;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(to_child[0], STDIN_FILENO);
        dup2(from_child[1], STDOUT_FILENO);
        execv(helper_path, (char *const *)argv);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    EXPECT_MSG(pid > 0, "fork: %s", strerror(errno));
    helper.pid = pid;
    helper.input = fdopen(to_child[1], "w");
    helper.output = fdopen(from_child[0], "r");
    return helper;
}

/* The helper's next line, without its newline; "" at end of output. */
static const char *read_line(struct helper *helper, char *line, size_t size) {
    if (fgets(line, (int)size, helper->output) == NULL) {
        line[0] = '\0';
        return line;
    }
    line[strcspn(line, "\n")] = '\0';
    return line;
}

static void send_line(struct helper *helper, const char *line) {
    fprintf(helper->input, "%s\n", line);
    fflush(helper->input);
}

/* Closes its stdin and waits for it; returns its exit status, or -signal. */
static int finish_helper(struct helper *helper) {
    if (helper->input) fclose(helper->input);
    int status = 0;
    waitpid(helper->pid, &status, 0);
    if (helper->output) fclose(helper->output);
    helper->input = helper->output = NULL;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* ---- this process's runtimes ----------------------------------------------------------------- */

static vtrn_runtime_t create_runtime(const char *topology) {
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    vtrn_runtime_t runtime = NULL;
    EXPECT_OK(vtrn_runtime_create(&options, &runtime));
    return runtime;
}

static vtrn_status_t open_queue(vtrn_device_t device, uint32_t core, vtrn_dma_queue_t *queue) {
    vtrn_dma_queue_options_t options = VTRN_DMA_QUEUE_OPTIONS_INIT;
    options.core = core;
    return vtrn_dma_queue_create(device, &options, queue);
}

/* A one-instruction program, to claim a core through vtrn_kernel_load. */
static vtrn_program_t small_program(vtrn_runtime_t runtime) {
    vtrn_program_t program = NULL;
    EXPECT_OK(vtrn_program_create(runtime, &program));
    EXPECT_OK(vtrn_program_memset(program, VTRN_ENGINE_DVE, vtrn_sbuf(0, 1, 0, VTRN_DTYPE_FP32, 4), 0.0f, NULL));
    return program;
}

static vtrn_core_holder_t core_holder(vtrn_device_t device, uint32_t core) {
    vtrn_core_holder_t holder = VTRN_CORE_HOLDER_INIT;
    EXPECT_OK(vtrn_device_get_core_holder(device, core, &holder));
    return holder;
}

static double microseconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e6 + (double)(now.tv_nsec - start->tv_nsec) * 1e-3;
}

/* ---- the tests --------------------------------------------------------------------------------- */

/* Runs before any runtime exists (so before any thread): setenv is safe here. */
static void test_unusable_lock_directory(void) {
    GROUP("claims: an unusable lock directory fails vtrn_runtime_create, naming it and the reason");
    char file[128];
    snprintf(file, sizeof file, "%s/a-file", lock_directory);
    int descriptor = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT(descriptor >= 0);
    close(descriptor);

    vtrn_runtime_t runtime = NULL;
    setenv("VTRN_LOCK_DIR", file, 1);
    EXPECT_ERROR(vtrn_runtime_create(NULL, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "vtrn_runtime_create: VTRN_LOCK_DIR=\"",
                 file, "cannot keep core claims in", "Not a directory", "accepted: a directory this process can write");
    EXPECT(runtime == NULL);

    char below_file[160];
    snprintf(below_file, sizeof below_file, "%s/locks", file);
    setenv("VTRN_LOCK_DIR", below_file, 1);
    EXPECT_ERROR(vtrn_runtime_create(NULL, &runtime), VTRN_ERROR_INVALID_ARGUMENT, below_file, "Not a directory",
                 "(mkdir ");

    if (geteuid() != 0) { /* root writes anywhere: permissions cannot refuse it */
        char read_only[128];
        snprintf(read_only, sizeof read_only, "%s/read-only", lock_directory);
        EXPECT(mkdir(read_only, 0500) == 0);
        setenv("VTRN_LOCK_DIR", read_only, 1);
        EXPECT_ERROR(vtrn_runtime_create(NULL, &runtime), VTRN_ERROR_INVALID_ARGUMENT, read_only, "Permission denied");
        rmdir(read_only);
    }
    unlink(file);
    setenv("VTRN_LOCK_DIR", lock_directory, 1);

    /* A directory that does not exist yet is made, parents included. */
    char nested[128];
    snprintf(nested, sizeof nested, "%s/made/on/demand", lock_directory);
    setenv("VTRN_LOCK_DIR", nested, 1);
    EXPECT_OK(vtrn_runtime_create(NULL, &runtime));
    struct stat status;
    EXPECT(stat(nested, &status) == 0 && S_ISDIR(status.st_mode));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    setenv("VTRN_LOCK_DIR", lock_directory, 1);
}

static void test_sigkill_frees_cores(void) {
    GROUP("claims: a holder killed by SIGKILL frees its cores at once; BUSY and the holder query name it");
    const char *arguments[] = { "hold", "trn1", "0", "0", "1", NULL };
    struct helper helper = start_helper(arguments);
    char line[4096];
    int pid = 0;
    EXPECT_MSG(sscanf(read_line(&helper, line, sizeof line), "held %d", &pid) == 1 && pid == helper.pid,
               "the helper said \"%s\"", line);

    vtrn_runtime_t runtime = create_runtime("trn1");
    vtrn_device_t device = get_device(runtime, 0);
    vtrn_core_holder_t holder = core_holder(device, 0);
    EXPECT_EQ_U64(holder.held, 1);
    EXPECT_EQ_I64(holder.pid, pid);
    EXPECT_EQ_U64(holder.this_process, 0);
    EXPECT_EQ_U64(holder.runtime, 1); /* the helper's first runtime */
    EXPECT_CONTAINS(holder.command, "claims_helper hold trn1 0 0 1");

    char claimed_by[64], lock_file[160];
    snprintf(claimed_by, sizeof claimed_by, "is claimed by runtime 1 of process %d (", pid);
    snprintf(lock_file, sizeof lock_file, "(lock file %s/trn1@node0-device0-core0.lock)", lock_directory);
    vtrn_dma_queue_t queue = NULL;
    EXPECT_ERROR(open_queue(device, 0, &queue), VTRN_ERROR_BUSY, "vtrn_dma_queue_create: core 0 of device 0 ", claimed_by,
                 "claims_helper hold trn1 0 0 1", "until the holder's runtime is destroyed or its process exits",
                 lock_file);
    vtrn_program_t program = small_program(runtime);
    vtrn_kernel_t kernel = NULL;
    EXPECT_ERROR(vtrn_kernel_load(device, 1, program, &kernel), VTRN_ERROR_BUSY, "core 1 of device 0", claimed_by);

    EXPECT(kill(pid, SIGKILL) == 0);
    EXPECT_EQ_I64(finish_helper(&helper), -SIGKILL);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    /* The lock file still holds the dead process's record, but nothing holds the lock. */
    EXPECT_EQ_U64(core_holder(device, 0).held, 0);
    EXPECT_OK(open_queue(device, 0, &queue));
    EXPECT_OK(vtrn_kernel_load(device, 1, program, &kernel));
    double elapsed = microseconds_since(&start);
    if (verbose) printf("#   both cores claimed %.0f us after the holder was reaped\n", elapsed);
    EXPECT_MSG(elapsed < 1e6, "claiming after the holder died took %.0f us", elapsed);

    holder = core_holder(device, 1);
    EXPECT_EQ_U64(holder.held, 1);
    EXPECT_EQ_I64(holder.pid, getpid());
    EXPECT_EQ_U64(holder.this_process, 1);
    EXPECT_CONTAINS(holder.command, "test_claims");
    EXPECT_OK(vtrn_program_destroy(program));
    EXPECT_OK(vtrn_runtime_destroy(runtime));

    /* Destroying the runtime released both cores: a new runtime sees them free. */
    runtime = create_runtime("trn1");
    EXPECT_EQ_U64(core_holder(get_device(runtime, 0), 0).held, 0);
    EXPECT_EQ_U64(core_holder(get_device(runtime, 0), 1).held, 0);
    EXPECT_OK(vtrn_runtime_destroy(runtime));
}

static void test_exec_does_not_inherit_claims(void) {
    GROUP("claims: a program the holder starts with fork+exec does not inherit its claims (O_CLOEXEC)");
    const char *arguments[] = { "hold-spawn", "trn1:2", "1", "0", NULL };
    struct helper helper = start_helper(arguments);
    char line[256];
    int pid = 0, sleeper = 0;
    EXPECT_MSG(sscanf(read_line(&helper, line, sizeof line), "held %d %d", &pid, &sleeper) == 2, "the helper said \"%s\"",
               line);
    EXPECT(kill(pid, SIGKILL) == 0);
    EXPECT_EQ_I64(finish_helper(&helper), -SIGKILL);
    EXPECT_MSG(sleeper > 0 && kill(sleeper, 0) == 0, "the holder's child %d is not running", sleeper);

    vtrn_runtime_t runtime = create_runtime("trn1:2");
    vtrn_device_t device = get_device(runtime, 1);
    EXPECT_EQ_U64(core_holder(device, 0).held, 0);
    vtrn_dma_queue_t queue = NULL;
    EXPECT_OK(open_queue(device, 0, &queue));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    if (sleeper > 0) {
        kill(sleeper, SIGKILL);
        waitpid(sleeper, NULL, 0); /* not our child (the helper's): reaped by init; this is a no-op */
    }
}

static void test_release_reaches_other_processes(void) {
    GROUP("claims: a core this process holds is BUSY for another process until the runtime is destroyed");
    vtrn_runtime_t runtime = create_runtime("trn1:3");
    vtrn_device_t device = get_device(runtime, 2);
    vtrn_dma_queue_t queue = NULL;
    EXPECT_OK(open_queue(device, 1, &queue));
    /* Closing the queue keeps the claim: it lasts until the runtime is destroyed. */
    EXPECT_OK(vtrn_dma_queue_destroy(queue));

    const char *arguments[] = { "race", "trn1:3", "2", "1", NULL };
    struct helper helper = start_helper(arguments);
    char line[4096], expected[96];
    send_line(&helper, "claim");
    snprintf(expected, sizeof expected, "of process %d (", (int)getpid());
    read_line(&helper, line, sizeof line);
    EXPECT_MSG(strncmp(line, "lost 8 ", 7) == 0 && contains(line, expected) && contains(line, "test_claims"),
               "the helper said \"%s\", expected \"lost 8 ...%s...test_claims...\"", line, expected);
    send_line(&helper, "release");
    EXPECT_STREQ(read_line(&helper, line, sizeof line), "released");

    EXPECT_OK(vtrn_runtime_destroy(runtime));
    send_line(&helper, "claim");
    EXPECT_STREQ(read_line(&helper, line, sizeof line), "won");

    /* Now the helper holds it: this process is refused, naming the helper. */
    runtime = create_runtime("trn1:3");
    snprintf(expected, sizeof expected, "of process %d (", (int)helper.pid);
    EXPECT_ERROR(open_queue(get_device(runtime, 2), 1, &queue), VTRN_ERROR_BUSY, "core 1 of device 2", expected,
                 "claims_helper race");
    send_line(&helper, "release");
    EXPECT_STREQ(read_line(&helper, line, sizeof line), "released");
    EXPECT_OK(open_queue(get_device(runtime, 2), 1, &queue));
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_EQ_I64(finish_helper(&helper), 0);
}

static void test_two_processes_race(void) {
    enum { rounds = 200 };
    GROUP("claims: two processes racing for one core, 200 times: exactly one wins each time");
    const char *arguments[] = { "race", "trn1:4", "3", "1", NULL };
    struct helper racers[2] = { start_helper(arguments), start_helper(arguments) };
    int wins[2] = { 0, 0 }, bad_rounds = 0;
    char line[2][4096];
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int round = 0; round < rounds; round++) {
        send_line(&racers[0], "claim");
        send_line(&racers[1], "claim");
        int won[2];
        for (int i = 0; i < 2; i++) won[i] = strcmp(read_line(&racers[i], line[i], sizeof line[i]), "won") == 0;
        if (won[0] + won[1] != 1) {
            bad_rounds++;
            EXPECT_MSG(0, "round %d: racer 0 said \"%s\", racer 1 said \"%s\"", round, line[0], line[1]);
        } else {
            int winner = won[0] ? 0 : 1;
            char expected[64];
            snprintf(expected, sizeof expected, "of process %d (", (int)racers[winner].pid);
            /* The loser was refused with BUSY (8), naming the winner. */
            if (strncmp(line[1 - winner], "lost 8 ", 7) != 0 || !contains(line[1 - winner], expected)) {
                bad_rounds++;
                EXPECT_MSG(0, "round %d: the loser said \"%s\", expected \"lost 8 ...%s...\"", round, line[1 - winner],
                           expected);
            }
            wins[winner]++;
        }
        send_line(&racers[0], "release");
        send_line(&racers[1], "release");
        for (int i = 0; i < 2; i++) read_line(&racers[i], line[i], sizeof line[i]);
    }
    double elapsed = microseconds_since(&start);
    EXPECT_EQ_I64(bad_rounds, 0);
    EXPECT_EQ_I64(wins[0] + wins[1], rounds);
    printf("# test_claims: %d rounds of two processes racing for a core in %.2f s (%.0f us a round); wins %d and %d\n",
           rounds, elapsed * 1e-6, elapsed / rounds, wins[0], wins[1]);
    EXPECT_EQ_I64(finish_helper(&racers[0]), 0);
    EXPECT_EQ_I64(finish_helper(&racers[1]), 0);
}

static vtrn_status_t get_core_holder_call(void *device, void *holder) {
    return vtrn_device_get_core_holder((vtrn_device_t)device, 0, (vtrn_core_holder_t *)holder);
}

static void test_core_holder_arguments(void) {
    GROUP("claims: vtrn_device_get_core_holder's arguments");
    vtrn_runtime_t runtime = create_runtime("trn1:5");
    vtrn_device_t device = get_device(runtime, 4);
    vtrn_core_holder_t holder = VTRN_CORE_HOLDER_INIT;
    EXPECT_ERROR(vtrn_device_get_core_holder(device, 0, NULL), VTRN_ERROR_INVALID_ARGUMENT, "holder is NULL");
    EXPECT_ERROR(vtrn_device_get_core_holder(device, 2, &holder), VTRN_ERROR_NOT_FOUND,
                 "device 4 has 2 cores (0-1); core 2 requested");
    EXPECT_ERROR(vtrn_device_get_core_holder((vtrn_device_t)(uintptr_t)0x1234, 0, &holder), VTRN_ERROR_INVALID_HANDLE,
                 "vtrn_device_get_core_holder");
    struct info_kind kind = { "vtrn_core_holder_t", "VTRN_CORE_HOLDER_INIT", sizeof(vtrn_core_holder_t),
                              get_core_holder_call };
    /* A held core fills the struct (check_info_struct_sizes wants something written). */
    vtrn_dma_queue_t queue = NULL;
    EXPECT_OK(open_queue(device, 0, &queue));
    check_info_struct_sizes(&kind, device);

    /* A free core: held 0, the rest zero. */
    memset(&holder, 0xa5, sizeof holder);
    holder.struct_size = sizeof holder;
    EXPECT_OK(vtrn_device_get_core_holder(device, 1, &holder));
    EXPECT(holder.held == 0 && holder.pid == 0 && holder.runtime == 0 && holder.this_process == 0 &&
           holder.command[0] == '\0');

    /* Hidden cores can be asked about too. */
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = "trn1:5";
    options.visible_cores = "9";
    vtrn_runtime_t hidden = NULL;
    EXPECT_OK(vtrn_runtime_create(&options, &hidden));
    holder = core_holder(get_device(hidden, 4), 0);
    EXPECT(holder.held == 1 && holder.this_process == 1 && holder.pid == getpid());
    EXPECT_OK(vtrn_runtime_destroy(hidden));

    EXPECT_OK(vtrn_runtime_destroy(runtime));
    EXPECT_ERROR(vtrn_device_get_core_holder(device, 0, &holder), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_get_core_holder");
}

static void test_unusable_lock_file(void) {
    GROUP("claims: a lock file that cannot be opened fails the claim with INVALID_ARGUMENT naming it");
    char path[160];
    snprintf(path, sizeof path, "%s/trn1@node0-device5-core0.lock", lock_directory);
    EXPECT(mkdir(path, 0700) == 0); /* a directory where the core's lock file belongs */
    vtrn_runtime_t runtime = create_runtime("trn1:6");
    vtrn_dma_queue_t queue = NULL;
    EXPECT_ERROR(open_queue(get_device(runtime, 5), 0, &queue), VTRN_ERROR_INVALID_ARGUMENT,
                 "vtrn_dma_queue_create: cannot claim core 0 of device 5: cannot open the lock file ", path,
                 "Is a directory", "VTRN_LOCK_DIR");
    EXPECT_OK(open_queue(get_device(runtime, 5), 1, &queue)); /* the other core is fine */
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    rmdir(path);
}

/* Removes the lock directory and everything in it (two levels deep at most). */
static void remove_lock_directory(void) {
    char command[128];
    snprintf(command, sizeof command, "rm -rf '%s'", lock_directory);
    if (system(command) != 0) printf("# test_claims: could not remove %s\n", lock_directory);
}

int main(void) {
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL && strcmp(getenv("VTRN_TEST_VERBOSE"), "0") != 0;
    alarm(300); /* a hung helper must not hang the suite */

    ssize_t length = readlink("/proc/self/exe", helper_path, sizeof helper_path - 32);
    if (length <= 0) {
        printf("FAIL cannot read /proc/self/exe\n");
        return 1;
    }
    helper_path[length] = '\0';
    strcpy(strrchr(helper_path, '/') + 1, "claims_helper");
    if (access(helper_path, X_OK) != 0) {
        printf("FAIL %s is missing: build it with make -C Tests/c\n", helper_path);
        return 1;
    }
    strcpy(lock_directory, "/tmp/vtrn-test-claims-XXXXXX");
    if (mkdtemp(lock_directory) == NULL) {
        printf("FAIL mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    setenv("VTRN_LOCK_DIR", lock_directory, 1);

    test_unusable_lock_directory();
    test_sigkill_frees_cores();
    test_exec_does_not_inherit_claims();
    test_release_reaches_other_processes();
    test_two_processes_race();
    test_core_holder_arguments();
    test_unusable_lock_file();

    remove_lock_directory();
    return finish("test_claims");
}
