/* The lock directory VtrnTestIsolation gave this test process (also in VTRN_LOCK_DIR). */
#ifndef VTRN_TEST_ISOLATION_H
#define VTRN_TEST_ISOLATION_H

const char *vtrn_test_lock_directory(void);

#endif
