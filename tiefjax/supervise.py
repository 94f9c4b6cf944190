"""One line instead of a C++ crash dump when a multi-process run loses a process.

When a process of a multi-process run never joins or dies mid-run, JAX's coordination service
ends every other process within the heartbeat timeout (``TIEFJAX_DISTRIBUTED_TIMEOUT``) by
aborting it: a fatal log line, a C++ stack dump and SIGABRT, which Python cannot catch. So the
command line runs a multi-process command in a child process and passes its output through
line by line, replacing that dump with one line that says what happened and what to do; the
child dies with its parent (a killed ``tiefjax`` leaves nothing running). Gloo's connection
chatter on stdout is dropped so that JSON output stays parseable.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from tiefjax.distributed import timeout_s

WORKER_VAR = "TIEFJAX_WORKER"
#: Lines that follow a native log line this soon are taken as the rest of its message (one
#: write); anything later — the command's own output, a Python traceback — passes through.
CONTINUATION_S = 0.25
#: JAX's fatal log line when the coordination service gives up on the run.
FATAL_MARK = "the JAX distributed service detected fatal errors"


def _die_with_parent() -> None:
    """Child set-up: SIGKILL when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


def _is_native_log(line: str) -> bool:
    """An absl/glog line of the C++ runtime: ``E1201 20:42:14.338837 ...``."""
    return line[:1] in "EWF" and line[1:5].isdigit() and line[5:6] == " "


class _Filter:
    """Pass a child's stream through, dropping JAX's crash dump and Gloo's chatter."""

    def __init__(self, source: IO[bytes], sink: IO[str]):
        self.source, self.sink = source, sink
        self.fatal = False
        self.joined = False
        self._noise_until = 0.0  # lines before this time continue a C++ log message
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for raw in self.source:
            line = raw.decode("utf-8", errors="replace")
            if FATAL_MARK in line or (line[:1] == "F" and _is_native_log(line)):
                self.fatal = True  # JAX's (or the runtime's) fatal error: the dump follows
            if self.fatal or line.startswith("[Gloo] "):
                continue
            if _is_native_log(line):  # the runtime's absl log line; its message may run over
                self._noise_until = time.monotonic() + CONTINUATION_S  # lines written with it
                continue
            if time.monotonic() < self._noise_until and not line.startswith("tiefjax"):
                continue
            if line.startswith("tiefjax ") and ": process " in line:
                self.joined = True  # the worker's announcement (tiefjax.distributed.announce)
            self.sink.write(line)
            self.sink.flush()


def run_supervised(argv: Sequence[str], command: str) -> int:
    """Run ``tiefjax ARGV`` as a worker child; its exit status, or 1 with one line when JAX
    ended it because the run lost a process."""
    env = dict(os.environ, **{WORKER_VAR: "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiefjax", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    forward = lambda signum, _frame: proc.send_signal(signum)  # noqa: E731
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    out, err = _Filter(proc.stdout, sys.stdout), _Filter(proc.stderr, sys.stderr)  # type: ignore[arg-type]
    rc = proc.wait()
    out.thread.join()
    err.thread.join()
    if err.fatal or rc == -signal.SIGABRT:
        limit = timeout_s()
        if err.joined:
            what = f"another process of this run stopped or stopped answering (for {limit}s)"
        else:
            what = f"not every process joined the run within {limit}s"
        print(
            f"tiefjax {command}: error: {what}; see the other processes' output, then start "
            f"every process again with the same command (finished work is kept; "
            f"TIEFJAX_DISTRIBUTED_TIMEOUT sets the wait)",
            file=sys.stderr,
        )
        return 1
    return rc if rc >= 0 else 128 - rc
