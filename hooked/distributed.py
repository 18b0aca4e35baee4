"""One job over several processes: ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m hooked ...`` starts N copies of a command; each reads its place
from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). Code here joins them into one process group on first use (gloo on CPUs,
nccl when every process has a GPU) and is a no-op in a single process, so the same code runs
with and without a launcher.

* :func:`init`, :func:`rank`, :func:`world_size`, :func:`is_main`, :func:`barrier`,
  :func:`broadcast`: the process group and its basic collectives.
* :func:`sweep`: a list of independent work items (a grid of training runs, prompt pairs, model
  sizes) shared round-robin over the ranks, every result gathered to rank 0 in the items' order.
  An item's result depends only on the item (with ``seed=`` the global torch RNG is re-seeded
  per item), so a sweep over N processes equals the same sweep in one.
* :func:`shared_run_dir`: every rank writes into rank 0's run folder; :func:`local_device`: a bare
  ``"cuda"`` becomes each rank's own GPU.
"""

from __future__ import annotations

import atexit
import os
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def launched() -> bool:
    """Whether this process was started by a launcher for more than one process."""
    return all(v in os.environ for v in _LAUNCH_VARS) and int(os.environ["WORLD_SIZE"]) > 1


def init(backend: str | None = None) -> bool:
    """Join the process group torchrun describes (once); returns whether there is more than one process.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default nccl when CUDA is available, else gloo.
    """
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    if not dist.is_available():
        raise RuntimeError(
            "this process was launched for torch.distributed, but torch has no distributed support"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    atexit.register(_leave)
    return True


def _leave() -> None:
    """Destroy the process group :func:`init` made, at the process's exit: a gloo group left to the
    interpreter's teardown can abort the process after its work is done ("terminate called without
    an active exception", exit -6) and torchrun then reports the whole job failed."""
    dist = _dist()
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """How many processes take part (1 without a launcher)."""
    return _dist().get_world_size() if init() else 1


def rank() -> int:
    """This process's place, 0 .. world_size() - 1 (0 without a launcher)."""
    return _dist().get_rank() if init() else 0


def is_main() -> bool:
    """Whether this is rank 0 (the process that writes shared results)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if init():
        _dist().barrier()


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (any picklable value; ``obj`` itself in a single process)."""
    if not init():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not init():
        return [obj]
    out: list[Any] = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def sweep(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    seed: int | None = None,
    gather: Literal["main", "all"] = "main",
) -> list[R] | None:
    """``[fn(item) for item in items]``, the items shared round-robin over the ranks.

    Args:
        fn: the work for one item; its result must be picklable (tensors, dicts, numbers).
        items: the work items, the same list on every rank.
        seed: if given, item ``i`` runs with the global torch RNG seeded ``seed + i`` (and the
            RNG state restored afterwards), so that its result does not depend on which rank
            ran it or what ran before it.
        gather: ``"main"``: rank 0 gets the results (``torch.distributed.gather_object``), the
            other ranks ``None``; ``"all"``: every rank gets them.
    Returns:
        the results in the items' order (on rank 0, or everywhere with ``gather="all"``).

    An item that raises on any rank makes every rank raise, naming the item and the rank.
    """
    items = list(items)
    me, world = rank(), world_size()
    done: dict[int, Any] = {}
    failure: str | None = None
    for i in range(me, len(items), world):
        try:
            if seed is None:
                done[i] = fn(items[i])
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + i)
                    done[i] = fn(items[i])
        except Exception as e:
            if world == 1:
                raise
            failure = f"item {i} ({items[i]!r}) failed on rank {me}: {type(e).__name__}: {e}\n"
            failure += traceback.format_exc()
            break
    if world == 1:
        return [done[i] for i in range(len(items))]
    failures = [f for f in all_gather(failure) if f]
    if failures:
        raise RuntimeError("sweep: " + failures[0])
    dist = _dist()
    if gather == "all":
        parts = all_gather(done)
    else:
        gathered: list[Any] | None = [None] * world if me == 0 else None
        dist.gather_object(done, gathered, dst=0)
        if gathered is None:  # not rank 0
            return None
        parts = gathered
    merged: dict[int, Any] = {}
    for part in parts:
        merged.update(part)
    return [merged[i] for i in range(len(items))]


def local_device(device: str | torch.device) -> str | torch.device:
    """``device`` for this rank: a bare ``"cuda"`` becomes this rank's GPU (``cuda:LOCAL_RANK``)
    under a launcher; anything else is returned as is."""
    if str(device) == "cuda" and launched():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def shared_run_dir(run_dir: Any) -> Any:
    """Rank 0's run folder on every rank (a :class:`hooked.io.RunDir` or a path).

    Each rank of ``torchrun ... hooked repro NAME`` makes its own time-stamped folder unless
    ``--out`` is given; this gives every rank rank 0's and removes a rank's own folder if it is
    still empty. Without a launcher, ``run_dir`` is returned as is.
    """
    if not init():
        return run_dir
    from hooked.io import RunDir

    mine = Path(run_dir).resolve()
    main = Path(broadcast(str(mine)))
    if main == mine:
        return run_dir
    try:
        mine.rmdir()
    except OSError:
        pass
    if isinstance(run_dir, RunDir):
        return RunDir(main, overwrite=getattr(run_dir, "overwrite", False))
    return main
