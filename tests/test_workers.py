"""The generic path in worker processes (`num_workers`): the same episodes as in-process, one-line
errors for an env that crashes, hangs or raises in a worker, and no process left behind after a run,
an error or a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import installed_distribution

from metarl import registry
from metarl.config import build_config
from metarl.errors import ConfigError, PluginError
from metarl.policies import GaussianMLP
from metarl.policies.batched import detach, stack
from metarl.sampling import GymVectorTaskEnv, sample_episodes
from metarl.sampling.workers import WorkerPool
from metarl.trainer import Trainer

FAULTY_MODULE = """
import os
import signal
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from metarl import TaskDistribution


class FaultyEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self):
        self.task = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.np_random.uniform(-1, 1, 2).astype(np.float32), 0
        return self.pos.copy(), {}

    def step(self, action):
        self.t += 1
        if self.task.get("fault") and self.t == 3:
            fault = self.task["fault"]
            if fault == "crash":
                time.sleep(1)  # long enough for a test to see the worker processes
                os.kill(os.getpid(), signal.SIGSEGV)
            if fault == "hang":
                time.sleep(3600)
            if fault == "raise":
                raise RuntimeError("sensor unplugged")
        self.pos = (self.pos + 0.1 * np.asarray(action, np.float32)).astype(np.float32)
        reward = -float(np.linalg.norm(self.pos - np.asarray(self.task["goal"])))
        return self.pos.copy(), reward, False, self.t >= 8 + self.task["k"] % 3, {"success": reward > -0.5}


class Faulty(TaskDistribution):
    '''Point goals; task `faulty_task` of each meta-batch faults at its third step. Envs are lent out
    again after `close`, as the Meta-World plugin does, and every build is logged to `build_log`.'''

    max_episode_steps = 10

    def __init__(self, fault=None, faulty_task=2, build_log=None):
        self.fault, self.faulty_task, self.build_log = fault, faulty_task, build_log
        self._pool = []

    def sample_tasks(self, num_tasks, rng):
        goals = rng.uniform(-1, 1, (num_tasks, 2))
        return [
            {"goal": g.tolist(), "k": k, **({"fault": self.fault} if self.fault and k == self.faulty_task else {})}
            for k, g in enumerate(goals)
        ]

    def make_env(self, task):
        if self._pool:
            env = self._pool.pop()
        else:
            env = FaultyEnv()
            env.close = lambda: self._pool.append(env)
            if self.build_log:
                with open(self.build_log, "a") as log:
                    log.write(f"{os.getpid()}\\n")
        env.task = task
        return env
"""

SMALL = {"meta_batch_size": 4, "fast_batch_size": 3, "eval_every": 0, "seed": 3}


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The `faulty` family installed as distribution `metarl-faulty`; yields its folder."""
    root = tmp_path / "plugins"
    entry_points = {"metarl.envs": {"faulty": "faulty_mod:Faulty"}}
    installed = installed_distribution(root, monkeypatch, "metarl-faulty", entry_points, {"faulty_mod": FAULTY_MODULE})
    next(installed)
    yield root
    next(installed, None)


def _episodes(family, tasks, episodes, workers: int):
    torch.manual_seed(0)  # the same initial weights and action noise for every call
    env0 = family.make_env(tasks[0])
    policy = GaussianMLP(env0.observation_space, env0.action_space)
    env0.close()
    params = stack(detach(dict(policy.named_parameters())), len(tasks))
    pool = WorkerPool(workers, timeout=30) if workers > 1 else None
    env = (
        pool.vector_env(family, tasks, episodes, torch.device("cpu"))
        if pool
        else GymVectorTaskEnv(family, tasks, episodes, torch.device("cpu"))
    )
    try:
        return sample_episodes(policy, params, env, 10, seed=11)
    finally:
        env.close()
        if pool:
            pool.close()


@pytest.mark.parametrize("tasks,episodes", [(5, 3), (1, 1)])
def test_episodes_are_the_same_for_any_number_of_workers(faulty, tasks, episodes):
    family = registry.envs.load("faulty")()
    meta_batch = family.sample_tasks(tasks, np.random.default_rng(0))
    reference = _episodes(family, meta_batch, episodes, 1)
    if tasks > 1:
        assert reference.mask.sum() < reference.mask.numel()  # some episodes end early: masks matter
    for workers in (2, 3):  # with 3 workers and 15 envs, slices cross task boundaries
        other = _episodes(family, meta_batch, episodes, workers)
        for name in ("observations", "actions", "rewards", "mask", "success"):
            assert torch.equal(getattr(reference, name), getattr(other, name)), (workers, name)


def test_a_training_run_is_the_same_with_one_and_two_workers(faulty):
    def history(workers: int) -> list[dict[str, float]]:
        trainer = Trainer(build_config({"env": "faulty", **SMALL, "num_workers": workers}))
        return [
            {k: v for k, v in m.items() if not k.startswith("perf/") or k == "perf/env_steps"} for m in trainer.train(2)
        ]

    assert history(1) == history(2)


def test_workers_are_kept_across_meta_batches_and_envs_are_reused(faulty, tmp_path):
    log = tmp_path / "builds.txt"
    family = registry.envs.load("faulty")(build_log=str(log))
    pool = WorkerPool(2, timeout=30)
    try:
        pids = []
        for iteration in range(3):
            tasks = family.sample_tasks(4, np.random.default_rng(iteration))
            env = pool.vector_env(family, tasks, 3, torch.device("cpu"))
            env.reset(seed=0)
            env.close()
            pids.append(sorted(w.process.pid for w in pool._workers))
        assert pids[0] == pids[1] == pids[2]
    finally:
        pool.close()
    builds = log.read_text().split()
    # one env probed here (each worker inherits it in its copy of the family's pool), then the other 5
    # of each worker's 6 built once: later meta-batches reuse them
    assert len(builds) == 1 + 2 * 5 and builds.count(str(os.getpid())) == 1


