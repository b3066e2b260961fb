"""The `metarl` command in real subprocesses: training writes a run directory, errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SMALL = ["--set", "meta_batch_size=4", "--set", "fast_batch_size=4", "--set", "horizon=20", "--no-progress"]


def metarl(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metarl", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _train_seed_7(logdir: Path) -> subprocess.CompletedProcess:
    return metarl(
        "train", "--env", "navigation-2d", "--iterations", "3", "--seed", "7", "--logdir", str(logdir),
        "--regularizer", "l2-anchor=0.01", *SMALL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("runs")
    result = _train_seed_7(logdir)
    assert result.returncode == 0, result.stderr
    (run,) = logdir.iterdir()
    return run


def test_train_writes_resolved_config(run_dir):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"] == "navigation-2d"
    assert config["meta_batch_size"] == 4 and config["horizon"] == 20 and config["seed"] == 7
    assert config["regularizers"] == {"l2-anchor": {"weight": 0.01}}
    assert config["inner_lr"] == 0.1  # from the family's reference config
    # every component's keys, resolved: the family's maml-trpo section and the declared defaults
    assert config["algo_kwargs"]["cg_subsample"] == 0.5 and config["algo_kwargs"]["max_kl"] == 0.01
    assert set(config["algo_kwargs"]) == {"max_kl", "cg_iters", "cg_damping", "cg_subsample", "ls_max_steps",
                                          "ls_backtrack_ratio", "inner_loss", "fisher_products", "fd_eps"}  # fmt: skip
    assert config["algo_kwargs"]["inner_loss"] == "lvc"
    assert config["policy"] == "gaussian-mlp"
    assert config["policy_kwargs"] == {"hidden_sizes": [64, 64], "activation": "tanh", "init_std": 1.0, "min_std": 1e-6}
    assert not list(run_dir.rglob("*.tmp"))


def test_event_files_hold_returns_before_and_after(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    before = [t for t in tags if "return" in t and "before" in t]
    after = [t for t in tags if "return" in t and "after" in t]
    assert before and after
    assert [e.step for e in events.Scalars(after[0])] == [1, 2, 3]
    for tag in (
        "train/kl",
        "train/surrogate_before",
        "train/line_search_accepted",
        "perf/env_steps_per_s",
        "perf/wall_time_s",
        "regularizer/l2-anchor",
    ):
        assert tag in tags, tag
    assert all(e.value > 0 for e in events.Scalars("regularizer/l2-anchor"))
    assert events.summary_metadata["_hparams_/experiment"].plugin_data.plugin_name == "hparams"
    assert b"inner_lr" in events.summary_metadata["_hparams_/session_start_info"].plugin_data.content


def test_checkpoint_loads_with_weights_only(run_dir):
    (checkpoint,) = (run_dir / "checkpoints").glob("iter-*.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["iteration"] == 3 and state["env"] == "navigation-2d"
    assert "mean.weight" in state["policy"]


@pytest.mark.slow
def test_same_seed_same_numbers(run_dir, tmp_path):
    result = _train_seed_7(tmp_path)
    assert result.returncode == 0, result.stderr
    (other,) = tmp_path.iterdir()
    first = (run_dir / "progress.csv").read_text().splitlines()
    second = (other / "progress.csv").read_text().splitlines()
    column = first[0].split(",").index("return/after_adaptation")
    assert [r.split(",")[column] for r in first[1:]] == [r.split(",")[column] for r in second[1:]]


def test_list_shows_builtins_with_package():
    result = metarl("list")
    assert result.returncode == 0
    for name in ("navigation-2d", "bandit", "tabular-mdp", "gaussian-mlp", "categorical-mlp", "l2-anchor"):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(name + " "))
        assert "metarl" in line and line.rstrip().endswith("ok")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--env", "navigation2d"], "Did you mean 'navigation-2d'"),
        (["train", "--env", "navigation-2d", "--set", "meta_batchsize=3"], "unknown config key 'meta_batchsize'"),
        (["train", "--env", "navigation-2d", "--set", "inner_lr=fast"], "config key 'inner_lr'"),
        (["train", "--env", "navigation-2d", "--set", "fast_batch_size=0"], "expected a positive integer"),
        (["train", "--env", "navigation-2d", "--policy", "gausian-mlp"], "Did you mean 'gaussian-mlp'"),
        (["train", "--env", "navigation-2d", "--regularizer", "l2anchor=1"], "Did you mean 'l2-anchor'"),
        (["train", "--env", "navigation-2d", "--config", "/no/such.yaml"], "does not exist"),
        (["train", "--env", "navigation-2d", "--resume", "/no/such/run"], "not a metarl run directory"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, needle, tmp_path):
    result = metarl(*args, "--logdir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta_batch_size: 3\ninner_lr: [0.1\n")
    result = metarl("train", "--env", "navigation-2d", "--config", str(bad), "--logdir", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr and "bad.yaml" in result.stderr
    assert "Traceback" not in result.stderr
