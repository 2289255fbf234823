"""pytest setup for the Python package: puts python/ on sys.path and gives every test a clean
vtrn environment (no VTRN_* variable of the caller's shell leaks into a test), with a lock
directory of this test session's own: core claims are the host's, and a test run must contend
neither with a user's claims nor with another run. Child processes of the tests inherit it."""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from support import CONFIGURATION_VARIABLES  # noqa: E402  (Tests/python is on sys.path under pytest)


SESSION_LOCK_DIR = tempfile.mkdtemp(prefix="vtrn-pytest-locks-")
# Set for the whole session, not only inside each test: module-scoped fixtures make runtimes
# before the first test's clean_environment runs, and monkeypatch restores this value after each test.
os.environ["VTRN_LOCK_DIR"] = SESSION_LOCK_DIR


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_LOCK_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in CONFIGURATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VTRN_LOCK_DIR", SESSION_LOCK_DIR)
