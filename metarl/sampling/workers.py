"""The generic `make_env` path in worker processes (`num_workers` > 1).

Each worker owns a contiguous slice of a meta-batch's envs (`EnvSlice`, the code that steps them in
the main process too) and steps it when told; actions, observations, rewards, dones and successes
travel through one block of shared memory, and the main process runs one batched policy forward per
step for the whole meta-batch. Env k of a meta-batch resets with seed + k whichever worker steps it,
so the episodes are the same for any number of workers.

Workers start once per pool, by fork where the platform has it (the family object is inherited as it
is; elsewhere it is pickled), and keep their copy of the family across meta-batches: a family that
lends its envs out again after `close` (the Meta-World plugin's pool) builds them once per worker.

Failures end the sampling with one PluginError naming the env's family, package and task, after all
workers are killed: a worker that dies (a segfault in an env, `os._exit`), and an env call (make_env,
reset, step, close) that has not returned after `timeout` seconds. Workers ignore SIGINT (the main
process decides when to stop), die with the main process (PR_SET_PDEATHSIG on Linux, and a check of
the parent's pid every second), and are closed with the pool, at the latest when the process exits.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np
import torch

from metarl import distributed
from metarl.errors import MetarlError, PluginError, first_line
from metarl.lifetime import signal_on_parent_death
from metarl.sampling.vector_env import EnvSlice, StepArrays, action_layout, env_error, step_to_device, to_device
from metarl.tasks import TaskDistribution, VectorTaskEnv

_POLL_S = 0.05  # how often the main process looks at waiting workers
_IDLE = -1.0
_CALL = {"load": "make_env", "reset": "reset", "step": "step", "release": "close"}


def worker_pool(num_workers: int | None, timeout: float) -> WorkerPool | None:
    """The pool for the config's `num_workers` (null: `distributed.local_cores()`); None for one."""
    count = distributed.local_cores() if num_workers is None else num_workers
    return WorkerPool(count, timeout) if count > 1 else None


def start_method() -> str:
    """fork where the platform has it (the family is inherited, not pickled), else spawn."""
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    first: int = 0  # its slice of the current meta-batch's envs: first … stop - 1
    stop: int = 0


