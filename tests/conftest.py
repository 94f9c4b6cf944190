"""Session set-up shared by every test module."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import settings

# Property tests draw the same examples on every run and machine (CI included): a failure found
# once is found again, and a passing run means the same thing everywhere. Examples found by
# hand exploration belong in the tests as @example.
settings.register_profile("deterministic", derandomize=True)
settings.load_profile("deterministic")

_made: list[str] = []


def pytest_configure(config) -> None:
    """Compiled programs go to a cache of this test session (commands under test turn the
    cache on): nothing is written to the user's home, and test subprocesses share it."""
    if "TIEFJAX_COMPILE_CACHE" not in os.environ:
        _made.append(tempfile.mkdtemp(prefix="tiefjax-test-xla-"))
        os.environ["TIEFJAX_COMPILE_CACHE"] = _made[0]


def pytest_unconfigure(config) -> None:
    for folder in _made:
        shutil.rmtree(folder, ignore_errors=True)
