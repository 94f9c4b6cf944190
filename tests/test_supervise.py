"""The supervisor's output filter: JAX's crash dump and runtime chatter out, everything else in."""

from __future__ import annotations

import io
import os
import threading
import time

from tiefjax.supervise import CONTINUATION_S, _Filter

DUMP = [
    "E1201 20:42:14.338837 5826 coordination_service.cc:1549] Use error polling: UNAVAILABLE:",
    "1",
    "The tasks have crashed. Check the task logs for an earlier error.",
    "F1201 20:42:14.340337 5837 client.h:80] Terminating process because the JAX distributed "
    "service detected fatal errors. This most likely indicates that another task died",
    "*** Check failure stack trace: ***",
    "    @     0x7f061970cd5b  std::_Function_handler<>::_M_invoke()",
]


def _filtered(chunks: list[tuple[float, list[str]]]) -> _Filter:
    """Feed ``(pause before, lines)`` chunks through a pipe into a filter; wait for the end."""
    read_fd, write_fd = os.pipe()
    sink = io.StringIO()
    filt = _Filter(os.fdopen(read_fd, "rb"), sink)

    def write() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            for pause, lines in chunks:
                time.sleep(pause)
                pipe.write("".join(line + "\n" for line in lines).encode())
                pipe.flush()

    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    filt.thread.join(timeout=10)
    filt.output = sink.getvalue()  # type: ignore[attr-defined]
    return filt


def test_the_crash_dump_and_gloo_chatter_are_dropped_the_rest_kept():
    later = 2 * CONTINUATION_S
    filt = _filtered(
        [
            (0, ["tiefjax train: process 1 of 2, 2 local cpu device(s) of 4"]),
            (0, ["[Gloo] Rank 2 is connected to 3 peer ranks."]),
            (0, ["W1201 20:40:00.000000 1 orbax.cc:1] a warning", "  its second line"]),
            (later, ["classifier: resuming from the checkpoint at step 30"]),
            (later, DUMP),
        ]
    )
    lines = filt.output.splitlines()  # type: ignore[attr-defined]
    assert lines == [
        "tiefjax train: process 1 of 2, 2 local cpu device(s) of 4",
        "classifier: resuming from the checkpoint at step 30",
    ]
    assert filt.joined and filt.fatal


def test_a_python_traceback_after_runtime_logs_is_not_hidden():
    filt = _filtered(
        [
            (0, ["E1201 20:40:00.000000 1 x.cc:1] something the runtime said"]),
            (2 * CONTINUATION_S, ["Traceback (most recent call last):", "ValueError: a bug"]),
        ]
    )
    assert filt.output.splitlines() == ["Traceback (most recent call last):", "ValueError: a bug"]  # type: ignore[attr-defined]
    assert not filt.fatal and not filt.joined