class WorkerPool:
    """`num_workers` processes that step the generic path's envs; started on first use, restarted
    for another family or a larger meta-batch, and stopped by `close` (or when the process exits)."""

    def __init__(self, num_workers: int, timeout: float) -> None:
        if num_workers < 2:
            raise ValueError("a worker pool has at least 2 workers; 1 steps the envs in this process")
        self.num_workers, self.timeout = num_workers, timeout
        self._workers: list[_Worker] = []
        self._family: TaskDistribution | None = None
        self._capacity = 0
        self._env_tasks: list[dict[str, Any]] = []
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def vector_env(
        self, family: TaskDistribution, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> WorkerVectorEnv:
        """The meta-batch's envs, built in the workers (each its slice), as one VectorTaskEnv."""
        env_tasks = [task for task in tasks for _ in range(episodes_per_task)]
        if family is not self._family or len(env_tasks) > self._capacity:
            self._start(family, env_tasks)
        self._env_tasks = env_tasks
        count = min(len(self._workers), len(env_tasks))
        for k, worker in enumerate(self._workers):
            worker.first = len(env_tasks) * min(k, count) // count
            worker.stop = len(env_tasks) * min(k + 1, count) // count
        self._exchange("load", {w.index: (env_tasks[w.first : w.stop], w.first) for w in self._active()})
        return WorkerVectorEnv(self, len(tasks), episodes_per_task, device)

    def _start(self, family: TaskDistribution, env_tasks: list[dict[str, Any]]) -> None:
        """Workers with room for `env_tasks`; the spaces come from one env built here."""
        self.close()
        probe = EnvSlice(family, env_tasks[:1])
        self.observation_space, self.action_space, self.obs_dim = (
            probe.observation_space,
            probe.action_space,
            probe.obs_dim,
        )
        probe.close()
        capacity = len(env_tasks)
        ctx = mp.get_context(start_method())
        buffer = ctx.RawArray("b", StepArrays.nbytes(capacity, self.obs_dim, self.action_space))
        self._status = ctx.RawArray("d", [_IDLE, 0.0] * self.num_workers)  # per worker: env in a call, since
        self.arrays = StepArrays.allocate(capacity, self.obs_dim, self.action_space, buffer)
        layout = (capacity, self.obs_dim, self.action_space)
        for index in range(self.num_workers):
            conn, child_conn = ctx.Pipe()
            process = ctx.Process(  # type: ignore[attr-defined]
                target=_worker_main,
                args=(index, family, child_conn, buffer, self._status, layout, os.getpid()),
                name=f"metarl-sampler-{index}",
                daemon=True,
            )
            process.start()
            child_conn.close()
            self._workers.append(_Worker(index, process, conn))
        self._family, self._capacity = family, capacity
        self._finalizer = weakref.finalize(self, _stop_workers, list(self._workers), True)

    def _active(self) -> list[_Worker]:
        return [w for w in self._workers if w.stop > w.first]

    def exchange(self, command: str, argument: Any = None) -> list[Any]:
        """Send `command` to every worker with envs of the current meta-batch; their replies, in order."""
        return list(self._exchange(command, {w.index: argument for w in self._active()}).values())

    def _exchange(self, command: str, arguments: dict[int, Any]) -> dict[int, Any]:
        workers = {w.index: w for w in self._workers}
        pending: dict[Any, _Worker] = {}
        for index, argument in arguments.items():
            worker = workers[index]
            try:
                worker.conn.send((command, argument))
            except OSError:
                self._fail(self._died(worker, command))
            pending[worker.conn] = worker
        replies: dict[int, Any] = {}
        errors: dict[int, str] = {}  # the first env's error is reported, whichever worker answers first
        sent = time.monotonic()
        while pending:
            for conn in wait(list(pending), timeout=_POLL_S):
                worker = pending.pop(conn)
                try:
                    status, reply = worker.conn.recv()
                except (EOFError, OSError):
                    self._fail(self._died(worker, command))
                (errors if status == "error" else replies)[worker.index] = reply
            now = time.monotonic()
            for worker in pending.values():
                env, since = self._status[2 * worker.index], self._status[2 * worker.index + 1]
                if not worker.process.is_alive():
                    self._fail(self._died(worker, command))
                elif env != _IDLE and now - since > self.timeout:
                    self._fail(self._hung(worker, int(env), command))
                elif env == _IDLE and now - max(since, sent) > self.timeout:
                    self._fail(
                        f"sampler worker {worker.index} (pid {worker.process.pid}) did not answer {command!r} "
                        f"within {self.timeout:g} s (worker_timeout)"
                    )
        if errors:
            self._fail(errors[min(errors)])
        return dict(sorted(replies.items()))

    def _died(self, worker: _Worker, command: str) -> str:
        worker.process.join(timeout=1.0)
        code = worker.process.exitcode
        if code is None:
            how = "its pipe closed"
        else:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        env = int(self._status[2 * worker.index])
        if not 0 <= env < len(self._env_tasks):
            return (
                f"sampler worker {worker.index} (pid {worker.process.pid}, envs {worker.first}–{worker.stop - 1} of "
                f"family {type(self._family).__name__}) died ({how}) outside an env call"
            )
        what = f"crashed its sampler worker (pid {worker.process.pid}, {how}) in {_CALL[command]}"
        return str(env_error(self._require_family(), self._env_tasks[env], env, what))

    def _hung(self, worker: _Worker, env: int, command: str) -> str:
        what = (
            f"did not return from {_CALL[command]} within {self.timeout:g} s (worker_timeout); "
            f"its sampler worker (pid {worker.process.pid}) was killed"
        )
        return str(env_error(self._require_family(), self._env_tasks[env], env, what))

    def _require_family(self) -> TaskDistribution:
        assert self._family is not None, "the pool has no workers"
        return self._family

    def _fail(self, message: str) -> NoReturn:
        """Kill every worker (one may hang) and raise `message`."""
        workers, self._workers = self._workers, []
        self.close()
        _stop_workers(workers, graceful=False)
        raise PluginError(message)

    def close(self) -> None:
        """Stop every worker, closing their envs first."""
        if self._finalizer is not None:
            self._finalizer.detach()
        _stop_workers(self._workers, graceful=True)
        self._workers, self._family, self._capacity, self._finalizer = [], None, 0, None


def _stop_workers(workers: list[_Worker], graceful: bool) -> None:
    """Ask `workers` to close their envs and exit (if `graceful`); kill any still running after 2 s."""
    if graceful:
        for worker in workers:
            try:
                worker.conn.send(("close", None))
            except OSError:
                pass
    deadline = time.monotonic() + (2.0 if graceful else 0.0)
    for worker in workers:
        worker.process.join(timeout=max(deadline - time.monotonic(), 0.0))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5.0)
        worker.conn.close()


