"""Training across processes with torch.distributed: one process per rank, launched by torchrun.

Outside torchrun (no WORLD_SIZE in the environment, or WORLD_SIZE=1) every helper is the identity:
rank 0 of 1, sums over ranks return their input, and no process group exists.
"""

from __future__ import annotations

import atexit
import os
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from metarl.errors import ConfigError, MetarlError

#: seconds a collective waits for the other ranks before this rank fails (a hung rank, not a dead one:
#: torchrun stops the job as soon as a worker exits)
TIMEOUT_ENV = "METARL_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0


def launched() -> bool:
    """Whether this process is a worker of a multi-process torchrun job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_cores() -> int:
    """This process's share of the cores: under torchrun the local processes share them."""
    return max(available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def launched_as_main() -> bool:
    """Whether this process is (or will be, once the process group is joined) rank 0 of its job."""
    return int(os.environ.get("RANK", "0")) == 0


def is_main() -> bool:
    """Whether this process writes logs and checkpoints (rank 0, or the only process)."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment; return this rank's device.

    gloo for CPU training, nccl for CUDA, where rank r uses GPU LOCAL_RANK. A no-op outside torchrun.
    """
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not is_distributed():
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        atexit.register(_shutdown)
    return device


def _shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


#: per rank, how many collectives it has entered, in the process group's store: the rank that hangs
#: is the one behind when a collective times out
_ENTERED_KEY = "metarl/collectives_entered/{}"
_entered = 0


def _store() -> Any:  # a torch.distributed Store (private accessor: the one the group was made with)
    return dist.distributed_c10d._get_default_store()


def _behind() -> str:
    """The ranks that have not entered the collective this rank waits in, e.g. `rank 1 (collective 37,
    this rank 38)`; empty if the store cannot tell."""
    try:
        store = _store()
        keys = [_ENTERED_KEY.format(r) for r in range(world_size())]
        entered = {r: int(store.get(k)) if store.check([k]) else 0 for r, k in enumerate(keys)}
    except Exception:  # the store went with a dead rank: nothing to name
        return ""
    late = [f"rank {r} (collective {n}, this rank {_entered})" for r, n in entered.items() if n < _entered]
    return ", ".join(late)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise sum of `tensor` over all ranks, detached (`tensor` itself when not distributed).

    A failure (another rank exited, or did not arrive within `METARL_DIST_TIMEOUT_S`) is one line that
    names the ranks that never entered this collective: the hung ones.
    """
    global _entered
    if not is_distributed():
        return tensor
    out = tensor.detach().to(_collective_device(), copy=True)
    _entered += 1
    try:
        _store().set(_ENTERED_KEY.format(rank()), str(_entered))
        dist.all_reduce(out)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        behind = _behind()
        hung = f"; not arrived: {behind}, which hung or is much slower" if behind else ""
        raise MetarlError(
            f"rank {rank()} of {world_size()}: all_reduce failed (another rank exited, or hung for longer than "
            f"{TIMEOUT_ENV}){hung}: {first}"
        ) from None
    return out.to(tensor.device)


def sum_over_ranks(values: list[float]) -> list[float]:
    """Each value summed over all ranks (in float64)."""
    if not is_distributed():
        return list(values)
    return all_reduce_sum(torch.tensor(values, dtype=torch.float64)).tolist()


def all_ranks(flag: bool) -> bool:
    """Whether `flag` holds on every rank."""
    return sum_over_ranks([float(not flag)])[0] == 0


def any_rank(flag: bool) -> bool:
    """Whether `flag` holds on at least one rank."""
    return sum_over_ranks([float(flag)])[0] > 0


def shard(num_items: int) -> slice:
    """This rank's contiguous part of `num_items` items; the first `num_items % world_size` ranks get one more."""
    size, r = world_size(), rank()
    if num_items < size:
        raise ConfigError(
            f"cannot split {num_items} tasks across {size} processes: meta_batch_size must be at least {size}"
        )
    base, extra = divmod(num_items, size)
    start = r * base + min(r, extra)
    return slice(start, start + base + (r < extra))


def broadcast_module(module: torch.nn.Module) -> None:
    """Overwrite this rank's parameters and buffers with rank 0's."""
    if not is_distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def check_nproc(config: Any, nproc: int) -> None:
    """Refuse, before relaunching under torchrun, an `--nproc` the run cannot be split into: each
    process steps a contiguous part of the meta-batch (`shard`), which must hold at least one task, or
    as many as a regularizer needs (its class's `min_tasks`, e.g. 2 for `consistency`), and a CUDA run
    needs one visible GPU per process."""
    from metarl import registry

    need, needed_by = 1, "each process steps at least one task"
    for name in getattr(config, "regularizers", {}):
        minimum = int(getattr(registry.regularizers.load(name), "min_tasks", 1))
        if minimum > need:
            need, needed_by = minimum, f"regularizer {name!r} needs {minimum} tasks in each process"
    tasks = config.meta_batch_size
    if tasks // nproc < need:
        raise ConfigError(
            f"--nproc {nproc} cannot split meta_batch_size {tasks} ({needed_by}): use --nproc {max(1, tasks // need)} "
            f"or less, or a meta_batch_size of at least {need * nproc}"
        )
    if str(config.device).startswith("cuda"):
        visible = torch.cuda.device_count()
        if nproc > visible:
            raise ConfigError(
                f"--nproc {nproc} on {config.device}: each process needs its own GPU, and {visible} are visible"
            )


def relaunch(nproc: int, argv: list[str]) -> None:
    """Replace this process by torchrun running `python -m metarl ARGV` in `nproc` local processes.

    ARGV's own `--nproc N` is left out: torchrun's parser would take it for an ambiguous abbreviation.
    """
    worker_args, skip = [], False
    for arg in argv:
        if not skip and arg != "--nproc" and not arg.startswith("--nproc="):
            worker_args.append(arg)
        skip = arg == "--nproc"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*command, "-m", "metarl", *worker_args])
