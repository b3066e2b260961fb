"""Training across processes: two gloo ranks on CPU give the single-process update, and fail together."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import episodes_like, small_batch

from metarl import distributed
from metarl.algos.base import SampledBatch
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.config import Config
from metarl.regularizers import L2Anchor

NUM_TASKS = 4
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TINY = ["--iterations", "2", "--set", "meta_batch_size=4", "--set", "fast_batch_size=2", "--set", "horizon=10"]


def _one_update(part: slice) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One TRPO update on tasks `part` of the fixed meta-batch, from the same θ in every process."""
    policy, family, _, episodes = small_batch(num_tasks=NUM_TASKS)
    fields = ("observations", "actions", "rewards", "mask", "advantages")
    train = episodes_like(episodes, **{k: getattr(episodes, k)[part] for k in fields})
    # Sums over ranks round differently; CG amplifies that once its residual is tiny, so few iterations.
    config = Config(inner_lr=0.1)
    learner = MAMLTRPO(
        policy, family, config, {"l2-anchor": (L2Anchor(), 0.5)}, max_kl=0.01, cg_iters=5, cg_damping=0.1
    )
    params = dict(policy.named_parameters())
    adaptation = learner.adapt(params, train, first_order=False)
    batch = SampledBatch.of(policy, train, train, adaptation, NUM_TASKS)
    metrics = learner._trpo_update(params, adaptation, batch)
    return {n: p.detach().clone() for n, p in params.items()}, metrics


def _rank_worker(local_rank: int, port: int, out: str) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(local_rank)}
    )
    distributed.init_from_env(torch.device("cpu"))
    params, metrics = _one_update(distributed.shard(NUM_TASKS))
    torch.save({"params": params, "metrics": metrics}, f"{out}.{local_rank}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_take_the_single_process_step(tmp_path):
    expected, expected_metrics = _one_update(slice(None))
    out = str(tmp_path / "rank")
    mp.spawn(_rank_worker, args=(_free_port(), out), nprocs=2, join=True)
    results = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    assert expected_metrics["train/line_search_accepted"] == 1.0
    for result in results:
        for name, value in expected.items():
            assert torch.allclose(result["params"][name], value, rtol=1e-9, atol=1e-12), name
        for key in ("train/loss_before", "regularizer/l2-anchor", "train/kl", "train/step_size", "train/improvement"):
            assert abs(result["metrics"][key] - expected_metrics[key]) <= 1e-9 * max(1.0, abs(expected_metrics[key]))


def test_shard_splits_contiguously_without_distribution():
    assert distributed.shard(5) == slice(0, 5)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.sum_over_ranks([1.5, 2.0]) == [1.5, 2.0]


def _launch(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LAUNCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=120
    )


@pytest.mark.slow
def test_torchrun_cli_trains_with_one_run_directory(tmp_path):
    logdir = tmp_path / "runs"
    args = ["-m", "metarl", "train", "--env", "navigation-2d", *TINY, "--no-progress", "--logdir", str(logdir)]
    result = _launch(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = logdir.iterdir()
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    rows = (run / "progress.csv").read_text().splitlines()
    assert len(rows) == 3  # header and two iterations, written by rank 0 alone
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter-000002.pt"]


@pytest.mark.slow
def test_resumed_distributed_run_equals_uninterrupted_one(tmp_path):
    common = ["-m", "metarl", "train", "--env", "navigation-2d", *TINY, "--no-progress", "--set", "checkpoint_every=1"]
    assert _launch([*common, "--iterations", "3", "--logdir", str(tmp_path / "full")], tmp_path).returncode == 0
    assert _launch([*common, "--logdir", str(tmp_path / "split")], tmp_path).returncode == 0
    (split,) = (tmp_path / "split").iterdir()
    resumed = _launch(["-m", "metarl", "train", "--resume", str(split), "--iterations", "3", "--no-progress"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (full,) = (tmp_path / "full").iterdir()
    final = [torch.load(run / "checkpoints" / "iter-000003.pt", weights_only=True)["policy"] for run in (full, split)]
    assert all(torch.equal(final[0][name], final[1][name]) for name in final[0])


# Rank 1 misbehaves in its second outer step; rank 0 goes on as usual.
_FAULTY = """
import os, signal, sys, time
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.cli import main

update, calls = MAMLTRPO._trpo_update, []

def faulty(self, *args):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        {fault}
    return update(self, *args)

MAMLTRPO._trpo_update = faulty
sys.exit(main(sys.argv[1:]))
"""


def _faulty_run(
    tmp_path: Path, fault: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    script = tmp_path / "faulty.py"
    script.write_text(textwrap.dedent(_FAULTY).replace("{fault}", fault))
    args = [str(script), "train", "--env", "navigation-2d", *TINY, "--iterations", "50", "--no-progress"]
    start = time.perf_counter()
    result = _launch([*args, "--logdir", str(tmp_path / "runs")], tmp_path, env)
    return result, time.perf_counter() - start


@pytest.mark.slow
def test_a_dead_rank_stops_the_job_naming_it(tmp_path):
    result, elapsed = _faulty_run(tmp_path, "os._exit(3)")
    assert result.returncode != 0
    assert "rank      : 1" in result.stderr and "exitcode  : 3" in result.stderr, result.stderr[-3000:]
    assert elapsed < 60


@pytest.mark.slow
def test_a_hung_rank_times_out_the_others(tmp_path):
    # SIGTERM kills it at once (not metarl's stop-after-the-iteration handler): torchrun's cleanup stays short
    hang = "signal.signal(signal.SIGTERM, signal.SIG_DFL); time.sleep(600)"
    result, elapsed = _faulty_run(tmp_path, hang, {distributed.TIMEOUT_ENV: "3"})
    assert result.returncode != 0
    assert "rank 0 of 2: all_reduce failed" in result.stderr, result.stderr[-3000:]
    assert "not arrived: rank 1 (collective" in result.stderr, result.stderr[-3000:]  # the hung one, named
    assert elapsed < 60
