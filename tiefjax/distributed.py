"""Several processes (hosts) in one run: joining, who does what, waiting for each other.

A multi-process run is the same command started once per host with JAX's usual variables
(``JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i``) or with
``TIEFJAX_DISTRIBUTED=auto`` on clusters JAX detects itself (Slurm, Cloud TPU, ...).
:func:`start` joins the run; it must come before any other JAX call, so the command line calls it
first of all (:func:`tiefjax.cli.main`), and so must a script that drives several processes.

Failing fast: ``TIEFJAX_DISTRIBUTED_TIMEOUT`` (seconds, default 300) bounds how long a process
waits for the others to join, how long a silent process is taken for alive (JAX's heartbeat) and
how long :func:`barrier` waits. A process that never joins ends the others with a
:class:`~tiefjax.errors.TiefjaxError`; a process that dies mid-run makes JAX end the others
(see :mod:`tiefjax.supervise` for how that becomes one line).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from tiefjax.errors import InvalidInput, TiefjaxError

TIMEOUT_VAR = "TIEFJAX_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_S = 300
_state: dict[str, Any] = {"joined": False, "calls": 0}


def requested() -> bool:
    """True when the environment asks for a multi-process run."""
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or (
        os.environ.get("TIEFJAX_DISTRIBUTED", "").lower() == "auto"
    )


def timeout_s() -> int:
    """The fail-fast bound in seconds (``TIEFJAX_DISTRIBUTED_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_VAR, str(DEFAULT_TIMEOUT_S))
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise InvalidInput(f"{TIMEOUT_VAR}={raw!r}: give a whole number of seconds >= 1")
    return int(raw)


def _from_env() -> dict[str, Any]:
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not addr:
        return {}
    try:
        n = int(os.environ["JAX_NUM_PROCESSES"])
        pid = int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError) as err:
        raise InvalidInput(
            "JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES / JAX_PROCESS_ID are missing "
            "or not integers; set all three on every host (process ids 0..N-1)."
        ) from err
    if n < 1 or not 0 <= pid < n:
        raise InvalidInput(f"JAX_PROCESS_ID={pid} must lie in 0..JAX_NUM_PROCESSES-1 ({n - 1})")
    return {"coordinator_address": addr, "num_processes": n, "process_id": pid}


def start() -> bool:
    """Join the multi-process run the environment asks for; True when there is one.

    Safe to call more than once. Must run before any JAX computation.
    """
    if _state["joined"]:
        return True
    if not requested():
        return False
    import jax

    limit = timeout_s()
    where = _from_env()
    try:
        jax.distributed.initialize(
            **where, initialization_timeout=limit, heartbeat_timeout_seconds=limit
        )
    except Exception as err:  # the coordinator's errors are plain RuntimeErrors/XlaRuntimeErrors
        target = where.get("coordinator_address", "the detected cluster")
        raise TiefjaxError(
            f"could not join the multi-process run at {target} within {limit}s "
            f"({str(err).splitlines()[0][:160]}); start every process with the same "
            f"JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES, each with its own JAX_PROCESS_ID, "
            f"and check that process 0 can be reached"
        ) from err
    _state["joined"] = True
    return True


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def describe() -> str:
    """``process i of n, 2 local cpu device(s) of 4``: who this process is and what it sees."""
    import jax

    local = jax.local_devices()
    kinds = sorted({d.platform for d in local})
    return (
        f"process {jax.process_index()} of {jax.process_count()}, {len(local)} local "
        f"{'/'.join(kinds)} device(s) of {jax.device_count()}"
    )


def announce(command: str) -> None:
    """Say once, on stderr, which process this is and the devices it sees."""
    if _state.get("announced"):
        return
    _state["announced"] = True
    print(f"tiefjax {command}: {describe()}", file=sys.stderr, flush=True)


def _client() -> Any:
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state.client


def barrier(name: str) -> None:
    """Wait until every process reached ``name`` (no-op in a one-process run).

    A process that does not arrive within the timeout is an error naming the barrier.
    """
    if process_count() == 1:
        return
    limit = timeout_s()
    try:
        _client().wait_at_barrier(f"tiefjax/{_call_id()}/{name}", limit * 1000)
    except Exception as err:
        raise TiefjaxError(
            f"another process did not reach '{name}' within {limit}s (it failed, was killed "
            f"or runs with other settings); see its output, then start every process again "
            f"(finished work is kept)"
        ) from err


def _call_id() -> int:
    """A number that is the same on every process for the same call (all processes make the
    same calls in the same order), so that a key is never written twice in one run."""
    _state["calls"] += 1
    return _state["calls"]


def share(key: str, value: str | None = None) -> str:
    """Process 0's ``value`` for ``key``, on every process (the others pass nothing)."""
    if process_count() == 1:
        assert value is not None
        return value
    client, full = _client(), f"tiefjax/share/{_call_id()}/{key}"
    if process_index() == 0:
        assert value is not None
        client.key_value_set(full, value)
        return value
    try:
        return str(client.blocking_key_value_get(full, timeout_s() * 1000))
    except Exception as err:
        raise TiefjaxError(
            f"process 0 did not publish '{key}' within {timeout_s()}s; see its output"
        ) from err


def gather(name: str, value: str) -> list[str]:
    """Every process's ``value``, in process order (``[value]`` in a one-process run)."""
    if process_count() == 1:
        return [value]
    client, key = _client(), f"tiefjax/gather/{_call_id()}"
    client.key_value_set(f"{key}/{process_index()}", value)
    barrier(f"gather-{name}")
    return [
        str(client.blocking_key_value_get(f"{key}/{p}", timeout_s() * 1000))
        for p in range(process_count())
    ]


def all_true(name: str, flag: bool) -> bool:
    """True on every process when ``flag`` is true on every process: decisions that must not
    diverge (a process that went its own way would wait in a collective for ever)."""
    return all(v == "1" for v in gather(name, "1" if flag else "0"))


def check_same(what: str, value: str) -> None:
    """Every process must run with the same ``value`` (command, workspace, settings): else all
    end with an error naming ``what`` instead of computing different things."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    differ = [p for p, d in enumerate(gather(f"same-{what}", digest)) if d != digest]
    if differ:
        raise InvalidInput(
            f"the processes of this run were started with different {what} (this is process "
            f"{process_index()}; processes {differ} differ); start every process with the same "
            f"command, workspace and settings"
        )


def shard(items: list[Any]) -> list[Any]:
    """This process's share of ``items``: every ``process_count()``-th, from its index.

    Stable for a given list and process count, disjoint across processes, covering all items.
    """
    return items[process_index() :: process_count()]