class WorkerVectorEnv(VectorTaskEnv):
    """A meta-batch whose envs step in a `WorkerPool`'s processes; `close` closes the envs, not the pool."""

    def __init__(self, pool: WorkerPool, num_tasks: int, episodes_per_task: int, device: torch.device) -> None:
        self.pool, self.num_tasks, self.episodes_per_task, self.device = pool, num_tasks, episodes_per_task, device
        self.observation_space, self.action_space = pool.observation_space, pool.action_space
        self._arrays = pool.arrays.rows(0, num_tasks * episodes_per_task)
        self._reports_success = False
        self._open = True

    def reset(self, seed: int) -> torch.Tensor:
        self.pool.exchange("reset", seed)
        shape = (self.num_tasks, self.episodes_per_task, self.pool.obs_dim)
        return to_device(self._arrays.observations.copy().reshape(shape), self.device)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        arrays = self._arrays
        arrays.actions[:] = actions.detach().cpu().numpy().reshape(arrays.actions.shape)
        self._reports_success |= any(self.pool.exchange("step"))
        shape = (self.num_tasks, self.episodes_per_task)
        return step_to_device(arrays.observations, arrays.rewards, arrays.dones, shape, self.device)

    def episode_successes(self) -> torch.Tensor | None:
        if not self._reports_success:
            return None
        successes = self._arrays.successes.reshape(self.num_tasks, self.episodes_per_task)
        return torch.from_numpy(successes.astype(np.float32)).to(self.device)

    def close(self) -> None:
        if self._open and self.pool._workers:
            self._open = False
            self.pool.exchange("release")


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the main process ends (Linux), however it ends."""
    if not signal_on_parent_death(parent_pid, signal.SIGKILL):  # the parent has already ended
        os._exit(0)


def _worker_main(
    index: int,
    family: TaskDistribution,
    conn: Connection,
    buffer: Any,
    status: Any,
    layout: tuple[int, int, gym.Space[Any]],
    parent_pid: int,
) -> None:
    """A worker's loop: load a slice of envs, reset and step it on command, until told to close."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the main process's handler, inherited by fork
    torch.set_num_threads(1)
    capacity, obs_dim, action_space = layout
    arrays = StepArrays.allocate(capacity, obs_dim, action_space, buffer)

    def watch(env: int) -> None:
        status[2 * index + 1] = time.monotonic()
        status[2 * index] = float(env)

    envs: EnvSlice | None = None
    rows = arrays
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent_pid:
                return
            continue
        try:
            command, argument = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = None
            if command in ("load", "release", "close") and envs is not None:
                closing, envs = envs, None
                closing.close()
            if command == "close":
                conn.send(("ok", None))
                return
            if command == "load":
                env_tasks, first = argument
                envs = EnvSlice(family, env_tasks, first, watch)
                if envs.obs_dim != obs_dim or action_layout(envs.action_space) != action_layout(action_space):
                    raise envs.broken(
                        0,
                        f"has spaces {envs.observation_space}, {envs.action_space}; the meta-batch's first env "
                        f"has {action_space} actions and {obs_dim} observation values",
                    )
                rows = arrays.rows(first, first + len(env_tasks))
            elif command == "reset":
                _loaded(envs).reset(argument, rows)
            elif command == "step":
                _loaded(envs).step(rows)
                reply = _loaded(envs).reports_success
            conn.send(("ok", reply))
        except Exception as exc:
            prefix = "" if isinstance(exc, MetarlError) else f"sampler worker {index}: {type(exc).__name__}: "
            conn.send(("error", first_line(f"{prefix}{exc}", limit=2000)))


def _loaded(envs: EnvSlice | None) -> EnvSlice:
    if envs is None:
        raise RuntimeError("no envs loaded")
    return envs
