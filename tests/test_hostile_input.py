"""Hostile input: non-finite numbers, YAML alias bombs, huge sizes, unsafe plugin names, unwritable
outputs, argparse's own errors, Ctrl-C and crafted checkpoints. Each ends `metarl` with one line
naming the cause (exit code 2, or 130 for Ctrl-C), fast, before anything is written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import installed_distribution

from metarl import checkpoint, distributed, registry
from metarl.cli import main
from metarl.errors import MetarlError, PluginError, short_repr

SMALL = ["--set", "meta_batch_size=2", "--set", "fast_batch_size=2", "--set", "horizon=3", "--no-progress"]
NAV = ["train", "--env", "navigation-2d", *SMALL]

#: a YAML document of 10 lines that expands to 10⁸ strings
ALIAS_BOMB = "\n".join(
    [
        'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]',
        *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)),
        "env_kwargs: {goal: *a7}",
    ]
)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("run directory:")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("metarl: error: "), lines
    return lines[0]


def fails_with(args: list[str], capsys: pytest.CaptureFixture[str], needle: str, code: int = 2) -> str:
    assert main(args) == code
    line = one_error_line(capsys)
    assert needle in line, line
    return line


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("run")
    assert main([*NAV, "--iterations", "1", "--logdir", str(logdir)]) == 0
    (run,) = logdir.iterdir()
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run-copy"
    shutil.copytree(run, copy)
    return copy


# --- nothing non-finite is accepted ------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, path",
    [
        ("env_kwargs={goal_radius: .nan}", "env_kwargs.goal_radius"),
        ("env_kwargs={goals: [[0.1, .inf]]}", "env_kwargs.goals.0.1"),
        ("algo_kwargs.max_kl=-.inf", "algo_kwargs.max_kl"),
        ("policy_kwargs={init_std: .nan}", "policy_kwargs.init_std"),
        ("regularizers={l2-anchor: {weight: .nan}}", "regularizers.l2-anchor.weight"),
        ("logger_kwargs={csv: {x: [.nan]}}", "logger_kwargs.csv.x.0"),
    ],
)
def test_non_finite_config_values_are_refused_with_their_key_path(setting, path, tmp_path, capsys):
    logdir = tmp_path / "runs"
    line = fails_with([*NAV, "--logdir", str(logdir), "--set", setting], capsys, f"'{path}' in --set")
    assert "finite" in line
    assert not logdir.exists()


def test_non_finite_value_in_a_config_file(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("env_kwargs:\n  goal_radius: 1.0e+999\n")
    fails_with([*NAV, "--config", str(config), "--logdir", str(tmp_path)], capsys, "'env_kwargs.goal_radius' in config")


@pytest.mark.parametrize("weight", ["inf", "nan", "-inf"])
def test_non_finite_command_line_weight(weight, tmp_path, capsys):
    fails_with([*NAV, "--regularizer", f"l2-anchor={weight}", "--logdir", str(tmp_path)], capsys, "is not finite")


@pytest.mark.parametrize("task", ['{"goal": [NaN, 0.1]}', '{"goal": [Infinity, 0]}', '{"goal": [1e999, 0]}'])
def test_non_finite_task_is_refused(finished_run, task, tmp_path, capsys):
    out = tmp_path / "model.zip"
    line = fails_with(["adapt", str(finished_run), "--task", task, "--out", str(out)], capsys, "--task")
    assert "finite" in line
    assert not out.exists()


def test_adapt_refuses_to_export_non_finite_parameters(finished_run, tmp_path, monkeypatch, capsys):
    from metarl.trainer import Trainer

    evaluate = Trainer.evaluate

    def diverging(self, *args, **kwargs):
        result = evaluate(self, *args, **kwargs)
        for value in result.adapted_params.values():
            value.fill_(float("nan"))
        return result

    monkeypatch.setattr(Trainer, "evaluate", diverging)
    out = tmp_path / "model.zip"
    args = ["adapt", str(finished_run), "--task", '{"goal": [0.1, 0.1]}', "--out", str(out), "--steps", "1"]
    fails_with(args, capsys, "not all finite")
    assert not list(tmp_path.iterdir())


def test_json_that_metarl_writes_is_strict(tmp_path):
    import numpy as np

    path = tmp_path / "x.json"
    checkpoint.write_json(
        path, {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32("nan"), "d": np.arange(2)}
    )

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in strict JSON")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"a": None, "b": [None, 1.5], "c": None, "d": [0, 1]}


def test_every_json_file_goes_through_the_strict_writer():
    sources = Path(__file__).parent.parent / "metarl"
    users = [p for p in sources.rglob("*.py") if "json.dump" in p.read_text() and p.name != "checkpoint.py"]
    assert users == [], "write JSON files with metarl.checkpoint.write_json (allow_nan=False)"


# --- nothing hangs or prints megabytes ---------------------------------------------------------------


def test_yaml_alias_bomb_in_config(tmp_path, capsys):
    config = tmp_path / "bomb.yaml"
    config.write_text(ALIAS_BOMB)
    start = time.perf_counter()
    line = fails_with(
        [*NAV, "--config", str(config), "--logdir", str(tmp_path / "runs")], capsys, "nested YAML aliases"
    )
    assert time.perf_counter() - start < 10
    assert str(config) in line and len(line) < 300


def test_yaml_alias_bomb_in_a_run_config(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    (run / "config.yaml").write_text(ALIAS_BOMB)
    for args in (["evaluate", str(run), "--tasks", "2"], ["train", "--resume", str(run), "--no-progress"]):
        start = time.perf_counter()
        line = fails_with(args, capsys, "nested YAML aliases")
        assert time.perf_counter() - start < 10 and len(line) < 300


def test_yaml_alias_bomb_in_a_set_value(tmp_path, capsys):
    bomb = "{" + ALIAS_BOMB.replace("\n", ", ").replace("env_kwargs: {goal: *a7}", "goal: *a7") + "}"
    line = fails_with([*NAV, "--set", f"env_kwargs={bomb}", "--logdir", str(tmp_path)], capsys, "nested YAML aliases")
    assert len(line) < 300


def test_short_repr_bounds_any_value():
    nested: list = ["x"]
    for _ in range(40):
        nested = [nested] * 10
    assert len(short_repr(nested)) <= 200
    assert len(short_repr("x" * 10**6)) <= 200
    assert "bits" in short_repr(10**10000)


def test_huge_value_is_quoted_bounded(tmp_path, capsys):
    line = fails_with([*NAV, "--set", f"inner_lr={'x' * 100_000}", "--logdir", str(tmp_path)], capsys, "'inner_lr'")
    assert len(line) < 500


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "meta_batch_size=1000000000"], "up to 100000"),
        (["--set", "fast_batch_size=10000000"], "up to 100000"),
        (["--set", "eval_tasks=10000000"], "up to 100000"),
        (["--set", "horizon=1000000000000"], "up to 1000000"),
        (["--set", "num_inner_steps=100000"], "up to 1000"),
        (["--set", "hidden_sizes=[1000000000]"], "up to 65536"),
        (["--set", "hidden_sizes=[65536, 65536, 65536]"], "GiB of memory is available"),
        (["--set", "meta_batch_size=100000", "--set", "fast_batch_size=100000"], "GiB of memory is available"),
        (["--seed", str(2**70)], "below 2**63"),
        (["--set", f"seed={2**64}"], "below 2**63"),
        (["--iterations", str(10**30)], "up to 1000000000"),
    ],
)
def test_sizes_beyond_what_can_run(args, needle, tmp_path, capsys):
    logdir = tmp_path / "runs"
    fails_with([*NAV, "--logdir", str(logdir), *args], capsys, needle)
    assert not logdir.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--seed", str(2**70)], "below 2**63"),
        (["--tasks", str(10**12)], "up to 100000"),
        (["--episodes", str(10**12)], "up to 100000"),
        (["--steps", str(10**9)], "up to 1000"),
    ],
)
def test_evaluation_sizes_beyond_what_can_run(finished_run, args, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(finished_run), *args])
    assert exit_.value.code == 2
    assert needle in one_error_line(capsys)


# --- plugin names are path segments ------------------------------------------------------------------


@pytest.fixture
def unsafe_names(tmp_path, monkeypatch):
    entry_points = {"metarl.envs": {"../../escaped": "unsafe_names_mod:Family", ".hidden": "unsafe_names_mod:Family"}}
    module = "from metarl_envs.navigation import Navigation2D as Family\n"
    yield from installed_distribution(
        tmp_path / "site", monkeypatch, "unsafe-names", entry_points, {"unsafe_names_mod": module}
    )


def test_unsafe_plugin_name_is_refused_at_load(unsafe_names, tmp_path, capsys):
    logdir = tmp_path / "deep" / "runs"
    line = fails_with(["train", "--env", "../../escaped", *SMALL, "--logdir", str(logdir)], capsys, "unsafe-names")
    assert "not one safe path segment" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing written, inside or outside
    assert "unsafe_names_mod" not in sys.modules  # refused without importing the plugin


def test_unsafe_plugin_names_are_listed_as_broken(unsafe_names, capsys):
    assert main(["list", "envs"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "unsafe-names" in line]
    assert len(rows) == 2 and all("broken:" in row and "not one safe path segment" in row for row in rows), out
    assert "navigation-2d" in out  # the others still list


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 200, "a\nb", ".."])
def test_register_refuses_unsafe_names(name):
    from metarl_envs.navigation import Navigation2D

    reg = registry.Registry("env", "envs", "metarl.envs.test-only", lambda obj: None)
    with pytest.raises(PluginError, match="not one safe path segment"):
        reg.register(name, Navigation2D)


# --- one line, exit 2, for everything a user can fix -------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "required: command"),
        (["nosuch"], "invalid choice"),
        (["train", "--iterations", "x"], "train: argument --iterations"),
        (["evaluate"], "evaluate: the following arguments are required"),
        (["list", "nosuch"], "list: argument group"),
        (["train", "--nproc", "0"], "train: argument --nproc"),
    ],
)
def test_argparse_errors_are_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert needle in one_error_line(capsys)


def test_a_sweep_without_its_required_flags_is_one_line(capsys):
    fails_with(["sweep", "--env", "bandit"], capsys, "sweep needs --regularizer, --weights (or --resume SWEEP_DIR)")


def test_unwritable_logdir_is_refused_before_work(tmp_path, capsys):
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs sysfs, where even root cannot create files")
    line = fails_with([*NAV, "--logdir", "/sys/metarl-runs"], capsys, "cannot create a run directory under '/sys/")
    assert "writing a file in '/sys' failed: permission denied" in line  # probed, before the trainer is built


def test_full_run_directory_is_refused_before_resuming(finished_run, tmp_path, monkeypatch, capsys):
    run = copy_run(finished_run, tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if len(data) == checkpoint.PROBE_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    line = fails_with(["train", "--resume", str(run), "--no-progress"], capsys, "no space left on the device")
    assert str(run) in line
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_evaluate_out_that_is_a_file(finished_run, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("")
    fails_with(["evaluate", str(finished_run), "--tasks", "2", "--out", str(out / "sub")], capsys, "is not a directory")


def test_adapt_out_that_is_a_directory(finished_run, tmp_path, capsys):
    for out in (tmp_path, tmp_path / "model"):
        (tmp_path / "model.zip").mkdir(exist_ok=True)
        args = ["adapt", str(finished_run), "--task", '{"goal": [0.1, 0.1]}', "--out", str(out)]
        fails_with(args, capsys, "is a directory, not a file path")


def test_nproc_that_cannot_split_the_meta_batch(tmp_path, monkeypatch, capsys):
    def relaunch(nproc, argv):
        raise AssertionError("relaunched before checking --nproc")

    monkeypatch.setattr(distributed, "relaunch", relaunch)
    logdir = tmp_path / "runs"
    fails_with([*NAV, "--nproc", "4", "--logdir", str(logdir)], capsys, "--nproc 4 cannot split meta_batch_size 2")
    consistency = ["--set", "meta_batch_size=3", "--regularizer", "consistency=0.1"]
    fails_with([*NAV, *consistency, "--nproc", "2", "--logdir", str(logdir)], capsys, "'consistency' needs 2 tasks")
    assert not logdir.exists()


class _RunsCode:
    """Unpickling this would run `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_checkpoint_is_refused_without_running_it(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    marker = tmp_path / "code-ran"
    (checkpoint_file,) = (run / "checkpoints").glob("iter-*.pt")
    torch.save({"format": 1, "iteration": 1, "payload": _RunsCode(marker)}, checkpoint_file)
    line = fails_with(["evaluate", str(run), "--tasks", "2"], capsys, "refused without running them")
    assert "weights_only=False" in line and "Re-running" not in line
    assert not marker.exists()
    with pytest.raises(MetarlError, match="beyond tensors and plain values"):
        checkpoint.load_checkpoint(checkpoint_file)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_ctrl_c_in_evaluate_is_one_line(finished_run, tmp_path):
    out = tmp_path / "evaluation"
    command = [sys.executable, "-m", "metarl", "evaluate", str(finished_run), "--out", str(out)]
    command += ["--tasks", "50", "--episodes", "10", "--steps", "1000"]  # minutes of CPU time
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # interrupt the evaluation itself, not the imports (a C extension interrupted while it loads
        # can fail to load again): startup takes about 2.5 s of CPU time, evaluating about 100 s
        while _cpu_seconds(process.pid) < 6:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "metarl: interrupted"
    assert not out.exists() or not list(out.glob("evaluation.*"))


def test_non_finite_env_kwargs_of_an_evaluation(finished_run, capsys):
    args = ["evaluate", str(finished_run), "--tasks", "2", "--env-kwargs", "{goal_radius: .nan}"]
    fails_with(args, capsys, "'env_kwargs.goal_radius' in --env-kwargs")


@pytest.mark.parametrize("which", ["9" * 5000, "²"])
def test_checkpoint_number_beyond_int(finished_run, which, capsys):
    fails_with(["evaluate", str(finished_run), "--checkpoint", which], capsys, "--checkpoint must be best, last")


def test_full_disk_while_writing_the_evaluation(finished_run, tmp_path, monkeypatch, capsys):
    from metarl import evaluation

    def full(path, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(evaluation, "write_csv", full)
    line = fails_with(["evaluate", str(finished_run), "--tasks", "2", "--out", str(tmp_path)], capsys, "no space left")
    assert "evaluation.csv" in line


def test_plot_out_that_is_a_directory(finished_run, tmp_path, capsys):
    fails_with(["plot", str(finished_run), "--out", str(tmp_path)], capsys, "is a directory, not a file path")