@pytest.mark.parametrize(
    "fault,expected",
    [
        ("crash", r"crashed its sampler worker \(pid \d+, killed by SIGSEGV\) in step"),
        ("raise", r"raised RuntimeError in step: sensor unplugged"),
        ("hang", r"did not return from step within 1 s \(worker_timeout\); its sampler worker \(pid \d+\) was killed"),
    ],
)
def test_an_env_that_fails_in_a_worker_is_named_in_one_line(faulty, fault, expected):
    family = registry.envs.load("faulty")(fault=fault)
    tasks = family.sample_tasks(4, np.random.default_rng(0))
    pool = WorkerPool(2, timeout=1.0 if fault == "hang" else 30.0)  # the crashing env sleeps 1 s first
    start = time.monotonic()
    with pytest.raises(PluginError) as caught:
        _run_pool(pool, family, tasks)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"env of family Faulty (package metarl-faulty) for task {{'fault': '{fault}', 'goal': [")
    assert "'k': 2} (env 6) " in message  # task 2's first episode is env 6
    assert __import__("re").search(expected, message), message
    assert time.monotonic() - start < 10
    assert pool._workers == []


def _run_pool(pool: WorkerPool, family, tasks) -> None:
    env = pool.vector_env(family, tasks, 3, torch.device("cpu"))
    env.reset(seed=0)
    for _ in range(5):
        env.step(torch.zeros(4, 3, 2))


def test_bad_num_workers_names_the_key():
    with pytest.raises(
        ConfigError, match=r"bad value 0 for config key 'num_workers'.*expected a positive integer up to"
    ):
        build_config({"num_workers": 0})


# --- the command line: no process outlives a run ---------------------------------------------------


def _children(pid: int) -> set[int]:
    """Pids of the live processes whose parent is `pid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _train(faulty: Path, tmp_path: Path, *settings: str) -> subprocess.Popen:
    sets = [arg for s in ("num_workers=2", "iterations=400", *settings) for arg in ("--set", s)]
    small = [arg for k, v in SMALL.items() for arg in ("--set", f"{k}={v}")]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metarl",
            "train",
            "--env",
            "faulty",
            "--logdir",
            str(tmp_path / "runs"),
            *small,
            *sets,
            "--no-progress",
        ],  # fmt: skip
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(faulty), os.environ.get("PYTHONPATH", "")])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _workers_of(process: subprocess.Popen) -> set[int]:
    deadline = time.monotonic() + 60
    while len(children := _children(process.pid)) < 2:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no sampler workers started"
        time.sleep(0.05)
    return children


def _gone_soon(pids: set[int]) -> bool:
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pids)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("how,code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGKILL", -9), ("end", 0)])
def test_no_worker_outlives_the_run(faulty, tmp_path, how, code):
    process = _train(faulty, tmp_path, *(["iterations=30"] if how == "end" else []))
    workers = _workers_of(process)
    if how == "SIGINT":  # Ctrl-C reaches the whole foreground process group, workers included
        os.killpg(process.pid, signal.SIGINT)
    elif how != "end":
        os.kill(process.pid, getattr(signal, how))
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == code, stderr
    assert _gone_soon(workers)
    if how in ("SIGINT", "SIGTERM"):
        assert "stopping after the current iteration" in stderr and "resume with: metarl train --resume" in stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_a_worker_failing_under_the_cli_is_one_line_and_leaves_no_process(faulty, tmp_path, fault):
    process = _train(faulty, tmp_path, f"env_kwargs.fault={fault}", "worker_timeout=2")
    workers = _workers_of(process)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 2
    lines = [line for line in stderr.splitlines() if not line.startswith("run directory:")]
    assert len(lines) == 1 and lines[0].startswith("metarl: error: env of family Faulty (package metarl-faulty)"), (
        stderr
    )
    assert ("killed by SIGSEGV" if fault == "crash" else "did not return from step within 2 s") in lines[0]
    assert _gone_soon(workers)


@pytest.mark.slow
def test_each_torchrun_rank_has_its_own_workers_and_the_same_update(faulty, tmp_path):
    """--nproc 2 with 2 workers per rank: 4 workers build envs, and θ ends as with every rank's envs
    in the rank's own process."""
    final, builders = {}, {}
    for workers in (1, 2):
        logdir, log = tmp_path / f"runs-{workers}", tmp_path / f"builds-{workers}.txt"
        sets = {**SMALL, "num_workers": workers, "iterations": 2, "env_kwargs.build_log": str(log)}
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
            + ["-m", "metarl", "train", "--env", "faulty", "--logdir", str(logdir), "--no-progress"]
            + [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")],
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(faulty), os.environ.get("PYTHONPATH", "")])},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (run,) = logdir.iterdir()
        final[workers] = torch.load(run / "checkpoints" / "iter-000002.pt", weights_only=True)["policy"]
        builders[workers] = set(log.read_text().split())
    assert len(builders[1]) == 2  # the two ranks
    assert len(builders[2]) == 2 + 2 * 2  # the two ranks (a probe env each) and their two workers each
    assert all(torch.equal(final[1][name], final[2][name]) for name in final[1])
