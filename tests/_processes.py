"""Helpers for tests that run a tiefjax server in a subprocess."""

from __future__ import annotations

import signal
import subprocess


def interrupt(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop ``proc`` as Ctrl-C would (SIGINT), killing it if it has not ended in ``timeout``."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
