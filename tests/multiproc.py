"""Running a test function on several gloo processes (what ``torchrun`` does, in the test itself).

``run_world(fn, world, *args)`` starts ``world`` fresh processes with torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, a free ``MASTER_PORT``), one torch thread each, calls
``fn(*args)`` in every one and returns each rank's result (``fn`` must be a module-level function
and its results picklable; they come back through a pipe, never a file). A process that fails or
hangs fails the test with its traceback.

The processes are forked by one forkserver per test session that has imported torch, its hook
machinery (``torch._dynamo``) and pyarrow once (:data:`PRELOAD`): a spawned process pays those
imports again, several seconds each on the CI's two cores, for every rank of every test. The
forkserver never runs a torch op, so its children start with no thread pools to inherit.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

PRELOAD = ["torch", "torch._dynamo", "torch.distributed", "pyarrow", "hooked", "hooked.store", "tests.toys"]
"""What the forkserver imports once for every rank of every test (an import that fails is skipped)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple, results: Any) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        # plain pickle bytes: torch's queue would share tensors through memory this process frees
        results.put((rank, "ok", pickle.dumps(fn(*args))))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def context(fn: Callable) -> Any:
    """The multiprocessing context whose ``Process(target=fn)`` forks from the session's forkserver
    (started on first use, with :data:`PRELOAD` and ``fn``'s module imported)."""
    ctx = torch.multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*PRELOAD, fn.__module__])  # used when the session's forkserver starts
    return ctx


def run_world(fn: Callable, world: int, *args: Any, timeout: float = 120.0) -> list[Any]:
    """``fn(*args)`` on ``world`` gloo processes; the results in rank order."""
    ctx = context(fn)
    results = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, world, port, fn, args, results)) for r in range(world)]
    for p in procs:
        p.start()
    found: dict[int, Any] = {}
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    while len(found) + len(errors) < world and time.monotonic() < deadline:
        if not results.empty():
            rank, status, value = results.get()
            if status == "ok":
                found[rank] = pickle.loads(value)
            else:
                errors.append(f"rank {rank}:\n{value}")
                break
        elif any(p.exitcode not in (None, 0) for p in procs):
            break
        else:
            time.sleep(0.02)
    for p in procs:
        p.join(timeout=5 if not errors and len(found) == world else 0.1)
        if p.is_alive():
            p.kill()
            p.join()
    if errors:
        raise AssertionError("a rank failed:\n" + errors[0])
    if len(found) < world:
        codes = [p.exitcode for p in procs]
        raise AssertionError(
            f"ranks {sorted(set(range(world)) - set(found))} gave no result (exit codes {codes})"
        )
    return [found[r] for r in range(world)]
