"""pytest setup for the Python package: puts python/ on sys.path and gives every test a clean
vtrn environment (no VTRN_* variable of the caller's shell leaks into a test)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from support import CONFIGURATION_VARIABLES  # noqa: E402  (Tests/python is on sys.path under pytest)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in CONFIGURATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
